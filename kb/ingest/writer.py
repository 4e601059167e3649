"""The database side of an ingest: what is stored already, and the atomic COPY batch writer.

A batch is written in one transaction: the collection's advisory write lock (so concurrent
ingests into one collection write one batch at a time and never deadlock on each other's
rows; they still read and embed in parallel), then its rows as binary COPY streams (built by
kb.ingest.copy, vectors in pgvector's binary format, so no codec is ever registered on a
pooled connection), and the removal of chunks past the new end of sources that shrank.

When none of the batch's (source, chunk_index) keys is stored yet (a bulk load), the streams
go straight into `documents`, every row inserted. Otherwise they go into a temporary staging
table and one INSERT ... SELECT ... ON CONFLICT moves them over, leaving unchanged rows alone.
The direct COPY runs under a savepoint: a key that another writer stored between the check and
the COPY (a unique violation), or any value the database refuses, rolls it back and the batch
takes the staging path, which upserts or reports the refusal as it always has.

`write_rows` prepares (checks, cleans, hashes and encodes) the next batch while the database
writes the current one, in slices between the event loop's turns, so Python and PostgreSQL
work at the same time without a second thread competing for the interpreter.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from kb import terms
from kb.collections import get_collection, lock_writes
from kb.database import Database
from kb.db import translating
from kb.errors import InvalidInput
from kb.ingest import copy, indexing, upkeep
from kb.ingest.cleaning import clean_json, clean_text
from kb.models import check_vector, content_hash

log = logging.getLogger(__name__)

STAGE_TABLE = "kb_ingest_stage"
# What kb.ingest.cleaning replaces, and how deep clean_json goes before it stringifies.
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_JSON_DEPTH = 50
# write_rows' batch: small enough that the first batch's preparation (not overlapped with any
# write) is short and a one-batch load still overlaps, large enough that per-batch work (a
# transaction, a key check, a commit) stays small; measured best of 1000, 2000 and 5000.
WRITE_BATCH_SIZE = 2000
# Rows prepared between two turns of the event loop (a few milliseconds of work).
_SLICE = 200

_CREATE_STAGE = f"""
CREATE TEMP TABLE {STAGE_TABLE} (
    collection_id integer NOT NULL,
    source text NOT NULL,
    chunk_index integer NOT NULL,
    title text NOT NULL,
    content text NOT NULL,
    metadata jsonb NOT NULL,
    content_hash text NOT NULL,
    embedding vector NOT NULL,
    created_at timestamptz
) ON COMMIT DROP
"""

# Unchanged rows are left alone (the WHERE), so their created_at and id stay; a changed text
# gets a new created_at, a refreshed title/metadata keeps it.
_UPSERT = text(
    """
INSERT INTO documents AS d
    (collection_id, source, chunk_index, title, content, metadata, content_hash, embedding,
     created_at)
SELECT :collection_id, s.source, s.chunk_index, s.title, s.content, s.metadata,
       s.content_hash, s.embedding, coalesce(s.created_at, now())
FROM kb_ingest_stage AS s
ORDER BY s.source, s.chunk_index
ON CONFLICT (collection_id, source, chunk_index) DO UPDATE SET
    title = EXCLUDED.title,
    content = EXCLUDED.content,
    metadata = EXCLUDED.metadata,
    content_hash = EXCLUDED.content_hash,
    embedding = EXCLUDED.embedding,
    created_at = CASE WHEN d.content_hash = EXCLUDED.content_hash
                      THEN d.created_at ELSE EXCLUDED.created_at END
WHERE (d.content_hash, d.title, d.metadata)
      IS DISTINCT FROM (EXCLUDED.content_hash, EXCLUDED.title, EXCLUDED.metadata)
RETURNING d.source, d.chunk_index, (d.xmax = 0) AS inserted
"""
)

_TRIM = text(
    """
DELETE FROM documents AS d
USING unnest(CAST(:sources AS text[]), CAST(:ends AS integer[])) AS t(source, n)
CROSS JOIN LATERAL (
    SELECT x.id FROM documents AS x
    WHERE x.collection_id = :collection_id AND x.source = t.source AND x.chunk_index >= t.n
    OFFSET 0
) AS past
WHERE d.id = past.id
RETURNING d.source
"""
)

_EXISTING = text(
    """
SELECT d.source, d.chunk_index, d.content_hash, d.title, d.metadata
FROM unnest(CAST(:sources AS text[]), CAST(:indexes AS integer[])) AS k(source, chunk_index)
CROSS JOIN LATERAL (
    SELECT x.source, x.chunk_index, x.content_hash, x.title, x.metadata
    FROM documents AS x
    WHERE x.collection_id = :collection_id
      AND x.source = k.source
      AND x.chunk_index = k.chunk_index
    LIMIT 1
) AS d
"""
)

# Whether any key of the batch is stored: an empty collection answers from one index probe.
_ANY_STORED = text(
    """
SELECT EXISTS (SELECT 1 FROM documents WHERE collection_id = :collection_id)
   AND EXISTS (
       SELECT 1
       FROM unnest(CAST(:sources AS text[]), CAST(:indexes AS integer[]))
            AS k(source, chunk_index)
       CROSS JOIN LATERAL (
           SELECT 1 FROM documents AS d
           WHERE d.collection_id = :collection_id
             AND d.source = k.source
             AND d.chunk_index = k.chunk_index
           LIMIT 1
       ) AS hit
   )
"""
)

_SAVEPOINT = "kb_ingest_direct"
# What makes the direct COPY give way to the staging path: a key stored meanwhile, or a value
# or row the database refuses (the staging path then raises it exactly as it always has).
_FALL_BACK = (
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.ProgramLimitExceededError,
)

_EMBEDDINGS = text(
    """
SELECT DISTINCT ON (content_hash) content_hash, embedding::real[] AS embedding
FROM documents
WHERE collection_id = :collection_id AND content_hash = ANY(CAST(:hashes AS text[]))
"""
)


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """One chunk ready to be stored (everything but its embedding)."""

    source: str
    chunk_index: int
    title: str
    content: str
    metadata: dict[str, Any]
    content_hash: str
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """What is stored at a (source, chunk_index): enough to tell whether it changed."""

    content_hash: str
    title: str
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The rows a batch inserted and updated, and the trailing rows it removed per source."""

    inserted: frozenset[tuple[str, int]]
    updated: frozenset[tuple[str, int]]
    removed: Mapping[str, int]


async def existing_chunks(
    session: AsyncSession, collection_id: int, keys: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], StoredChunk]:
    """Return what is stored at each (source, chunk_index) of `keys` that exists."""
    if not keys:
        return {}
    rows = await session.execute(
        _EXISTING,
        {
            "collection_id": collection_id,
            "sources": [k[0] for k in keys],
            "indexes": [k[1] for k in keys],
        },
    )
    return {
        (r.source, r.chunk_index): StoredChunk(r.content_hash, r.title, dict(r.metadata or {}))
        for r in rows
    }


async def stored_embeddings(
    session: AsyncSession, collection_id: int, hashes: Sequence[str]
) -> dict[str, np.ndarray]:
    """Return the stored embedding of each content hash the collection already holds."""
    if not hashes:
        return {}
    rows = await session.execute(
        _EMBEDDINGS, {"collection_id": collection_id, "hashes": list(hashes)}
    )
    return {r.content_hash: np.asarray(r.embedding, dtype=np.float32) for r in rows}


async def any_stored(
    session: AsyncSession, collection_id: int, sources: Sequence[str], indexes: Sequence[int]
) -> bool:
    """Tell whether any (sources[i], indexes[i]) is stored in the collection."""
    if not sources:
        return False
    found = await session.scalar(
        _ANY_STORED,
        {"collection_id": collection_id, "sources": list(sources), "indexes": list(indexes)},
    )
    return bool(found)


async def _driver(session: AsyncSession) -> asyncpg.Connection:
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if driver is None or not driver.is_in_transaction():
        raise RuntimeError("the batch writer needs an open transaction")
    return driver


async def _copy(
    driver: asyncpg.Connection,
    table: str,
    streams: Sequence[copy.Segment],
    copying: asyncio.Event | None = None,
) -> None:
    if copying is not None:
        copying.set()
    for stream in streams:
        await driver.copy_to_table(
            table, source=memoryview(stream.data), columns=stream.columns, format="binary"
        )


async def _copy_direct(
    driver: asyncpg.Connection,
    streams: Sequence[copy.Segment],
    copying: asyncio.Event | None = None,
) -> bool:
    """COPY the streams into `documents` under a savepoint; return False if it gave way."""
    await driver.execute(f"SAVEPOINT {_SAVEPOINT}")
    try:
        await _copy(driver, "documents", streams, copying)
    except _FALL_BACK:
        await driver.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        return False
    await driver.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
    return True


async def _write(
    session: AsyncSession,
    collection_id: int,
    sources: Sequence[str],
    indexes: Sequence[int],
    streams: Sequence[copy.Segment],
    ends: Mapping[str, int],
    copying: asyncio.Event | None = None,
) -> WriteResult:
    """Write a batch's encoded rows; set `copying` once its COPY starts."""
    # The first statement through SQLAlchemy also opens the transaction the COPY joins.
    await lock_writes(session, collection_id)
    inserted: set[tuple[str, int]] = set()
    updated: set[tuple[str, int]] = set()
    if sources:
        driver = await _driver(session)
        if not await any_stored(session, collection_id, sources, indexes) and await _copy_direct(
            driver, streams, copying
        ):
            inserted.update(zip(sources, indexes, strict=True))
        else:
            await driver.execute(_CREATE_STAGE)
            await _copy(driver, STAGE_TABLE, streams, copying)
            result = await session.execute(_UPSERT, {"collection_id": collection_id})
            for source, chunk_index, was_inserted in result:
                (inserted if was_inserted else updated).add((source, chunk_index))
    removed: dict[str, int] = {}
    if ends:
        names = sorted(ends)
        trimmed = await session.execute(
            _TRIM,
            {
                "collection_id": collection_id,
                "sources": names,
                "ends": [int(ends[n]) for n in names],
            },
        )
        for (source,) in trimmed:
            removed[source] = removed.get(source, 0) + 1
    if updated or removed:
        # A word's count may have fallen: its census goes with the batch (kb.terms).
        await terms.forget(session, collection_id)
    return WriteResult(frozenset(inserted), frozenset(updated), removed)


async def write_batch(
    session: AsyncSession,
    collection_id: int,
    rows: Sequence[ChunkRow],
    vectors: np.ndarray,
    ends: Mapping[str, int],
) -> WriteResult:
    """Upsert `rows` with their `vectors` and trim sources in `ends` to that many chunks.

    Runs inside the session's transaction; the caller commits (or rolls back) the whole batch.
    """
    if len(rows) != len(vectors):
        raise ValueError(f"{len(rows)} rows but {len(vectors)} vectors")
    # Encoding is CPU work: off the event loop, and before the lock is taken.
    streams = await asyncio.to_thread(copy.segments, collection_id, rows, vectors) if rows else ()
    sources = [r.source for r in rows]
    indexes = [r.chunk_index for r in rows]
    return await _write(session, collection_id, sources, indexes, streams, ends)


@dataclass(frozen=True, slots=True)
class Row:
    """A chunk with an embedding computed elsewhere, for `write_rows`."""

    source: str
    content: str
    embedding: Sequence[float] | np.ndarray
    chunk_index: int = 0
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class _Prepared:
    # Keys as two lists, not (source, chunk_index) tuples: a bulk load would otherwise leave
    # the garbage collector tens of thousands of containers to scan.
    sources: list[str]
    indexes: list[int]
    streams: tuple[copy.Segment, ...]


@dataclass(frozen=True, slots=True)
class _Part:
    """Some rows of a batch, checked and cleaned, as a COPY stream carries them."""

    sources: list[str]
    indexes: list[int]
    fields: copy.Encoded
    vectors: np.ndarray


def _matrix(embeddings: Sequence[Any], dimension: int) -> np.ndarray | None:
    """Return the vectors as float32 rows if every one passes check_vector, else None."""
    if all(
        type(e) is np.ndarray and e.dtype == np.float32 and e.shape == (dimension,)
        for e in embeddings
    ):
        # float32 already: nothing can overflow, and the checks read the values as they are.
        out = np.concatenate(embeddings).reshape(len(embeddings), dimension)
        return out if np.isfinite(out).all() and out.any(axis=1).all() else None
    try:
        arr = np.asarray(embeddings, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if arr.ndim != 2 or arr.shape[1] != dimension or not np.isfinite(arr).all():
        return None
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    return out if np.isfinite(out).all() and out.any(axis=1).all() else None


def _clean_str(value: object) -> bool:
    """Tell whether clean_text would return this str unchanged (no NUL, no lone surrogate)."""
    return (
        type(value) is str
        and "\x00" not in value
        and (value.isascii() or _SURROGATE.search(value) is None)
    )


def _clean_json(value: object, depth: int = 0) -> bool:
    """Tell whether clean_json would return `value` unchanged (the same JSON text)."""
    if depth > _JSON_DEPTH:
        return False
    kind = type(value)
    if kind is str:
        return _clean_str(value)
    if value is None or kind is int or kind is bool:
        return True
    if kind is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    if kind is dict:
        return all(
            _clean_str(k) and _clean_json(v, depth + 1)
            for k, v in value.items()  # type: ignore[attr-defined]
        )
    if kind is list:  # a tuple would come back a list
        return all(_clean_json(v, depth + 1) for v in value)  # type: ignore[attr-defined]
    return False


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _metadata(value: dict[str, Any]) -> bytes:
    """Return the JSON text of clean_json(value), skipping the rebuild when nothing changes.

    The JSON encoder walks the dict in C: it refuses NaN, infinities and non-JSON types,
    escapes a NUL as \\u0000 and leaves lone surrogates for the UTF-8 encoding to refuse. What
    it would write differently from clean_json (True or None as a key, values nested past
    clean_json's depth) is ruled out first.
    """
    for key, item in value.items():
        if type(key) is not str or (type(item) not in _SCALARS and not _clean_json(item, 1)):
            return copy.json_bytes(clean_json(value))
    try:
        data = copy.json_bytes(value, strict=True)
    except (TypeError, ValueError):  # NaN, a non-JSON type, a cycle, a lone surrogate
        return copy.json_bytes(clean_json(value))
    return copy.json_bytes(clean_json(value)) if b"\\u0000" in data else data


def _text(value: str) -> str:
    return value if _clean_str(value) else clean_text(value)[0]


class _Preparer:
    """Check, clean, hash and encode `write_rows` input, slice by slice.

    Rows are numbered and keys checked for repeats across the whole input, as the caller gave
    them. A slice first takes a fast path: text that needs no cleaning is used as it is, the
    vectors are checked together, and the fields go straight to COPY encoding. Anything wrong
    anywhere in it sends the slice through the row-by-row checks (the ones this writer always
    made), which raise the first bad row's error; the slices before it were clean.
    """

    def __init__(self, collection_id: int, dimension: int) -> None:
        self.collection_id = collection_id
        self.dimension = dimension
        # Each key as one str (its chunk_index, a NUL, its source: unambiguous, and equal
        # exactly when the (source, chunk_index) pairs are): strings are not containers the
        # garbage collector scans, and a bulk load keeps one per row.
        self.seen: set[str] = set()
        self.count = 0

    def _key(self, number: int, row: Row) -> str:
        if not isinstance(row.source, str) or not row.source:
            raise InvalidInput("every row needs a source (the key of its chunks)")
        if not isinstance(row.chunk_index, int) or row.chunk_index < 0:
            raise InvalidInput(f"chunk_index must be a non-negative integer: {row.chunk_index!r}")
        key = f"{int(row.chunk_index)}\x00{row.source}"
        if key in self.seen:
            raise InvalidInput(
                f"row {number} repeats source {row.source!r} with chunk_index "
                f"{row.chunk_index}; each (source, chunk_index) names one chunk"
            )
        return key

    def _fast(self, rows: Sequence[Row], added: list[str]) -> _Part | None:
        names: list[str] = []
        sources: list[bytes] = []
        indexes: list[int] = []
        titles: list[bytes] = []
        contents: list[bytes] = []
        metas: list[bytes] = []
        hashes: list[bytes] = []
        stamps: list[datetime | None] = []
        for number, row in enumerate(rows, self.count):
            key = self._key(number, row)
            self.seen.add(key)
            added.append(key)
            source = _text(row.source)
            names.append(source)
            sources.append(source.encode())
            indexes.append(row.chunk_index)
            titles.append(_text(row.title).encode())
            content = _text(row.content).encode()
            contents.append(content)
            # The same hex SHA-256 as content_hash(), from the bytes encoded once.
            hashes.append(hashlib.sha256(content).hexdigest().encode())
            metas.append(_metadata(dict(row.metadata)))
            stamps.append(row.created_at)
        matrix = _matrix([row.embedding for row in rows], self.dimension)
        if matrix is None:
            return None
        fields = copy.Encoded(sources, indexes, titles, contents, metas, hashes, stamps)
        return _Part(names, indexes, fields, matrix)

    def _exact(self, rows: Sequence[Row]) -> _Part:
        chunks: list[ChunkRow] = []
        vectors: list[np.ndarray] = []
        for number, row in enumerate(rows, self.count):
            self.seen.add(self._key(number, row))
            content = clean_text(row.content)[0]
            vectors.append(check_vector(row.embedding, dimension=self.dimension))
            chunks.append(
                ChunkRow(
                    source=clean_text(row.source)[0],
                    chunk_index=row.chunk_index,
                    title=clean_text(row.title)[0],
                    content=content,
                    metadata=clean_json(dict(row.metadata)),
                    content_hash=content_hash(content),
                    created_at=row.created_at,
                )
            )
        return _Part(
            [c.source for c in chunks],
            [c.chunk_index for c in chunks],
            copy.as_fields(chunks),
            np.stack(vectors),
        )

    def part(self, rows: Sequence[Row]) -> _Part:
        """Check and clean the next rows of the input, or raise the first bad row's error."""
        added: list[str] = []
        try:
            part = self._fast(rows, added)
        except Exception:
            part = None
        if part is None:
            self.seen.difference_update(added)
            part = self._exact(rows)
        self.count += len(rows)
        return part

    async def prepare_async(self, batch: Sequence[Row]) -> _Prepared:
        """Return a batch's keys and COPY streams, yielding to the event loop between slices.

        The batch before it is being written meanwhile, on this loop: between slices the loop
        feeds that COPY, so the database never waits on this Python work, and no second
        thread competes for the interpreter.
        """
        sources: list[str] = []
        indexes: list[int] = []
        streams = copy.Streams(self.collection_id)
        for start in range(0, len(batch), _SLICE):
            part = self.part(batch[start : start + _SLICE])
            sources += part.sources
            indexes += part.indexes
            streams.add(part.fields, part.vectors)
            await asyncio.sleep(0)
        return _Prepared(sources, indexes, streams.segments())


async def _copy_started(task: asyncio.Task[int], copying: asyncio.Event) -> None:
    """Wait until the batch being written has started its COPY, or has ended (or failed)."""
    started = asyncio.ensure_future(copying.wait())
    try:
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        started.cancel()


def _take(rows: Iterator[Row], size: int) -> tuple[list[Row], Exception | None]:
    """Return up to `size` rows, and the error that stopped the iteration early, if any."""
    batch: list[Row] = []
    try:
        for row in rows:
            batch.append(row)
            if len(batch) >= size:
                break
    except Exception as exc:
        return batch, exc
    return batch, None


async def write_rows(
    db: Database,
    collection: str,
    rows: Iterable[Row],
    *,
    batch_size: int = WRITE_BATCH_SIZE,
    defer_index: bool | None = None,
) -> int:
    """Store rows that already carry embeddings, in atomic COPY batches; return rows written.

    Text is cleaned (NUL bytes dropped), every vector checked against the collection's
    dimension, and rows already stored unchanged are left alone. Nothing is embedded. A large
    load into an empty collection builds its HNSW index once at the end (see
    kb.ingest.indexing); `defer_index` forces that choice either way.
    """
    if not 1 <= batch_size <= 100_000:
        raise InvalidInput("batch size must be from 1 to 100000")
    with translating(db.url):
        async with db.session() as s:
            coll = await get_collection(s, collection)
            collection_id, dimension, metric = coll.id, coll.dimension, coll.metric
        await indexing.drop_leftover(db, collection_id)
        if defer_index is None:
            defer_index = isinstance(rows, Sized) and len(rows) >= indexing.DEFER_MIN_CHUNKS
        if defer_index and await indexing.collection_is_empty(db, collection_id):
            await indexing.drop_for_load(db, collection_id)

        inserted = 0

        async def flush(prepared: _Prepared, copying: asyncio.Event) -> int:
            nonlocal inserted
            async with db.session() as s:
                result = await _write(
                    s,
                    collection_id,
                    prepared.sources,
                    prepared.indexes,
                    prepared.streams,
                    {},
                    copying,
                )
            inserted += len(result.inserted)
            return len(result.inserted) + len(result.updated)

        preparer = _Preparer(collection_id, dimension)
        source = iter(rows)
        written = 0
        # Batch N is written while batch N+1 is prepared; N commits before N+1 starts.
        pending: asyncio.Task[int] | None = None
        copying = asyncio.Event()
        try:
            while True:
                batch, stopped = _take(source, batch_size)
                if pending is not None:
                    # Its statements before the COPY would wait on the preparation's turns.
                    await _copy_started(pending, copying)
                try:
                    prepared = await preparer.prepare_async(batch) if batch else None
                    if stopped is not None:
                        raise stopped
                except Exception:
                    if pending is not None:
                        # The batch before the bad row commits, as it would have without
                        # the overlap; if it fails, its error is the one to report.
                        task, pending = pending, None
                        written += await task
                    raise
                if pending is not None:
                    task, pending = pending, None
                    written += await task
                if prepared is None:
                    break
                copying = asyncio.Event()
                pending = asyncio.create_task(flush(prepared, copying))
        finally:
            if pending is not None:
                pending.cancel()
                with suppress(BaseException):
                    await pending

        async def keep_up(indexed: bool) -> None:
            # After the rows are written: a failed step is logged, never the call's error.
            done = await upkeep.after_write(db, collection_id, indexed=indexed, added=inserted)
            for problem in done:
                log.warning("collection %s: %s", collection, problem)

        try:
            await indexing.ensure_index(db, collection_id, dimension, metric)
        except Exception:
            await keep_up(indexed=False)  # the rows are stored: the build's error is the call's
            raise
        await keep_up(indexed=True)
    return written
