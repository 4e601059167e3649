"""One benchmark run: start or reach PostgreSQL, generate data, run the scenarios, report."""

from __future__ import annotations

import asyncio
import json
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import (
    browse,
    embedding,
    env,
    hybrid,
    ingest,
    load,
    pending,
    realtext,
    report,
    search,
)
from bench.context import Context
from bench.pg import Databases, raw_connect, server
from bench.tiers import TIERS

SCENARIOS = (
    "ingest",
    "unfiltered",
    "filtered",
    "exact",
    "browse",
    "hybrid",
    "pending",
    "realtext",
    "embedding",
)


async def _scenario(
    ctx: Context, result: dict[str, Any], name: str, fn: Callable[[], Awaitable[Any]]
) -> None:
    """Run one scenario; its failure is recorded (with the traceback) and the run goes on."""
    ctx.log(f"scenario {name}")
    writes_before = await _background_writes(ctx)
    start = time.perf_counter()
    load_before = env.load()
    try:
        result["scenarios"][name] = await fn()
    except Exception as exc:
        result["scenarios"][name] = {
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
        ctx.log(f"scenario {name} failed: {type(exc).__name__}: {exc}")
    result["timings"][name] = {
        "seconds": round(time.perf_counter() - start, 2),
        "loadavg_before": load_before,
        "loadavg_after": env.load(),
    }
    writes_after = await _background_writes(ctx)
    if writes_before and writes_after:
        # What the server wrote in the background while the scenario ran.
        result["timings"][name]["server_background"] = {
            k: writes_after[k] - writes_before[k]
            for k in writes_before
            if k != "autovacuum_workers"
        } | {"autovacuum_workers_after": writes_after["autovacuum_workers"]}


async def _background_writes(ctx: Context) -> dict[str, int] | None:
    if ctx.url is None:
        return None
    try:
        conn = await raw_connect(ctx.url, vector_codec=False)
        try:
            return await env.background_writes(conn)
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError):
        return None  # a diagnostic: its absence must not fail the run


async def run(
    tier_name: str,
    *,
    database_url: str | None = None,
    only: list[str] | None = None,
    competitors: list[str] | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the tier's scenarios and return the result document."""
    tier = TIERS[tier_name]
    wanted = [s for s in SCENARIOS if only is None or s in only]
    started = time.perf_counter()
    result: dict[str, Any] = {
        "tier": tier.name,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": env.machine(),
        "versions": env.versions(),
        "config": {k: getattr(tier, k) for k in tier.__slots__},
        "scenarios": {},
        "timings": {},
    }
    with server(database_url) as server_url:
        async with Databases(server_url) as dbs:
            ctx = Context(tier=tier, dbs=dbs, competitors=competitors, quiet=quiet)
            probe = await dbs.create("probe")
            admin = await raw_connect(probe, vector_codec=False)
            try:
                result["postgres"] = await env.postgres(admin)
                result["postgres"]["embedded"] = database_url is None
            finally:
                await admin.close()
                await dbs.drop(probe)
            ctx.log(f"generating tier {tier.name} data")
            gen_start = time.perf_counter()
            ctx.generate()
            result["generate_s"] = round(time.perf_counter() - gen_start, 2)
            if "ingest" in wanted:
                await _scenario(ctx, result, "ingest", lambda: ingest.run(ctx))
            db_scenarios = [s for s in wanted if s not in ("ingest", "embedding")]
            if db_scenarios:
                await _scenario(ctx, result, "load", lambda: load.load_main(ctx))
                steps: dict[str, Callable[[], Awaitable[Any]]] = {
                    "unfiltered": lambda: search.unfiltered(ctx),
                    "filtered": lambda: search.filtered(ctx),
                    "exact": lambda: search.exact(ctx),
                    "browse": lambda: browse.run(ctx),
                    "hybrid": lambda: hybrid.run(ctx),
                    "pending": lambda: pending.run(ctx),
                    "realtext": lambda: realtext.run(ctx),
                }
                if "error" not in result["scenarios"]["load"]:
                    for name in db_scenarios:
                        await _scenario(ctx, result, name, steps[name])
                if ctx.db is not None:
                    await ctx.db.close()
            if "embedding" in wanted:
                await _scenario(
                    ctx, result, "embedding", lambda: asyncio.to_thread(embedding.run, ctx)
                )
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["loadavg_end"] = env.load()
    result["targets"] = report.evaluate(result)
    return result


def write(result: dict[str, Any], out: Path) -> None:
    """Write the result as JSON (NaN written as null)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_clean(result), indent=1, default=str) + "\n", encoding="utf-8")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
