"""Chunking: bounded size, cuts on heading/paragraph/sentence/word boundaries, real overlap."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kb.errors import InvalidInput
from kb.ingest.chunking import chunk_spans, chunk_text


def _para(n: int, word: str) -> str:
    return " ".join(f"{word}{i}" for i in range(n)) + "."


def test_short_text_is_one_chunk_and_empty_text_none() -> None:
    assert chunk_text("  Hello world.  ", size=100, overlap=10) == ["Hello world."]
    assert chunk_text("", size=100, overlap=0) == []
    assert chunk_text(" \n\n \t ", size=100, overlap=0) == []


def test_paragraphs_are_kept_whole_when_they_fit() -> None:
    a, b, c = _para(30, "alpha"), _para(30, "beta"), _para(30, "gamma")  # ~200 chars each
    chunks = chunk_text(f"{a}\n\n{b}\n\n{c}", size=450, overlap=0)
    assert chunks == [f"{a}\n\n{b}", c]


def test_long_paragraph_splits_at_sentence_ends() -> None:
    sentences = [f"Sentence number {i} says something about vectors." for i in range(40)]
    chunks = chunk_text(" ".join(sentences), size=200, overlap=0)
    assert len(chunks) > 5
    for chunk in chunks:
        assert len(chunk) <= 200
        assert chunk.startswith("Sentence number") and chunk.endswith("vectors.")
    assert " ".join(chunks) == " ".join(sentences)


def test_a_sentence_longer_than_a_chunk_splits_between_words() -> None:
    words = [f"word{i:03d}" for i in range(200)]
    chunks = chunk_text(" ".join(words), size=100, overlap=0)
    assert all(len(c) <= 100 for c in chunks)
    rebuilt = " ".join(chunks).split()
    assert rebuilt == words  # no word was cut in two


def test_a_word_longer_than_a_chunk_is_cut() -> None:
    blob = "x" * 250
    chunks = chunk_text(f"before {blob} after", size=100, overlap=0)
    assert all(len(c) <= 100 for c in chunks)
    assert "".join(chunks).replace(" ", "").count("x") == 250


def test_headings_start_new_chunks() -> None:
    intro = _para(40, "intro")  # ~300 chars
    text = f"# Title\n\n{intro}\n\n## Usage\n\n{_para(10, 'usage')}\n\n## Notes\n\n{_para(5, 'n')}"
    chunks = chunk_text(text, size=500, overlap=0)
    assert chunks[0].startswith("# Title") and "## Usage" not in chunks[0]
    assert chunks[1].startswith("## Usage")


def test_overlap_repeats_the_end_of_the_previous_chunk_from_a_boundary() -> None:
    sentences = [f"Fact {i} is short." for i in range(60)]
    text = " ".join(sentences)
    spans = chunk_spans(text, size=120, overlap=40)
    assert len(spans) > 3
    for a, b in itertools.pairwise(spans):
        shared = a.end - b.start
        assert 0 < shared <= 40, (a, b)
        # The repeated part starts at a sentence: "Fact N ...".
        assert text[b.start :].startswith("Fact ")


def test_overlap_zero_means_disjoint_chunks() -> None:
    text = " ".join(f"Fact {i} is short." for i in range(60))
    spans = chunk_spans(text, size=120, overlap=0)
    assert all(b.start >= a.end for a, b in itertools.pairwise(spans))


@pytest.mark.parametrize(("size", "overlap"), [(10, 0), (100, 51), (100, -1), (0, 0)])
def test_bad_options_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(InvalidInput):
        chunk_text("some text", size=size, overlap=overlap)


_WORD = st.text(alphabet="abcdefghij", min_size=1, max_size=12)
_SEP = st.sampled_from([" ", " ", " ", ". ", "! ", "\n", "\n\n", "\n\n# ", "  \t"])


@st.composite
def _texts(draw: st.DrawFn) -> str:
    words = draw(st.lists(_WORD, min_size=0, max_size=300))
    seps = draw(st.lists(_SEP, min_size=len(words), max_size=len(words)))
    return "".join(w + s for w, s in zip(words, seps, strict=True))


@settings(max_examples=200, deadline=None)
@given(text=_texts(), size=st.integers(40, 400), overlap_share=st.floats(0, 0.5))
def test_chunks_cover_everything_within_bounds_on_word_boundaries(
    text: str, size: int, overlap_share: float
) -> None:
    overlap = int(size * overlap_share)
    spans = chunk_spans(text, size=size, overlap=overlap)
    covered = [False] * len(text)
    for s in spans:
        assert 0 < s.end - s.start <= size
        assert not text[s.start].isspace() and not text[s.end - 1].isspace()
        # Words are at most 12 chars here, so no chunk starts or ends inside one.
        assert s.start == 0 or text[s.start - 1].isspace()
        assert s.end == len(text) or text[s.end].isspace() or not text[s.end].isalnum()
        for i in range(s.start, s.end):
            covered[i] = True
    assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace())
    for a, b in itertools.pairwise(spans):
        assert b.start > a.start
        assert a.end - b.start <= overlap


def test_chunks_read_like_the_source() -> None:
    text = "Line one\nline two.\n\n  Indented code\n    more code\n\nEnd."
    assert chunk_text(text, size=1000, overlap=0) == [text.strip()]
    assert re.search(r"\n    more code", chunk_text(text, size=1000, overlap=0)[0])
