"""The Streamlit app on the real test database, through Streamlit's AppTest.

AppTest cannot click table rows, so selections are seeded through the URL (query params) or
session_state, exactly as a copied link or a click would set them.
"""

from __future__ import annotations

import pytest
import streamlit as st
from sqlalchemy.engine import URL
from streamlit.testing.v1 import AppTest

from app_helpers import (
    EMPTY,
    NOTE_COUNT,
    NOTES,
    TIMEOUT,
    Forwarder,
    Open,
    Seeded,
    frame,
    free_port,
    texts,
)
from helpers import ROOT

# The AppTest fixtures: open_app, seeded, release_bridges.
pytest_plugins = ["app_fixtures"]

# --- Collections ------------------------------------------------------------------------


def test_collections_lists_counts_and_the_database(open_app: Open) -> None:
    at = open_app()
    assert at.title[0].value == "Collections"
    table = frame(at)
    notes = table[table["collection"] == NOTES].iloc[0]
    assert notes["documents"] == NOTE_COUNT + 4
    assert notes["model"] == "feature-hashing-384" and notes["dimension"] == 384
    assert notes["metric"] == "cosine"
    assert notes["search ef"] == "64 (default)"  # too small to be calibrated
    assert notes["oldest"] < notes["newest"]
    assert table[table["collection"] == EMPTY].iloc[0]["documents"] == 0
    database = frame(at, -1)
    values = dict(zip(database.iloc[:, 0], database.iloc[:, 1], strict=True))
    assert values["server"].startswith("external")
    assert values["PostgreSQL"].startswith("18")
    assert values["pgvector"].startswith("0.8")
    assert values["shared_buffers"].endswith(("MB", "GB", "kB"))
    assert values["migration revision"] == values["latest revision"] != "none"
    assert "kb.list_collections(session)" in texts(at)


def test_create_then_delete_a_collection_with_confirmation(open_app: Open) -> None:
    at = open_app()
    at.text_input(key="new_name").input("scratch pad")
    at.selectbox(key="new_kind").select("hashing")
    at.number_input(key="new_dimension").set_value(64)
    next(b for b in at.button if b.label == "Create").click().run()
    assert not at.exception
    assert "Created the collection 'scratch pad'" in texts(at)
    table = frame(at)
    row = table[table["collection"] == "scratch pad"].iloc[0]
    assert row["model"] == "feature-hashing-64" and row["documents"] == 0

    at.selectbox(key="delete_name").select("scratch pad").run()
    go = at.button(key="delete_go")
    assert go.disabled, "delete must wait for the typed confirmation"
    at.text_input(key="delete_confirm").input("scratch").run()
    assert at.button(key="delete_go").disabled
    at.text_input(key="delete_confirm").input("scratch pad").run()
    at.button(key="delete_go").click().run()
    assert not at.exception
    assert "Deleted the collection 'scratch pad' and its 0 documents" in texts(at)
    assert "scratch pad" not in set(frame(at)["collection"])


def test_creating_a_taken_name_says_so(open_app: Open) -> None:
    at = open_app()
    at.text_input(key="new_name").input(NOTES)
    at.selectbox(key="new_kind").select("hashing")
    next(b for b in at.button if b.label == "Create").click().run()
    assert not at.exception
    assert any("already exists" in e.value for e in at.error)


def test_database_down_shows_where_and_what_to_check(
    monkeypatch: pytest.MonkeyPatch, release_bridges: None
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://kbuser:pw9secret@127.0.0.1:1/kb")
    monkeypatch.setenv("KB_CONNECT_TIMEOUT", "2")
    st.cache_data.clear()
    for page in (None, "browse", "search", "ingest"):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
        if page:
            at.switch_page(f"pages/{page}.py")
        at.run()
        assert not at.exception, page
        shown = texts(at)
        assert "Database unavailable" in shown, page
        assert "127.0.0.1" in shown and "kbuser" in shown, page
        assert "pw9secret" not in shown, page
        assert "DATABASE_URL" in shown, page


def test_the_app_recovers_once_the_database_is_back(
    monkeypatch: pytest.MonkeyPatch, seeded: tuple[URL, Seeded], release_bridges: None
) -> None:

    url, _ = seeded
    port = free_port()
    # The test database, reached through a TCP port that forwards only while it is open.
    reachable = URL.create(
        "postgresql+asyncpg",
        username=url.username,
        password=url.password,
        host="127.0.0.1",
        port=port,
        database=url.database,
    )
    monkeypatch.setenv("DATABASE_URL", reachable.render_as_string(hide_password=False))
    monkeypatch.setenv("KB_CONNECT_TIMEOUT", "2")
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "Database unavailable" in texts(at)
    with Forwarder(port, url):
        at.run()  # the next run (a click, or the page's own check) finds the database
        assert not at.exception
        assert "Database unavailable" not in texts(at)
        assert NOTES in set(frame(at)["collection"])


def test_read_only_mode_hides_every_write(open_app: Open, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_READ_ONLY", "1")
    at = open_app()
    assert "read-only mode" in texts(at)
    assert not [e for e in at.expander if "Create" in e.label or "Delete" in e.label]
    assert NOTES in set(frame(at)["collection"])
    at = open_app("ingest")
    assert "read-only mode" in texts(at)
    assert not at.get("file_uploader")
