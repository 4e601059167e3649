"""Timing: warm-up, repeated passes, percentiles, and throughput with several clients."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
Q = TypeVar("Q")


def summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """Return p50/p99/mean/min in milliseconds for latencies given in seconds."""
    arr = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    if arr.size == 0:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan"), "n": 0}
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 4),
        "p99_ms": round(float(np.percentile(arr, 99)), 4),
        "mean_ms": round(float(arr.mean()), 4),
        "min_ms": round(float(arr.min()), 4),
        "n": int(arr.size),
    }


def median_of_passes(passes: Sequence[dict[str, float]]) -> dict[str, Any]:
    """Return the median p50 and p99 over repeated passes, with every pass kept."""
    return {
        "p50_ms": round(statistics.median(p["p50_ms"] for p in passes), 4),
        "p99_ms": round(statistics.median(p["p99_ms"] for p in passes), 4),
        "passes": list(passes),
    }


class Timer:
    """A context manager that measures wall time with perf_counter."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


async def time_each(
    fn: Callable[[Q], Awaitable[T]], items: Sequence[Q]
) -> tuple[list[float], list[T]]:
    """Run fn on each item in turn; return each call's latency (s) and result."""
    latencies: list[float] = []
    results: list[T] = []
    for item in items:
        start = time.perf_counter()
        result = await fn(item)
        latencies.append(time.perf_counter() - start)
        results.append(result)
    return latencies, results


async def qps_async(
    fn: Callable[[Q], Awaitable[Any]], items: Sequence[Q], clients: int, per_client: int
) -> float:
    """Return queries per second with `clients` concurrent callers, each doing `per_client`."""

    async def client(offset: int) -> None:
        for j in range(per_client):
            await fn(items[(offset + j) % len(items)])

    start = time.perf_counter()
    await asyncio.gather(*(client(c * 7919) for c in range(clients)))
    return round(clients * per_client / (time.perf_counter() - start), 2)


def qps_threads(fn: Callable[[Q], Any], items: Sequence[Q], clients: int, per_client: int) -> float:
    """Return queries per second with `clients` threads, each doing `per_client` calls."""

    def client(offset: int) -> None:
        for j in range(per_client):
            fn(items[(offset + j) % len(items)])

    with ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        list(pool.map(client, [c * 7919 for c in range(clients)]))
        return round(clients * per_client / (time.perf_counter() - start), 2)


def sync_as_async(fn: Callable[[Q], T]) -> Callable[[Q], Awaitable[T]]:
    """Wrap a blocking single-query call so the async timing loop can drive it (inline)."""

    async def call(item: Q) -> T:
        return fn(item)

    return call


def recall_at_k(found: Sequence[Sequence[int]], truth: np.ndarray, k: int) -> float:
    """Return the mean share of the exact top-k that each result list contains."""
    if len(found) == 0:
        return float("nan")
    hits = []
    for f, t in zip(found, truth, strict=True):
        # -1 pads a truth list when fewer than k rows exist at all.
        want = {int(x) for x in t[:k] if x >= 0}
        hits.append(len(set(map(int, f[:k])) & want) / max(len(want), 1))
    return round(float(np.mean(hits)), 4)


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Return the exact cosine top-k row indices per query (rows and queries are unit vectors)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 256):
        scores = queries[start : start + 256] @ data.T
        kk = min(k, data.shape[0])
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        rows = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-rows, axis=1, kind="stable")
        top = np.take_along_axis(part, order, axis=1)
        if kk < k:
            top = np.pad(top, ((0, 0), (0, k - kk)), constant_values=-1)
        out[start : start + 256] = top
    return out
