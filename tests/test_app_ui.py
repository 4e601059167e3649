"""The app's pure helpers: inert Markdown, highlighting, URL parameters, notebook code."""

from __future__ import annotations

import datetime as dt
import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as hs

import app_helpers  # noqa: F401 - puts the app's `ui` package on the path
import kb
from ui import notebook
from ui.filters_form import FilterState
from ui.params import Reader
from ui.safe import escape_markdown, highlight_markdown, highlight_spans, query_terms, snippet


def _unescape(markdown: str) -> str:
    out, i = [], 0
    while i < len(markdown):
        if markdown[i] == "\\" and i + 1 < len(markdown):
            out.append(markdown[i + 1])
            i += 2
        else:
            out.append(markdown[i])
            i += 1
    return "".join(out).replace("\u2060", "").replace("  \n", "\n")


@given(hs.text())
def test_every_punctuation_mark_is_escaped_and_nothing_is_lost(text: str) -> None:
    escaped = escape_markdown(text)
    bare = escaped.replace("\\", "")
    # No Markdown, HTML or Streamlit syntax character is left unescaped.
    for i, ch in enumerate(escaped):
        if ch in string.punctuation and ch != "\\":
            assert i > 0 and escaped[i - 1] == "\\", (text, escaped)
    expected = text.replace("\x00", "")
    for ch in "\r\t\v\f":
        expected = expected.replace(ch, " ")
    assert _unescape(escaped) == expected
    assert bare.count("<") == text.count("<")


def test_links_images_and_autolinks_are_broken() -> None:
    hostile = "![x](http://evil.example/a.png) <img src=x> www.evil.example a@b.example :red[x]"
    escaped = escape_markdown(hostile)
    assert not re.search(r"(?<!\\)[!\[\]()<>:]", escaped)  # each one escaped
    assert "http\\:\u2060\\/\\/" in escaped  # a bare URL cannot become a link
    assert "www\u2060\\." in escaped and "\\@\u2060" in escaped


def test_highlighting_marks_whole_words_only() -> None:
    terms = query_terms("Garden tips, garden!")
    assert terms == ["garden", "tips"]
    spans = highlight_spans("Gardening in the garden: tips.", terms)
    assert [part for part, hit in spans if hit] == ["garden", "tips"]
    md = highlight_markdown("<b>garden</b> [x](y)", terms)
    assert md == "\\<b\\>:orange-background[garden]\\<\\/b\\> \\[x\\]\\(y\\)"


def test_snippet_centres_on_the_first_match() -> None:
    text = "word " * 200 + "needle in the haystack " + "word " * 200
    cut = snippet(text, ["needle"], width=80)
    assert "needle" in cut and cut.startswith("… ") and cut.endswith(" …")
    assert len(cut) <= 90
    assert snippet("short\ntext", []) == "short text"


def test_reader_validates_and_explains() -> None:
    reader = Reader(
        {
            "k": ["99999"],
            "n": ["12"],
            "mode": ["evil"],
            "min": ["inf"],
            "day": ["2025-02-30"],
            "flag": ["maybe"],
            "id": ["123"],
            "nul": ["a\x00b"],
            "long": ["x" * 5000],
        }
    )
    assert reader.integer("k", low=1, high=1000, default=10) == 10
    assert reader.integer("n", low=1, high=1000, default=10) == 12
    assert reader.choice("mode", ["vector", "text"], "vector") == "vector"
    assert reader.number("min", low=-1, high=1) is None
    assert reader.day("day") is None
    assert reader.flag("flag") is False
    assert reader.uuid("id") is None
    assert reader.text("nul") == "" and reader.text("long") == ""
    assert len(reader.problems) == 8
    assert all(p.startswith("URL parameter ") and "ignored" in p for p in reader.problems)


def test_filter_state_means_what_the_form_says() -> None:
    state = FilterState(
        meta=("topic=cooking", 'tags:=["a"]'),
        created_from=dt.date(2025, 1, 1),
        created_to=dt.date(2025, 1, 31),
        contains="salt",
    )
    filters = state.to_kb()
    assert filters.metadata_text == {"topic": "cooking"} and filters.metadata == {"tags": ["a"]}
    assert filters.created_to == dt.datetime(2025, 2, 1, tzinfo=dt.UTC)  # the 31st included
    assert state.url()["meta"] == ["topic=cooking", 'tags:=["a"]']
    code = str(state.code())
    assert eval(code, {"kb": kb, "datetime": dt}) == filters
    with pytest.raises(kb.InvalidInput):
        FilterState(meta=("no equals",)).to_kb()


def test_notebook_code_is_python() -> None:
    call = notebook.call(
        "search",
        notebook.SESSION,
        'it\'s "quoted"',
        collection="notes",
        k=5,
        filters=None,
        created=dt.datetime(2025, 1, 2, 3, 4, tzinfo=dt.UTC),
    )
    assert "filters" not in call
    cell = notebook.in_session(f"results = await {call}", notebook.comment("await x(\n  1)"))
    compile(cell, "<cell>", "exec", flags=0x2000)
    assert cell.startswith("import datetime\nimport kb\n")
