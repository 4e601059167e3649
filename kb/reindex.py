"""Rebuild a collection's HNSW index, optionally as a denser graph, without stopping searches.

How many of the true neighbours a graph search finds at a given ef_search depends on how the
graph was built: `m` links per node and `ef_construction` candidates weighed per insert
(pgvector's defaults: 16 and 64). On a large collection the defaults can leave recall short
of the target even at ef_search 1,000 (kb.calibration says so); a denser graph closes the
gap for a slower build and a bigger index. The new index is built next to the old one with
CREATE INDEX CONCURRENTLY (searches and ingests go on, using the old one), then swapped in
by one short transaction that also records the parameters in the collection's settings, so
every later build of the index (after a bulk load, or a repair) keeps them. The collection's
ef_search is measured again on the new graph.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import suppress
from dataclasses import dataclass

import asyncpg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from kb import calibration, indexes, refs
from kb.browse import resolve_collection
from kb.calibration import Calibration
from kb.database import Database
from kb.db import translating
from kb.errors import DatabaseBusy, InvalidInput, ReadOnlyError
from kb.ingest.indexing import build_memory, rebuild_locked
from kb.statements import fetch_all

# DROP INDEX needs the table to itself, and new searches queue behind it while it waits: it
# waits a second at a time for the statements holding the table, up to SWAP_ATTEMPTS times.
SWAP_LOCK_TIMEOUT = "1s"
SWAP_ATTEMPTS = 30


@dataclass(frozen=True, slots=True)
class IndexRebuild:
    """What `rebuild_index` did: the graph before and after, the time, the new ef_search."""

    collection: str
    documents: int
    before: indexes.GraphParams
    after: indexes.GraphParams
    build_seconds: float
    index_bytes: int
    calibration: Calibration | None


async def rebuild_index(
    db: Database,
    collection: str,
    *,
    m: int | None = None,
    ef_construction: int | None = None,
    recalibrate: bool = True,
) -> IndexRebuild:
    """Rebuild a collection's HNSW index concurrently with the given graph parameters."""
    if db.settings.read_only:
        raise ReadOnlyError("kb is in read-only mode (KB_READ_ONLY); rebuilding an index writes.")
    async with db.session() as s:
        coll = await resolve_collection(s, collection)
        rows = await fetch_all(
            s,
            "SELECT settings, (SELECT count(*) FROM documents WHERE collection_id = :c) AS n "
            "FROM collections WHERE id = :c",
            {"c": coll.id},
        )
    settings = dict(rows[0]["settings"] or {})
    documents = int(rows[0]["n"])
    if not indexes.is_indexable(coll.dimension):
        raise InvalidInput(
            f"Collection {coll.name!r} has {coll.dimension}-dimensional vectors, which no HNSW "
            "index covers: its searches are exact."
        )
    before = indexes.graph_params(settings)
    after = before.changed(m=m, ef_construction=ef_construction)
    start = time.perf_counter()
    with translating(db.url):
        await _rebuild(db, coll.id, coll.dimension, coll.metric, after)
    build_seconds = time.perf_counter() - start
    async with db.session() as s:
        size = await s.scalar(
            text("SELECT pg_relation_size(to_regclass(:n))"),
            {"n": indexes.index_name(coll.id)},
        )
        refs.forget(s, [coll.name])
    # The swap dropped the old graph's measurement: measure the new one if there was one, or
    # if an ingest would now (an ef_search set by hand stays the user's choice).
    measured_before = isinstance(settings.get("calibration"), dict)
    left = {k: v for k, v in settings.items() if k != "calibration"}
    if measured_before:
        left.pop("ef_search", None)
    measured = None
    if (
        recalibrate
        and documents > calibration.K
        and (measured_before or calibration.needs_calibration(left, documents))
    ):
        async with db.session() as s:
            measured = await calibration.calibrate(s, coll.name)
    return IndexRebuild(
        collection=coll.name,
        documents=documents,
        before=before,
        after=after,
        build_seconds=build_seconds,
        index_bytes=int(size or 0),
        calibration=measured,
    )


async def _rebuild(
    db: Database, collection_id: int, dimension: int, metric: str, params: indexes.GraphParams
) -> None:
    name = indexes.next_index_name(collection_id)
    sql = indexes.create_index_sql(
        collection_id, dimension, metric, params=params, name=name, concurrently=True
    )
    async with rebuild_locked(db, collection_id) as auto:
        # A second rebuild would drop this one's index.
        if auto is None:
            raise DatabaseBusy("An index rebuild of this collection is already running.")
        await auto.execute(text("SET statement_timeout = 0"))
        await auto.execute(text(f"SET maintenance_work_mem = '{build_memory(db)}'"))
        # Left by a rebuild that was interrupted.
        await auto.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
        try:
            await auto.execute(text(sql))
            await _swap(db, collection_id, params)
        except BaseException:
            with suppress(Exception):
                await auto.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
            raise


async def _swap(db: Database, collection_id: int, params: indexes.GraphParams) -> None:
    old, new = indexes.index_name(collection_id), indexes.next_index_name(collection_id)
    for attempt in range(SWAP_ATTEMPTS):
        try:
            async with db.session() as s:
                # Wait briefly for running statements, never queue every new search behind a
                # long one.
                await s.execute(text(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'"))
                await s.execute(text(f"DROP INDEX IF EXISTS {old}"))
                await s.execute(text(f"ALTER INDEX {new} RENAME TO {old}"))
                await s.execute(
                    text(
                        "UPDATE collections SET settings = coalesce(settings, '{}'::jsonb) "
                        "- 'calibration' - CASE WHEN settings ? 'calibration' "
                        "THEN 'ef_search' ELSE '' END "
                        "|| jsonb_build_object('index', CAST(:p AS jsonb)) WHERE id = :c"
                    ),
                    {"p": json.dumps(params.as_settings()), "c": collection_id},
                )
            return
        except DBAPIError as exc:
            if not _lock_timeout(exc):
                raise
            if attempt == SWAP_ATTEMPTS - 1:
                raise DatabaseBusy(
                    "Searches or an ingest kept the documents table busy, so the rebuilt index "
                    "was not swapped in; the collection keeps its old index. Try again."
                ) from exc
            await asyncio.sleep(0.5)


def _lock_timeout(exc: DBAPIError) -> bool:
    orig = exc.orig
    return any(
        isinstance(e, asyncpg.exceptions.LockNotAvailableError)
        for e in (orig, getattr(orig, "__cause__", None))
    )
