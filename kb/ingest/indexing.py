"""The collection's HNSW index around a bulk load.

Every row inserted into a collection with an HNSW index pays an index insert (measured here:
~330 rows/s with the index, ~2,700 rows/s without it plus ~12 s to build it for 20k x 384).
A large load into an EMPTY collection is therefore faster without the index, built once at
the end. Dropping and re-creating an index inside a batch transaction would lock out every
reader of `documents`, so instead: the index is dropped up front only while the collection is
empty (nothing to search yet, a lock timeout keeps it from queueing behind readers), and
rebuilt at the end with CREATE INDEX CONCURRENTLY, which blocks neither readers nor writers.
Searches during the load stay correct (exact scans). Every ingest ends by making sure the
index exists and is valid, so one that died before rebuilding it is repaired by the next.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from kb import indexes
from kb.database import Database
from kb.errors import KBError

log = logging.getLogger(__name__)

# Below this many chunks the incremental inserts cost a few seconds: not worth the rebuild.
DEFER_MIN_CHUNKS = 2000
# Building the graph in memory is much faster than spilling to disk (1M x 384 needs ~2.5 GB):
# the most kb asks of a server it does not own.
BUILD_MEMORY = "1GB"


def embedded_build_memory() -> str:
    """Return the build memory on the embedded server: a quarter of the memory, 1-8 GB."""
    total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return f"{max(1024, min(8192, total_mb // 4))}MB"


def build_memory(db: Database) -> str:
    """Return the maintenance_work_mem an index build of `db` runs with."""
    if db.settings.index_build_memory:
        return db.settings.index_build_memory
    return embedded_build_memory() if db.embedded else BUILD_MEMORY


async def collection_is_empty(db: Database, collection_id: int) -> bool:
    """Tell whether a collection holds no documents."""
    async with db.session() as s:
        found = await s.scalar(
            text("SELECT EXISTS (SELECT 1 FROM documents WHERE collection_id = :c)"),
            {"c": collection_id},
        )
    return not found


async def drop_for_load(db: Database, collection_id: int) -> bool:
    """Drop an empty collection's index before a bulk load; return whether it was dropped."""
    try:
        async with db.session() as s:
            await s.execute(text("SET LOCAL lock_timeout = '2s'"))
            busy = await s.scalar(
                text("SELECT EXISTS (SELECT 1 FROM documents WHERE collection_id = :c)"),
                {"c": collection_id},
            )
            if busy:
                return False
            await indexes.drop_index(s, collection_id)
    except (KBError, DBAPIError):
        # Readers hold the table: keep the index and pay the incremental inserts instead.
        return False
    return True


@asynccontextmanager
async def rebuild_locked(db: Database, collection_id: int) -> AsyncIterator[AsyncConnection | None]:
    """Yield an autocommit connection holding the collection's rebuild lock, or None if taken.

    One rebuild per collection at a time, from its build to its swap (kb.reindex). The lock is
    the connection's, which is closed at the end rather than pooled, so neither the lock nor
    the connection's settings outlive the block.
    """
    async with db.engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        try:
            locked = await auto.scalar(
                text("SELECT pg_try_advisory_lock(hashtext(:k), :c)"),
                {"k": indexes.REBUILD_LOCK, "c": collection_id},
            )
            yield auto if locked else None
        finally:
            with suppress(Exception):
                await conn.invalidate()


async def drop_leftover(db: Database, collection_id: int) -> bool:
    """Drop the half-built index of a rebuild that died; return whether there was one.

    A rebuild killed before its swap (kb.reindex) leaves its new index behind, valid or not,
    and PostgreSQL keeps inserting every new row into it: an ingest would pay two HNSW inserts
    per row. It is dropped unless a rebuild holds the collection's lock (still at work). The
    drop waits for transactions on the table: when they outlast a short timeout the index is
    left for the next ingest, and this one goes on (it costs speed, not correctness).
    """
    if db.settings.read_only:
        return False
    name = indexes.next_index_name(collection_id)
    async with db.session() as s:
        if await s.scalar(text("SELECT to_regclass(:n)"), {"n": name}) is None:
            return False
    try:
        async with rebuild_locked(db, collection_id) as auto:
            if auto is None:
                return False
            await auto.execute(text("SET lock_timeout = '2s'"))
            await auto.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
    except DBAPIError as exc:
        log.warning("could not drop the leftover index %s: %s", name, exc)
        return False
    return True


async def index_state(db: Database, collection_id: int) -> bool | None:
    """Return True if the index exists and is valid, False if invalid, None if missing."""
    async with db.session() as s:
        valid = await s.scalar(
            text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
            {"name": indexes.index_name(collection_id)},
        )
    return None if valid is None else bool(valid)


async def stored_params(db: Database, collection_id: int) -> indexes.GraphParams:
    """Return the graph parameters kept in a collection's settings."""
    async with db.session() as s:
        settings = await s.scalar(
            text("SELECT settings FROM collections WHERE id = :c"), {"c": collection_id}
        )
    return indexes.graph_params(settings)


async def ensure_index(db: Database, collection_id: int, dimension: int, metric: str) -> bool:
    """Build the collection's index concurrently if it is missing or invalid; return if built."""
    if not indexes.is_indexable(dimension):
        return False
    state = await index_state(db, collection_id)
    if state is True:
        return False
    name = indexes.index_name(collection_id)
    sql = indexes.create_index_sql(
        collection_id,
        dimension,
        metric,
        params=await stored_params(db, collection_id),
        concurrently=True,
    )
    async with db.engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        try:
            # A build on a big collection outlasts the per-statement timeout.
            await auto.execute(text("SET statement_timeout = 0"))
            await auto.execute(text(f"SET maintenance_work_mem = '{build_memory(db)}'"))
            if state is False:
                # Left by a build that was interrupted: it would block IF NOT EXISTS.
                await auto.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
            await auto.execute(text(sql))
        finally:
            with suppress(Exception):
                await auto.execute(text("RESET statement_timeout"))
                await auto.execute(text("RESET maintenance_work_mem"))
    return True
