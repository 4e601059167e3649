"""The sync bridge: one loop owns the engine; any thread may call it, again and again."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.engine import URL

import kb
from helpers import settings_for
from kb.bridge import BridgeError


@pytest.fixture
async def bridge(new_database) -> kb.SyncDatabase:  # type: ignore[no-untyped-def]
    url: URL = await new_database()
    b = kb.SyncDatabase(settings_for(url))
    yield b
    b.close()


async def test_calls_from_many_threads_share_one_engine(bridge: kb.SyncDatabase) -> None:
    bridge.call(kb.create_collection, "bridged", embedder="e", model="m", dimension=3)

    def names(_: int) -> list[str]:
        return [c.name for c in bridge.call(kb.list_collections)]

    # Streamlit reruns land on different threads: each must reuse the loop's engine.
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(names, range(40)))
    assert all(r == ["bridged"] for r in results)
    engine = bridge.database.engine
    assert engine is bridge.database.engine


async def test_calling_from_the_loop_thread_is_refused(bridge: kb.SyncDatabase) -> None:
    async def inner() -> str:
        try:
            bridge.run(_noop())
        except BridgeError as exc:
            return str(exc)
        return "no error"

    assert "own event loop" in bridge.run(inner())


async def _noop() -> None:
    return None


async def test_errors_cross_the_bridge_as_kb_errors(bridge: kb.SyncDatabase) -> None:
    with pytest.raises(kb.CollectionNotFound, match="nope"):
        bridge.call(kb.get_collection, "nope")


async def test_closed_bridge_refuses(new_database) -> None:  # type: ignore[no-untyped-def]
    b = kb.SyncDatabase(settings_for("postgresql+asyncpg://u@127.0.0.1:1/x"))
    b.close()
    with pytest.raises(BridgeError, match="closed"):
        b.call(kb.list_collections)
    assert not b._thread.is_alive()


async def test_down_database_then_recovery(bridge: kb.SyncDatabase) -> None:
    # A failed first connect must not poison the bridge: the next call connects again.
    broken = kb.SyncDatabase(
        settings_for("postgresql+asyncpg://u@127.0.0.1:1/x", connect_timeout=2)
    )
    try:
        for _ in range(2):
            with pytest.raises(kb.DatabaseUnavailable):
                broken.call(kb.list_collections)
    finally:
        broken.close()
