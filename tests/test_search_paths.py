"""How kb runs a search: remembered collections and their guard, connection settings, the
driver path, reused filter estimates, and the bounded full-text half of hybrid searches."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

import kb
from helpers import settings_for
from kb import hybrid, planning, refs
from kb.ingest.writer import Row, write_rows
from kb.statements import driver

DIM = 16
BASE = datetime(2025, 6, 1, tzinfo=UTC)


async def _fill(db: kb.Database, name: str, vectors: np.ndarray, words: list[str]) -> None:
    async with db.session() as s:
        await kb.create_collection(
            s, name, embedder="hashing", model=f"feature-hashing-{DIM}", dimension=DIM
        )
    rows = [
        Row(
            source=f"{name}/{i}",
            content=words[i % len(words)],
            embedding=vec,
            created_at=BASE + timedelta(minutes=i),
        )
        for i, vec in enumerate(vectors)
    ]
    assert await write_rows(db, name, rows) == len(rows)


@pytest.fixture
async def small_pool(
    new_database: Callable[[], Awaitable[URL]],
) -> AsyncIterator[kb.Database]:
    """A database whose pool holds one connection, so every call reuses it."""
    url = await new_database()
    db = await kb.connect(
        settings_for(url, database_pool_size=1, database_max_overflow=0), url=url, upgrade=False
    )
    try:
        yield db
    finally:
        await db.close()


async def _show(db: kb.Database, name: str) -> str:
    async with db.session() as s:
        return str((await s.execute(text(f"SHOW {name}"))).scalar_one())


async def test_a_recreated_or_renamed_collection_is_never_searched_by_its_old_id(
    small_pool: kb.Database,
) -> None:
    db = small_pool
    rng = np.random.default_rng(1)
    first = rng.standard_normal((30, DIM)).astype(np.float32)
    await _fill(db, "moving", first, ["alpha"])
    q = first[3]
    async with db.session() as s:
        before = await kb.search_by_vector(s, q, collection="moving", k=3)
        assert before[0].source == "moving/3"
        assert refs.recall(s, ["moving"]) is not None  # so the next search skips the lookup
        await kb.delete_collection(s, "moving")
    second = rng.standard_normal((30, DIM)).astype(np.float32)
    await _fill(db, "moving", second, ["beta"])
    async with db.session() as s:
        after = await kb.search_by_vector(s, second[7], collection="moving", k=3)
    assert after[0].source == "moving/7" and after[0].content == "beta"
    assert not set(after.ids) & set(before.ids)

    # Renamed behind kb's back: the old name is unknown, the new one works.
    async with db.session() as s:
        await s.execute(text("UPDATE collections SET name = 'moved' WHERE name = 'moving'"))
    async with db.session() as s:
        with pytest.raises(kb.CollectionNotFound, match="Known collections: moved"):
            await kb.search_by_vector(s, q, collection="moving", k=3)
        assert (await kb.search_by_vector(s, second[7], collection="moved", k=3))[0].content == (
            "beta"
        )


async def test_search_settings_live_on_the_connection_and_local_ones_roll_back(
    small_pool: kb.Database,
) -> None:
    db = small_pool
    vectors = np.random.default_rng(2).standard_normal((50, DIM)).astype(np.float32)
    await _fill(db, "tuned", vectors, ["gamma"])
    q = vectors[0]
    async with db.session() as s:
        await kb.search_by_vector(s, q, collection="tuned", k=5, ef_search=200)
    assert await _show(db, "hnsw.ef_search") == "200"
    async with db.session() as s:
        await kb.search_by_vector(s, q, collection="tuned", k=5)
    assert await _show(db, "hnsw.ef_search") == "64"
    # Inside a transaction the settings are local: gone after a rollback, and not recorded as
    # made (the next search outside a transaction sets them again).
    async with db.session() as s:
        await s.execute(text("SELECT 1"))
        await kb.search_by_vector(s, q, collection="tuned", k=5, ef_search=300)
        assert (await s.execute(text("SHOW hnsw.ef_search"))).scalar_one() == "300"
        await s.rollback()
    assert await _show(db, "hnsw.ef_search") == "64"
    async with db.session() as s:
        await kb.search_by_vector(s, q, collection="tuned", k=5, ef_search=300)
    assert await _show(db, "hnsw.ef_search") == "300"
    # A filtered search plans each run with the filter's values; an unfiltered one need not.
    async with db.session() as s:
        await kb.search_by_vector(s, q, collection="tuned", k=5, filters={"source_contains": "1"})
    assert await _show(db, "plan_cache_mode") == "force_custom_plan"
    async with db.session() as s:
        await kb.search_by_vector(s, q, collection="tuned", k=5)
    assert await _show(db, "plan_cache_mode") == "auto"


async def test_a_session_with_a_snapshot_keeps_it_for_kbs_statements(
    small_pool: kb.Database,
) -> None:
    db = small_pool
    vectors = np.random.default_rng(3).standard_normal((20, DIM)).astype(np.float32)
    await _fill(db, "snap", vectors, ["delta"])
    async with db.session() as s:
        await s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        conn = await driver(s)
        assert conn.is_in_transaction()
        level = await conn.fetchval("SHOW transaction_isolation")
        assert level == "repeatable read"
        before = await kb.count_documents(s, "snap")
        assert before == 20


async def test_hybrid_ranks_the_vector_candidates_when_the_words_are_everywhere(
    own_db: kb.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((120, DIM)).astype(np.float32)
    # "ocean" is in every document, "harbour" in every tenth.
    words = [f"ocean {'harbour ' if i % 10 == 0 else ''}tide number{i}" for i in range(120)]
    async with own_db.session() as s:
        await kb.create_collection(
            s, "sea", embedder="hashing", model=f"feature-hashing-{DIM}", dimension=DIM
        )
    rows = [
        Row(source=f"sea/{i}", content=w, embedding=v)
        for i, (w, v) in enumerate(zip(words, vectors, strict=True))
    ]
    await write_rows(own_db, "sea", rows)
    q = vectors[5]

    async def hybrid_search(word: str) -> kb.SearchResults:
        request = kb.make_request(
            word, collection="sea", mode="hybrid", vector=q, k=10, candidates=20
        )
        async with own_db.session() as s:
            return await kb.run_search(s, request)

    common = await hybrid_search("ocean")
    rare = await hybrid_search("harbour")
    # 120 matches is under the bound: every match is ranked, text-only hits can appear.
    assert not common.notes and not rare.notes
    monkeypatch.setattr(hybrid, "TEXT_RANK_MAX", 50)
    bounded = await hybrid_search("ocean")
    still_rare = await hybrid_search("harbour")
    assert bounded.notes and "ranked the vector search's candidates" in bounded.notes[0]
    assert len(bounded) == 10
    # Ranked among the vector candidates only: every text-ranked hit is a vector hit too.
    assert all(r.vector_rank is not None for r in bounded if r.text_rank is not None)
    assert any(r.text_rank is not None for r in bounded)
    # 12 matches stay under the bound: ranked in full, text-only hits allowed.
    assert not still_rare.notes
    assert [r.id for r in still_rare] == [r.id for r in rare]
    assert any(r.vector_rank is None for r in rare)
    assert all(isinstance(r.id, uuid.UUID) for r in rare)


async def test_a_filter_used_a_moment_ago_reuses_the_planners_estimate(
    small_pool: kb.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = small_pool
    vectors = np.random.default_rng(5).standard_normal((60, DIM)).astype(np.float32)
    async with db.session() as s:
        await kb.create_collection(
            s, "teams", embedder="hashing", model=f"feature-hashing-{DIM}", dimension=DIM
        )
    rows = [
        Row(source=f"teams/{i}", content="x", embedding=v, metadata={"team": "ab"[i % 2]})
        for i, v in enumerate(vectors)
    ]
    await write_rows(db, "teams", rows)
    explains: list[str] = []

    def capture(logged: Any) -> None:
        if logged.query.startswith("EXPLAIN"):
            explains.append(logged.query)

    async def search(team: str) -> None:
        found = await kb.search_by_vector(
            s, vectors[0], collection="teams", k=5, filters=kb.Filters(metadata={"team": team})
        )
        assert len(found) == 5 and {r.metadata["team"] for r in found} == {team}

    async with db.session() as s:
        conn = await driver(s)
        conn.add_query_logger(capture)
        try:
            for team in ("a", "a", "b", "a", "b"):
                await search(team)
            await asyncio.sleep(0)  # asyncpg calls query loggers soon, not at once
            # One estimate per filter while it is fresh...
            assert len(explains) == 2
            # ...and a new one once it is not.
            monkeypatch.setattr(planning, "ESTIMATE_TTL_S", 0.0)
            await search("a")
            await asyncio.sleep(0)
        finally:
            conn.remove_query_logger(capture)
    assert len(explains) == 3


async def test_a_name_re_created_with_another_dimension_is_searched_as_it_is_now(
    small_pool: kb.Database,
) -> None:
    db = small_pool
    rng = np.random.default_rng(6)
    narrow = rng.standard_normal((20, DIM)).astype(np.float32)
    await _fill(db, "shape", narrow, ["alpha"])
    async with db.session() as s:
        await kb.search_by_vector(s, narrow[0], collection="shape", k=3)
        assert refs.recall(s, ["shape"]) is not None
        # Dropped by another process: this one still remembers a 16-dim collection.
        await s.execute(
            text(
                "DELETE FROM documents WHERE collection_id = "
                "(SELECT id FROM collections WHERE name = 'shape')"
            )
        )
        await s.execute(text("DELETE FROM collections WHERE name = 'shape'"))
        await s.commit()
        await kb.create_collection(
            s, "shape", embedder="hashing", model=f"feature-hashing-{2 * DIM}", dimension=2 * DIM
        )
    wide = rng.standard_normal((20, 2 * DIM)).astype(np.float32)
    rows = [Row(source=f"shape/{i}", content="beta", embedding=v) for i, v in enumerate(wide)]
    assert await write_rows(db, "shape", rows) == 20
    async with db.session() as s:
        found = await kb.search_by_vector(s, wide[4], collection="shape", k=3)
        assert found[0].source == "shape/4" and found[0].content == "beta"
        # A vector of the old dimension is now the wrong one, and said so.
        with pytest.raises(kb.InvalidInput, match="32"):
            await kb.search_by_vector(s, narrow[0], collection="shape", k=3)
        # Deleted through kb, a collection is forgotten at once.
        await kb.delete_collection(s, "shape")
        assert refs.recall(s, ["shape"]) is None
