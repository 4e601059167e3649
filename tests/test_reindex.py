"""Rebuilding a collection's HNSW index, as a denser graph, without losing searches or settings."""

from __future__ import annotations

import json

import asyncpg
import numpy as np
import pytest
from sqlalchemy import text

import kb
from helpers import run_cli
from kb import indexes
from kb.db import asyncpg_kwargs
from kb.ingest import indexing
from kb.ingest.writer import Row, write_rows

DIM = 64


async def _collection(db: kb.Database, name: str, n: int, seed: int = 1, **kw: object) -> int:
    async with db.session() as s:
        coll = await kb.create_collection(
            s, name, embedder="hashing", model=f"feature-hashing-{DIM}", dimension=DIM, **kw
        )
        cid = coll.id
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    rows = [Row("src", f"chunk {i}", vectors[i], chunk_index=i) for i in range(n)]
    assert await write_rows(db, name, rows) == n
    return cid


async def _indexdefs(db: kb.Database, cid: int) -> dict[str, str]:
    async with db.session() as s:
        rows = await s.execute(
            text("SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE :p"),
            {"p": f"{indexes.index_name(cid)}%"},
        )
        return {r.indexname: r.indexdef for r in rows}


async def _settings(db: kb.Database, name: str) -> dict:
    async with db.session() as s:
        return dict((await kb.get_collection(s, name)).settings)


async def test_rebuild_as_a_denser_graph_swaps_the_index_and_remeasures(
    kdb: kb.Database,
) -> None:
    cid = await _collection(kdb, "rx", 1500)
    async with kdb.session() as s:
        first = await kb.calibrate(s, "rx", sample=12)
    done = await kb.rebuild_index(kdb, "rx", m=24, ef_construction=80)
    assert done.before == kb.GraphParams() and done.after == kb.GraphParams(24, 80)
    assert done.documents == 1500 and done.index_bytes > 0
    defs = await _indexdefs(kdb, cid)
    # One index under the collection's usual name, built with the new parameters.
    assert list(defs) == [indexes.index_name(cid)]
    assert "m='24'" in defs[indexes.index_name(cid)]
    assert "ef_construction='80'" in defs[indexes.index_name(cid)]
    stored = await _settings(kdb, "rx")
    assert stored["index"] == {"m": 24, "ef_construction": 80}
    # The measurement belonged to the old graph: measured again on the new one.
    assert done.calibration is not None
    assert stored["calibration"]["measured_at"] > first.measured_at.isoformat()
    assert stored["ef_search"] == done.calibration.ef_search
    assert await indexing.index_state(kdb, cid) is True  # valid, ready for searches
    async with kdb.session() as s:
        found = await kb.search_by_vector(s, np.ones(DIM), collection="rx", k=10)
    assert len(found.items) == 10


async def test_later_builds_keep_the_collection_graph(kdb: kb.Database) -> None:
    cid = await _collection(kdb, "rx_keep", 300, seed=2)
    await kb.rebuild_index(kdb, "rx_keep", m=8, ef_construction=32)
    # A bulk load drops an empty collection's index and builds it again at the end; an
    # interrupted build is repaired by the next ingest. Both use the stored parameters.
    async with kdb.session() as s:
        await indexes.drop_index(s, cid)
    assert await indexing.ensure_index(kdb, cid, DIM, "cosine")
    assert "m='8'" in (await _indexdefs(kdb, cid))[indexes.index_name(cid)]
    # Rebuilt without parameters: as it is, not back to pgvector's defaults.
    again = await kb.rebuild_index(kdb, "rx_keep", ef_construction=40)
    assert again.before == kb.GraphParams(8, 32) and again.after == kb.GraphParams(8, 40)
    # A collection can be created with its own graph from the start.
    denser = await _collection(
        kdb, "rx_born", 50, seed=3, settings={"index": {"m": 32, "ef_construction": 100}}
    )
    assert "m='32'" in (await _indexdefs(kdb, denser))[indexes.index_name(denser)]


async def test_without_remeasuring_the_stale_ef_is_dropped_and_a_hand_set_one_kept(
    kdb: kb.Database,
) -> None:
    await _collection(kdb, "rx_stale", 400, seed=4)
    async with kdb.session() as s:
        await kb.calibrate(s, "rx_stale", sample=8)
    done = await kb.rebuild_index(kdb, "rx_stale", m=12, recalibrate=False)
    assert done.calibration is None
    stored = await _settings(kdb, "rx_stale")
    assert "calibration" not in stored and "ef_search" not in stored
    async with kdb.session() as s:
        await s.execute(
            text(
                "UPDATE collections SET settings = settings || '{\"ef_search\": 300}' "
                "WHERE name = 'rx_stale'"
            )
        )
    await kb.rebuild_index(kdb, "rx_stale")
    # Small, never measured: not measured now either; the user's ef_search stays.
    stored = await _settings(kdb, "rx_stale")
    assert stored["ef_search"] == 300 and "calibration" not in stored


@pytest.mark.parametrize(
    ("m", "efc", "message"),
    [
        (1, 64, "m must be an integer from 2 to 100"),
        (101, 400, "m must be an integer from 2 to 100"),
        (16, 3, "ef_construction must be an integer from 4 to 1000"),
        (16, 1001, "ef_construction must be an integer from 4 to 1000"),
        (32, 40, "at least twice m"),
        (True, 64, "m must be an integer"),
        ("16", 64, "m must be an integer"),
    ],
)
def test_graph_parameters_are_checked(m: object, efc: object, message: str) -> None:
    with pytest.raises(kb.InvalidInput, match=message):
        kb.GraphParams(m=m, ef_construction=efc)  # type: ignore[arg-type]


def test_stored_graph_parameters_are_checked() -> None:
    assert indexes.graph_params({}) == kb.GraphParams()
    assert indexes.graph_params({"index": {"m": 8}}) == kb.GraphParams(8, 64)
    with pytest.raises(kb.InvalidInput, match="must be an object"):
        indexes.graph_params({"index": [16]})
    with pytest.raises(kb.InvalidInput, match="unknown index settings: ef"):
        indexes.graph_params({"index": {"ef": 10}})
    with pytest.raises(kb.InvalidInput, match="at least twice m"):
        indexes.graph_params({"index": {"m": 48}})


async def test_what_cannot_be_rebuilt_is_refused_and_left_as_it_was(kdb: kb.Database) -> None:
    cid = await _collection(kdb, "rx_bad", 100, seed=5)
    before = await _indexdefs(kdb, cid)
    with pytest.raises(kb.InvalidInput, match="at least twice m"):
        await kb.rebuild_index(kdb, "rx_bad", m=40, ef_construction=64)
    with pytest.raises(kb.CollectionNotFound):
        await kb.rebuild_index(kdb, "no such collection")
    async with kdb.session() as s:
        await kb.create_collection(
            s, "rx_wide", embedder="hashing", model="feature-hashing-5000", dimension=5000
        )
    with pytest.raises(kb.InvalidInput, match="no HNSW index covers"):
        await kb.rebuild_index(kdb, "rx_wide")
    assert await _indexdefs(kdb, cid) == before
    assert "index" not in await _settings(kdb, "rx_bad")


async def test_one_rebuild_at_a_time_and_leftovers_are_cleared(kdb: kb.Database) -> None:
    cid = await _collection(kdb, "rx_lock", 200, seed=6)
    conn = await asyncpg.connect(**asyncpg_kwargs(kdb.url))
    try:
        # Another rebuild of this collection holds the lock.
        await conn.execute("SELECT pg_advisory_lock(hashtext('kb.reindex'), $1)", cid)
        with pytest.raises(kb.DatabaseBusy, match="already running"):
            await kb.rebuild_index(kdb, "rx_lock", m=8, ef_construction=16)
        await conn.execute("SELECT pg_advisory_unlock(hashtext('kb.reindex'), $1)", cid)
        # A rebuild that died before its swap left its half of the work behind.
        await conn.execute(
            indexes.create_index_sql(
                cid, DIM, "cosine", params=kb.GraphParams(4, 8), name=indexes.next_index_name(cid)
            )
        )
    finally:
        await conn.close()
    await kb.rebuild_index(kdb, "rx_lock", m=8, ef_construction=16)
    defs = await _indexdefs(kdb, cid)
    assert list(defs) == [indexes.index_name(cid)]
    assert "m='8'" in defs[indexes.index_name(cid)]


async def test_reindex_command(kdb: kb.Database) -> None:
    cid = await _collection(kdb, "rx cli", 300, seed=7)
    proc = run_cli(
        "kb",
        "collections",
        "reindex",
        "rx cli",
        "--m",
        "20",
        "--ef-construction",
        "60",
        "--json",
        url=kdb.url,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["collection"] == "rx cli" and out["documents"] == 300
    assert out["before"] == {"m": 16, "ef_construction": 64}
    assert out["after"] == {"m": 20, "ef_construction": 60}
    assert out["calibration"] is None  # small and never measured
    assert "m='20'" in (await _indexdefs(kdb, cid))[indexes.index_name(cid)]
    plain = run_cli("kb", "collections", "reindex", "rx cli", url=kdb.url)
    assert plain.returncode == 0, plain.stderr
    assert "index rebuilt with m 20, ef_construction 60 (was m 20, ef_construction 60)" in (
        plain.stdout
    )
    bad = run_cli("kb", "collections", "reindex", "rx cli", "--m", "0", url=kdb.url)
    assert bad.returncode != 0 and "m must be an integer from 2 to 100" in bad.stderr
    locked = run_cli(
        "kb", "collections", "reindex", "rx cli", url=kdb.url, env={"KB_READ_ONLY": "1"}
    )
    assert locked.returncode != 0 and "read-only" in locked.stderr
    assert "denser graph" in run_cli("kb", "collections", "reindex", "--help").stdout


async def test_the_lock_holds_until_the_new_index_is_in_place(
    kdb: kb.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kb import reindex

    cid = await _collection(kdb, "rx_swap", 200, seed=8)
    original = reindex._swap
    refused: list[str] = []

    async def swap_after_a_rival(db: kb.Database, collection_id: int, params: object) -> None:
        # Another rebuild of the same collection, started between the build and the swap.
        with pytest.raises(kb.DatabaseBusy, match="already running") as caught:
            await kb.rebuild_index(kdb, "rx_swap", m=4, ef_construction=8)
        refused.append(str(caught.value))
        await original(db, collection_id, params)  # type: ignore[arg-type]

    monkeypatch.setattr(reindex, "_swap", swap_after_a_rival)
    await kb.rebuild_index(kdb, "rx_swap", m=10, ef_construction=30)
    assert refused
    defs = await _indexdefs(kdb, cid)
    assert list(defs) == [indexes.index_name(cid)] and "m='10'" in defs[indexes.index_name(cid)]
    assert (await _settings(kdb, "rx_swap"))["index"] == {"m": 10, "ef_construction": 30}
    # The lock went with the rebuild's connection.
    await kb.rebuild_index(kdb, "rx_swap", m=12, ef_construction=30)


async def test_create_command_takes_the_graph(kdb: kb.Database) -> None:
    proc = run_cli(
        "kb",
        "collections",
        "create",
        "rx dense",
        "--embedder",
        "hashing",
        "--dimension",
        "32",
        "--m",
        "24",
        "--ef-construction",
        "128",
        url=kdb.url,
    )
    assert proc.returncode == 0, proc.stderr
    assert (await _settings(kdb, "rx dense"))["index"] == {"m": 24, "ef_construction": 128}
    async with kdb.session() as s:
        cid = (await kb.get_collection(s, "rx dense")).id
    assert "m='24'" in (await _indexdefs(kdb, cid))[indexes.index_name(cid)]
    bad = run_cli(
        "kb",
        "collections",
        "create",
        "rx sparse",
        "--embedder",
        "hashing",
        "--m",
        "70",
        url=kdb.url,
    )
    assert bad.returncode != 0 and "at least twice m" in bad.stderr
    async with kdb.session() as s:
        assert "rx sparse" not in [c.name for c in await kb.list_collections(s)]


async def test_a_large_collection_is_measured_again_unless_its_ef_was_set_by_hand(
    kdb: kb.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kb import calibration

    monkeypatch.setattr(calibration, "CALIBRATE_MIN_ROWS", 100)
    await _collection(kdb, "rx_big", 300, seed=9)
    await _collection(kdb, "rx_hand", 300, seed=10)
    async with kdb.session() as s:
        await s.execute(text("UPDATE collections SET settings = '{}'::jsonb WHERE name = 'rx_big'"))
        await s.execute(
            text(
                "UPDATE collections SET settings = '{\"ef_search\": 300}'::jsonb "
                "WHERE name = 'rx_hand'"
            )
        )
    big = await kb.rebuild_index(kdb, "rx_big", m=12, ef_construction=40)
    assert big.calibration is not None
    assert (await _settings(kdb, "rx_big"))["ef_search"] == big.calibration.ef_search
    hand = await kb.rebuild_index(kdb, "rx_hand", m=12, ef_construction=40)
    assert hand.calibration is None
    stored = await _settings(kdb, "rx_hand")
    assert stored["ef_search"] == 300 and "calibration" not in stored


async def _leave_next_index(conn: asyncpg.Connection, cid: int) -> None:
    """Leave what a rebuild killed after its build and before its swap leaves."""
    await conn.execute(
        indexes.create_index_sql(
            cid, DIM, "cosine", params=kb.GraphParams(4, 8), name=indexes.next_index_name(cid)
        )
    )


async def test_an_ingest_drops_what_a_dead_rebuild_left_unless_one_is_running(
    kdb: kb.Database,
) -> None:
    cid = await _collection(kdb, "rx_dead", 100, seed=8)
    leftover = indexes.next_index_name(cid)
    conn = await asyncpg.connect(**asyncpg_kwargs(kdb.url))
    more = np.random.default_rng(9).standard_normal((3, DIM)).astype(np.float32)
    try:
        # Every insert also feeds this graph.
        await _leave_next_index(conn, cid)
        # While a rebuild holds the collection's lock, its new index is work in progress.
        await conn.execute("SELECT pg_advisory_lock(hashtext($1), $2)", indexes.REBUILD_LOCK, cid)
        await write_rows(kdb, "rx_dead", [Row("more", "one", more[0])])
        assert leftover in await _indexdefs(kdb, cid)
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1), $2)", indexes.REBUILD_LOCK, cid)
        await write_rows(kdb, "rx_dead", [Row("more", "two", more[1])])
        assert list(await _indexdefs(kdb, cid)) == [indexes.index_name(cid)]
        # The text pipeline checks too.
        await _leave_next_index(conn, cid)
    finally:
        await conn.close()
    doc = kb.SourceDocument.from_text("notes.txt", "a short note about graphs")
    report = await kb.ingest_documents(kdb, [doc], collection="rx_dead")
    assert report.chunks_added == 1
    assert list(await _indexdefs(kdb, cid)) == [indexes.index_name(cid)]
    assert not await indexing.drop_leftover(kdb, cid)


async def test_a_leftover_held_up_by_a_long_transaction_waits_for_the_next_ingest(
    kdb: kb.Database,
) -> None:
    cid = await _collection(kdb, "rx_busy", 50, seed=10)
    leftover = indexes.next_index_name(cid)
    conn = await asyncpg.connect(**asyncpg_kwargs(kdb.url))
    try:
        await _leave_next_index(conn, cid)
        # A reader's open transaction: DROP INDEX CONCURRENTLY waits for it.
        reader = conn.transaction()
        await reader.start()
        await conn.fetch("SELECT 1 FROM documents LIMIT 1")
        vector = np.random.default_rng(11).standard_normal(DIM).astype(np.float32)
        assert await write_rows(kdb, "rx_busy", [Row("late", "row", vector)]) == 1
        assert leftover in await _indexdefs(kdb, cid)
        await reader.rollback()
    finally:
        await conn.close()
    assert await indexing.drop_leftover(kdb, cid)
    assert leftover not in await _indexdefs(kdb, cid)
