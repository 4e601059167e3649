"""The Streamlit app renders against the real test database (AppTest)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from helpers import ROOT, url_text

TIMEOUT = 60


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, db_url) -> Iterator[None]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DATABASE_URL", url_text(db_url))
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


def test_home_lists_collections_and_database(app_env: None) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.title[0].value == "KB Explorer"
    texts = " ".join(t.value for t in at.text)
    assert "PostgreSQL 18" in texts and "external" in texts


def test_database_down_shows_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw9@127.0.0.1:1/kb")
    monkeypatch.setenv("KB_CONNECT_TIMEOUT", "2")
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    st.cache_resource.clear()
    assert not at.exception
    assert "Database unavailable" in at.error[0].value
    assert "pw9" not in at.error[0].value
