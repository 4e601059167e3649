"""Scenario 6: kb hybrid vs vector-only vs full-text-only, by how common the query term is."""

from __future__ import annotations

import time
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
    modes = list(searches)
    for bucket, terms in buckets.items():
        if not terms:
            out[bucket] = {"error": "no term of this frequency in the generated text"}
            continue
        items = [(word, ctx.queries[i % len(ctx.queries)]) for i, (word, _) in enumerate(terms)]
        entry: dict[str, Any] = {
            "terms": [w for w, _ in terms],
            "document_frequency": [n for _, n in terms],
        }

        async def one(mode: str, item: tuple[str, Any]) -> int:
            word, vec = item
            results = await searches[mode].run(None if mode == "text" else vec, word)
            return len(results)

        for mode in modes:
            for item in items[:3]:
                await one(mode, item)
        passes: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
        rows: dict[str, list[int]] = {mode: [] for mode in modes}
        for _ in range(ctx.tier.repeats):
            # The three modes take turns query by query, each going first in turn, so a
            # change of load on a shared machine falls on all three alike.
            lat: dict[str, list[float]] = {mode: [] for mode in modes}
            for i, item in enumerate(items):
                shift = i % len(modes)
                for mode in modes[shift:] + modes[:shift]:
                    start = time.perf_counter()
                    rows[mode].append(await one(mode, item))
                    lat[mode].append(time.perf_counter() - start)
            for mode in modes:
                passes[mode].append(timing.summary(lat[mode]))
        for mode in modes:
            entry[mode] = {**timing.median_of_passes(passes[mode]), "rows_min": min(rows[mode])}
        out[bucket] = entry
        ctx.log(
            f"hybrid {bucket}: vector {entry['vector']['p50_ms']:.1f}ms text "
            f"{entry['text']['p50_ms']:.1f}ms hybrid {entry['hybrid']['p50_ms']:.1f}ms"
        )
    return out
