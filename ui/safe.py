"""Text from the database or the URL, made inert before it reaches any Markdown renderer.

Streamlit renders Markdown in st.markdown, st.error/st.warning/st.info, captions, labels and
expander titles. Markdown can load remote images (`![x](http://...)`), make links, and Streamlit
adds its own syntax (`:red[...]`, `:material/icon:`, emoji shortcodes, `$LaTeX$`). Escaping every
ASCII punctuation character with a backslash (CommonMark allows it for all of them) turns all of
that into literal text, HTML tags included, and also stops GFM's bare-URL autolinks.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence

_PUNCTUATION = frozenset(string.punctuation)
_WORD = re.compile(r"\w+", re.UNICODE)
_SPACE = re.compile(r"\s+")
_WWW = re.compile(r"(www)(?=\\\.)", re.IGNORECASE)
# Wraps a highlighted run; the run is escaped, so it cannot close the directive early.
HIGHLIGHT_OPEN = ":orange-background["
HIGHLIGHT_CLOSE = "]"


def escape_markdown(text: object, *, single_line: bool = False) -> str:
    """Return `text` as Markdown that renders literally (no links, images, HTML or directives)."""
    value = "" if text is None else str(text)
    value = value.replace("\x00", "")
    if single_line:
        value = _SPACE.sub(" ", value).strip()
    out: list[str] = []
    for ch in value:
        if ch in _PUNCTUATION:
            out.append("\\" + ch)
        elif ch == "\n" and not single_line:
            # Two trailing spaces keep the line break without starting a new block.
            out.append("  \n")
        elif ch in "\r\t\v\f":
            out.append(" ")
        else:
            out.append(ch)
    # Streamlit's Markdown turns bare URLs, www. names and e-mail addresses into links after
    # parsing, escapes or not; a word joiner (invisible) keeps them plain text.
    escaped = "".join(out)
    escaped = escaped.replace("\\:\\/\\/", "\\:\u2060\\/\\/").replace("\\@", "\\@\u2060")
    return _WWW.sub(lambda m: m.group(1) + "\u2060", escaped)


# Words too common to be worth highlighting.
_STOP = (
    "a an and are as at be but by do does for from how i if in is it me my of on or so that "
    "the this to was what when where which who why will with you your"
)
STOP_WORDS = frozenset(_STOP.split())


def query_terms(query: str | None) -> list[str]:
    """Return the distinct words of a query worth highlighting, longest first, lower-cased."""
    words = {
        w.lower()
        for w in _WORD.findall(query or "")
        if (len(w) > 1 or w.isdigit()) and w.lower() not in STOP_WORDS
    }
    return sorted(words, key=lambda w: (-len(w), w))


def highlight_spans(text: str, terms: Sequence[str]) -> list[tuple[str, bool]]:
    """Split `text` into (part, is_match) pieces where whole words equal to a term match."""
    if not terms or not text:
        return [(text, False)] if text else []
    wanted = {t.lower() for t in terms}
    spans: list[tuple[str, bool]] = []
    pos = 0
    for match in _WORD.finditer(text):
        if match.group().lower() in wanted:
            if match.start() > pos:
                spans.append((text[pos : match.start()], False))
            spans.append((match.group(), True))
            pos = match.end()
    if pos < len(text):
        spans.append((text[pos:], False))
    return spans


def highlight_markdown(text: str, terms: Sequence[str], *, single_line: bool = True) -> str:
    """Return escaped Markdown of `text` with every whole-word match of `terms` highlighted."""
    if single_line:
        text = _SPACE.sub(" ", text).strip()
    parts: list[str] = []
    for part, hit in highlight_spans(text, terms):
        escaped = escape_markdown(part)
        parts.append(f"{HIGHLIGHT_OPEN}{escaped}{HIGHLIGHT_CLOSE}" if hit else escaped)
    return "".join(parts)


def snippet(text: str, terms: Sequence[str], *, width: int = 240) -> str:
    """Return about `width` characters of `text` around the first term found, on one line."""
    flat = _SPACE.sub(" ", (text or "").replace("\x00", "")).strip()
    if len(flat) <= width:
        return flat
    start = 0
    lowered = flat.lower()
    hits = [
        m.start()
        for m in _WORD.finditer(lowered)
        if terms and m.group() in {t.lower() for t in terms}
    ]
    if hits:
        start = max(0, hits[0] - width // 4)
        # Start at a word boundary so the snippet does not open mid-word.
        space = flat.rfind(" ", 0, start + 1)
        start = space + 1 if space >= 0 and start > 0 else start
    end = min(len(flat), start + width)
    cut = flat[start:end]
    if end < len(flat):
        space = cut.rfind(" ")
        cut = (cut[:space] if space > width // 2 else cut) + " …"
    return ("… " if start > 0 else "") + cut


def plain_label(values: Iterable[object], *, limit: int = 80) -> str:
    """Join values into one short single-line label (for selectbox options and captions)."""
    text = " · ".join(str(v) for v in values if v not in (None, ""))
    text = _SPACE.sub(" ", text.replace("\x00", "")).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
