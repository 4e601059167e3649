"""Property-based tests of the public kb API: hostile input gives kb errors, never tracebacks."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

import kb
from helpers import settings_for
from kb.models import Document

# Every code point, lone surrogates and NUL included; now and then a huge string.
ANY_CHAR = st.characters(codec=None, exclude_categories=())
HOSTILE = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.sampled_from(
        [
            "'; DROP TABLE documents; --",
            '{"a": 1}',
            "\\",
            "%_%",
            "@>",
            "?|",
            "$1",
            "\x00",
            "\u202etxet lanigiro",
            "\ud800",
            "a" * 100_000,
            "NaN",
            "null",
            "[]",
        ]
    ),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | HOSTILE,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE, inner, max_size=3),
    max_leaves=8,
)
PROFILE = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
COLLECTION = "props"


@pytest.fixture(scope="module")
async def props_db(new_database) -> AsyncIterator[kb.Database]:  # type: ignore[no-untyped-def]
    url = await new_database()
    db = await kb.connect(settings_for(url), url=url, upgrade=False)
    docs = [
        kb.SourceDocument.from_text(
            f"seed{i}.txt", f"seed document {i} about vectors and cursors", metadata={"n": i}
        )
        for i in range(30)
    ]
    await kb.ingest_documents(db, docs, collection=COLLECTION, embedder="hashing")
    try:
        yield db
    finally:
        await db.close()


async def _only_kb_errors(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except kb.KBError:
        return None


async def _count(db: kb.Database) -> int:
    async with db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(Document)) or 0)


@PROFILE
@given(query=HOSTILE, mode=st.sampled_from(["vector", "text", "hybrid"]), k=st.integers(-5, 2000))
async def test_search_text(props_db: kb.Database, query: str, mode: str, k: int) -> None:
    async with props_db.session() as s:
        await _only_kb_errors(kb.search(s, query, collection=COLLECTION, mode=mode, k=k))


@PROFILE
@given(
    metadata=st.dictionaries(HOSTILE, JSON, max_size=3),
    typed=st.dictionaries(HOSTILE, HOSTILE, max_size=2),
    contains=HOSTILE,
)
async def test_filters(
    props_db: kb.Database, metadata: dict[str, Any], typed: dict[str, str], contains: str
) -> None:
    async with props_db.session() as s:
        try:
            filters = kb.Filters(metadata=metadata, metadata_text=typed, title_contains=contains)
        except kb.KBError:
            return
        await _only_kb_errors(kb.browse(s, COLLECTION, filters=filters))
        await _only_kb_errors(kb.count_documents(s, COLLECTION, filters=filters))
        await _only_kb_errors(kb.search(s, "vectors", collection=COLLECTION, filters=filters))


@PROFILE
@given(raw=HOSTILE, flip=st.integers(0, 200))
async def test_cursors(props_db: kb.Database, raw: str, flip: int) -> None:
    async with props_db.session() as s:
        page = await kb.browse(s, COLLECTION, limit=5)
        assert page.next_cursor is not None
        # A real cursor with one character changed, and arbitrary text.
        real = page.next_cursor
        i = flip % len(real)
        tampered = real[:i] + ("A" if real[i] != "A" else "B") + real[i + 1 :]
        forged = base64.urlsafe_b64encode(json.dumps({"t": raw, "i": raw}).encode()).decode()
        for cursor in (raw, tampered, forged):
            await _only_kb_errors(kb.browse(s, COLLECTION, after=cursor))
            await _only_kb_errors(kb.browse(s, COLLECTION, before=cursor))


@PROFILE
@given(value=HOSTILE)
async def test_ids_and_names(props_db: kb.Database, value: str) -> None:
    async with props_db.session() as s:
        await _only_kb_errors(kb.get_document(s, value))
        await _only_kb_errors(kb.similar(s, value))
        await _only_kb_errors(kb.neighbours(s, value))
        await _only_kb_errors(kb.browse(s, value))
        await _only_kb_errors(kb.facets(s, COLLECTION, value))


@PROFILE
@given(text=HOSTILE, title=HOSTILE, metadata=st.dictionaries(HOSTILE, JSON, max_size=3))
async def test_ingest_writes_all_or_nothing(
    props_db: kb.Database, text: str, title: str, metadata: dict[str, Any]
) -> None:
    before = await _count(props_db)
    try:
        doc = kb.SourceDocument.from_text("prop.txt", text, title=title, metadata=metadata)
        report = await kb.ingest_documents(props_db, [doc], collection=COLLECTION)
    except kb.KBError:
        assert await _count(props_db) == before
        return
    # chunks_added includes new versions of stored chunks (chunks_replaced), which do not
    # add rows.
    added = report.chunks_added - report.chunks_replaced - report.chunks_removed
    assert await _count(props_db) == before + added
