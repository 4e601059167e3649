"""The Ingest page (AppTest on the real database): uploads, folders, progress, reports."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import kb
from app_helpers import (
    NOTES,
    Open,
    frame,
    texts,
)
from helpers import settings_for

# The AppTest fixtures: open_app, seeded, release_bridges.
pytest_plugins = ["app_fixtures"]

NEW = "\x00new"
FILES = [
    (
        "intro.md",
        b"# Intro\n\nKB Explorer keeps documents in PostgreSQL with pgvector.\n",
        "text/markdown",
    ),
    (
        "page.html",
        b"<html><title>A page</title><script>evil()</script><p>Hello HTML</p></html>",
        "text/html",
    ),
    ("empty.txt", b"", "text/plain"),
    ("picture.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
    ("nul.txt", b"text with a NUL\x00 byte inside", "text/plain"),
]


def wait_for_report(at: AppTest, seconds: float = 90) -> AppTest:
    """Rerun the page until the ingest's report (or failure) is shown."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        if at.success or any("failed" in e.value or "stopped" in e.value for e in at.error):
            return at
        time.sleep(0.2)
    raise AssertionError("the ingest did not finish in time")


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def start_upload(at: AppTest, collection: str, files=FILES) -> AppTest:  # type: ignore[no-untyped-def]
    at.selectbox(key="i_collection").set_value(NEW).run()
    at.text_input(key="i_new_name").input(collection)
    at.selectbox(key="i_kind").set_value("hashing")
    at.file_uploader[0].set_value(files)
    at.button(key="i_go").click()
    return at


def test_upload_ingests_and_reports_every_file(open_app: Open, seeded) -> None:  # type: ignore[no-untyped-def]
    url, _ = seeded
    at = open_app("ingest")
    assert at.title[0].value == "Ingest"
    wait_for_report(start_upload(at, "uploads"))
    shown = texts(at)
    assert "Ingested into 'uploads'" in shown and "chunks/s" in shown
    assert metric(at, "Files read") == "3"
    assert int(metric(at, "Chunks added")) >= 3
    assert metric(at, "Files skipped") == "2"
    skipped = frame(at)
    reasons = dict(zip(skipped["file"], skipped["reason"], strict=True))
    assert reasons["empty.txt"].startswith("empty file")
    assert "unsupported file type .png" in reasons["picture.png"]

    with kb.SyncDatabase(settings_for(url)) as db:
        page = db.call(kb.browse, "uploads", order="oldest")
        sources = {d.source for d in page.items}
        assert sources == {"intro.md", "page.html", "nul.txt"}  # names, not temp paths
        html = next(d for d in page.items if d.source == "page.html")
        assert html.title == "A page" and "evil()" not in html.content
        info = db.call(kb.get_collection, "uploads")
        assert info.model == "feature-hashing-384"

    # The same files again: nothing added, every chunk a duplicate.
    at.selectbox(key="i_collection").set_value("uploads").run()
    at.file_uploader[0].set_value(FILES[:2])
    at.button(key="i_go").click()
    wait_for_report(at)
    assert metric(at, "Chunks added") == "0"
    assert int(metric(at, "Duplicates skipped")) >= 2


def test_the_job_survives_leaving_the_page(open_app: Open) -> None:
    at = open_app("ingest")
    start_upload(at, "travelling", FILES[:1]).run()
    # Straight to another page while it runs (or just finished), then back.
    at.switch_page("pages/browse.py").run()
    assert not at.exception and at.title[0].value == "Browse"
    at.switch_page("pages/ingest.py")
    wait_for_report(at)
    assert "Ingested into 'travelling'" in texts(at)
    assert "uploaded file(s) into 'travelling'" in texts(at)


def test_progress_line_says_chunks_rate_and_eta() -> None:
    from kb.ingest import IngestProgress
    from ui.ingesting import progress_text

    fraction, text = progress_text(
        IngestProgress("embedding", 3, 10, 1, 250, 1000, 125.0, 6.0, 2.0)
    )
    assert fraction == 0.25
    assert text == ("embedding: 250 of 1,000 chunks · 125.0 chunks/s · ETA 6 s · files 3 of 10")
    assert progress_text(None) == (0.0, "Reading the files…")


def test_upload_mistakes_are_messages(open_app: Open) -> None:
    at = open_app("ingest")
    at.button(key="i_go").click().run()
    assert "Choose one or more files" in texts(at)
    at.selectbox(key="i_collection").set_value(NEW).run()
    at.file_uploader[0].set_value(FILES[:1])
    at.button(key="i_go").click().run()
    assert "Give the new collection a name" in texts(at)
    at.text_input(key="i_new_name").input(NOTES).run()
    at.button(key="i_go").click().run()
    assert "A collection named 'notes' already exists" in texts(at)


def test_folder_ingest_stays_inside_the_allowed_roots(
    open_app: Open, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    root = tmp_path / "shared"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("A plain text file about folders.\n")
    (root / "docs" / "b.md").write_text("# B\n\nMarkdown in a folder.\n")
    monkeypatch.setenv("KB_INGEST_ROOTS", str(root))
    at = open_app("ingest")
    at.radio(key="i_source").set_value("folder").run()
    at.text_input(key="i_folder").input("/etc")
    at.selectbox(key="i_collection").set_value(NOTES)
    at.button(key="i_go").click().run()
    assert "/etc is outside the folders the app may read" in texts(at)
    at.text_input(key="i_folder").input("docs")  # relative to the first root
    at.button(key="i_go").click()
    wait_for_report(at)
    assert metric(at, "Files read") == "2"
    assert "Ingested into 'notes'" in texts(at)


def test_folders_are_off_without_roots(open_app: Open, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KB_INGEST_ROOTS", raising=False)
    at = open_app("ingest")
    at.radio(key="i_source").set_value("folder").run()
    assert "Ingesting from server folders is off" in texts(at)
    assert at.text_input(key="i_folder").disabled


@pytest.mark.model
def test_upload_with_the_local_model_then_search_by_meaning(open_app: Open) -> None:
    files = [
        ("cat.md", b"The kitten sleeps on the warm windowsill all afternoon.\n", "text/markdown"),
        ("bank.md", b"Interest rates rose again and mortgage payments climbed.\n", "text/markdown"),
    ]
    at = open_app("ingest")
    at.selectbox(key="i_collection").set_value(NEW).run()
    at.text_input(key="i_new_name").input("meaning")
    at.selectbox(key="i_kind").set_value("local")
    at.file_uploader[0].set_value(files)
    at.button(key="i_go").click()
    wait_for_report(at, seconds=240)  # the model loads on first use
    assert "Ingested into 'meaning'" in texts(at)
    at = open_app("search", collection="meaning", q="a small cat napping in the sun")
    table = frame(at)
    assert list(table["source"]) == ["cat.md", "bank.md"]
    assert table["score"].iloc[0] > table["score"].iloc[1] + 0.2
