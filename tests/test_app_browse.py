"""The Browse page (AppTest on the real database): paging, filters, deep links, documents."""

from __future__ import annotations

import io
import json
import re

import pandas as pd
import pyarrow.parquet as pq

import kb
from app_helpers import (
    HOSTILE_CONTENT,
    HOSTILE_TITLE,
    NOTE_COUNT,
    NOTES,
    Open,
    frame,
    texts,
)
from helpers import settings_for
from ui import exports

# The AppTest fixtures: open_app, seeded, release_bridges.
pytest_plugins = ["app_fixtures"]

TOTAL = NOTE_COUNT + 4  # the notes, the hostile document, three guide chunks


def _button(at, key: str):  # type: ignore[no-untyped-def]
    return at.button(key=key)


def test_pages_newest_first_with_next_previous_and_first(open_app: Open) -> None:
    at = open_app("browse", collection=NOTES, size="25")
    assert at.title[0].value == "Browse"
    first = frame(at)
    assert len(first) == 25
    assert list(first["title"][:3]) == ["Guide", "Guide", "Guide"]
    assert list(first["chunk"][:3]) == [2, 1, 0]
    assert first["created_at"].is_monotonic_decreasing
    assert f"{TOTAL} documents" in texts(at)
    assert _button(at, "b_prev").disabled and _button(at, "b_first").disabled

    _button(at, "b_next").click().run()
    second = frame(at)
    assert len(second) == 25 and "after" in at.query_params
    assert second["created_at"].max() < first["created_at"].min()
    _button(at, "b_next").click().run()
    third = frame(at)
    assert len(third) == TOTAL - 50
    assert _button(at, "b_next").disabled
    seen = pd.concat([first, second, third])
    assert len(set(zip(seen["source"], seen["chunk"], strict=True))) == TOTAL

    _button(at, "b_prev").click().run()
    assert list(frame(at)["source"]) == list(second["source"])
    assert "before" in at.query_params and "after" not in at.query_params
    _button(at, "b_first").click().run()
    assert list(frame(at)["source"]) == list(first["source"])
    assert "after" not in at.query_params and "before" not in at.query_params


def test_a_copied_url_restores_the_same_page(open_app: Open) -> None:
    at = open_app("browse", collection=NOTES, size="10", order="oldest")
    _button(at, "b_next").click().run()
    _button(at, "b_next").click().run()
    shown = list(frame(at)["title"])
    link = dict(at.query_params)
    assert link["order"] == "oldest" and "after" in link
    assert [t[:7] for t in shown] == [f"Note {i:02d}" for i in range(20, 30)]
    again = open_app("browse", **link)
    assert list(frame(again)["title"]) == shown
    assert again.toggle(key="b_oldest").value is True


def test_oldest_first_toggle_restarts_from_the_oldest(open_app: Open) -> None:
    at = open_app("browse", collection=NOTES, size="10")
    _button(at, "b_next").click().run()
    at.toggle(key="b_oldest").set_value(True).run()
    table = frame(at)
    assert table["title"].iloc[0].startswith("Note 00")
    assert table["created_at"].is_monotonic_increasing
    assert at.query_params.get("order") == "oldest" and "after" not in at.query_params


def test_filters_from_the_url(open_app: Open) -> None:
    at = open_app("browse", collection=NOTES, meta="topic=gardening")
    table = frame(at)
    assert len(table) == 10 and table["title"].str.contains("gardening").all()
    assert "10 documents match" in texts(at)

    at = open_app("browse", collection=NOTES, meta=["year=2021", "topic=vectors"])
    assert len(frame(at)) == 10
    assert all(json.loads(m)["year"] == 2021 for m in frame(at)["metadata"])
    at = open_app("browse", collection=NOTES, meta=["year=2020", "topic=vectors"])
    assert "No documents match" in texts(at)

    at = open_app("browse", collection=NOTES, contains="GARDENING")
    assert len(frame(at)) == 12  # ten notes, the hostile page, one guide chunk

    at = open_app("browse", collection=NOTES, **{"from": "2025-01-01", "to": "2025-01-10"})
    assert sorted(frame(at)["title"].str[:7]) == [f"Note {i:02d}" for i in range(10)]

    at = open_app("browse", collection=NOTES, title="guide", source="guide.md")
    assert list(frame(at)["chunk"]) == [2, 1, 0]


def test_filter_widgets_write_the_url(open_app: Open) -> None:
    at = open_app("browse", collection=NOTES)
    at.text_area(key="b_meta").input("topic=music\nyear:=2022").run()
    assert len(frame(at)) == 10
    assert at.query_params["meta"] == ["topic=music", "year:=2022"]
    at.text_input(key="b_contains").input("number 5").run()
    assert set(frame(at)["title"].str[:7]) <= {"Note 05", "Note 53", "Note 59"}


def test_a_malformed_filter_line_is_a_message(open_app: Open) -> None:
    at = open_app("browse", collection=NOTES)
    at.text_area(key="b_meta").input("just words").run()
    assert not at.exception
    assert "Filter not applied" in texts(at)


def test_document_view_shows_text_verbatim_with_neighbours(open_app: Open, seeded) -> None:  # type: ignore[no-untyped-def]
    _, data = seeded
    at = open_app("browse", collection=NOTES, doc=data.hostile_id)
    shown_text = [t.value for t in at.text]
    assert HOSTILE_CONTENT in shown_text  # st.text: the raw text, no Markdown, no HTML
    assert HOSTILE_TITLE in texts(at)
    assert all("![" not in m.value and "<script" not in m.value for m in at.markdown)
    assert at.query_params["doc"] == data.hostile_id

    at = open_app("browse", collection=NOTES, doc=data.guide_ids[1])
    shown_text = [t.value for t in at.text]
    assert any("Chapter one" in t for t in shown_text)
    assert any("Chapter three" in t for t in shown_text)
    at.button(key=f"b_open_{data.guide_ids[2]}").click().run()
    assert at.query_params["doc"] == data.guide_ids[2]
    at.button(key="b_close").click().run()
    assert "doc" not in at.query_params


def test_more_like_this_opens_search(open_app: Open, seeded) -> None:  # type: ignore[no-untyped-def]
    _, data = seeded
    at = open_app("browse", collection=NOTES, doc=data.note_ids[0])
    at.button(key="b_like").click().run()
    assert not at.exception
    assert at.title[0].value == "Search"
    assert "More like this:" in texts(at)
    results = at.dataframe[0].value
    assert len(results) == 10 and data.note_ids[0] not in set(results["id"])


def test_hostile_url_values_are_messages(open_app: Open) -> None:
    at = open_app(
        "browse",
        collection="<img src=x onerror=alert(1)>",
        size="lots",
        order="sideways",
        after="not-a-cursor",
        doc="../../etc/passwd",
        **{"from": "2025-13-45"},
    )
    shown = texts(at)
    assert "There is no collection named '<img src=x onerror=alert(1)>'; showing 'notes'" in shown
    assert "size='lots' ignored" in shown and "order='sideways' ignored" in shown
    assert "doc='../../etc/passwd' ignored" in shown and "from='2025-13-45' ignored" in shown
    assert "Malformed cursor" in shown
    assert at.selectbox(key="b_collection").value == NOTES  # the one with most documents
    assert len(frame(at)) == 50  # its first page, after all that
    # Shown through Markdown, so every "<" must arrive escaped.
    assert all(not re.search(r"(?<!\\)<", e.value) for e in at.warning)


def test_export_writes_every_matching_document(seeded) -> None:  # type: ignore[no-untyped-def]
    url, _ = seeded
    filters = kb.Filters(metadata_text={"topic": "cooking"})
    with kb.SyncDatabase(settings_for(url)) as db:
        csv = exports.documents_bytes(db, NOTES, filters, "newest", "csv")
        jsonl = exports.documents_bytes(db, NOTES, filters, "oldest", "jsonl")
        parquet = exports.documents_bytes(db, NOTES, kb.Filters(), "newest", "parquet")
    assert len(pd.read_csv(io.BytesIO(csv))) == 10
    lines = [json.loads(line) for line in jsonl.decode().splitlines()]
    assert [line["title"][:7] for line in lines][:2] == ["Note 03", "Note 09"]
    assert len(lines) == 10
    assert pq.read_table(io.BytesIO(parquet)).num_rows == TOTAL


def test_export_buttons_are_offered(open_app: Open) -> None:
    at = open_app("browse", collection=NOTES, meta="topic=cooking")
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["CSV", "JSONL", "Parquet"]
    assert "Export all 10 matching documents" in texts(at)
    assert "kb.export_documents(" in texts(at) and "kb.browse(" in texts(at)


def test_notebook_code_reproduces_the_view(open_app: Open) -> None:
    at = open_app("browse", collection=NOTES, meta="topic=cooking", size="10")
    code = next(c.value for c in at.code if "kb.browse(" in c.value)
    assert "metadata_text={'topic': 'cooking'}" in code and "limit=10" in code
    compile(code, "<notebook>", "exec", flags=0x2000)  # top-level await allowed
