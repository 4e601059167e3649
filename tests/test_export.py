"""Export to CSV, JSON Lines and Parquet: streamed in batches, complete, checked, never short."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from sqlalchemy import delete
from sqlalchemy.engine import URL

import kb
import kb.export
from helpers import settings_for
from kb.models import Document

N = 1234  # more than two batches of 500
DIM = 16
BASE = datetime(2025, 6, 1, tzinfo=UTC)


@dataclass
class Data:
    db: kb.Database
    rows: dict[str, dict[str, Any]]
    collection_id: int


def _doc(collection_id: int, i: int, vec: np.ndarray, created: datetime) -> Document:
    return Document(
        id=uuid.uuid4(),
        collection_id=collection_id,
        title=f'Title {i}, with "quotes"; commas',
        source=f"files/{i}.md",
        chunk_index=0,
        # Newlines, quotes, separators and non-ASCII text must survive every format.
        content=f'Line one of {i}\nline two, "quoted"\r\n\ttabbed; émoji 🎉 {i}',
        meta={"lang": ("en", "fr")[i % 2], "nested": {"n": i, "ok": i % 3 == 0}, "tags": ["a"]},
        embedding=vec,
        created_at=created,
    )


@pytest.fixture(scope="module")
async def data(new_database: Callable[[], Awaitable[URL]]) -> AsyncIterator[Data]:
    url = await new_database()
    db = await kb.connect(settings_for(url), url=url, upgrade=False)
    vectors = np.random.default_rng(4).standard_normal((N, DIM)).astype(np.float32)
    async with db.session() as s:
        coll = await kb.create_collection(
            s, "exp", embedder="hashing", model=f"feature-hashing-{DIM}", dimension=DIM
        )
        docs = [_doc(coll.id, i, vectors[i], BASE + timedelta(seconds=i // 2)) for i in range(N)]
        s.add_all(docs)
    rows = {str(d.id): {"doc": d, "i": i} for i, d in enumerate(docs)}
    try:
        yield Data(db, rows, coll.id)
    finally:
        await db.close()


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _read(path: Path, fmt: str) -> list[dict[str, Any]]:
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as fh:
            out = list(csv.DictReader(fh))
        for row in out:
            row["metadata"] = json.loads(row["metadata"])
            row["chunk_index"] = int(row["chunk_index"])
        return out
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    table = pq.read_table(path).to_pylist()
    for row in table:
        row["metadata"] = json.loads(row["metadata"])
        row["created_at"] = row["created_at"].isoformat()
    return table


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
async def test_export_everything_complete_and_faithful(
    data: Data, fmt: str, tmp_path: Path
) -> None:
    target = tmp_path / f"all.{fmt}"
    async with data.db.session() as s:
        report = await kb.export_documents(s, "exp", target, format=fmt)
    assert report.rows == report.expected == N and report.path == str(target)
    assert _listing(tmp_path) == [target.name]  # no partial left
    rows = _read(target, fmt)
    assert len(rows) == N
    assert {r["id"] for r in rows} == set(data.rows)
    stamps = [datetime.fromisoformat(r["created_at"]) for r in rows]
    assert stamps == sorted(stamps, reverse=True)  # newest first, as browsed
    for row in rows:
        doc = data.rows[row["id"]]["doc"]
        assert row["content"] == doc.content
        assert row["title"] == doc.title
        assert row["metadata"] == doc.meta
        assert row["chunk_index"] == 0 and row["collection"] == "exp"


async def test_export_a_filter_and_to_a_stream(data: Data) -> None:
    out = io.BytesIO()
    async with data.db.session() as s:
        report = await kb.export_documents(
            s, "exp", out, format="jsonl", filters={"metadata": {"lang": "fr"}}, order="oldest"
        )
        assert report.rows == await kb.count_documents(
            s, "exp", filters={"metadata": {"lang": "fr"}}
        )
    lines = out.getvalue().decode("utf-8").splitlines()
    assert len(lines) == report.rows == N // 2
    assert all(json.loads(line)["metadata"]["lang"] == "fr" for line in lines)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
async def test_export_search_results(data: Data, fmt: str, tmp_path: Path) -> None:
    doc = next(iter(data.rows.values()))["doc"]
    async with data.db.session() as s:
        results = await kb.search_by_vector(s, doc.embedding, collection="exp", k=25)
    report = await kb.export_results(results, tmp_path / f"hits.{fmt}", format=fmt)
    assert report.rows == 25
    rows = _read(tmp_path / f"hits.{fmt}", fmt)
    assert [r["id"] for r in rows] == [str(i) for i in results.ids]
    assert [int(r["rank"]) for r in rows] == list(range(1, 26))
    assert float(rows[0]["score"]) == pytest.approx(results[0].score)
    assert rows[0]["operator"] == "<=>"


async def test_a_changing_collection_never_leaves_a_silently_wrong_file(
    data: Data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = kb.export.iter_documents
    added: list[uuid.UUID] = []

    async def interleaved(*args: Any, **kwargs: Any) -> AsyncIterator[list[kb.DocumentRecord]]:
        first = True
        async for batch in original(*args, **kwargs):
            yield batch
            if first:
                first = False
                # Another writer commits a row that sorts into the part not yet exported.
                vec = np.ones(DIM, dtype=np.float32)
                async with data.db.session() as other:
                    doc = _doc(data.collection_id, 10_000 + len(added), vec, BASE)
                    other.add(doc)
                added.append(doc.id)

    monkeypatch.setattr(kb.export, "iter_documents", interleaved)
    target = tmp_path / "moving.csv"
    try:
        # A fresh session exports from one snapshot: the late row is simply not in it.
        async with data.db.session() as s:
            report = await kb.export_documents(s, "exp", target, format="csv")
        assert report.rows == report.expected == N
        assert str(added[0]) not in target.read_text(encoding="utf-8")

        # Inside a transaction already under way there is no snapshot to hold, and the
        # mismatch is refused loudly instead of leaving a file that disagrees with the count.
        async with data.db.session() as s:
            await kb.count_documents(s, "exp")
            with pytest.raises(kb.ExportIncomplete, match="changed during the export"):
                await kb.export_documents(s, "exp", tmp_path / "refused.csv", format="csv")
        assert not (tmp_path / "refused.csv").exists()
        assert _listing(tmp_path) == ["moving.csv"]
    finally:
        async with data.db.session() as s:
            for doc_id in added:
                await s.execute(delete(Document).where(Document.id == doc_id))


async def test_bad_export_targets_are_refused(data: Data, tmp_path: Path) -> None:
    async with data.db.session() as s:
        with pytest.raises(kb.InvalidInput, match="format"):
            await kb.export_documents(s, "exp", tmp_path / "x.xml", format="xml")
        with pytest.raises(kb.InvalidInput, match="folder"):
            await kb.export_documents(s, "exp", tmp_path, format="csv")
        with pytest.raises(kb.InvalidInput, match="does not exist"):
            await kb.export_documents(s, "exp", tmp_path / "no" / "x.csv", format="csv")
        with pytest.raises(kb.CollectionNotFound):
            await kb.export_documents(s, "nope", tmp_path / "x.csv", format="csv")
    assert _listing(tmp_path) == []
