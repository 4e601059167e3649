"""Concurrency: overlapping ingests in two processes, readers during an ingest, a load test."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import text

import kb
from helpers import settings_for, url_text

WORDS = [
    "vector",
    "index",
    "query",
    "planner",
    "cursor",
    "page",
    "collection",
    "embedding",
    "model",
    "cosine",
    "distance",
    "chunk",
    "source",
    "metadata",
    "filter",
    "facet",
    "histogram",
    "snippet",
    "rank",
    "score",
    "hybrid",
    "lexical",
]


def _write_corpus(folder: Path, files: int, paragraphs: int = 12, seed: int = 7) -> list[Path]:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        body = "\n\n".join(
            " ".join(rng.choice(WORDS) for _ in range(60)) + f" file{i} para{p}."
            for p in range(paragraphs)
        )
        path = folder / f"doc{i:03d}.txt"
        path.write_text(body, encoding="utf-8")
        paths.append(path)
    return paths


def _ingest_process(url, paths: list[Path], cwd: Path) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    env = {"DATABASE_URL": url_text(url), "PATH": "/usr/bin:/bin"}
    cmd = [
        str(Path(sys.executable).parent / "kb"),
        "ingest",
        *[str(p.relative_to(cwd)) for p in paths],
        "--collection",
        "shared",
        "--embedder",
        "hashing",
        "--chunk-size",
        "300",
        "--batch-size",
        "16",
        "--json",
    ]
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


async def test_two_processes_ingest_overlapping_files(new_database, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = await new_database()
    paths = _write_corpus(tmp_path / "corpus", 24)
    async with await kb.connect(settings_for(url), url=url, upgrade=False) as db:
        async with db.session() as s:
            await kb.create_collection(
                s, "shared", embedder="hashing", model="feature-hashing-384", dimension=384
            )
        first = _ingest_process(url, paths[:16], tmp_path)
        second = _ingest_process(url, paths[8:], tmp_path)
        outs = [p.communicate(timeout=300) for p in (first, second)]
        for proc, (_, err) in zip((first, second), outs, strict=True):
            assert proc.returncode == 0, err
        reports = [json.loads(out) for out, _ in outs]
        async with db.session() as s:
            total, distinct = (
                await s.execute(
                    text("SELECT count(*), count(DISTINCT (source, chunk_index)) FROM documents")
                )
            ).one()
        assert total == distinct
        # Every chunk was added exactly once between the two processes.
        assert sum(r["chunks_added"] for r in reports) == total
        # A third run over everything finds it all there, with nothing missing.
        again = _ingest_process(url, paths, tmp_path)
        out, err = again.communicate(timeout=300)
        assert again.returncode == 0, err
        third = json.loads(out)
        assert third["chunks_added"] == 0 and third["duplicates_skipped"] == total
        async with db.session() as s:
            sources = await s.scalar(text("SELECT count(DISTINCT source) FROM documents"))
        assert sources == len(paths)


async def test_readers_see_whole_batches_only(new_database, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = await new_database()
    paths = _write_corpus(tmp_path / "corpus", 20, paragraphs=16, seed=11)
    batch = 10
    async with await kb.connect(settings_for(url), url=url, upgrade=False) as db:
        seen: set[int] = set()
        done = asyncio.Event()

        async def watch() -> None:
            while not done.is_set():
                async with db.session() as s:
                    seen.add(int(await s.scalar(text("SELECT count(*) FROM documents")) or 0))
                    if seen - {0}:
                        hits = await kb.search(
                            s, "vector index", collection="watched", k=5, mode="text"
                        )
                        assert all(h.content for h in hits)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        report = await kb.ingest(
            db, paths, collection="watched", embedder="hashing", chunk_size=300, batch_size=batch
        )
        done.set()
        await watcher
    total = report.chunks_added
    assert total > 3 * batch
    assert len(seen) > 2, "the reader never saw the ingest in progress"
    # Every count a reader saw is a whole number of committed batches (or the end).
    assert all(n % batch == 0 or n == total for n in seen), sorted(seen)


async def test_load_through_the_sync_bridge(new_database) -> None:  # type: ignore[no-untyped-def]
    url = await new_database()
    clients, seconds, pool_size, overflow = 8, 6.0, 4, 4
    settings = settings_for(url, database_pool_size=pool_size, database_max_overflow=overflow)
    docs = [
        kb.SourceDocument.from_text(
            f"load{i}.txt", " ".join(random.Random(i).choice(WORDS) for _ in range(200))
        )
        for i in range(60)
    ]
    with kb.SyncDatabase(settings) as bridge:
        report = bridge.with_db(kb.ingest_documents, docs, collection="load", embedder="hashing")
        assert report.chunks_added >= 60
        first = bridge.call(kb.browse, "load", limit=20)
        latencies: list[float] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + seconds

        def client(n: int) -> None:
            rng = random.Random(n)
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                try:
                    if rng.random() < 0.5:
                        mode = rng.choice(["vector", "text", "hybrid"])
                        bridge.call(
                            kb.search, rng.choice(WORDS), collection="load", k=10, mode=mode
                        )
                    else:
                        bridge.call(kb.browse, "load", limit=20, after=first.next_cursor)
                except Exception as exc:  # every failure is counted, none is expected
                    with lock:
                        errors.append(exc)
                with lock:
                    latencies.append(time.perf_counter() - started)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        assert len(latencies) > clients * 5
        p50 = statistics.median(latencies)
        p99 = statistics.quantiles(latencies, n=100)[98]
        print(
            f"load: {len(latencies)} calls by {clients} clients in {seconds:.0f} s, "
            f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
        )
        # Connections flat: none left checked out, never more open than the pool allows.
        assert bridge.database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert bridge.run(_backend_count(bridge.database)) <= pool_size + overflow


async def _backend_count(db: kb.Database) -> int:
    async with db.session() as s:
        return int(
            await s.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = 'kb-explorer'"
                )
            )
            or 0
        )
