"""The batch writer's direct path: new keys are copied straight into `documents`, stored keys
still go through the staging upsert, and a key stored by someone else in between falls back."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

import kb
from kb.db import asyncpg_kwargs
from kb.ingest import SourceDocument, copy, writer
from kb.ingest.writer import ChunkRow, Row, write_batch, write_rows
from kb.models import content_hash

DIM = 4
STAGE = "CREATE TEMP TABLE kb_ingest_stage"
SAVEPOINT = "SAVEPOINT kb_ingest_direct"
ROLLBACK = "ROLLBACK TO SAVEPOINT kb_ingest_direct"


class Statements:
    """Record the plain statements (no parameters) every pooled connection of `db` runs."""

    def __init__(self, db: kb.Database) -> None:
        self.engine = db.engine.sync_engine
        self.queries: list[str] = []
        self._drivers: list[asyncpg.Connection] = []

    def _log(self, record: asyncpg.connection.LoggedQuery) -> None:
        self.queries.append(record.query.strip())

    def _attach(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        driver = proxy.driver_connection
        if all(driver is not d for d in self._drivers):
            driver.add_query_logger(self._log)
            self._drivers.append(driver)

    def __enter__(self) -> Statements:
        event.listen(self.engine, "checkout", self._attach)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "checkout", self._attach)
        for driver in self._drivers:
            driver.remove_query_logger(self._log)

    def count(self, prefix: str) -> int:
        return sum(q.startswith(prefix) for q in self.queries)


async def _collection(db: kb.Database, name: str) -> int:
    async with db.session() as s:
        coll = await kb.create_collection(
            s, name, embedder="hashing", model=f"feature-hashing-{DIM}", dimension=DIM
        )
        return int(coll.id)


def _vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def _chunk(source: str, index: int, content: str, **extra: Any) -> ChunkRow:
    return ChunkRow(
        source=source,
        chunk_index=index,
        title=extra.pop("title", f"{source} title"),
        content=content,
        metadata=extra.pop("metadata", {"source": source}),
        content_hash=content_hash(content),
        **extra,
    )


async def _stored(db: kb.Database, collection_id: int) -> dict[tuple[str, int], dict[str, Any]]:
    async with db.session() as s:
        result = await s.execute(
            text(
                "SELECT id, source, chunk_index, title, content, metadata, content_hash, "
                "created_at, embedding::real[] AS embedding, tsv IS NOT NULL AS has_tsv "
                "FROM documents WHERE collection_id = :c"
            ),
            {"c": collection_id},
        )
        return {(r.source, r.chunk_index): dict(r._mapping) for r in result}


async def _stage_table(session: Any) -> Any:
    return await session.scalar(text("SELECT to_regclass('pg_temp.kb_ingest_stage')"))


async def test_new_keys_are_copied_straight_into_documents(kdb: kb.Database) -> None:
    cid = await _collection(kdb, "direct-batch")
    async with kdb.session() as s:
        # A source stored only from chunk 5 on: its new chunks 0 and 1 are new keys.
        await write_batch(
            s, cid, [_chunk("v", 5, "five"), _chunk("v", 6, "six")], np.stack([_vector(5)] * 2), {}
        )
    stamp = dt.datetime(2021, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    rows = [
        _chunk("a", 0, "alpha text", created_at=stamp),
        _chunk("a", 1, "beta text", metadata={"n": 1, "tags": ["x", "y"]}),
        _chunk("v", 0, "gamma text"),
        _chunk("v", 1, "delta text"),
    ]
    vectors = np.stack([_vector(i) for i in range(len(rows))])
    async with kdb.session() as s:
        result = await write_batch(s, cid, rows, vectors, {"a": 2, "v": 2})
        # Still inside the batch's transaction: no staging table was made, and the rows
        # without a created_at got the transaction's now(), as coalesce(NULL, now()) gives.
        assert await _stage_table(s) is None
        at_now = await s.scalar(
            text("SELECT count(*) FROM documents WHERE collection_id = :c AND created_at = now()"),
            {"c": cid},
        )
    assert at_now == 3
    assert result.inserted == {("a", 0), ("a", 1), ("v", 0), ("v", 1)}
    assert result.updated == frozenset()
    assert dict(result.removed) == {"v": 2}  # chunks 5 and 6 are past the new end
    stored = await _stored(kdb, cid)
    assert sorted(stored) == [("a", 0), ("a", 1), ("v", 0), ("v", 1)]
    assert stored[("a", 0)]["created_at"] == stamp
    assert stored[("a", 1)]["metadata"] == {"n": 1, "tags": ["x", "y"]}
    for row, vector in zip(rows, vectors, strict=True):
        got = stored[(row.source, row.chunk_index)]
        assert (got["title"], got["content"], got["content_hash"]) == (
            row.title,
            row.content,
            content_hash(row.content),
        )
        assert np.allclose(got["embedding"], vector) and got["has_tsv"]


async def test_a_batch_with_stored_keys_is_upserted(kdb: kb.Database) -> None:
    cid = await _collection(kdb, "mixed-batch")
    first = [_chunk("s", i, f"s text {i}") for i in range(3)] + [
        _chunk("u", i, f"u text {i}") for i in range(3)
    ]
    async with kdb.session() as s:
        await write_batch(s, cid, first, np.stack([_vector(i) for i in range(6)]), {})
    before = await _stored(kdb, cid)
    batch = [
        _chunk("s", 0, "s text 0"),  # unchanged
        _chunk("s", 1, "s text 1, edited"),  # new text
        _chunk("s", 2, "s text 2", title="a new title"),  # same text, new title
        _chunk("s", 3, "s text 3"),  # new key
        _chunk("t", 0, "t text 0"),  # new source
        _chunk("u", 0, "u text 0"),  # unchanged, and u shrinks to one chunk
    ]
    vectors = np.stack([_vector(10 + i) for i in range(len(batch))])
    async with kdb.session() as s:
        result = await write_batch(s, cid, batch, vectors, {"u": 1})
        assert await _stage_table(s) is not None
    assert result.inserted == {("s", 3), ("t", 0)}
    assert result.updated == {("s", 1), ("s", 2)}
    assert dict(result.removed) == {"u": 2}
    after = await _stored(kdb, cid)
    assert sorted(after) == [("s", 0), ("s", 1), ("s", 2), ("s", 3), ("t", 0), ("u", 0)]
    for key in [("s", 0), ("u", 0)]:  # untouched: id, created_at and vector as they were
        assert after[key]["id"] == before[key]["id"]
        assert after[key]["created_at"] == before[key]["created_at"]
        assert np.allclose(after[key]["embedding"], before[key]["embedding"])
    assert after[("s", 1)]["id"] == before[("s", 1)]["id"]
    assert after[("s", 1)]["content"] == "s text 1, edited"
    assert after[("s", 1)]["created_at"] > before[("s", 1)]["created_at"]
    assert after[("s", 2)]["title"] == "a new title"
    assert after[("s", 2)]["created_at"] == before[("s", 2)]["created_at"]


def _rows(n: int, *, prefix: str = "doc", content: str = "text") -> list[Row]:
    return [
        Row(
            source=f"{prefix}/{i // 2}",
            chunk_index=i % 2,
            content=f"{content} {i}",
            embedding=_vector(i),
        )
        for i in range(n)
    ]


async def test_write_rows_loads_directly_and_reingests_through_the_upsert(
    kdb: kb.Database,
) -> None:
    cid = await _collection(kdb, "direct-rows")
    rows = _rows(6)
    with Statements(kdb) as seen:
        assert await write_rows(kdb, "direct-rows", rows, batch_size=4) == 6
    # Both batches (4 + 2 rows) took the direct path, though the second found the
    # collection no longer empty.
    assert seen.count(SAVEPOINT) == 2 and seen.count(STAGE) == 0 and seen.count(ROLLBACK) == 0
    before = await _stored(kdb, cid)
    with Statements(kdb) as seen:
        assert await write_rows(kdb, "direct-rows", rows, batch_size=4) == 0
    assert seen.count(STAGE) == 2 and seen.count(SAVEPOINT) == 0
    assert await _stored(kdb, cid) == before
    changed = [
        Row("doc/0", "text 0 changed", _vector(100), chunk_index=0),
        Row("doc/0", "text 1", rows[1].embedding, chunk_index=1, title="retitled"),
        Row("doc/9", "brand new", _vector(101), chunk_index=0),
    ]
    assert await write_rows(kdb, "direct-rows", changed) == 3
    after = await _stored(kdb, cid)
    assert len(after) == 7
    assert after[("doc/0", 0)]["id"] == before[("doc/0", 0)]["id"]
    assert after[("doc/0", 0)]["created_at"] > before[("doc/0", 0)]["created_at"]
    assert after[("doc/0", 1)]["title"] == "retitled"
    assert after[("doc/0", 1)]["created_at"] == before[("doc/0", 1)]["created_at"]
    for key in set(before) - {("doc/0", 0), ("doc/0", 1)}:
        assert after[key] == before[key]


async def test_a_key_stored_between_the_check_and_the_copy_falls_back_to_the_upsert(
    kdb: kb.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = await _collection(kdb, "race")
    original = writer.any_stored
    calls = 0

    async def another_writer_first(
        session: Any, collection_id: int, sources: Any, indexes: Any
    ) -> bool:
        # The check answers "none stored", then a writer that does not take kb's lock stores
        # one of the batch's keys and commits before the COPY starts.
        nonlocal calls
        calls += 1
        assert not await original(session, collection_id, sources, indexes)
        conn = await asyncpg.connect(**asyncpg_kwargs(kdb.url))
        try:
            await conn.execute(
                "INSERT INTO documents (collection_id, source, chunk_index, title, content, "
                "metadata, content_hash, embedding) "
                "VALUES ($1, 'doc/1', 0, 'theirs', 'their text', '{}', 'h', '[1,0,0,0]')",
                collection_id,
            )
        finally:
            await conn.close()
        return False

    monkeypatch.setattr(writer, "any_stored", another_writer_first)
    rows = _rows(4)
    with Statements(kdb) as seen:
        written = await write_rows(kdb, "race", rows)
    assert calls == 1
    assert seen.count(SAVEPOINT) == 1 and seen.count(ROLLBACK) == 1 and seen.count(STAGE) == 1
    assert written == 4  # three inserted, the other writer's row updated
    stored = await _stored(kdb, cid)
    assert sorted(stored) == [("doc/0", 0), ("doc/0", 1), ("doc/1", 0), ("doc/1", 1)]
    assert {k: v["content"] for k, v in stored.items()} == {
        (r.source, r.chunk_index): r.content for r in rows
    }
    async with kdb.session() as s:
        count = await s.scalar(
            text("SELECT count(*) FROM documents WHERE collection_id = :c"), {"c": cid}
        )
    assert count == 4


async def test_a_value_the_database_refuses_fails_the_batch_as_before(kdb: kb.Database) -> None:
    cid = await _collection(kdb, "refused")
    rows = [_chunk("r", 0, "fine"), _chunk("r", -1, "refused by the chunk_index check")]
    with Statements(kdb) as seen, pytest.raises(IntegrityError, match="chunk_index"):
        async with kdb.session() as s:
            await write_batch(s, cid, rows, np.stack([_vector(0), _vector(1)]), {})
    # The direct COPY gave way; the upsert raised what it always raised; nothing was kept.
    assert seen.count(ROLLBACK) == 1 and seen.count(STAGE) == 1
    assert await _stored(kdb, cid) == {}


async def test_write_rows_batches_stay_atomic_and_errors_exact(kdb: kb.Database) -> None:
    cid = await _collection(kdb, "atomic")
    rows = _rows(9, prefix="a")
    bad = [*rows[:7], Row("a/zero", "zero", np.zeros(DIM)), rows[8]]
    with pytest.raises(kb.InvalidInput, match="zero vector"):
        await write_rows(kdb, "atomic", bad, batch_size=3)
    # Rows 0-5 (two batches) were committed; nothing of the batch holding the bad row.
    assert len(await _stored(kdb, cid)) == 6

    # Within one batch the first bad row decides the error: a bad vector before a repeat.
    twice = [
        *_rows(3, prefix="b"),
        Row("b/9", "nan", [math.nan] * DIM),
        Row("b/0", "again", _vector(1)),
    ]
    with pytest.raises(kb.InvalidInput, match="NaN"):
        await write_rows(kdb, "atomic", twice, batch_size=3)
    with pytest.raises(kb.InvalidInput, match="row 4 repeats source 'c/0'"):
        await write_rows(
            kdb,
            "atomic",
            [*_rows(3, prefix="c"), Row("c/9", "x", _vector(2)), Row("c/0", "y", _vector(3))],
            batch_size=3,
        )
    with pytest.raises(kb.InvalidInput, match="expects 4"):
        await write_rows(kdb, "atomic", [Row("d", "short", [1.0, 2.0])])

    def failing() -> Iterator[Row]:
        yield from _rows(4, prefix="e")
        raise RuntimeError("the source of rows broke")

    with pytest.raises(RuntimeError, match="broke"):
        await write_rows(kdb, "atomic", failing(), batch_size=3)
    sources = {k[0] for k in await _stored(kdb, cid)}
    assert {"b/0", "b/1", "c/0", "c/1", "e/0", "e/1"} <= sources
    assert not any(s.startswith("d") for s in sources) and "e/1" in sources
    assert sum(k[0].startswith("e/") for k in await _stored(kdb, cid)) == 3

    # Text and metadata that need cleaning are stored cleaned.
    dirty = Row(
        "f\x00/1",
        "bad\x00 text \ud800",
        _vector(4),
        title="t\x00",
        metadata={"nan": math.nan, "nul": "a\x00b", 1: (1, 2)},
    )
    assert await write_rows(kdb, "atomic", [dirty]) == 1
    got = (await _stored(kdb, cid))[("f/1", 0)]
    assert (got["content"], got["title"]) == ("bad text \ufffd", "t")
    assert got["metadata"] == {"nan": None, "nul": "ab", "1": [1, 2]}


async def test_ingest_documents_loads_directly(kdb: kb.Database) -> None:
    docs = [
        SourceDocument.from_text(f"notes/{i}", f"Note number {i}.\n\nIts second paragraph.")
        for i in range(5)
    ]
    with Statements(kdb) as seen:
        report = await kb.ingest_documents(kdb, docs, collection="docs", embedder="hashing")
    assert report.chunks_added == 5 and seen.count(STAGE) == 0 and seen.count(SAVEPOINT) >= 1
    docs[0] = SourceDocument.from_text("notes/0", "Note number 0, rewritten.")
    with Statements(kdb) as seen:
        again = await kb.ingest_documents(kdb, docs, collection="docs", embedder="hashing")
    assert (again.chunks_added, again.chunks_replaced, again.duplicates_skipped) == (1, 1, 4)
    assert seen.count(STAGE) == 1


# The fast path of write_rows must store exactly what the row-by-row path stores.
_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), _text, st.just("\x00")
)
_keys = st.one_of(_text, st.none(), st.booleans(), st.integers())


def _nest(children: Any) -> Any:
    return st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children),
        st.dictionaries(_keys, children, max_size=3),
        st.frozensets(st.integers(), max_size=2),
    )


def _row(source: str, index: int, title: str, content: str, meta: Any, stamp: Any) -> Row:
    return Row(
        source="s" + source,
        chunk_index=index,
        title=title,
        content=content,
        metadata=meta,
        embedding=np.ones(DIM, np.float32),
        created_at=stamp,
    )


def _key(row: Row) -> tuple[str, int]:
    return (row.source, row.chunk_index)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.builds(
            _row,
            _text,
            st.integers(0, 3),
            _text,
            _text,
            st.dictionaries(_keys, st.recursive(_scalar, _nest, max_leaves=8), max_size=4),
            st.one_of(st.none(), st.datetimes(timezones=st.just(dt.UTC))),
        ),
        min_size=1,
        max_size=4,
        unique_by=_key,
    )
)
def test_the_fast_path_encodes_what_the_row_by_row_path_encodes(rows: Sequence[Row]) -> None:
    fast = writer._Preparer(1, DIM)._fast(rows, [])
    exact = writer._Preparer(1, DIM)._exact(rows)
    assert fast is not None
    assert (fast.sources, fast.indexes) == (exact.sources, exact.indexes)
    encoded = [copy.encode(1, p.fields, p.vectors) for p in (fast, exact)]
    assert [s.data for s in encoded[0]] == [s.data for s in encoded[1]]
