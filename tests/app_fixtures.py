"""The AppTest fixtures: a seeded database per test module, and the app opened on a page.

Test modules load this with `pytest_plugins = ["app_fixtures"]`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import streamlit as st
from sqlalchemy.engine import URL
from streamlit.testing.v1 import AppTest

from app_helpers import TIMEOUT, Open, Seeded, seed
from helpers import ROOT, url_text


@pytest.fixture(scope="module")
async def seeded(new_database: Callable[[], Awaitable[URL]]) -> tuple[URL, Seeded]:
    """A database of this module's own, with the notes the tests look at."""
    url = await new_database()
    return url, await seed(url)


@pytest.fixture
def open_app(
    monkeypatch: pytest.MonkeyPatch, seeded: tuple[URL, Seeded], release_bridges: None
) -> Iterator[Open]:
    """Return a function that runs the app on a page, with query params, and checks it."""
    url, _ = seeded
    monkeypatch.setenv("DATABASE_URL", url_text(url))
    monkeypatch.setenv("KB_EMBEDDER", "hashing")
    monkeypatch.delenv("KB_READ_ONLY", raising=False)
    st.cache_data.clear()

    def open_(page: str | None = None, **params: Any) -> AppTest:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
        for key, value in params.items():
            at.query_params[key] = value
        if page is not None:
            at.switch_page(f"pages/{page}.py")
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    yield open_
    st.cache_data.clear()


@pytest.fixture(scope="module")
def release_bridges() -> Iterator[None]:
    """Close the app's bridges (one per database the module's tests used) at the end."""
    yield
    st.cache_resource.clear()
