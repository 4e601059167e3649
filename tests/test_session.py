"""The session provider commits on success, rolls back on any exception, and always closes."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

import kb
from kb.models import Collection


async def _names(db: kb.Database) -> set[str]:
    async with db.engine.connect() as conn:
        return set((await conn.scalars(select(Collection.name))).all())


async def test_commit_on_success(own_db: kb.Database) -> None:
    async with own_db.session() as s:
        await kb.create_collection(s, "committed", embedder="e", model="m", dimension=3)
    assert "committed" in await _names(own_db)
    assert own_db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_rollback_on_exception(own_db: kb.Database) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with own_db.session() as s:
            await kb.create_collection(s, "rolled-back", embedder="e", model="m", dimension=3)
            await s.flush()
            raise RuntimeError("boom")
    assert "rolled-back" not in await _names(own_db)
    assert own_db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_rollback_on_cancellation(own_db: kb.Database) -> None:
    import asyncio

    async def work() -> None:
        async with own_db.session() as s:
            await kb.create_collection(s, "cancelled", embedder="e", model="m", dimension=3)
            await s.flush()
            await asyncio.sleep(60)

    task = asyncio.create_task(work())
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "cancelled" not in await _names(own_db)


async def test_get_db_dependency_yields_a_working_session(
    own_db: kb.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kb.database as database

    monkeypatch.setattr(database, "_default", own_db)
    gen = kb.get_db()
    s = await anext(gen)
    await kb.create_collection(s, "via-get-db", embedder="e", model="m", dimension=3)
    with pytest.raises(StopAsyncIteration):
        await anext(gen)
    assert "via-get-db" in await _names(own_db)


async def test_driver_errors_become_kb_errors(db: kb.Database) -> None:
    from sqlalchemy import text

    with pytest.raises(kb.InvalidInput, match="expected 3 dimensions"):
        async with db.session() as s:
            await s.execute(text("SELECT '[1,2]'::vector(3)"))


async def test_a_lone_caller_keeps_using_the_connection_it_used_last(own_db: kb.Database) -> None:
    # Prepared statements and their plans live per connection: after a burst of concurrent
    # sessions opened several, one caller's sessions must not rotate through all of them.
    import asyncio

    async def backend(pause: float = 0.0) -> int:
        async with own_db.session() as s:
            pid = int(await s.scalar(text("SELECT pg_backend_pid()")))
            if pause:
                await asyncio.sleep(pause)
            return pid

    burst = await asyncio.gather(*(backend(0.2) for _ in range(4)))
    assert len(set(burst)) == 4
    assert len({await backend() for _ in range(8)}) == 1
