"""Scenario 1, ingest: kb vs raw COPY BINARY vs SQLAlchemy ORM vs the in-process stores."""

from __future__ import annotations

import statistics
from collections.abc import Awaitable, Callable
from typing import Any

import kb
from bench import baselines, data, engines, kbpaths
from bench.context import Context
from bench.data import Dataset
from bench.pg import settings_for

Loader = Callable[[Any, Dataset, str], Awaitable[dict[str, float]]]


async def _kb_write_rows(url: Any, ds: Dataset, name: str) -> dict[str, float]:
    db = await kb.connect(settings_for(url), url=url, upgrade=False)
    try:
        return await kbpaths.kb_write_rows(db, ds, name)
    finally:
        await db.close()


async def _kb_documents(url: Any, ds: Dataset, name: str) -> dict[str, float]:
    db = await kb.connect(settings_for(url), url=url, upgrade=False)
    try:
        return await kbpaths.kb_ingest_documents(db, ds, name)
    finally:
        await db.close()


def _summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    rates = [r["rows"] / r["load_s"] for r in runs]
    out = {
        "rows": int(runs[0]["rows"]),
        "rows_per_s": round(statistics.median(rates), 1),
        "load_s": round(statistics.median(r["load_s"] for r in runs), 3),
        "index_s": round(statistics.median(r["index_s"] for r in runs), 3),
        "searchable_s": round(statistics.median(r["searchable_s"] for r in runs), 3),
        "runs": [{k: round(v, 4) for k, v in r.items()} for r in runs],
    }
    if "calibrate_s" in runs[0]:
        # kb measuring the collection's ef_search after the load; not part of the rates.
        out["calibrate_s"] = round(statistics.median(r["calibrate_s"] for r in runs), 3)
    return out


async def _rounds(
    ctx: Context, label: str, loaders: dict[str, tuple[Loader, Dataset]]
) -> dict[str, Any]:
    """Run every loader once per round, each in a fresh database, alternating the order."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in loaders}
    errors: dict[str, str] = {}
    names = list(loaders)
    for r in range(ctx.tier.ingest_rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            if name in errors:
                continue
            loader, ds = loaders[name]
            async with ctx.dbs.scratch(f"{label}_{r}_{name.split()[0]}") as url:
                try:
                    runs[name].append(await loader(url, ds, f"ingest_{label}"))
                except Exception as exc:  # one engine failing is a finding, not a crash
                    errors[name] = f"{type(exc).__name__}: {exc}"
                    continue
            ctx.log(f"ingest {label} round {r}: {name} {runs[name][-1]['load_s']:.2f}s")
    out: dict[str, Any] = {name: _summary(rs) for name, rs in runs.items() if rs}
    out.update({name: {"error": msg} for name, msg in errors.items()})
    return out


async def run(ctx: Context) -> dict[str, Any]:
    """Measure rows/s and time until searchable for every engine."""
    t = ctx.tier
    result: dict[str, Any] = {}
    for dim, rows, orm_rows in (
        (t.dim, t.ingest_rows, t.orm_rows),
        (t.wide_dim, t.ingest_rows_wide, min(t.orm_rows, t.ingest_rows_wide)),
    ):
        centers = ctx.centers if dim == t.dim else data.cluster_centers(t.clusters, dim)
        ds = data.make_dataset("ingest", rows, centers=centers, seed=100 + dim, words=ctx.words)
        loaders: dict[str, tuple[Loader, Dataset]] = {
            "kb": (_kb_write_rows, ds),
            "kb ingest_documents": (_kb_documents, ds),
            "raw COPY BINARY": (baselines.raw_copy_ingest, ds),
            "SQLAlchemy ORM": (baselines.orm_ingest, ds.slice(orm_rows)),
        }
        section = await _rounds(ctx, f"d{dim}", loaders)
        if dim == t.dim and t.competitors:
            # One round each: the in-process stores hold the same rows (text and metadata too).
            found, missing = engines.competitors(ctx.competitors)
            for engine in found:
                try:
                    timing = engine.load(ds)
                    section[engine.name] = _summary([{"rows": len(ds), **timing}])
                    section[engine.name].update(engines.describe(engine))
                    ctx.log(f"ingest d{dim}: {engine.name} {timing['searchable_s']:.2f}s")
                finally:
                    engine.close()
            for name, why in missing.items():
                section[name] = {"error": why}
        result[f"d{dim}"] = section
    return result
