"""A backend connection killed in the middle of an ingest: that batch is rolled back, and
running the ingest again completes it with no duplicates and no missing chunks."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

import kb
from helpers import settings_for
from kb.db import asyncpg_kwargs


def _kill_backend_inside(original: Any, url: Any, on_call: int) -> Any:
    """Wrap write_batch: on call `on_call`, kill the session's own backend after the rows
    are written but before the batch commits."""
    calls = {"n": 0, "killed": 0}

    async def write_batch(session: AsyncSession, *args: Any, **kwargs: Any) -> Any:
        result = await original(session, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == on_call:
            pid = await session.scalar(text("SELECT pg_backend_pid()"))
            admin = await asyncpg.connect(**asyncpg_kwargs(url))
            try:
                calls["killed"] += int(
                    await admin.fetchval("SELECT pg_terminate_backend($1)", pid) or 0
                )
            finally:
                await admin.close()
        return result

    write_batch.calls = calls  # type: ignore[attr-defined]
    return write_batch


def _corpus(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for i in range(12):
        path = folder / f"part{i:02d}.md"
        path.write_text(
            "\n\n".join(f"Section {j} of part {i}: " + "lorem ipsum dolor " * 20 for j in range(8)),
            encoding="utf-8",
        )
        paths.append(path)
    return paths


async def _chunks(db: kb.Database, collection: str) -> list[tuple[str, int, str]]:
    async with db.session() as s:
        rows = await s.execute(
            text(
                "SELECT d.source, d.chunk_index, d.content_hash FROM documents d "
                "JOIN collections c ON c.id = d.collection_id WHERE c.name = :name"
            ),
            {"name": collection},
        )
        return sorted((r.source, r.chunk_index, r.content_hash) for r in rows)


async def test_backend_killed_mid_ingest(new_database, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = await new_database()
    paths = _corpus(tmp_path / "corpus")
    db = await kb.connect(settings_for(url), url=url, upgrade=False)
    try:
        writer = importlib.import_module("kb.ingest.writer")
        killing = _kill_backend_inside(writer.write_batch, url, on_call=2)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(writer, "write_batch", killing)
            with pytest.raises(kb.KBError):
                await kb.ingest(
                    db,
                    paths,
                    collection="victim",
                    embedder="hashing",
                    chunk_size=300,
                    batch_size=8,
                )
        assert killing.calls["killed"] == 1
        partial = await _chunks(db, "victim")
        # The first batch committed; the second died with its backend before committing.
        assert len(partial) == 8

        # The pool dropped the dead connections; the same ingest again finishes the job.
        report = await kb.ingest(db, paths, collection="victim", chunk_size=300, batch_size=8)
        assert report.duplicates_skipped == len(partial)
        await kb.ingest(
            db, paths, collection="reference", embedder="hashing", chunk_size=300, batch_size=8
        )
        finished, reference = await _chunks(db, "victim"), await _chunks(db, "reference")
        assert finished == reference
        assert 0 < len(partial) < len(reference)
        assert len(set(finished)) == len(finished)
    finally:
        await db.close()
