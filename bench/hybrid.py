"""Scenario 6: kb hybrid vs vector-only vs full-text-only, by how common the query term is."""

from __future__ import annotations

from typing import Any

from bench import data, kbpaths, timing
from bench.context import Context
from bench.tiers import K

TERMS_PER_BUCKET = 10


async def run(ctx: Context) -> dict[str, Any]:
    """Time the three modes on single-term queries bucketed rare / medium / common."""
    ds = ctx.main_ds
    df = ds.document_frequency()
    buckets = data.pick_terms(df, ctx.words, len(ds), TERMS_PER_BUCKET)
    searches = {
        mode: kbpaths.Search(ctx.kb_db, "main", k=K, mode=mode)
        for mode in ("vector", "text", "hybrid")
    }
    out: dict[str, Any] = {}
    for bucket, terms in buckets.items():
        if not terms:
            out[bucket] = {"error": "no term of this frequency in the generated text"}
            continue
        items = [(word, ctx.queries[i % len(ctx.queries)]) for i, (word, _) in enumerate(terms)]
        entry: dict[str, Any] = {
            "terms": [w for w, _ in terms],
            "document_frequency": [n for _, n in terms],
        }
        for mode, search in searches.items():

            async def one(item: tuple[str, Any], mode: str = mode, search: Any = search) -> int:
                word, vec = item
                results = await search.run(None if mode == "text" else vec, word)
                return len(results)

            for item in items[:3]:
                await one(item)
            passes = []
            rows: list[int] = []
            for _ in range(ctx.tier.repeats):
                lat, rows = await timing.time_each(one, items)
                passes.append(timing.summary(lat))
            entry[mode] = {**timing.median_of_passes(passes), "rows_min": min(rows)}
        out[bucket] = entry
        ctx.log(
            f"hybrid {bucket}: vector {entry['vector']['p50_ms']:.1f}ms text "
            f"{entry['text']['p50_ms']:.1f}ms hybrid {entry['hybrid']['p50_ms']:.1f}ms"
        )
    return out
