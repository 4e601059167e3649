"""Scenario 5: kb keyset paging vs OFFSET, at several depths and on the last page."""

from __future__ import annotations

import uuid
from typing import Any

from bench import kbpaths, timing
from bench.context import Context
from bench.pg import raw_connect
from kb.browse import DOC_COLUMNS

PASSES_PER_DEPTH = 20


async def run(ctx: Context) -> dict[str, Any]:
    """Time one page at each depth through kb (cursor) and through OFFSET; check they agree."""
    t = ctx.tier
    n = len(ctx.main_ds)
    size = t.page_size
    depths = sorted({d for d in t.browse_depths if d < n - size} | {n - size})
    cid = ctx.shared["collection_ids"]["main"]
    conn = await raw_connect(ctx.url)  # type: ignore[arg-type]
    out: dict[str, Any] = {"page_size": size, "rows": n, "depths": {}}
    columns = DOC_COLUMNS
    offset_sql = (
        f"SELECT {columns} FROM documents d WHERE d.collection_id = {int(cid)} "  # noqa: S608
        f"ORDER BY d.created_at DESC, d.id DESC OFFSET $1 LIMIT {int(size)}"
    )
    try:
        for depth in depths:
            cursor = None
            if depth > 0:
                before = await conn.fetchrow(
                    "SELECT d.created_at, d.id FROM documents d "  # noqa: S608
                    f"WHERE d.collection_id = {int(cid)} "
                    "ORDER BY d.created_at DESC, d.id DESC OFFSET $1 LIMIT 1",
                    depth - 1,
                )
                cursor = kbpaths.cursor_at(
                    cid, before["created_at"], uuid.UUID(int=before["id"].int)
                )

            async def kb_page(_: int, cursor: str | None = cursor) -> list[uuid.UUID]:
                page = await kbpaths.kb_page(ctx.kb_db, "main", size, cursor)
                return [item.id for item in page]

            async def offset_page(_: int, depth: int = depth) -> list[uuid.UUID]:
                rows = await conn.fetch(offset_sql, depth)
                return [uuid.UUID(int=r["id"].int) for r in rows]

            # Warm-up, then interleaved passes.
            for fn in (kb_page, offset_page):
                for _ in range(3):
                    await fn(0)
            kb_passes, off_passes = [], []
            kb_ids: list[uuid.UUID] = []
            off_ids: list[uuid.UUID] = []
            for _ in range(t.repeats):
                lat, res = await timing.time_each(kb_page, list(range(PASSES_PER_DEPTH)))
                kb_passes.append(timing.summary(lat))
                kb_ids = res[0]
                lat, res = await timing.time_each(offset_page, list(range(PASSES_PER_DEPTH)))
                off_passes.append(timing.summary(lat))
                off_ids = res[0]
            out["depths"][str(depth)] = {
                "last_page": depth == n - size,
                "kb keyset": {**timing.median_of_passes(kb_passes), "rows": len(kb_ids)},
                "OFFSET": {**timing.median_of_passes(off_passes), "rows": len(off_ids)},
                "same_rows": kb_ids == off_ids,
            }
            ctx.log(
                f"browse depth {depth}: kb {out['depths'][str(depth)]['kb keyset']['p50_ms']:.2f}ms"
                f" offset {out['depths'][str(depth)]['OFFSET']['p50_ms']:.2f}ms"
            )
    finally:
        await conn.close()
    return out
