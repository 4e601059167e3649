"""Scenario 6b: searches right after a write, its GIN index entries pending vs merged.

PostgreSQL queues a GIN index's new entries in a pending list that every search through the
index reads in full; kb's writes merge it when they finish (kb.ingest.upkeep). This writes the
1 % collection's rows again, into a collection of their own, the way any writer but kb leaves
them (raw COPY), times rare-word full-text and hybrid searches of the main collection with
the entries pending, then after kb's merge, and removes the rows.
"""

from __future__ import annotations

import time
from typing import Any

import kb
from bench import baselines, data, kbpaths, search
from bench.context import Context
from bench.pg import raw_connect
from bench.tiers import K
from kb.ingest import upkeep

TERMS = 10
MODES = ("text", "hybrid")
SCRATCH = "pending_write"


def _fns(searches: dict[str, kbpaths.Search]) -> dict[str, Any]:
    """Each mode as a query function of (word, vector), for bench.search.measure."""

    async def text(item: tuple[str, Any]) -> Any:
        return await searches["text"].run(None, item[0])

    async def hybrid(item: tuple[str, Any]) -> Any:
        return await searches["hybrid"].run(item[1], item[0])

    return {"text": text, "hybrid": hybrid}


async def _measure(ctx: Context, fns: dict[str, Any], items: list[Any]) -> dict[str, Any]:
    out = await search.measure(fns, items, ctx.tier.repeats, None)
    out.pop("_found")
    return out


async def run(ctx: Context) -> dict[str, Any]:
    """Time rare-word searches with a write's GIN entries pending, then merged by kb."""
    ds = ctx.main_ds
    rare = data.pick_terms(ds.document_frequency(), ctx.words, len(ds), TERMS)["rare"]
    if not rare:
        return {"error": "no rare term in the generated text"}
    items = [(word, ctx.queries[i % len(ctx.queries)]) for i, (word, _) in enumerate(rare)]
    fns = _fns({mode: kbpaths.Search(ctx.kb_db, "main", k=K, mode=mode) for mode in MODES})
    written = ctx.by_collection[min(ctx.by_collection, key=lambda s: abs(s - 0.01))]
    out: dict[str, Any] = {"terms": [w for w, _ in rare], "rows_written": len(written)}
    out["before"] = await _measure(ctx, fns, items)
    cid = await kbpaths.create_collection(ctx.kb_db, SCRATCH, written.dim, "hashing")
    conn = await raw_connect(ctx.url)
    try:
        await conn.copy_records_to_table(
            "documents",
            records=baselines.copy_records(written, cid),
            columns=baselines.COPY_COLUMNS,
        )
        out["pending"] = await _measure(ctx, fns, items)
        start = time.perf_counter()
        out["pages_merged"] = await upkeep.merge_pending(ctx.kb_db)
        out["merge_s"] = round(time.perf_counter() - start, 3)
        out["merged"] = await _measure(ctx, fns, items)
    finally:
        async with ctx.kb_db.session() as s:
            await kb.delete_collection(s, SCRATCH)
        # The later scenarios find the table as the load left it.
        await conn.execute("VACUUM documents")
        await conn.close()
    ctx.log(
        f"pending: {len(written)} rows, {out['pages_merged']} pages merged in "
        f"{out['merge_s']:.2f}s; hybrid rare {out['pending']['hybrid']['p50_ms']:.1f}ms pending, "
        f"{out['merged']['hybrid']['p50_ms']:.1f}ms merged"
    )
    return out
