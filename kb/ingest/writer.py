"""The database side of an ingest: what is stored already, and the atomic COPY batch writer.

A batch is written in one transaction: the collection's advisory write lock (so concurrent
ingests into one collection write one batch at a time and never deadlock on each other's
rows; they still read and embed in parallel), a binary COPY into a temporary staging table
(the stream built by kb.ingest.copy, vectors in pgvector's binary format, so no codec is ever
registered on a pooled connection), one INSERT ... SELECT ... ON CONFLICT into `documents`,
and the removal of chunks past the new end of sources that shrank.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from kb.collections import get_collection
from kb.database import Database
from kb.db import translating
from kb.errors import InvalidInput
from kb.ingest import copy, indexing
from kb.ingest.cleaning import clean_json, clean_text
from kb.models import check_vector, content_hash

STAGE_TABLE = "kb_ingest_stage"

_CREATE_STAGE = f"""
CREATE TEMP TABLE {STAGE_TABLE} (
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
WHERE d.collection_id = :collection_id AND d.source = t.source AND d.chunk_index >= t.n
RETURNING d.source
"""
)

# Advisory locks are (namespace, collection id); any fixed number marks kb's ingest writes.
LOCK_NAMESPACE = 7_428_502
_LOCK = text("SELECT pg_advisory_xact_lock(:namespace, :collection_id)")

_EXISTING = text(
    """
SELECT d.source, d.chunk_index, d.content_hash, d.title, d.metadata
FROM unnest(CAST(:sources AS text[]), CAST(:indexes AS integer[])) AS k(source, chunk_index)
JOIN documents AS d
  ON d.collection_id = :collection_id
 AND d.source = k.source
 AND d.chunk_index = k.chunk_index
"""
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
    # The first statement through SQLAlchemy also opens the transaction the COPY joins.
    await session.execute(_LOCK, {"namespace": LOCK_NAMESPACE, "collection_id": collection_id})
    inserted: set[tuple[str, int]] = set()
    updated: set[tuple[str, int]] = set()
    if rows:
        conn = await session.connection()
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        if driver is None or not driver.is_in_transaction():
            raise RuntimeError("the batch writer needs an open transaction")
        await driver.execute(_CREATE_STAGE)
        await driver.copy_to_table(
            STAGE_TABLE,
            source=memoryview(copy.payload(rows, vectors)),
            columns=copy.COLUMNS,
            format="binary",
        )
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
    return WriteResult(frozenset(inserted), frozenset(updated), removed)


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


async def write_rows(
    db: Database,
    collection: str,
    rows: Iterable[Row],
    *,
    batch_size: int = 5000,
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
        if defer_index is None:
            defer_index = isinstance(rows, Sized) and len(rows) >= indexing.DEFER_MIN_CHUNKS
        if defer_index and await indexing.collection_is_empty(db, collection_id):
            await indexing.drop_for_load(db, collection_id)

        async def flush(chunks: list[ChunkRow], vectors: list[np.ndarray]) -> int:
            async with db.session() as s:
                result = await write_batch(s, collection_id, chunks, np.stack(vectors), {})
            return len(result.inserted) + len(result.updated)

        written = 0
        chunks: list[ChunkRow] = []
        vectors: list[np.ndarray] = []
        seen: set[tuple[str, int]] = set()
        for number, row in enumerate(rows):
            if not isinstance(row.source, str) or not row.source:
                raise InvalidInput("every row needs a source (the key of its chunks)")
            if not isinstance(row.chunk_index, int) or row.chunk_index < 0:
                raise InvalidInput(
                    f"chunk_index must be a non-negative integer: {row.chunk_index!r}"
                )
            key = (row.source, row.chunk_index)
            if key in seen:
                raise InvalidInput(
                    f"row {number} repeats source {row.source!r} with chunk_index "
                    f"{row.chunk_index}; each (source, chunk_index) names one chunk"
                )
            seen.add(key)
            content = clean_text(row.content)[0]
            vectors.append(check_vector(row.embedding, dimension=dimension))
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
            if len(chunks) >= batch_size:
                written += await flush(chunks, vectors)
                chunks, vectors = [], []
        if chunks:
            written += await flush(chunks, vectors)
        await indexing.ensure_index(db, collection_id, dimension, metric)
    return written
