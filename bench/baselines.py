"""What apps do without kb: raw asyncpg COPY BINARY (the upper bound) and SQLAlchemy ORM add_all.

Both write the same rows into kb's own `documents` table (so the generated tsvector, the GIN
and btree indexes cost them what they cost kb), then build the same HNSW index kb builds.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import numpy as np
from pgvector.sqlalchemy import Vector
from sqlalchemy import DateTime, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bench.data import Dataset
from bench.pg import raw_connect
from bench.tiers import LOCAL_MODEL
from kb.indexes import create_index_sql

COPY_COLUMNS = (
    "id",
    "collection_id",
    "title",
    "source",
    "chunk_index",
    "content",
    "metadata",
    "content_hash",
    "embedding",
    "created_at",
)
# The raw baseline builds its index as a tuned app would: the whole graph in memory.
RAW_INDEX_SETTINGS = ("SET maintenance_work_mem = '1GB'",)


async def create_collection_row(
    conn: asyncpg.Connection, name: str, dim: int, *, embedder: str = "hashing"
) -> int:
    """Insert a collection row without kb (and so without an index); return its id."""
    model = f"feature-hashing-{dim}" if embedder == "hashing" else LOCAL_MODEL
    cid = await conn.fetchval(
        "INSERT INTO collections (name, embedder, model, dimension, metric) "
        "VALUES ($1, $2, $3, $4, 'cosine') RETURNING id",
        name,
        embedder,
        model,
        dim,
    )
    return int(cid)


def copy_records(ds: Dataset, collection_id: int) -> list[tuple[Any, ...]]:
    """Return the dataset as COPY records in COPY_COLUMNS order."""
    hashes = ds.hashes
    metas = ds.meta_json
    return [
        (
            uuid.uuid4(),
            collection_id,
            ds.titles[i],
            ds.source(i),
            ds.chunk_index(i),
            ds.contents[i],
            metas[i],
            hashes[i],
            ds.vectors[i],
            ds.created_at[i],
        )
        for i in range(len(ds))
    ]


async def build_index(conn: asyncpg.Connection, collection_id: int, dim: int) -> float:
    """Build the collection's HNSW index exactly as kb defines it; return the seconds taken."""
    for statement in RAW_INDEX_SETTINGS:
        await conn.execute(statement)
    start = time.perf_counter()
    await conn.execute(create_index_sql(collection_id, dim, "cosine"))
    return time.perf_counter() - start


async def raw_copy_ingest(url: URL, ds: Dataset, name: str) -> dict[str, float]:
    """COPY BINARY every row in one statement, then build the index; return the timings."""
    conn = await raw_connect(url)
    try:
        cid = await create_collection_row(conn, name, ds.dim)
        start = time.perf_counter()
        # The hashes count as ingest work: kb computes them too.
        ds.__dict__.pop("hashes", None)
        records = copy_records(ds, cid)
        await conn.copy_records_to_table("documents", records=records, columns=COPY_COLUMNS)
        load = time.perf_counter() - start
        index = await build_index(conn, cid, ds.dim)
    finally:
        await conn.close()
    return {"rows": len(ds), "load_s": load, "index_s": index, "searchable_s": load + index}


_MODELS: dict[int, type[Any]] = {}


def orm_model(dim: int) -> type[Any]:
    """Return a plain declarative model on kb's documents table with the stock pgvector type."""
    if dim not in _MODELS:
        _MODELS[dim] = _define(dim)
    return _MODELS[dim]


def _define(dim: int) -> type[Any]:
    class Registry(DeclarativeBase):
        pass

    class OrmDocument(Registry):
        __tablename__ = "documents"
        __table_args__ = {"extend_existing": True}  # noqa: RUF012

        id: Mapped[uuid.UUID] = mapped_column(
            UUID(as_uuid=True), primary_key=True, default=uuid.uuid4
        )
        collection_id: Mapped[int] = mapped_column(Integer)
        title: Mapped[str] = mapped_column(Text)
        source: Mapped[str] = mapped_column(Text)
        chunk_index: Mapped[int] = mapped_column(Integer)
        content: Mapped[str] = mapped_column(Text)
        meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB)
        content_hash: Mapped[str] = mapped_column(String(64))
        embedding: Mapped[np.ndarray] = mapped_column(Vector(dim))
        created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    return OrmDocument


async def orm_ingest(url: URL, ds: Dataset, name: str) -> dict[str, float]:
    """session.add_all one object per row and commit once, then build the index."""
    conn = await raw_connect(url, vector_codec=False)
    try:
        cid = await create_collection_row(conn, name, ds.dim)
    finally:
        await conn.close()
    model = orm_model(ds.dim)
    engine = create_async_engine(url)
    try:
        start = time.perf_counter()
        ds.__dict__.pop("hashes", None)
        hashes = ds.hashes
        async with AsyncSession(engine) as session:
            session.add_all(
                [
                    model(
                        collection_id=cid,
                        title=ds.titles[i],
                        source=ds.source(i),
                        chunk_index=ds.chunk_index(i),
                        content=ds.contents[i],
                        meta=ds.metas[i],
                        content_hash=hashes[i],
                        embedding=ds.vectors[i],
                        created_at=ds.created_at[i],
                    )
                    for i in range(len(ds))
                ]
            )
            await session.commit()
        load = time.perf_counter() - start
    finally:
        await engine.dispose()
    conn = await raw_connect(url, vector_codec=False)
    try:
        index = await build_index(conn, cid, ds.dim)
    finally:
        await conn.close()
    return {"rows": len(ds), "load_s": load, "index_s": index, "searchable_s": load + index}
