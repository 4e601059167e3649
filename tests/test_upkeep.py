"""What writes end with (kb.ingest.upkeep): the GIN indexes' pending entries merged, so searches
after an ingest do not read them one by one; a failed step is a warning, the rows stay."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

import kb
from helpers import login_role, settings_for
from kb import terms
from kb.ingest import indexing, upkeep
from kb.ingest.writer import Row, write_rows

DIM = 8
GIN_INDEXES = ("ix_documents_tsv", "ix_documents_metadata")
VECTORS = np.random.default_rng(11).standard_normal((40, DIM)).astype(np.float32)


async def _pending_pages(db: kb.Database) -> dict[str, int]:
    """Merge each GIN index's pending list and return how many pages each held."""
    async with db.session() as s:
        return {
            ix: int(
                await s.scalar(text("SELECT gin_clean_pending_list(to_regclass(:ix))"), {"ix": ix})
            )
            for ix in GIN_INDEXES
        }


async def _collection(db: kb.Database, name: str) -> None:
    async with db.session() as s:
        await kb.ensure_collection(
            s, name, embedder="hashing", model=f"feature-hashing-{DIM}", dimension=DIM
        )


async def _write_past_kb(db: kb.Database) -> None:
    """Copy every stored document with a plain INSERT, as a writer other than kb would."""
    async with db.session() as s:
        await s.execute(
            text(
                "INSERT INTO documents (collection_id, title, source, chunk_index, content, "
                "metadata, content_hash, embedding) SELECT collection_id, title, 'raw/' || source, "
                "chunk_index, content, metadata, content_hash, embedding FROM documents"
            )
        )


def _rows(prefix: str) -> list[Row]:
    return [
        Row(
            source=f"{prefix}/{i}",
            content=f"harbour tide number{i}",
            embedding=v,
            metadata={"i": i},
        )
        for i, v in enumerate(VECTORS)
    ]


async def test_write_rows_leaves_no_pending_gin_entries(own_db: kb.Database) -> None:
    await _collection(own_db, "sea")
    await write_rows(own_db, "sea", _rows("a"))
    assert await _pending_pages(own_db) == {ix: 0 for ix in GIN_INDEXES}
    # The same rows written past kb do wait in the lists: the check above can fail.
    await _write_past_kb(own_db)
    pending = await _pending_pages(own_db)
    assert all(pages > 0 for pages in pending.values()), pending


async def test_ingest_leaves_no_pending_gin_entries(own_db: kb.Database, tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"note{i}.md").write_text(f"# Note {i}\n\nharbour tide and the number {i}\n")
    report = await kb.ingest(own_db, [tmp_path], collection="notes", embedder="hashing")
    assert report.chunks_added == 5 and not report.warnings
    assert await _pending_pages(own_db) == {ix: 0 for ix in GIN_INDEXES}


async def test_a_failed_merge_is_a_warning_and_keeps_the_rows(
    own_db: kb.Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    counted: list[int] = []

    async def refused(db: kb.Database) -> int:
        raise RuntimeError("merge refused")

    async def count(db: kb.Database, collection_id: int) -> None:
        counted.append(collection_id)

    monkeypatch.setattr(upkeep, "merge_pending", refused)
    monkeypatch.setattr(terms, "count_terms_if_due", count)
    (tmp_path / "a.md").write_text("harbour tide\n")
    report = await kb.ingest(own_db, [tmp_path], collection="notes", embedder="hashing")
    assert report.chunks_added == 1
    [warning] = report.warnings
    assert "could not be merged (merge refused)" in warning.message
    # Said once, in the report; the steps after the merge still ran.
    assert "merge refused" not in caplog.text
    assert len(counted) == 1
    async with own_db.session() as s:
        [info] = await kb.list_collections(s)
    assert info.documents == 1
    # The bulk writer has no report: it logs the problem and returns what it wrote.
    await _collection(own_db, "sea")
    assert await write_rows(own_db, "sea", _rows("b")) == len(VECTORS)
    assert "collection sea: the new entries of its full-text and metadata" in caplog.text
    assert len(counted) == 2


async def test_the_writer_merges_even_when_the_index_build_fails(
    own_db: kb.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object) -> bool:
        raise RuntimeError("index build failed")

    monkeypatch.setattr(indexing, "ensure_index", broken)
    await _collection(own_db, "sea")
    with pytest.raises(RuntimeError, match="index build failed"):
        await write_rows(own_db, "sea", _rows("a"))
    async with own_db.session() as s:
        [info] = await kb.list_collections(s)
    assert info.documents == len(VECTORS)
    assert await _pending_pages(own_db) == {ix: 0 for ix in GIN_INDEXES}


async def test_a_read_only_handle_merges_nothing(own_db: kb.Database) -> None:
    await _collection(own_db, "sea")
    await write_rows(own_db, "sea", _rows("a"))
    await _write_past_kb(own_db)
    reader = await kb.connect(settings_for(own_db.url, read_only=True), url=own_db.url)
    try:
        assert await upkeep.after_write(reader, 1, indexed=True, added=1) == []
    finally:
        await reader.close()
    pending = await _pending_pages(own_db)
    assert all(pages > 0 for pages in pending.values()), pending


@pytest.fixture
async def writer_role(own_db: kb.Database) -> AsyncIterator[URL]:
    """A login role that may read and write every table of own_db but owns none of them."""
    privileges = "SELECT, INSERT, UPDATE, DELETE"
    async with login_role(own_db.url, f"kb_writer_{os.getpid()}", privileges) as url:
        yield url


async def test_a_role_that_does_not_own_the_indexes_leaves_them_to_autovacuum(
    own_db: kb.Database,
    writer_role: URL,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _collection(own_db, "sea")
    writer = await kb.connect(settings_for(writer_role), url=writer_role, upgrade=False)
    try:
        assert await upkeep.merge_pending(writer) == 0
        # No error, no warning: the entries wait for autovacuum (the owner's merge).
        monkeypatch.setattr(upkeep, "ANALYZE_MIN_ROWS", 30)
        assert await write_rows(writer, "sea", _rows("c")) == len(VECTORS)
        assert "collection sea" not in caplog.text
        # Nor may it analyze the table: it does not try.
        assert not await upkeep.refresh_statistics(writer, 1, len(VECTORS))
    finally:
        await writer.close()
    pending = await _pending_pages(own_db)
    assert all(pages > 0 for pages in pending.values()), pending


async def _estimate(db: kb.Database, collection: str) -> float:
    """Return the planner's row estimate for a collection's documents."""
    async with db.session() as s:
        coll = await kb.get_collection(s, collection)
        plan = await s.scalar(
            text(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM documents WHERE collection_id = {coll.id}")
        )
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return float(plan[0]["Plan"]["Plan Rows"])


@pytest.fixture
def analyses(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """Record each statistics refresh kb's writes ask for: (rows added, whether it ran)."""
    monkeypatch.setattr(upkeep, "ANALYZE_MIN_ROWS", 30)
    original = upkeep.refresh_statistics
    seen: list[tuple[int, bool]] = []

    async def recorded(db: kb.Database, collection_id: int, added: int) -> bool:
        ran = await original(db, collection_id, added)
        seen.append((added, ran))
        return ran

    monkeypatch.setattr(upkeep, "refresh_statistics", recorded)
    return seen


async def test_a_large_write_the_planner_misses_refreshes_its_statistics(
    own_db: kb.Database, analyses: list[tuple[int, bool]]
) -> None:
    await _collection(own_db, "sea")
    await write_rows(own_db, "sea", _rows("a"))
    assert analyses == [(len(VECTORS), True)]
    async with own_db.session() as s:
        await s.execute(text("ANALYZE documents"))  # the statistics know "sea" alone
    # Written past kb, a new collection stays unseen by the planner.
    await _collection(own_db, "raw")
    async with own_db.session() as s:
        await s.execute(
            text(
                "INSERT INTO documents (collection_id, title, source, chunk_index, content, "
                "metadata, content_hash, embedding) SELECT c.id, d.title, d.source, "
                "d.chunk_index, d.content, d.metadata, d.content_hash, d.embedding "
                "FROM documents d, collections c WHERE c.name = 'raw'"
            )
        )
    assert await _estimate(own_db, "raw") < 5
    # Written by kb, it is analyzed, and searches plan with it.
    await _collection(own_db, "lake")
    await write_rows(own_db, "lake", _rows("b"))
    assert analyses[-1] == (len(VECTORS), True)
    assert await _estimate(own_db, "lake") >= len(VECTORS) / 2
    # Rewritten rows are not new to the planner; known or too few rows: no ANALYZE.
    changed = [replace(row, content=row.content + " changed") for row in _rows("b")]
    assert await write_rows(own_db, "lake", changed) == len(VECTORS)
    assert analyses[-1] == (0, False)
    async with own_db.session() as s:
        lake = (await kb.get_collection(s, "lake")).id
    assert not await upkeep.refresh_statistics(own_db, lake, len(VECTORS))


async def test_an_ingest_counts_the_chunks_it_added(
    own_db: kb.Database, tmp_path: Path, analyses: list[tuple[int, bool]]
) -> None:
    for i in range(36):
        (tmp_path / f"note{i}.md").write_text(f"harbour tide and the number {i}\n")
    await kb.ingest(own_db, [tmp_path], collection="notes", embedder="hashing")
    assert analyses == [(36, True)]
    assert await _estimate(own_db, "notes") >= 18
    # The same files changed: replaced chunks, none added.
    for i in range(36):
        (tmp_path / f"note{i}.md").write_text(f"harbour tide and the new number {i}\n")
    report = await kb.ingest(own_db, [tmp_path], collection="notes", embedder="hashing")
    assert report.chunks_replaced == 36
    assert analyses[-1] == (0, False)
