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
        cursors: dict[int, str | None] = {}
        for depth in depths:
            cursors[depth] = None
            if depth > 0:
                before = await conn.fetchrow(
                    "SELECT d.created_at, d.id FROM documents d "  # noqa: S608
                    f"WHERE d.collection_id = {int(cid)} "
                    "ORDER BY d.created_at DESC, d.id DESC OFFSET $1 LIMIT 1",
                    depth - 1,
                )
                cursors[depth] = kbpaths.cursor_at(
                    cid, before["created_at"], uuid.UUID(int=before["id"].int)
                )

        def kb_page(depth: int) -> Any:
            async def page(_: int) -> list[uuid.UUID]:
                found = await kbpaths.kb_page(ctx.kb_db, "main", size, cursors[depth])
                return [item.id for item in found]

            return page

        def offset_page(depth: int) -> Any:
            async def page(_: int) -> list[uuid.UUID]:
                rows = await conn.fetch(offset_sql, depth)
                return [uuid.UUID(int=r["id"].int) for r in rows]

            return page

        for depth in depths:
            for fn in (kb_page(depth), offset_page(depth)):
                for _ in range(3):
                    await fn(0)
        kb_passes: dict[int, list[dict[str, float]]] = {d: [] for d in depths}
        off_passes: dict[int, list[dict[str, float]]] = {d: [] for d in depths}
        kb_ids: dict[int, list[uuid.UUID]] = {}
        off_ids: dict[int, list[uuid.UUID]] = {}
        # Depths take turns pass by pass (each going first in turn), so a change of load on a
        # shared machine falls on the first page and the deep ones alike.
        for r in range(t.repeats):
            turn = depths[r % len(depths) :] + depths[: r % len(depths)]
            for depth in turn:
                lat, res = await timing.time_each(kb_page(depth), list(range(PASSES_PER_DEPTH)))
                kb_passes[depth].append(timing.summary(lat))
                kb_ids[depth] = res[0]
                lat, res = await timing.time_each(offset_page(depth), list(range(PASSES_PER_DEPTH)))
                off_passes[depth].append(timing.summary(lat))
                off_ids[depth] = res[0]
        for depth in depths:
            out["depths"][str(depth)] = {
                "last_page": depth == n - size,
                "kb keyset": {
                    **timing.median_of_passes(kb_passes[depth]),
                    "rows": len(kb_ids[depth]),
                },
                "OFFSET": {
                    **timing.median_of_passes(off_passes[depth]),
                    "rows": len(off_ids[depth]),
                },
                "same_rows": kb_ids[depth] == off_ids[depth],
            }
            ctx.log(
                f"browse depth {depth}: kb {out['depths'][str(depth)]['kb keyset']['p50_ms']:.2f}ms"
                f" offset {out['depths'][str(depth)]['OFFSET']['p50_ms']:.2f}ms"
            )
    finally:
        await conn.close()
    return out
