"""The one kb bridge per process, and the cached plain reads the pages share.

Every page reaches the database only through `bridge()`: one `kb.SyncDatabase` whose
background event loop owns the async engine. It connects lazily and retries on the next call
after a failure, so the app recovers by itself once the database is back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import streamlit as st

import kb

T = TypeVar("T")

# Plain results are cached briefly: reruns stay fast, and writes clear them at once.
READ_TTL = 30


def _close(bridge: kb.SyncDatabase) -> None:
    bridge.close()


@st.cache_resource(on_release=_close, show_spinner=False)
def _bridge(key: str) -> kb.SyncDatabase:
    return kb.SyncDatabase(kb.get_settings())


def _key() -> str:
    # The settings select the database; a process that changes them (the tests) gets a
    # bridge, and cached reads, per database.
    return kb.get_settings().model_dump_json()


def bridge() -> kb.SyncDatabase:
    """Return the process-wide bridge (made on first use; settings come from the environment)."""
    return _bridge(_key())


def settings() -> kb.Settings:
    """Return the settings the bridge runs with."""
    return bridge().settings


def call(fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
    """Run `fn(session, *args, **kwargs)` through the bridge."""
    return bridge().call(fn, *args, **kwargs)


def with_db(fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
    """Run `fn(database, *args, **kwargs)` through the bridge."""
    return bridge().with_db(fn, *args, **kwargs)


def database_label() -> str:
    """Describe where the database is, password hidden, without connecting."""
    try:
        s = kb.get_settings()
    except kb.KBError as exc:
        return f"(settings cannot be read: {exc})"
    if s.database_url:
        return kb.redact_url(s.database_url)
    return f"the embedded server (data in {s.pgdata})"


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def _collections(key: str) -> list[kb.CollectionInfo]:
    return call(kb.list_collections)


def collections() -> list[kb.CollectionInfo]:
    """Return every collection with its counts (cached)."""
    return _collections(_key())


@st.cache_data(ttl=READ_TTL, show_spinner=False)
def _status(key: str) -> kb.DatabaseStatus:
    return with_db(kb.database_status)


def status() -> kb.DatabaseStatus:
    """Return the database status (cached)."""
    return _status(_key())


def collection_names() -> list[str]:
    """Return the names of every collection (cached)."""
    return [c.name for c in collections()]


def default_collection() -> str | None:
    """Return the collection to show when none is asked for: the one with most documents."""
    found = collections()
    if not found:
        return None
    return max(found, key=lambda c: (c.documents, [-ord(ch) for ch in c.name])).name


def collection_info(name: str) -> kb.CollectionInfo | None:
    """Return one collection's info from the cached list, or None."""
    return next((c for c in collections() if c.name == name), None)


def invalidate() -> None:
    """Forget every cached read (after an ingest, a create or a delete)."""
    st.cache_data.clear()


@st.cache_data(ttl=READ_TTL, show_spinner=False, max_entries=256)
def _read(
    key: str, fn_name: str, args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...]
) -> Any:
    return call(getattr(kb, fn_name), *args, **dict(kwargs))


def read(fn_name: str, /, *args: Any, **kwargs: Any) -> Any:
    """Run the session-first kb function `kb.<fn_name>(session, ...)`, caching its plain result."""
    return _read(_key(), fn_name, args, tuple(sorted(kwargs.items())))
