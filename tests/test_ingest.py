"""Ingest into a real database: file types, idempotency, changes, atomic batches, crashes,
concurrency, progress, mismatched embedders, deferred indexes, the demo builder."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
from sqlalchemy import text

import kb
from helpers import settings_for, url_text
from kb.db import asyncpg_kwargs
from kb.embedders.hashing import HashingEmbedder
from kb.ingest import IngestError, IngestProgress, ProgressHolder, SourceDocument, indexing
from kb.ingest.pipeline import chunk_rows
from kb.ingest.writer import Row, write_rows
from kb.models import content_hash

DATA = Path(__file__).parent / "data"


class CountingEmbedder:
    """The hashing embedder, counting what it embeds; can fail on a given call."""

    kind = "hashing"
    metric = "cosine"

    def __init__(self, dimension: int = 64, *, fail_on_call: int | None = None) -> None:
        self._inner = HashingEmbedder(dimension)
        self.model = self._inner.model
        self.dimension = dimension
        self.calls = 0
        self.texts: list[str] = []
        self.fail_on_call = fail_on_call

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise kb.EmbedderError("injected failure: the embedding service went away")
        self.texts.extend(texts)
        return self._inner.embed(texts)


def _paragraphs(seed: int, count: int) -> str:
    rng = np.random.default_rng(seed)
    words = ["vector", "index", "table", "query", "chunk", "embed", "search", "page", "row"]
    paras = []
    for _ in range(count):
        sentences = [
            " ".join(rng.choice(words, size=int(rng.integers(6, 14)))).capitalize() + "."
            for _ in range(int(rng.integers(2, 5)))
        ]
        paras.append(" ".join(sentences))
    return "\n\n".join(paras)


def _corpus(root: Path, files: int = 6, paragraphs: int = 6) -> Path:
    folder = root / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (folder / f"doc{i:02d}.md").write_text(
            f"# Doc {i}\n\n{_paragraphs(i, paragraphs)}", encoding="utf-8"
        )
    return folder


async def _rows(db: kb.Database, collection: str) -> list[dict[str, Any]]:
    async with db.session() as s:
        result = await s.execute(
            text(
                "SELECT d.id, d.source, d.chunk_index, d.title, d.content, d.metadata, "
                "d.content_hash, d.created_at, vector_dims(d.embedding) AS dims "
                "FROM documents d JOIN collections c ON c.id = d.collection_id "
                "WHERE c.name = :name ORDER BY d.source, d.chunk_index"
            ),
            {"name": collection},
        )
        return [dict(r._mapping) for r in result]


def _expected(paths: list[Path], size: int, overlap: int) -> dict[tuple[str, int], str]:
    """The chunks the files should produce, keyed by (source, chunk_index)."""
    out = {}
    for path in paths:
        source = str(path)
        doc = SourceDocument.from_text(source, path.read_text(encoding="utf-8"))
        for row in chunk_rows(doc, chunk_size=size, chunk_overlap=overlap):
            out[(row.source, row.chunk_index)] = row.content
    return out


async def test_every_file_type_lands_with_relative_sources_and_a_report(
    kdb: kb.Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("# Alpha\n\nAlpha text about vectors.", encoding="utf-8")
    (folder / "b.txt").write_bytes("Caf\xe9 \x00 latin-1 text.".encode("latin-1"))
    (folder / "c.html").write_text(
        "<title>Page C</title><script>evil()</script><p>Visible words.</p>", encoding="utf-8"
    )
    shutil.copy(DATA / "sample.pdf", folder / "sub" / "d.pdf")
    (folder / "sub" / "e.csv").write_text("text,lang\nhello,en\nbonjour,fr\n", encoding="utf-8")
    (folder / "sub" / "f.jsonl").write_text('{"body": "from json", "k": 1}\n', encoding="utf-8")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "bin.txt").write_bytes(bytes(range(32)) * 20)
    monkeypatch.chdir(tmp_path)

    report = await kb.ingest(kdb, ["mixed"], collection="mixed", embedder="hashing")

    rows = await _rows(kdb, "mixed")
    assert report.files_read == 6 and report.chunks_added == len(rows) == 8
    assert {s.path: s.reason for s in report.files_skipped} == {
        "mixed/bin.txt": "binary file (75% of its first bytes are control bytes)",
        "mixed/empty.txt": "empty file",
    }
    assert report.nul_bytes_removed == 1
    assert report.duplicates_skipped == 0 and report.chunks_embedded == 8
    by_source: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_source.setdefault(r["source"], []).append(r)
    assert sorted(by_source) == [
        "mixed/a.md",
        "mixed/b.txt",
        "mixed/c.html",
        "mixed/sub/d.pdf",
        "mixed/sub/e.csv",
        "mixed/sub/f.jsonl",
    ]
    assert by_source["mixed/a.md"][0]["title"] == "Alpha"
    assert by_source["mixed/b.txt"][0]["content"] == "Café  latin-1 text."
    assert by_source["mixed/b.txt"][0]["metadata"]["encoding"] == "cp1252"
    assert by_source["mixed/c.html"][0]["content"] == "Visible words."
    assert by_source["mixed/c.html"][0]["title"] == "Page C"
    pdf = by_source["mixed/sub/d.pdf"]
    assert [r["metadata"]["page"] for r in pdf] == [1, 2] and pdf[0]["title"] == "Sample Report"
    csv_rows = by_source["mixed/sub/e.csv"]
    assert [(r["content"], r["metadata"]["lang"], r["chunk_index"]) for r in csv_rows] == [
        ("hello", "en", 0),
        ("bonjour", "fr", 1),
    ]
    assert by_source["mixed/sub/f.jsonl"][0]["metadata"]["k"] == 1
    for r in rows:
        assert r["dims"] == 384 and r["content_hash"] == content_hash(r["content"])
        assert r["metadata"]["path"] == r["source"] and "modified" in r["metadata"]
    info = {c.name: c for c in await _list(kdb)}["mixed"]
    assert info.embedder == "hashing" and info.model == "feature-hashing-384"
    assert info.documents == 8


async def _list(db: kb.Database) -> list[kb.CollectionInfo]:
    async with db.session() as s:
        return await kb.list_collections(s)


async def test_reingest_adds_nothing_and_embeds_nothing(kdb: kb.Database, tmp_path: Path) -> None:
    folder = _corpus(tmp_path)
    first_embedder = CountingEmbedder()
    first = await kb.ingest(
        kdb,
        folder,
        collection="reingest",
        embedder=first_embedder,
        chunk_size=300,
        chunk_overlap=50,
    )
    before = await _rows(kdb, "reingest")
    assert first.chunks_added == len(before) > 20
    assert len(first_embedder.texts) == len({r["content"] for r in before})

    again = CountingEmbedder()
    second = await kb.ingest(
        kdb, folder, collection="reingest", embedder=again, chunk_size=300, chunk_overlap=50
    )
    assert again.calls == 0
    assert (second.chunks_added, second.chunks_embedded, second.metadata_updated) == (0, 0, 0)
    assert second.duplicates_skipped == len(before) and second.files_unchanged == 6
    assert await _rows(kdb, "reingest") == before  # same ids, same created_at


async def test_a_changed_file_replaces_its_chunks_and_reuses_unchanged_embeddings(
    kdb: kb.Database, tmp_path: Path
) -> None:
    folder = _corpus(tmp_path, files=3, paragraphs=8)
    kw: dict[str, Any] = {"collection": "changed", "chunk_size": 300, "chunk_overlap": 0}
    await kb.ingest(kdb, folder, embedder=CountingEmbedder(), **kw)
    before = {(r["source"], r["chunk_index"]): r for r in await _rows(kdb, "changed")}

    grown = folder / "doc00.md"
    grown.write_text(grown.read_text() + "\n\nA brand new closing paragraph.", encoding="utf-8")
    shrunk = folder / "doc01.md"
    shrunk.write_text("# Doc 1\n\nNow it is short.", encoding="utf-8")
    embedder = CountingEmbedder()
    report = await kb.ingest(kdb, folder, embedder=embedder, **kw)

    after = await _rows(kdb, "changed")
    expected = _expected(sorted(folder.glob("*.md")), 300, 0)
    assert {(r["source"], r["chunk_index"]): r["content"] for r in after} == expected
    old_shrunk = [k for k in before if k[0].endswith("doc01.md")]
    assert report.chunks_removed == len(old_shrunk) - 1
    assert report.files_unchanged == 1
    # Only text that was never stored was embedded.
    stored = {r["content"] for r in before.values()}
    assert embedder.texts and all(t not in stored for t in embedder.texts)
    # Chunks of the untouched file kept their rows.
    for r in after:
        if r["source"].endswith("doc02.md"):
            old = before[(r["source"], r["chunk_index"])]
            assert (r["id"], r["created_at"]) == (old["id"], old["created_at"])


async def test_a_touched_file_refreshes_metadata_without_embedding(
    kdb: kb.Database, tmp_path: Path
) -> None:
    folder = _corpus(tmp_path, files=2, paragraphs=3)
    await kb.ingest(kdb, folder, collection="touched", embedder=CountingEmbedder())
    before = await _rows(kdb, "touched")
    later = time.time() + 3600
    os.utime(folder / "doc00.md", (later, later))
    embedder = CountingEmbedder()
    report = await kb.ingest(kdb, folder, collection="touched", embedder=embedder)
    after = await _rows(kdb, "touched")
    touched = [r for r in after if r["source"].endswith("doc00.md")]
    assert report.metadata_updated == len(touched) and report.chunks_added == 0
    assert report.duplicates_skipped == len(before) and report.files_unchanged == 2
    assert embedder.calls == 0
    assert [(r["id"], r["created_at"]) for r in after] == [
        (r["id"], r["created_at"]) for r in before
    ]
    stamp = dt.datetime.fromtimestamp(later, dt.UTC).isoformat(timespec="seconds")
    assert all(r["metadata"]["modified"] == stamp for r in touched)
    assert (
        touched[0]["metadata"]
        != next(r for r in before if r["source"].endswith("doc00.md"))["metadata"]
    )


async def test_a_batch_that_fails_midway_leaves_nothing_and_a_rerun_completes(
    kdb: kb.Database, tmp_path: Path
) -> None:
    folder = _corpus(tmp_path, files=12, paragraphs=2)
    kw: dict[str, Any] = {"collection": "failing", "chunk_size": 200, "chunk_overlap": 0}
    expected = _expected(sorted(folder.glob("*.md")), 200, 0)
    assert len(expected) > 20
    failing = CountingEmbedder(fail_on_call=3)
    with pytest.raises(IngestError, match="injected failure") as info:
        await kb.ingest(kdb, folder, embedder=failing, batch_size=5, **kw)
    partial = info.value.report
    rows = await _rows(kdb, "failing")
    # Two whole batches were committed before the third failed; nothing of the third.
    assert partial.batches == 2 and partial.chunks_added == len(rows) == 10
    order = sorted(expected)
    assert [(r["source"], r["chunk_index"]) for r in rows] == order[:10]
    assert "run the same ingest again" in str(info.value)

    embedder = CountingEmbedder()
    done = await kb.ingest(kdb, folder, embedder=embedder, batch_size=5, **kw)
    rows = await _rows(kdb, "failing")
    assert {(r["source"], r["chunk_index"]): r["content"] for r in rows} == expected
    assert done.duplicates_skipped == 10 and done.chunks_added == len(expected) - 10
    assert len(embedder.texts) <= len(expected) - 10


async def test_a_database_error_inside_a_batch_rolls_the_whole_batch_back(
    own_db: kb.Database, tmp_path: Path
) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(6):
        body = "Poison pill here." if i == 4 else f"Harmless file number {i}."
        (folder / f"{i}.txt").write_text(body, encoding="utf-8")
    async with own_db.session() as s:
        # The server refuses the poisoned row after the COPY, mid-way through the upsert.
        await s.execute(
            text(
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN IF NEW.content LIKE 'Poison%' THEN "
                "RAISE EXCEPTION 'poisoned row refused'; END IF; RETURN NEW; END $$"
            )
        )
        await s.execute(
            text(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON documents "
                "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
            )
        )
    with pytest.raises(IngestError, match="poisoned row refused") as info:
        await kb.ingest(own_db, folder, collection="c", embedder="hashing", batch_size=2)
    rows = await _rows(own_db, "c")
    # Batches of two: [0, 1] and [2, 3] committed; [4, 5] refused as a whole (5 is harmless).
    assert [r["source"] for r in rows] == [str(folder / f"{i}.txt") for i in range(4)]
    assert info.value.report.chunks_added == 4 and info.value.report.batches == 2
    assert "SELECT" not in str(info.value)  # a message for people, not the SQL


_KILLED_INGEST = """
import asyncio, sys, time
import kb
from kb.embedders.hashing import HashingEmbedder

class Slow(HashingEmbedder):
    def embed(self, texts):
        time.sleep(0.25)
        return super().embed(texts)

async def main():
    settings = kb.Settings(_env_file=None, database_url=sys.argv[1])
    db = await kb.connect(settings, upgrade=False)
    await kb.ingest(db, sys.argv[2], collection="killed", embedder=Slow(64), batch_size=5,
                    chunk_size=200, chunk_overlap=0)

asyncio.run(main())
"""


_COUNT_KILLED = (
    "SELECT count(*) FROM documents d JOIN collections c ON c.id = d.collection_id "
    "WHERE c.name = 'killed'"
)


async def test_an_ingest_killed_midway_keeps_whole_batches_and_a_rerun_completes(
    kdb: kb.Database, tmp_path: Path
) -> None:
    folder = _corpus(tmp_path, files=12, paragraphs=3)
    expected = _expected(sorted(folder.glob("*.md")), 200, 0)
    assert len(expected) > 40
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _KILLED_INGEST,
        url_text(kdb.url),
        str(folder),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    conn = await asyncpg.connect(**asyncpg_kwargs(kdb.url))
    try:
        count = 0
        deadline = time.monotonic() + 60
        while count < 10 and time.monotonic() < deadline and child.returncode is None:
            await asyncio.sleep(0.05)
            count = await conn.fetchval(_COUNT_KILLED)
        assert child.returncode is None, await child.communicate()
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 10)
        await asyncio.sleep(0.3)  # the server notices the dead backend and rolls it back
        committed = await conn.fetchval(_COUNT_KILLED)
    finally:
        await conn.close()
    assert 10 <= committed < len(expected)
    assert committed % 5 == 0  # never half a batch

    report = await kb.ingest(
        kdb,
        folder,
        collection="killed",
        embedder=HashingEmbedder(64),
        batch_size=5,
        chunk_size=200,
        chunk_overlap=0,
    )
    rows = await _rows(kdb, "killed")
    assert {(r["source"], r["chunk_index"]): r["content"] for r in rows} == expected
    assert report.duplicates_skipped == committed
    assert report.chunks_added == len(expected) - committed


async def test_concurrent_ingests_of_overlapping_files_do_not_duplicate(
    kdb: kb.Database, tmp_path: Path
) -> None:
    folder = _corpus(tmp_path, files=10, paragraphs=4)
    files = sorted(folder.glob("*.md"))
    expected = _expected(files, 200, 0)
    other = await kb.connect(settings_for(kdb.url), url=kdb.url, upgrade=False)
    try:
        kw: dict[str, Any] = {
            "collection": "shared",
            "embedder": "hashing",
            "batch_size": 4,
            "chunk_size": 200,
            "chunk_overlap": 0,
        }
        a, b = await asyncio.gather(
            kb.ingest(kdb, [str(p) for p in files[:7]], **kw),
            kb.ingest(other, [str(p) for p in reversed(files[3:])], **kw),
        )
    finally:
        await other.close()
    rows = await _rows(kdb, "shared")
    assert {(r["source"], r["chunk_index"]): r["content"] for r in rows} == expected
    assert a.chunks_added + b.chunks_added == len(expected)
    overlap = sum(1 for k in expected if any(k[0] == str(p) for p in files[3:7]))
    assert a.duplicates_skipped + b.duplicates_skipped == overlap
    assert [c.name for c in await _list(kdb)].count("shared") == 1


async def test_a_mismatched_embedder_is_refused_and_writes_nothing(
    kdb: kb.Database, tmp_path: Path
) -> None:
    folder = _corpus(tmp_path, files=1, paragraphs=1)
    async with kdb.session() as s:
        await kb.create_collection(
            s, "small", embedder="hashing", model="feature-hashing-64", dimension=64
        )
    with pytest.raises(kb.EmbedderMismatch) as info:
        await kb.ingest(kdb, folder, collection="small", embedder=HashingEmbedder(128))
    assert "feature-hashing-64 (64 dims)" in str(info.value)
    assert "feature-hashing-128 (128 dims)" in str(info.value)
    with pytest.raises(kb.EmbedderMismatch, match="all-MiniLM-L6-v2 \\(384 dims\\)"):
        await kb.ingest(kdb, folder, collection="small", embedder="local")
    with pytest.raises(kb.CollectionNotFound):
        await kb.ingest(kdb, folder, collection="nope", create=False)
    assert await _rows(kdb, "small") == []
    # With no embedder given, the collection's own is used.
    report = await kb.ingest(kdb, folder, collection="small")
    assert report.chunks_added > 0


async def test_bad_options_are_refused_before_anything_is_written(kdb: kb.Database) -> None:
    with pytest.raises(kb.InvalidInput, match="overlap"):
        await kb.ingest(kdb, [], collection="never", chunk_size=100, chunk_overlap=80)
    with pytest.raises(kb.InvalidInput, match="batch size"):
        await kb.ingest(kdb, [], collection="never", batch_size=0)
    report = await kb.ingest(kdb, ["/no/such/dir"], collection="never", embedder="hashing")
    assert report.files_read == 0 and report.files_skipped[0].reason == "no such file or directory"
    # Nothing to read: no empty collection left behind.
    assert "never" not in {c.name for c in await _list(kdb)}


async def test_progress_reaches_another_thread_through_the_sync_bridge(
    kdb: kb.Database, tmp_path: Path
) -> None:
    folder = _corpus(tmp_path, files=6, paragraphs=4)
    holder = ProgressHolder()
    seen: list[IngestProgress] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            latest = holder.latest
            if latest is not None and (not seen or seen[-1] != latest):
                seen.append(latest)
            time.sleep(0.001)

    history: list[IngestProgress] = []

    def record(p: IngestProgress) -> None:
        history.append(p)
        holder(p)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        with kb.SyncDatabase(settings_for(kdb.url), upgrade=False) as kbs:
            report = await asyncio.to_thread(
                kbs.with_db,
                kb.ingest,
                folder,
                collection="p",
                embedder="hashing",
                batch_size=8,
                chunk_size=200,
                chunk_overlap=0,
                progress=record,
            )
    finally:
        stop.set()
        poller.join()
    # The other thread saw snapshots the ingest made, whole and in order.
    assert seen and all(any(p is h for h in history) for p in seen)
    assert holder.latest is history[-1]
    final = history[-1]
    assert final.stage == "done" and final.fraction == 1.0 and final.eta_s == 0.0
    assert final.files_done == final.files_total == 6
    assert final.chunks_done == final.chunks_total == report.chunks_added
    done = [p.chunks_done for p in history]
    assert done == sorted(done) and len(set(done)) >= 3  # several batches reported
    assert [p.stage for p in history][:1] == ["reading"]
    assert any(p.eta_s is not None and p.eta_s > 0 for p in history)
    assert all(p.chunks_per_s >= 0 for p in history)


async def test_large_loads_build_the_index_once_and_a_missing_index_is_repaired(
    kdb: kb.Database, tmp_path: Path
) -> None:
    folder = _corpus(tmp_path, files=3, paragraphs=3)
    report = await kb.ingest(kdb, folder, collection="d", embedder="hashing", defer_index=True)
    assert report.index_deferred
    async with kdb.session() as s:
        cid = (await kb.get_collection(s, "d")).id
    assert await indexing.index_state(kdb, cid) is True
    # A load that died before building its index: the next ingest builds it.
    async with kdb.session() as s:
        await s.execute(text(f"DROP INDEX ix_documents_hnsw_c{cid}"))
    again = await kb.ingest(kdb, folder, collection="d")
    assert not again.index_deferred and again.chunks_added == 0
    assert await indexing.index_state(kdb, cid) is True
    async with kdb.session() as s:
        # The table is tiny: make the planner show that the index can serve the query.
        await s.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            (
                await s.execute(
                    text(
                        "EXPLAIN SELECT id FROM documents WHERE collection_id = :c "
                        "ORDER BY embedding::vector(384) <=> CAST(:q AS vector(384)) LIMIT 5"
                    ),
                    {"c": cid, "q": str([1.0] + [0.0] * 383)},
                )
            ).scalars()
        )
    assert f"ix_documents_hnsw_c{cid}" in plan


async def test_documents_in_memory_and_rows_with_their_own_vectors(kdb: kb.Database) -> None:
    docs = [
        SourceDocument.from_text("notes/1", "First note.", title="One", metadata={"tag": "a"}),
        SourceDocument.from_text("notes/2", "Second\x00 note.", metadata={"tag": "b"}),
    ]
    report = await kb.ingest_documents(kdb, docs, collection="m", embedder="hashing")
    rows = await _rows(kdb, "m")
    assert report.chunks_added == 2 and report.nul_bytes_removed == 0
    assert [(r["title"], r["content"], r["metadata"]) for r in rows] == [
        ("One", "First note.", {"tag": "a"}),
        ("notes/2", "Second note.", {"tag": "b"}),
    ]
    async with kdb.session() as s:
        await kb.create_collection(
            s, "v", embedder="hashing", model="feature-hashing-8", dimension=8
        )
    stamp = dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    vectors = np.eye(8)
    rows = [Row("s", f"c{i}", vectors[i], chunk_index=i, created_at=stamp) for i in range(3)]
    written = await write_rows(kdb, "v", rows)
    assert written == 3
    stored = await _rows(kdb, "v")
    assert [r["created_at"].year for r in stored] == [2020] * 3
    with pytest.raises(kb.InvalidInput, match="expects 8"):
        await write_rows(kdb, "v", [Row(source="s", content="x", embedding=[1.0, 2.0])])
    with pytest.raises(kb.InvalidInput, match="zero vector"):
        await write_rows(kdb, "v", [Row(source="s", content="x", embedding=np.zeros(8))])
    with pytest.raises(kb.InvalidInput, match="repeats"):
        await write_rows(kdb, "v", [Row("t", "a", vectors[0]), Row("t", "b", vectors[1])])
    assert len(await _rows(kdb, "v")) == 3


@pytest.mark.model
async def test_the_local_model_ingests_and_ranks_by_meaning(
    kdb: kb.Database, tmp_path: Path
) -> None:
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / "cats.txt").write_text("Cats are small furry pets that purr.", encoding="utf-8")
    (folder / "sql.txt").write_text("PostgreSQL is a relational database.", encoding="utf-8")
    report = await kb.ingest(kdb, folder, collection="local")
    assert report.chunks_added == 2
    async with kdb.session() as s:
        info = await kb.get_collection(s, "local")
        query = kb.make_embedder("local").embed(["a kitten is a young cat"])[0]
        nearest = await s.scalar(
            text(
                "SELECT source FROM documents WHERE collection_id = :c "
                "ORDER BY embedding::vector(384) <=> CAST(:q AS vector(384)) LIMIT 1"
            ),
            {"c": info.id, "q": str(query.tolist())},
        )
    assert (info.embedder, info.model, info.dimension) == (
        "local",
        "sentence-transformers/all-MiniLM-L6-v2",
        384,
    )
    assert nearest == str(folder / "cats.txt")


async def test_the_demo_builds_two_collections_with_metadata_once(own_db: kb.Database) -> None:
    from kb import demo

    kw: dict[str, Any] = {
        "embedder": "hashing",
        "modules": ["json", "textwrap"],
        "builtin_names": ["len", "str", "ValueError"],
    }
    result = await demo.seed_demo_if_empty(own_db, **kw)
    assert result is not None and result.chunks_added > 10
    infos = {c.name: c for c in await _list(own_db)}
    assert set(infos) == {demo.STDLIB, demo.BUILTINS}
    stdlib = await _rows(own_db, demo.STDLIB)
    assert {r["metadata"]["module"] for r in stdlib} == {"json", "textwrap"}
    assert {r["metadata"]["kind"] for r in stdlib} >= {"module", "function", "class"}
    dumps = [r for r in stdlib if r["metadata"].get("name") == "json.dumps"]
    assert dumps and dumps[0]["content"].startswith("json.dumps(obj")
    builtins_rows = await _rows(own_db, demo.BUILTINS)
    kinds = {r["source"]: r["metadata"]["kind"] for r in builtins_rows}
    assert kinds == {
        "pydoc:builtins.len": "function",
        "pydoc:builtins.str": "type",
        "pydoc:builtins.ValueError": "exception",
    }
    assert any(r["metadata"].get("member") == "str.split" for r in builtins_rows)
    assert await demo.seed_demo_if_empty(own_db, **kw) is None  # not empty any more
    again = await demo.build_demo(own_db, **kw)
    assert again.chunks_added == 0  # the same text every run: nothing re-embedded
