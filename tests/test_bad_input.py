"""Bad input to browse and search: clear kb errors or empty results, never a database error."""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

import kb
from kb.cursor import Position, decode_cursor, encode_cursor
from kb.models import Document

DIM = 8
HOSTILE = {
    "a'b": 'x"y',
    "'; DROP TABLE documents; --": "1 OR 1=1",
    "->>": "@>",
    "?|": ["{}", "'"],
    "k": "va'l%ue_\\",
    '{"x": 1}': {"$where": "1"},
}


async def _collection(session: AsyncSession) -> kb.Collection:
    coll = await kb.create_collection(
        session, "bad", embedder="hashing", model=f"feature-hashing-{DIM}", dimension=DIM
    )
    rng = np.random.default_rng(0)
    for i in range(20):
        session.add(
            Document(
                collection_id=coll.id,
                title=f"Title {i}" + (" 50%_off" if i == 3 else ""),
                source=f"s/{i}",
                content=f"content {i} with O'Brien",
                meta=HOSTILE if i == 7 else {"n": i},
                embedding=rng.standard_normal(DIM),
                created_at=datetime(2025, 1, 1, i, tzinfo=UTC),
            )
        )
    await session.flush()
    return coll


async def _documents(session: AsyncSession) -> int:
    return int(await session.scalar(text("SELECT count(*) FROM documents")) or 0)


async def test_unknown_collection_is_named_with_the_known_ones(session: AsyncSession) -> None:
    await _collection(session)
    calls: list[Callable[[], Any]] = [
        lambda: kb.browse(session, "nope"),
        lambda: kb.count_documents(session, "nope"),
        lambda: kb.created_histogram(session, "nope"),
        lambda: kb.facets(session, "nope", "k"),
        lambda: kb.search(session, "hello", collection="nope"),
        lambda: kb.search(session, "hello", collection=["bad", "nope"], mode="text"),
        lambda: kb.search_by_vector(session, np.ones(DIM), collection="nope"),
        lambda: kb.export_documents(session, "nope", "/tmp/never-written.csv"),
        lambda: kb.browse(session, "nope\x00"),
        lambda: kb.browse(session, 5),  # type: ignore[arg-type]
        lambda: kb.count_documents(session, None),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(kb.CollectionNotFound, match="No collection named"):
            await call()
    with pytest.raises(kb.CollectionNotFound, match=r"Known collections: .*bad"):
        await kb.browse(session, "nope")


@pytest.mark.parametrize("query", ["", "   ", "\t\n ", "\x00abc", "bad \ud800 text", "x" * 10_001])
async def test_empty_or_unstorable_queries_are_refused(session: AsyncSession, query: str) -> None:
    await _collection(session)
    for mode in ("vector", "text", "hybrid"):
        with pytest.raises(kb.InvalidInput):
            await kb.search(session, query, collection="bad", mode=mode)
    with pytest.raises(kb.InvalidInput):
        await kb.search(session, None, collection="bad")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"k": 0},
        {"k": -1},
        {"k": 1001},
        {"k": True},
        {"k": 2.5},
        {"k": "10"},
        {"ef_search": 0},
        {"ef_search": 1001},
        {"fetch_k": 5, "k": 10},
        {"mmr_lambda": 2.0},
        {"mmr_lambda": math.nan},
        {"vector_weight": -1.0},
        {"vector_weight": 0.0, "text_weight": 0.0},
        {"rrf_k": 0},
        {"min_score": math.inf},
        {"min_score": "high"},
        {"filters": ["lang", "en"]},
        {"filters": {"unknown_field": 1}},
    ],
)
async def test_search_options_out_of_range(session: AsyncSession, options: dict[str, Any]) -> None:
    await _collection(session)
    with pytest.raises(kb.InvalidInput):
        await kb.search(session, "content", collection="bad", **options)


@pytest.mark.parametrize("limit", [0, -5, 501, 10**9, True, 1.5])
async def test_page_size_out_of_range(session: AsyncSession, limit: Any) -> None:
    await _collection(session)
    with pytest.raises(kb.InvalidInput, match="page size must be an integer from 1 to 500"):
        await kb.browse(session, "bad", limit=limit)


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


GOOD = {"v": 1, "c": 1, "o": "n", "t": "2025-01-01T00:00:00+00:00", "i": uuid.uuid4().hex}
MALFORMED = [
    "",
    "   ",
    "!!!",
    "abc",
    "' OR 1=1 --",
    "café",
    "A" * 401,
    _b64("not json"),
    _b64("[]"),
    _b64('{"v": 1}'),
    _b64(json.dumps({**GOOD, "v": 2})),
    _b64(json.dumps({**GOOD, "c": "1; DROP TABLE documents"})),
    _b64(json.dumps({**GOOD, "c": True})),
    _b64(json.dumps({**GOOD, "c": 0})),
    _b64(json.dumps({**GOOD, "o": "x"})),
    _b64(json.dumps({**GOOD, "t": "yesterday"})),
    _b64(json.dumps({**GOOD, "t": "2025-01-01T00:00:00"})),
    _b64(json.dumps({**GOOD, "i": "'; DROP TABLE documents; --"})),
    _b64(json.dumps({**GOOD, "i": 12})),
]


@pytest.mark.parametrize("cursor", MALFORMED)
async def test_malformed_cursors_are_refused(session: AsyncSession, cursor: str) -> None:
    await _collection(session)
    for direction in ("after", "before"):
        with pytest.raises(kb.InvalidInput, match="Malformed cursor"):
            await kb.browse(session, "bad", **{direction: cursor})


async def test_cursor_round_trip_and_misuse(session: AsyncSession) -> None:
    coll = await _collection(session)
    page = await kb.browse(session, "bad", limit=5)
    assert page.next_cursor is not None
    position = decode_cursor(page.next_cursor)
    assert position == Position(coll.id, "newest", page[-1].created_at, page[-1].id)
    assert encode_cursor(position) == page.next_cursor
    with pytest.raises(kb.InvalidInput, match="not both"):
        await kb.browse(session, "bad", after=page.next_cursor, before=page.next_cursor)
    with pytest.raises(kb.InvalidInput, match="order must be"):
        await kb.browse(session, "bad", order="random")


@pytest.mark.parametrize(("key", "value"), list(HOSTILE.items()))
async def test_hostile_filter_keys_and_values_are_only_data(
    session: AsyncSession, key: str, value: Any
) -> None:
    await _collection(session)
    before = await _documents(session)
    # Exactly the document that carries the pair, found as data, whatever the characters.
    page = await kb.browse(session, "bad", filters={"metadata": {key: value}})
    assert [d.metadata for d in page] == [HOSTILE]
    if isinstance(value, str):
        text_page = await kb.browse(session, "bad", filters={"metadata_text": {key: value}})
        assert [d.metadata for d in text_page] == [HOSTILE]
        hits = await kb.search(
            session, "content", collection="bad", filters=kb.Filters(metadata_text={key: value})
        )
        assert [h.metadata for h in hits] == [HOSTILE]
    # The same characters where no document has them: nothing, and nothing broken.
    assert len(await kb.browse(session, "bad", filters={"metadata": {key: "zz" + str(value)}})) == 0
    assert len(await kb.browse(session, "bad", filters={"title_contains": f"{key}{value}"})) == 0
    assert await _documents(session) == before


@pytest.mark.parametrize(
    ("contains", "expected"),
    [("50%_OFF", 1), ("%", 1), ("_", 1), ("o'brien", 20), ("\\", 0), ("'; --", 0), ("%%", 0)],
)
async def test_contains_filters_take_wildcards_literally(
    session: AsyncSession, contains: str, expected: int
) -> None:
    await _collection(session)
    title_or_content = "title_contains" if expected != 20 else "content_contains"
    count = await kb.count_documents(session, "bad", filters={title_or_content: contains})
    assert count == expected


async def test_a_filter_on_a_key_nobody_has_is_empty(session: AsyncSession) -> None:
    await _collection(session)
    missing = kb.Filters(metadata={"missing": "x"}, metadata_text={"also_missing": "1"})
    assert len(await kb.browse(session, "bad", filters=missing)) == 0
    assert await kb.count_documents(session, "bad", filters=missing) == 0
    assert await kb.created_histogram(session, "bad", filters=missing) == []
    for mode in ("vector", "text", "hybrid"):
        results = await kb.search(session, "content", collection="bad", mode=mode, filters=missing)
        assert len(results) == 0
    explained = await kb.explain(
        session, kb.make_request("content", collection="bad", filters=missing)
    )
    assert explained.warning is not None and "Only 0 of k=10" in explained.warning


@pytest.mark.parametrize(
    "vector",
    [
        [1.0] * (DIM - 1),
        [1.0] * (DIM + 1),
        [math.nan] + [1.0] * (DIM - 1),
        [math.inf] + [1.0] * (DIM - 1),
        [0.0] * DIM,
        [1e39] * DIM,
        ["a"] * DIM,
        [[1.0] * DIM],
        [],
    ],
)
async def test_bad_query_vectors(session: AsyncSession, vector: Any) -> None:
    await _collection(session)
    with pytest.raises(kb.InvalidInput):
        await kb.search_by_vector(session, vector, collection="bad")


@pytest.mark.parametrize("doc_id", ["", "12345", "'; DROP TABLE documents; --", "x" * 500, 7])
async def test_bad_document_ids(session: AsyncSession, doc_id: Any) -> None:
    await _collection(session)
    for call in (kb.get_document, kb.neighbours, kb.similar):
        with pytest.raises(kb.InvalidInput, match="not a document id"):
            await call(session, doc_id)


async def test_unknown_document_id_is_not_found(session: AsyncSession) -> None:
    await _collection(session)
    for call in (kb.get_document, kb.neighbours, kb.similar):
        with pytest.raises(kb.NotFound, match="No document with id"):
            await call(session, uuid.uuid4())


@pytest.mark.parametrize(
    "fields",
    [
        {"metadata": [1, 2]},
        {"metadata": {"a": math.nan}},
        {"metadata": {"a\x00": 1}},
        {"metadata": {1: "a"}},
        {"metadata_text": {"k": 5}},
        {"metadata_text": {"": "x"}},
        {"created_from": "yesterday"},
        {"created_to": 1700000000},
        {"title_contains": 5},
        {"content_contains": "nul\x00"},
        {"source_contains": "x" * 1001},
    ],
)
def test_bad_filter_values(fields: dict[str, Any]) -> None:
    with pytest.raises(kb.InvalidInput):
        kb.Filters(**fields)


async def test_bad_histogram_and_facet_arguments(session: AsyncSession) -> None:
    await _collection(session)
    with pytest.raises(kb.InvalidInput, match="unit must be"):
        await kb.created_histogram(session, "bad", unit="fortnight")
    for tz in ("Mars/Olympus", "UTC'; DROP TABLE documents; --", "\x00"):
        with pytest.raises(kb.InvalidInput):
            await kb.created_histogram(session, "bad", tz=tz)
    with pytest.raises(kb.InvalidInput):
        await kb.facets(session, "bad", "")
    with pytest.raises(kb.InvalidInput):
        await kb.facets(session, "bad", "n", limit=0)
    assert await kb.facets(session, "bad", "'; DROP TABLE documents; --") == [
        kb.Facet("1 OR 1=1", 1)
    ]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.text(max_size=20),
    value=st.one_of(st.text(max_size=30), st.integers(), st.booleans(), st.none()),
    contains=st.text(max_size=30),
    cursor=st.text(max_size=60),
)
async def test_arbitrary_filters_and_cursors_give_kb_errors_or_results(
    session: AsyncSession, key: str, value: Any, contains: str, cursor: str
) -> None:
    if not await _has_bad(session):  # the session (and its data) lives across examples
        await _collection(session)
    try:
        page = await kb.browse(
            session,
            "bad",
            filters={"metadata": {key: value}, "title_contains": contains},
        )
        assert all(d.metadata.get(key) == value for d in page)
    except kb.InvalidInput:
        pass
    with pytest.raises(kb.InvalidInput):
        await kb.browse(session, "bad", after=cursor)


async def _has_bad(session: AsyncSession) -> bool:
    found = await session.scalar(text("SELECT count(*) FROM collections WHERE name = 'bad'"))
    return bool(found)
