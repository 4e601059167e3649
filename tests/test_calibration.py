"""Per-collection ef_search: measured on the real index, stored, used by searches, re-measured."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import text

import kb
from helpers import run_cli
from kb import calibration
from kb.ingest.writer import Row, write_rows

DIM = 128


def _vectors(n: int, seed: int) -> np.ndarray:
    """Random directions in 128 dims: no structure for the graph to follow, so a search at a
    small ef_search misses neighbours (recall@10 ~0.96 at ef 40 on 4,000 of them)."""
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


async def _collection(db: kb.Database, name: str, n: int, seed: int = 1) -> np.ndarray:
    async with db.session() as s:
        await kb.create_collection(
            s, name, embedder="hashing", model=f"feature-hashing-{DIM}", dimension=DIM
        )
    vectors = _vectors(n, seed)
    rows = [Row("src", f"chunk {i}", vectors[i], chunk_index=i) for i in range(n)]
    assert await write_rows(db, name, rows) == n
    return vectors


async def _settings(db: kb.Database, name: str) -> dict:
    async with db.session() as s:
        return dict((await kb.get_collection(s, name)).settings)


async def test_calibration_keeps_the_smallest_ef_reaching_the_target(kdb: kb.Database) -> None:
    await _collection(kdb, "cal", 4000)
    async with kdb.session() as s:
        result = await kb.calibrate(s, "cal", target=1.0, sample=30)
    tried = list(result.recall_by_ef)
    assert tried == list(calibration.STEPS[: len(tried)])
    # Every ef_search tried before the one kept fell short; the kept one reached the target
    # (or is pgvector's ceiling).
    assert all(result.recall_by_ef[ef] < 1.0 for ef in tried[:-1])
    assert result.ef_search == tried[-1]
    assert result.recall >= 1.0 or result.ef_search == calibration.STEPS[-1]
    # The data is hard enough that the smallest ef_search misses neighbours.
    assert len(tried) >= 2, result.recall_by_ef
    assert result.rows == 4000 and result.sample == 30

    stored = await _settings(kdb, "cal")
    assert stored["ef_search"] == result.ef_search
    assert stored["calibration"]["rows"] == 4000
    assert stored["calibration"]["recall_by_ef"] == {
        str(ef): round(r, 4) for ef, r in result.recall_by_ef.items()
    }


async def test_searches_start_from_the_collection_ef(kdb: kb.Database) -> None:
    vectors = await _collection(kdb, "cal_use", 2000, seed=2)
    q = vectors[7]
    async with kdb.session() as s:
        before = await kb.search_by_vector(s, q, collection="cal_use", k=10)
    assert before.request.effective_ef_search == 64
    # Another process stores a measurement: remembered collection facts must not hide it.
    async with kdb.session() as s:
        await s.execute(
            text(
                "UPDATE collections SET settings = settings || '{\"ef_search\": 250}' "
                "WHERE name = 'cal_use'"
            )
        )
    async with kdb.session() as s:
        after = await kb.search_by_vector(s, q, collection="cal_use", k=10)
        explicit = await kb.search_by_vector(s, q, collection="cal_use", k=10, ef_search=40)
        hybrid = await kb.search(s, "chunk", collection="cal_use", mode="hybrid", k=10)
        text_only = await kb.search(s, "chunk", collection="cal_use", mode="text", k=10)
        exact = await kb.search_by_vector(s, q, collection="cal_use", k=10, exact=True)
    assert after.request.collection_ef == 250
    assert after.request.effective_ef_search == 250
    assert explicit.request.effective_ef_search == 40
    assert hybrid.request.effective_ef_search == 250
    assert text_only.request.collection_ef is None
    assert exact.request.collection_ef is None
    assert after.ids == exact.ids  # 2,000 rows at ef 250: the exact top 10


@pytest.mark.parametrize(
    ("settings", "rows", "due"),
    [
        ({}, calibration.CALIBRATE_MIN_ROWS - 1, False),
        ({}, calibration.CALIBRATE_MIN_ROWS, True),
        ({"ef_search": 300}, 10**6, False),  # set by hand: the user's choice
        ({"ef_search": 100, "calibration": {"rows": 30_000}}, 59_999, False),
        ({"ef_search": 100, "calibration": {"rows": 30_000}}, 60_000, True),
        ({"ef_search": 100, "calibration": {"rows": "x"}}, 30_000, True),
    ],
)
def test_when_an_ingest_calibrates(settings: dict, rows: int, due: bool) -> None:
    assert calibration.needs_calibration(settings, rows) is due


async def test_an_ingest_calibrates_a_grown_collection(
    kdb: kb.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calibration, "CALIBRATE_MIN_ROWS", 500)
    await _collection(kdb, "cal_ingest", 400, seed=3)
    assert "calibration" not in await _settings(kdb, "cal_ingest")
    more = _vectors(300, seed=4)
    await write_rows(
        kdb, "cal_ingest", [Row("more", f"m {i}", v, chunk_index=i) for i, v in enumerate(more)]
    )
    first = (await _settings(kdb, "cal_ingest"))["calibration"]
    assert first["rows"] == 700
    # Grown by less than double: kept; doubled: measured again.
    await write_rows(kdb, "cal_ingest", [Row("again", "a", more[0] + 0.01)])
    assert (await _settings(kdb, "cal_ingest"))["calibration"] == first
    extra = _vectors(700, seed=5)
    await write_rows(
        kdb, "cal_ingest", [Row("x", f"x {i}", v, chunk_index=i) for i, v in enumerate(extra)]
    )
    assert (await _settings(kdb, "cal_ingest"))["calibration"]["rows"] == 1401


async def test_calibration_refuses_what_it_cannot_measure(kdb: kb.Database) -> None:
    await _collection(kdb, "cal_small", 8, seed=6)
    async with kdb.session() as s:
        with pytest.raises(kb.CollectionNotFound):
            await kb.calibrate(s, "no such collection")
        with pytest.raises(kb.InvalidInput, match="more than 10"):
            await kb.calibrate(s, "cal_small")
        with pytest.raises(kb.InvalidInput, match="target"):
            await kb.calibrate(s, "cal_small", target=1.5)
        with pytest.raises(kb.InvalidInput, match="sample"):
            await kb.calibrate(s, "cal_small", sample=0)
    assert "calibration" not in await _settings(kdb, "cal_small")


async def test_calibrate_command(kdb: kb.Database) -> None:
    await _collection(kdb, "cal_cli", 600, seed=7)
    proc = run_cli(
        "kb", "collections", "calibrate", "cal_cli", "--sample", "12", "--json", url=kdb.url
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["collection"] == "cal_cli" and out["sample"] == 12 and out["rows"] == 600
    assert (await _settings(kdb, "cal_cli"))["ef_search"] == out["ef_search"]
    text_out = run_cli("kb", "collections", "calibrate", "cal_cli", url=kdb.url)
    assert "Recall by ef_search: 40:" in text_out.stdout
    assert "smallest ef_search" in run_cli("kb", "collections", "calibrate", "--help").stdout


def test_how_the_app_names_a_collection_ef() -> None:
    from ui.labels import search_ef as _search_ef

    assert _search_ef({}) == "64 (default)"
    assert _search_ef({"ef_search": 300}) == "300 (set by hand)"
    assert _search_ef({"ef_search": "x"}) == "64 (default)"
    measured = {"ef_search": 160, "calibration": {"recall_at_10": 0.9567}}
    assert _search_ef(measured) == "160 (recall@10 0.96 measured)"


def test_how_the_app_names_a_collection_graph() -> None:
    from ui.labels import index_graph

    assert index_graph({}, 384) == "m 16, ef_construction 64 (default)"
    assert index_graph({"index": {"m": 24, "ef_construction": 128}}, 384) == (
        "m 24, ef_construction 128"
    )
    assert index_graph({}, 5000) == "no index (exact searches)"
    assert index_graph({"index": {"m": 0}}, 384).startswith("invalid settings: HNSW m must")


async def test_a_failed_measurement_keeps_the_rows(
    kdb: kb.Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(calibration, "CALIBRATE_MIN_ROWS", 50)

    async def timeout(*args: object, **kwargs: object) -> None:
        raise kb.QueryTimeout("the exact scan ran past KB_STATEMENT_TIMEOUT")

    monkeypatch.setattr(calibration, "calibrate", timeout)
    async with kdb.session() as s:
        await kb.create_collection(
            s, "cal_fail", embedder="hashing", model=f"feature-hashing-{DIM}", dimension=DIM
        )
    vectors = _vectors(60, seed=8)
    rows = [Row("src", f"c {i}", vectors[i], chunk_index=i) for i in range(60)]
    assert await write_rows(kdb, "cal_fail", rows) == 60
    assert "ef_search could not be measured" in caplog.text
    async with kdb.session() as s:
        assert await kb.count_documents(s, "cal_fail") == 60
    assert "calibration" not in await _settings(kdb, "cal_fail")
