"""Reliability and read-only use in the app (AppTest on the real database).

Read-only mode on every page, against a role that may only SELECT; uploads and server folders
that must be refused, with nothing written; the database restarted while the app is open.
The database down before the app starts is in test_app.py (every page) and
test_browser_reliability.py (every page in a real browser, recovering by itself).
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy.engine import URL
from streamlit.testing.v1 import AppTest

import kb
from app_helpers import NOTES, TIMEOUT, Open, Seeded, frame, seed, texts
from helpers import ROOT, login_role, settings_for, url_text
from kb import embedded

# The AppTest fixtures: open_app, seeded, release_bridges.
pytest_plugins = ["app_fixtures"]

NEW = "\x00new"


def write_controls(at: AppTest) -> list[str]:
    """Return every control on the page that creates, deletes or ingests."""
    found = [f"button {b.label!r}" for b in at.button if b.label in ("Create", "Delete for good")]
    found += [f"button {b.key!r}" for b in at.button if b.key == "i_go"]
    found += [
        f"expander {e.label!r}"
        for e in at.expander
        if e.label in ("Create a collection", "Delete a collection")
    ]
    found += ["file uploader" for _ in at.get("file_uploader")]
    found += [
        f"text input {t.key!r}"
        for t in at.text_input
        if t.key in ("new_name", "delete_confirm", "i_folder", "i_new_name")
    ]
    found += [f"link {link.proto.label!r}" for link in at.page_link if "Ingest" in link.proto.label]
    return found


def count_documents(url: URL, collection: str) -> int | None:
    """Return how many documents `collection` holds, or None when it does not exist."""
    with kb.SyncDatabase(settings_for(url), upgrade=False) as db:
        try:
            return db.call(kb.count_documents, collection)
        except kb.CollectionNotFound:
            return None


# --- Read-only mode -----------------------------------------------------------------------


@pytest.fixture(scope="module")
async def reader_url(seeded: tuple[URL, Seeded]) -> AsyncIterator[URL]:
    """The seeded database through a login role that may only SELECT (as the README says)."""
    url, _ = seeded
    async with login_role(url, f"kb_ui_reader_{os.getpid()}") as reader:
        try:
            yield reader
        finally:
            st.cache_resource.clear()  # the app's bridges hold connections as the role


def test_the_write_controls_exist_when_writes_are_on(open_app: Open) -> None:
    # What the read-only tests look for is really there otherwise.
    assert len(write_controls(open_app())) >= 4
    assert len(write_controls(open_app("ingest"))) >= 2


def test_read_only_hides_ingest_from_the_navigation(monkeypatch: pytest.MonkeyPatch) -> None:
    from ui.app import pages

    # Pages in sidebar order: Collections, Browse, Search, Ingest (/ingest still explains).
    monkeypatch.setenv("KB_READ_ONLY", "1")
    assert [p.visibility for p in pages()] == ["visible", "visible", "visible", "hidden"]
    monkeypatch.setenv("KB_READ_ONLY", "0")
    assert [p.visibility for p in pages()] == ["visible"] * 4


async def test_read_only_with_no_collection_points_nowhere_to_write(
    open_app: Open, new_database: Callable[[], Awaitable[URL]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", url_text(await new_database()))
    for read_only in ("0", "1"):
        monkeypatch.setenv("KB_READ_ONLY", read_only)
        for page in (None, "browse", "search"):
            at = open_app(page)
            assert "No collections yet" in texts(at), page
            links = [link.proto.label for link in at.page_link]
            assert links == ([] if read_only == "1" else ["Ingest files"]), (page, read_only)


def test_read_only_with_a_select_only_role_on_every_page(
    open_app: Open,
    reader_url: URL,
    seeded: tuple[URL, Seeded],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, data = seeded
    monkeypatch.setenv("DATABASE_URL", url_text(reader_url))
    monkeypatch.setenv("KB_READ_ONLY", "1")
    before = count_documents(url, NOTES)

    at = open_app()
    assert write_controls(at) == []
    assert "read-only mode" in texts(at)
    assert NOTES in set(frame(at)["collection"])
    database = frame(at, -1)
    values = dict(zip(database.iloc[:, 0], database.iloc[:, 1], strict=True))
    assert values["read-only"].startswith("yes") and reader_url.username in values["URL"]

    at = open_app("browse", collection=NOTES, size="10", doc=data.guide_ids[1])
    assert write_controls(at) == [] and not at.error
    assert len(frame(at)) == 10
    assert "Chapter two: the guide continues" in texts(at)
    at.button(key="b_next").click().run()  # keyset paging reads only
    assert not at.exception and not at.error and len(frame(at)) == 10

    at = open_app("search", collection=NOTES, q="gardening")
    assert write_controls(at) == [] and not at.error
    assert "#1" in texts(at) and "cosine similarity" in texts(at)
    # Explain and recall@k run queries of their own: still reads only.
    at.button(key="s_explain").click().run()
    assert not at.exception and not at.error and "Index used:" in texts(at)
    at.button(key="s_recall").click().run()
    assert not at.exception and not at.error
    assert any(m.label.startswith("recall@") for m in at.metric)

    at = open_app("ingest")
    assert write_controls(at) == []
    assert "read-only mode" in texts(at)
    assert count_documents(url, NOTES) == before


def test_select_only_role_without_read_only_mode_refuses_writes_clearly(
    open_app: Open, reader_url: URL, seeded: tuple[URL, Seeded], monkeypatch: pytest.MonkeyPatch
) -> None:
    # KB_READ_ONLY forgotten: the app still starts (nothing to migrate), shows the writes,
    # and the role's refusal comes back as a message, not a traceback.
    url, _ = seeded
    monkeypatch.setenv("DATABASE_URL", url_text(reader_url))
    at = open_app()
    at.text_input(key="new_name").input("not allowed")
    at.selectbox(key="new_kind").select("hashing")
    next(b for b in at.button if b.label == "Create").click().run()
    assert not at.exception
    assert any("may not" in e.value for e in at.error), [e.value for e in at.error]
    assert count_documents(url, "not allowed") is None


# --- Uploads -------------------------------------------------------------------------------


def zip_bomb() -> bytes:
    """Return a small zip that would expand to 20 MB of zeros."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.txt", b"\0" * 20_000_000)
    return out.getvalue()


def wait_for_outcome(at: AppTest, label: str, seconds: float = 90) -> AppTest:
    """Rerun the Ingest page until the job called `label` shows its outcome."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        if label in texts(at) and any(m.label == "Files skipped" for m in at.metric):
            return at
        time.sleep(0.2)
    raise AssertionError(f"the ingest {label!r} did not finish in time")


def skipped_reasons(at: AppTest) -> dict[str, str]:
    table = next(f.value for f in at.dataframe if "reason" in f.value.columns)
    return dict(zip(table["file"], table["reason"], strict=True))


def test_uploads_refused_by_size_type_or_archive_write_nothing(
    open_app: Open, seeded: tuple[URL, Seeded], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url, _ = seeded
    monkeypatch.setenv("KB_MAX_UPLOAD_MB", "0.05")
    # Uploads are staged under the temp dir: this test's own, to see that nothing is left.
    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    bomb = zip_bomb()
    assert len(bomb) < 50_000
    refused = [
        ("big.md", b"# Big\n\n" + b"many words " * 6_000, "text/markdown"),  # 66 KB
        ("tool.exe", b"MZ\x90\x00\x03\x00\x00\x00", "application/octet-stream"),
        ("bomb.zip", bomb, "application/zip"),
        ("notes.tar.gz", gzip.compress(b"text " * 1000), "application/gzip"),
        ("bomb.txt", bomb, "text/plain"),  # an archive under a text file's name
        ("README", b"plain text without an extension", "text/plain"),
    ]
    at = open_app("ingest")
    at.selectbox(key="i_collection").set_value(NEW).run()
    at.text_input(key="i_new_name").input("refused uploads")
    at.selectbox(key="i_kind").set_value("hashing")
    at.file_uploader[0].set_value(refused)
    at.button(key="i_go").click()
    wait_for_outcome(at, "6 uploaded file(s) into 'refused uploads'")
    assert "Nothing to ingest" in texts(at)
    reasons = skipped_reasons(at)
    assert reasons["big.md"] == (
        "too large: 0.07 MB is over the 0.05 MB upload limit (KB_MAX_UPLOAD_MB)"
    )
    assert reasons["tool.exe"].startswith("unsupported file type .exe (kb reads .csv, ")
    assert reasons["bomb.zip"].startswith("an archive (.zip): archives are not opened")
    assert reasons["notes.tar.gz"].startswith("an archive (.gz)")
    assert reasons["bomb.txt"] == "binary file (ZIP archive or Office document)"
    assert reasons["README"].startswith("unsupported file type (no extension)")
    # Nothing written: no collection, no document, nothing left in the staging area.
    assert count_documents(url, "refused uploads") is None
    assert list(staging.iterdir()) == []

    # Next to a good file (whose name tries to climb out of the staging folder): only the
    # good one goes in, under the name it was given.
    at.selectbox(key="i_collection").set_value(NEW).run()
    at.text_input(key="i_new_name").input("mixed uploads")
    at.selectbox(key="i_kind").set_value("hashing")
    good = ("../../escape.md", b"# Kept\n\nThe one good upload.\n", "text/markdown")
    at.file_uploader[0].set_value([good, *refused[:3]])
    at.button(key="i_go").click()
    wait_for_outcome(at, "4 uploaded file(s) into 'mixed uploads'")
    assert set(skipped_reasons(at)) == {"big.md", "tool.exe", "bomb.zip"}
    with kb.SyncDatabase(settings_for(url), upgrade=False) as db:
        page = db.call(kb.browse, "mixed uploads")
    assert [(d.source, d.content) for d in page.items] == [
        ("../../escape.md", "# Kept\n\nThe one good upload.")
    ]
    assert list(staging.iterdir()) == []
    assert not (tmp_path / "escape.md").exists() and not (staging.parent / "escape.md").exists()


# --- Server folders ----------------------------------------------------------------------


def test_server_folders_outside_the_roots_are_refused(
    open_app: Open, seeded: tuple[URL, Seeded], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url, _ = seeded
    root = tmp_path / "shared"
    private = tmp_path / "private"
    sibling = tmp_path / "shared-not"  # shares the root's name as a prefix
    for folder in (root / "docs", private, sibling):
        folder.mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("A file the app may read.\n")
    (private / "secret.txt").write_text("SECRET payroll figures.\n")
    (sibling / "b.txt").write_text("Next door, not inside.\n")
    (root / "escape").symlink_to(private, target_is_directory=True)
    (root / "docs" / "leak.txt").symlink_to(private / "secret.txt")
    monkeypatch.setenv("KB_INGEST_ROOTS", str(root))

    at = open_app("ingest")
    at.radio(key="i_source").set_value("folder").run()
    at.selectbox(key="i_collection").set_value(NEW).run()
    at.text_input(key="i_new_name").input("from folders")
    at.selectbox(key="i_kind").set_value("hashing")
    outside = [
        "../private",  # relative to the root, climbing out
        "docs/../../private/secret.txt",
        str(private),  # absolute, elsewhere
        str(sibling),
        "escape",  # a link in the root to a folder outside
        "escape/secret.txt",
        "~",
        "/",
    ]
    for attempt in outside:
        at.text_input(key="i_folder").input(attempt)
        at.button(key="i_go").click().run()
        assert not at.exception
        assert f"{attempt} is outside the folders the app may read" in texts(at), attempt
        assert not at.metric  # no job started

    # A link inside an allowed folder to a file outside: the whole folder is refused.
    at.text_input(key="i_folder").input("docs")
    at.button(key="i_go").click().run()
    assert not at.exception
    shown = texts(at)
    assert "Links to files outside the folders the app may read" in shown
    assert "leak.txt" in shown and "Nothing was ingested" in shown
    assert count_documents(url, "from folders") is None

    # Left out with an exclude glob, the rest of the folder goes in.
    at.text_input(key="i_exclude").input("leak.txt")
    at.button(key="i_go").click()
    wait_for_outcome(at, "into 'from folders'")
    with kb.SyncDatabase(settings_for(url), upgrade=False) as db:
        page = db.call(kb.browse, "from folders")
    assert [d.content for d in page.items] == ["A file the app may read."]


# --- The database restarted mid-session ---------------------------------------------------


@pytest.fixture
async def restartable() -> AsyncIterator[tuple[Path, URL]]:
    """A seeded database on an embedded server of its own, which the test may stop and start."""
    folder = Path(tempfile.mkdtemp(prefix="kbr", dir="/tmp"))
    pgdata = folder / "pgdata"
    try:
        url = embedded.start(pgdata, database="kb")
        db = await kb.connect(settings_for(url), url=url)  # creates and migrates it
        await db.close()
        await seed(url)
        yield pgdata, url
    finally:
        st.cache_resource.clear()
        embedded.stop(pgdata)
        shutil.rmtree(folder, ignore_errors=True)


def test_database_restarted_mid_session_next_action_succeeds(
    restartable: tuple[Path, URL], monkeypatch: pytest.MonkeyPatch
) -> None:
    pgdata, url = restartable
    monkeypatch.setenv("DATABASE_URL", url_text(url))
    monkeypatch.setenv("KB_EMBEDDER", "hashing")
    monkeypatch.setenv("KB_CONNECT_TIMEOUT", "2")
    monkeypatch.delenv("KB_READ_ONLY", raising=False)
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params.update(collection=NOTES, q="gardening")
    at.switch_page("pages/search.py").run()
    assert not at.exception and "#1" in texts(at)

    def search(query: str) -> str:
        # A new query each time: the result cannot come from the app's cache.
        at.text_input(key="s_q").input(query).run()
        assert not at.exception, [e.value for e in at.exception]
        return texts(at)

    # Restarted between two actions: the next one just works (dead pooled connections are
    # replaced), without restarting the app.
    assert embedded.stop(pgdata)
    embedded.start(pgdata, database="kb")
    shown = search("cooking")
    assert "Database unavailable" not in shown and "Note 03 about cooking" in shown

    # An action while it is down says so; the first one after it is back succeeds.
    assert embedded.stop(pgdata)
    shown = search("astronomy")
    assert "Database unavailable" in shown and "What to check" in shown
    embedded.start(pgdata, database="kb")
    shown = search("music")
    assert "Database unavailable" not in shown and "Note 05 about music" in shown
    at.switch_page("pages/browse.py").run()
    assert not at.exception and not at.error and len(frame(at)) == 50
