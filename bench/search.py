"""Scenarios 2-4: top-10 unfiltered (kb vs raw SQL vs in-process engines), filtered, exact."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from bench import engines, kbpaths, timing
from bench.context import Context
from bench.data import BAND_FOR
from bench.pg import raw_pool
from bench.tiers import SELECTIVITIES, K
from kb.filters import Filters

Query = Callable[[np.ndarray], Awaitable[list[int]]]
WARMUP = 10


def _ids(results: Any, seq: dict[uuid.UUID, int]) -> list[int]:
    return [seq[item.id] for item in results]


class KbVector:
    """kb's vector search (and its SQL on raw asyncpg) for one set of options."""

    def __init__(self, ctx: Context, search: kbpaths.Search, pool: Any) -> None:
        self.search = search
        self.pool = pool
        self.seq = ctx.shared["seq"][search.collection]
        self.raw: kbpaths.RawSQL | None = None
        self.fallbacks = 0

    async def kb(self, vec: np.ndarray) -> list[int]:
        results = await self.search.run(vec)
        self.fallbacks += int(bool(getattr(results, "exact_fallback", False)))
        return _ids(results, self.seq)

    async def prepare_raw(self, vec: np.ndarray) -> None:
        self.raw = kbpaths.RawSQL(await self.search.compiled(vec))

    async def raw_query(self, vec: np.ndarray) -> list[int]:
        assert self.raw is not None
        async with self.pool.acquire() as conn:
            rows = await self.raw.run(conn, vec)
        return [self.seq[uuid.UUID(int=r["id"].int)] for r in rows]


async def measure(
    fns: dict[str, Query],
    queries: Sequence[Any],
    repeats: int,
    truth: np.ndarray | None,
    expected_rows: int = K,
) -> dict[str, Any]:
    """Warm up, then time every engine over all queries `repeats` times, interleaved."""
    for fn in fns.values():
        for q in queries[:WARMUP]:
            await fn(q)
    passes: dict[str, list[dict[str, float]]] = {name: [] for name in fns}
    found: dict[str, list[list[int]]] = {}
    for _ in range(repeats):
        # Engines take turns query by query, so load from elsewhere on a shared machine falls
        # on all of them alike.
        lat: dict[str, list[float]] = {name: [] for name in fns}
        res: dict[str, list[list[int]]] = {name: [] for name in fns}
        names = list(fns)
        for i, q in enumerate(queries):
            # Each query is first run by a different engine in turn: the first run of a query
            # pays the cache misses the others then skip.
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                res[name].append(await fns[name](q))
                lat[name].append(time.perf_counter() - start)
        for name in fns:
            passes[name].append(timing.summary(lat[name]))
            found.setdefault(name, res[name])
    out: dict[str, Any] = {}
    for name in fns:
        entry = timing.median_of_passes(passes[name])
        rows = [len(r) for r in found[name]]
        entry["rows_min"] = min(rows)
        entry["expected_rows"] = expected_rows
        entry["short_queries"] = sum(1 for n in rows if n < expected_rows)
        if truth is not None:
            entry["recall_at_10"] = timing.recall_at_k(found[name], truth, K)
        out[name] = entry
    out["_found"] = found
    return out


def _same(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> float:
    return round(float(np.mean([list(x) == list(y) for x, y in zip(a, b, strict=True)])), 4)


async def unfiltered(ctx: Context) -> dict[str, Any]:
    """Top-10 with no filter at several ef_search, every engine; QPS with 1 and 4 clients."""
    t = ctx.tier
    ds = ctx.main_ds
    queries = ctx.queries
    truth = timing.exact_top_k(ds.vectors, queries, K)
    ctx.shared["truth_main"] = truth
    pool = await raw_pool(ctx.url, 4)  # type: ignore[arg-type]
    found, missing = engines.competitors(ctx.competitors) if t.competitors else ([], {})
    loaded: list[engines.Engine] = []
    result: dict[str, Any] = {"engines": {}, "by_ef": {}, "qps": {}}
    try:
        numpy_engine = engines.NumpyExact()
        numpy_engine.load(ds)
        for engine in found:
            try:
                load = engine.load(ds)
            except Exception as exc:  # a competitor failing is a finding, not a crash
                result["engines"][engine.name] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            loaded.append(engine)
            result["engines"][engine.name] = {
                **engines.describe(engine),
                "load": {k: round(v, 3) for k, v in load.items()},
            }
            ctx.log(f"{engine.name} loaded {len(ds)} rows in {load['searchable_s']:.1f}s")
        for name, why in missing.items():
            result["engines"][name] = {"error": why}

        # kb's default: the ef_search kb measured for the collection at load (kb.calibration),
        # else its fixed default.
        default_ef, calibration = await kbpaths.default_ef_search(ctx.kb_db, "main")
        efs = sorted(set(t.ef_search) | {default_ef})
        result["kb_default_ef_search"] = default_ef
        result["calibration"] = calibration
        for ef in efs:
            kbv = KbVector(ctx, kbpaths.Search(ctx.kb_db, "main", k=K, ef_search=ef), pool)
            await kbv.prepare_raw(queries[0])
            # kb and its SQL on raw asyncpg take turns query by query; the in-process engines
            # are timed apart (lancedb's worker threads outlive a query and would slow
            # whichever engine ran next).
            fns: dict[str, Query] = {"kb": kbv.kb, "raw asyncpg (same SQL)": kbv.raw_query}
            measured = await measure(fns, queries, t.repeats, truth)
            found_lists = measured.pop("_found")
            for engine in loaded:
                if engine.supports_ef:
                    engine.set_ef(ef)
                    alone = await measure(
                        {engine.name: timing.sync_as_async(lambda q, e=engine: e.query(q, K))},
                        queries,
                        t.repeats,
                        truth,
                    )
                    alone.pop("_found")
                    measured.update(alone)
            measured["kb"]["same_results_as_raw"] = _same(
                found_lists["kb"], found_lists["raw asyncpg (same SQL)"]
            )
            result["by_ef"][str(ef)] = measured
            ctx.log(
                f"unfiltered ef={ef}: kb p50 {measured['kb']['p50_ms']:.2f}ms "
                f"recall {measured['kb']['recall_at_10']:.3f}"
            )
        # Engines without an ef_search knob (exhaustive, or fixed at creation): measured once.
        once: dict[str, Query] = {
            numpy_engine.name: timing.sync_as_async(lambda q: numpy_engine.query(q, K))
        }
        for engine in loaded:
            if not engine.supports_ef:
                once[engine.name] = timing.sync_as_async(lambda q, e=engine: e.query(q, K))
        # Exhaustive engines cost O(rows) per query: fewer queries suffice for a median.
        few = queries[: max(WARMUP + 5, min(len(queries), 30))]
        result["fixed_ef_engines"] = {}
        for name, fn in once.items():
            # Each on its own: one engine's background threads must not slow the next.
            alone = await measure({name: fn}, few, t.repeats, truth[: len(few)])
            alone.pop("_found")
            result["fixed_ef_engines"].update(alone)

        # Throughput at kb's default ef_search, the same ef for every HNSW engine.
        kbv = KbVector(ctx, kbpaths.Search(ctx.kb_db, "main", k=K), pool)
        await kbv.prepare_raw(queries[0])
        for engine in loaded:
            if engine.supports_ef:
                engine.set_ef(default_ef)
        per = t.qps_queries
        qlist = list(queries)
        for clients in (1, 4):
            row: dict[str, float] = {
                "kb": await timing.qps_async(kbv.kb, qlist, clients, per),
                "raw asyncpg (same SQL)": await timing.qps_async(
                    kbv.raw_query, qlist, clients, per
                ),
                numpy_engine.name: timing.qps_threads(
                    lambda q: numpy_engine.query(q, K), qlist, clients, per
                ),
            }
            for engine in loaded:
                if not engine.exhaustive:
                    row[engine.name] = timing.qps_threads(
                        lambda q, e=engine: e.query(q, K), qlist, clients, per
                    )
            result["qps"][f"{clients} client{'s' if clients > 1 else ''}"] = row
            ctx.log(f"qps {clients} clients: kb {row['kb']}")
        result["kb_overhead"] = await _overhead(ctx, queries)
    finally:
        for engine in loaded:
            engine.close()
        await pool.close()
    return result


async def _overhead(ctx: Context, queries: np.ndarray) -> dict[str, Any]:
    """Split kb's search latency: session round trips, collection lookup, the SQL on the
    session's driver connection, and the whole call, measured on the same queries."""
    from sqlalchemy import text

    from kb.browse import resolve_collection
    from kb.statements import apply_settings, fetch_all

    db = ctx.kb_db
    search = kbpaths.Search(db, "main", k=K)
    compiled = await search.compiled(queries[0])

    async def session_only(_: np.ndarray) -> list[int]:
        async with db.session() as s:
            await s.execute(text("SELECT 1"))
        return []

    async def lookup(_: np.ndarray) -> list[int]:
        async with db.session() as s:
            await resolve_collection(s, "main")
        return []

    async def sql_only(vec: np.ndarray) -> list[int]:
        params = {**compiled.params, "q": vec.tolist()}
        async with db.session() as s:
            if compiled.settings:
                await apply_settings(s, compiled.settings)
            await fetch_all(s, compiled.sql, params)
        return []

    async def whole(vec: np.ndarray) -> list[int]:
        await search.run(vec)
        return []

    raw = kbpaths.RawSQL(compiled)
    pool = await raw_pool(ctx.url, 1)  # type: ignore[arg-type]

    async def raw_sql(vec: np.ndarray) -> list[int]:
        async with pool.acquire() as conn:
            await raw.run(conn, vec)
        return []

    fns: dict[str, Query] = {
        "raw asyncpg (same SQL)": raw_sql,
        "session + SELECT 1": session_only,
        "session + collection lookup": lookup,
        "session + settings + kb SQL": sql_only,
        "kb search call": whole,
    }
    try:
        measured = await measure(fns, queries, ctx.tier.repeats, None)
    finally:
        await pool.close()
    measured.pop("_found")
    return {name: {"p50_ms": e["p50_ms"], "p99_ms": e["p99_ms"]} for name, e in measured.items()}


async def filtered(ctx: Context) -> dict[str, Any]:
    """Top-10 under filters of 30/5/1/0.1 % selectivity, by metadata value and by collection."""
    t = ctx.tier
    ds = ctx.main_ds
    queries = ctx.queries
    pool = await raw_pool(ctx.url, 2)  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    try:
        for share in SELECTIVITIES:
            band = BAND_FOR[share]
            # By metadata value, inside the main collection.
            mask = ds.band_mask(band)
            rows_idx = np.flatnonzero(mask)
            local = timing.exact_top_k(ds.vectors[mask], queries, K)
            truth = np.where(local >= 0, rows_idx[np.maximum(local, 0)], -1)
            kbv = KbVector(
                ctx,
                kbpaths.Search(ctx.kb_db, "main", k=K, filters=Filters(metadata={"band": band})),
                pool,
            )
            await kbv.prepare_raw(queries[0])
            fns: dict[str, Query] = {"kb": kbv.kb, "raw asyncpg (same SQL)": kbv.raw_query}
            if share <= 0.05:
                # kb's exact path under the same filter: what a selectivity-aware plan would run.
                exact_filter = Filters(metadata={"band": band})
                kbx = KbVector(
                    ctx,
                    kbpaths.Search(ctx.kb_db, "main", k=K, filters=exact_filter, exact=True),
                    pool,
                )
                fns["kb exact"] = kbx.kb
            m = await measure(
                fns,
                queries,
                t.repeats,
                truth,
                min(K, int(mask.sum())),
            )
            m.pop("_found")
            m["kb"]["exact_fallbacks"] = kbv.fallbacks
            m["matching_rows"] = int(mask.sum())
            out[f"metadata {share:.1%}"] = m
            # By collection: a collection holding that share of the main collection's size.
            cds = ctx.by_collection[share]
            ctruth = timing.exact_top_k(cds.vectors, queries, K)
            kbc = KbVector(ctx, kbpaths.Search(ctx.kb_db, cds.name, k=K), pool)
            await kbc.prepare_raw(queries[0])
            c = await measure(
                {"kb": kbc.kb, "raw asyncpg (same SQL)": kbc.raw_query},
                queries,
                t.repeats,
                ctruth,
                min(K, len(cds)),
            )
            c.pop("_found")
            c["matching_rows"] = len(cds)
            out[f"collection {share:.1%}"] = c
            ctx.log(
                f"filtered {share:.1%}: metadata p50 {m['kb']['p50_ms']:.2f}ms "
                f"recall {m['kb']['recall_at_10']:.3f} rows_min {m['kb']['rows_min']}"
            )
    finally:
        await pool.close()
    return out


async def exact(ctx: Context) -> dict[str, Any]:
    """Exact top-10: kb's exact path vs a PostgreSQL sequential scan vs numpy, one query each."""
    t = ctx.tier
    ds = ctx.main_ds
    queries = ctx.queries[: max(WARMUP + 5, t.queries // 20)]
    truth = timing.exact_top_k(ds.vectors, queries, K)
    pool = await raw_pool(ctx.url, 1)  # type: ignore[arg-type]
    try:
        kbv = KbVector(ctx, kbpaths.Search(ctx.kb_db, "main", k=K, exact=True), pool)
        await kbv.prepare_raw(queries[0])
        cid = ctx.shared["collection_ids"]["main"]
        seq = ctx.shared["seq"]["main"]
        seqscan_sql = (
            "SELECT d.id, d.embedding <=> $1 AS distance FROM documents d "  # noqa: S608
            f"WHERE d.collection_id = {int(cid)} ORDER BY d.embedding <=> $1 LIMIT {K}"
        )

        async def seqscan(vec: np.ndarray) -> list[int]:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off"
                )
                rows = await conn.fetch(seqscan_sql, vec)
            return [seq[uuid.UUID(int=r["id"].int)] for r in rows]

        numpy_engine = engines.NumpyExact()
        numpy_engine.load(ds)
        fns: dict[str, Query] = {
            "kb exact": kbv.kb,
            "raw asyncpg (same SQL)": kbv.raw_query,
            "PostgreSQL seq scan": seqscan,
            "numpy": timing.sync_as_async(lambda q: numpy_engine.query(q, K)),
        }
        out = await measure(fns, queries, t.repeats, truth)
        out.pop("_found")
        ctx.log(f"exact: kb p50 {out['kb exact']['p50_ms']:.1f}ms")
        return out
    finally:
        await pool.close()
