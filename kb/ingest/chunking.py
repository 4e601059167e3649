"""Split text into chunks of bounded size on heading, paragraph, sentence and word boundaries.

Chunks are spans of the original text (whitespace inside them kept as it was), so a chunk
reads the way the file does. Sizes count characters.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from kb.errors import InvalidInput

DEFAULT_CHUNK_SIZE = 1000
DEFAULT_CHUNK_OVERLAP = 150
MIN_CHUNK_SIZE = 20

# Boundary strength at the start of a segment.
_HEADING, _PARAGRAPH, _SENTENCE, _WORD, _CUT = 4, 3, 2, 1, 0

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_HEADING_LINE = re.compile(r"^(?:#{1,6}[ \t]+\S|[A-Z][A-Z0-9 _-]{2,}$)", re.MULTILINE)
# A sentence starts after . ! ? (optionally closed by quotes/brackets) and whitespace, or at a
# new line.
_SENTENCE_START = re.compile(r"(?:(?<=[.!?])[\"')\]]*[ \t]+|\n[ \t]*)(?=\S)")
_WORD_START = re.compile(r"(?<=\s)(?=\S)")


@dataclass(frozen=True, slots=True)
class Span:
    """A chunk as [start, end) offsets into the text it came from."""

    start: int
    end: int


def check_options(size: int, overlap: int) -> None:
    """Refuse chunk sizes that cannot work."""
    if not isinstance(size, int) or size < MIN_CHUNK_SIZE:
        raise InvalidInput(f"chunk size must be an integer of at least {MIN_CHUNK_SIZE} characters")
    if not isinstance(overlap, int) or overlap < 0 or overlap > size // 2:
        raise InvalidInput(
            f"chunk overlap must be from 0 to half the chunk size ({size // 2}), not {overlap}"
        )


def chunk_text(
    text: str, *, size: int = DEFAULT_CHUNK_SIZE, overlap: int = DEFAULT_CHUNK_OVERLAP
) -> list[str]:
    """Split `text` into chunks of at most `size` characters that overlap by up to `overlap`."""
    return [text[s.start : s.end] for s in chunk_spans(text, size=size, overlap=overlap)]


def chunk_spans(
    text: str, *, size: int = DEFAULT_CHUNK_SIZE, overlap: int = DEFAULT_CHUNK_OVERLAP
) -> list[Span]:
    """Return the chunks of `text` as spans; see `chunk_text`."""
    check_options(size, overlap)
    segments = _segments(text, size)
    if not segments:
        return []
    # Found only when an overlap needs them: most texts fit one chunk or take no overlap.
    starts: tuple[list[int], list[int]] | None = None
    spans: list[Span] = []
    i = 0
    carry: int | None = None  # where the overlap from the previous chunk starts
    while i < len(segments):
        start = segments[i][0]
        if carry is not None and segments[i][1] - carry <= size:
            start = carry
        j = i
        while j + 1 < len(segments) and segments[j + 1][1] - start <= size:
            nxt = segments[j + 1]
            # A heading starts a new chunk once the current one is reasonably full.
            if nxt[2] == _HEADING and segments[j][1] - start >= size // 2:
                break
            j += 1
        end = segments[j][1]
        spans.append(_strip(text, start, end))
        i = j + 1
        carry = None
        if overlap and i < len(segments):
            if starts is None:
                starts = (
                    [m.end() for m in _SENTENCE_START.finditer(text)],
                    [m.end() for m in _WORD_START.finditer(text)],
                )
            carry = _overlap_start(start, end, overlap, *starts)
    return [s for s in spans if s.end > s.start]


def _overlap_start(
    start: int, end: int, overlap: int, sentence_starts: list[int], word_starts: list[int]
) -> int | None:
    """Return the earliest sentence (else word) start in the last `overlap` chars of a chunk."""
    lo = max(start + 1, end - overlap)
    for starts in (sentence_starts, word_starts):
        k = bisect.bisect_left(starts, lo)
        if k < len(starts) and starts[k] < end:
            return starts[k]
    return None


def _strip(text: str, start: int, end: int) -> Span:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Span(start, end)


def _segments(text: str, size: int) -> list[tuple[int, int, int]]:
    """Cut `text` into (start, end, boundary) pieces of at most `size` characters each."""
    out: list[tuple[int, int, int]] = []
    for start, end in _blocks(text):
        level = _HEADING if _HEADING_LINE.match(text, start) else _PARAGRAPH
        _split(text, start, end, level, size, out)
    return out


def _blocks(text: str) -> list[tuple[int, int]]:
    """Return paragraph spans (separated by blank lines, or starting at a heading line)."""
    cuts = [0]
    for m in _PARAGRAPH_BREAK.finditer(text):
        cuts.append(m.end())
    for m in _HEADING_LINE.finditer(text):
        if m.start() == 0 or text[m.start() - 1] == "\n":
            cuts.append(m.start())
    cuts = sorted(set(cuts))
    blocks = []
    for a, b in zip(cuts, [*cuts[1:], len(text)], strict=True):
        span = _strip(text, a, b)
        if span.end > span.start:
            blocks.append((span.start, span.end))
    return blocks


def _split(
    text: str, start: int, end: int, level: int, size: int, out: list[tuple[int, int, int]]
) -> None:
    if end - start <= size:
        out.append((start, end, level))
        return
    if level > _WORD:
        pattern = _SENTENCE_START if level > _SENTENCE else _WORD_START
        finer = _SENTENCE if level > _SENTENCE else _WORD
        cuts = [start] + [
            m.end() for m in pattern.finditer(text, start, end) if start < m.end() < end
        ]
        if len(cuts) > 1:
            for k, (a, b) in enumerate(zip(cuts, [*cuts[1:], end], strict=True)):
                span = _strip(text, a, b)
                if span.end > span.start:
                    _split(text, span.start, span.end, level if k == 0 else finer, size, out)
            return
        # No boundary of this kind inside: try the next finer one.
        _split(text, start, end, finer if level > _SENTENCE else _WORD, size, out)
        return
    if level == _WORD:
        # A single word longer than a chunk (a URL, base64): cut it.
        for a in range(start, end, size):
            out.append((a, min(a + size, end), _CUT if a > start else _WORD))
        return
    out.append((start, end, level))  # pragma: no cover - levels below _WORD never recurse
