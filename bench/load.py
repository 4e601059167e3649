"""Load the searched database: the main collection and the collections of each selectivity."""

from __future__ import annotations

import time
from typing import Any

import kb
from bench import baselines, kbpaths
from bench.context import Context
from bench.data import Dataset
from bench.pg import raw_connect, settings_for
from kb import indexes
from kb.ingest import indexing


async def copy_load(db: kb.Database, ds: Dataset, name: str, embedder: str) -> dict[str, Any]:
    """A kb collection, its index dropped, raw COPY (keeping the generated created_at), then
    kb's own index build.

    The fallback for a kb without a bulk row writer.
    """
    cid = await kbpaths.create_collection(db, name, ds.dim, embedder)
    conn = await raw_connect(db.url)
    try:
        await conn.execute(f"DROP INDEX IF EXISTS {indexes.index_name(cid)}")
        start = time.perf_counter()
        await conn.copy_records_to_table(
            "documents", records=baselines.copy_records(ds, cid), columns=baselines.COPY_COLUMNS
        )
        load = time.perf_counter() - start
    finally:
        await conn.close()
    start = time.perf_counter()
    await indexing.ensure_index(db, cid, ds.dim, "cosine")
    index = time.perf_counter() - start
    return {
        "rows": len(ds),
        "load_s": load,
        "index_s": index,
        "searchable_s": load + index,
        "path": "raw COPY, then kb's index build",
    }


async def load_dataset(
    ctx: Context, ds: Dataset, name: str, *, embedder: str = "hashing", via: str = "write_rows"
) -> dict[str, Any]:
    """Load one dataset through kb (write_rows or ingest_documents), else by COPY."""
    db = ctx.kb_db
    timing: dict[str, Any]
    if via == "ingest_documents":
        timing = await kbpaths.kb_ingest_documents(db, ds, name, embedder=embedder)
    elif kbpaths.ingest_api() is not None:
        timing = await kbpaths.kb_write_rows(db, ds, name, embedder=embedder)
    else:
        return await copy_load(db, ds, name, embedder)
    timing["path"] = f"kb {via}"
    return timing


async def load_main(ctx: Context) -> dict[str, Any]:
    """Create the main database and load every synthetic collection into it."""
    ctx.url = await ctx.dbs.create("main")
    ctx.db = await kb.connect(settings_for(ctx.url), url=ctx.url, upgrade=False)
    out: dict[str, Any] = {}
    out["main"] = await load_dataset(ctx, ctx.main_ds, "main")
    ctx.log(f"loaded main ({len(ctx.main_ds)} rows) in {out['main']['searchable_s']:.1f}s")
    for ds in ctx.by_collection.values():
        out[ds.name] = await load_dataset(ctx, ds, ds.name)
    conn = await raw_connect(ctx.url)
    try:
        start = time.perf_counter()
        # What autovacuum does within a minute of a load this size (a fifth of the table new):
        # done here, it cannot start in the middle of a timed scenario.
        await conn.execute("VACUUM ANALYZE documents")
        out["vacuum_analyze_s"] = time.perf_counter() - start
        ctx.shared["seq"] = {
            name: await kbpaths.seq_map(conn, name)
            for name in ["main", *(d.name for d in ctx.by_collection.values())]
        }
        ctx.shared["collection_ids"] = {
            r["name"]: int(r["id"]) for r in await conn.fetch("SELECT id, name FROM collections")
        }
    finally:
        await conn.close()
    ctx.log("main database ready")
    return out
