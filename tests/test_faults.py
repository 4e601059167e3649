"""Faults at the database level: timeouts, an exhausted pool, restarts, a killed server."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

import kb
from helpers import run_cli, settings_for
from kb import embedded


async def test_statement_timeout_cancels_and_leaves_no_connection_behind(new_database) -> None:  # type: ignore[no-untyped-def]
    url = await new_database()
    db = await kb.connect(settings_for(url, statement_timeout=0.5), url=url, upgrade=False)
    try:
        started = time.monotonic()
        with pytest.raises(kb.QueryTimeout, match="KB_STATEMENT_TIMEOUT"):
            async with db.session() as s:
                await s.execute(text("SELECT pg_sleep(5)"))
        assert time.monotonic() - started < 4
        # The connection went back to the pool clean: it answers, and nothing is left
        # idle in a transaction on the server.
        async with db.session() as s:
            assert await s.scalar(text("SELECT 1")) == 1
            stuck = await s.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
                )
            )
        assert stuck == 0
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await db.close()


async def test_pool_exhausted_is_busy_then_recovers(new_database) -> None:  # type: ignore[no-untyped-def]
    url = await new_database()
    settings = settings_for(
        url, database_pool_size=1, database_max_overflow=0, database_pool_timeout=1
    )
    db = await kb.connect(settings, url=url, upgrade=False)
    try:
        release = asyncio.Event()

        async def hold() -> None:
            async with db.session() as s:
                await s.execute(text("SELECT 1"))
                await release.wait()

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0.3)
        started = time.monotonic()
        with pytest.raises(kb.DatabaseBusy, match="busy"):
            async with db.session() as s:
                await s.execute(text("SELECT 1"))
        assert 0.8 < time.monotonic() - started < 5
        release.set()
        await holder
        async with db.session() as s:
            assert await s.scalar(text("SELECT 2")) == 2
    finally:
        await db.close()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kbf", dir="/tmp"))
    try:
        yield path
    finally:
        embedded.stop(path / "pgdata")
        shutil.rmtree(path, ignore_errors=True)


def _postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().splitlines()[0])


def test_database_restarted_mid_session(data_dir: Path) -> None:
    settings = kb.Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    with kb.SyncDatabase(settings) as bridge:
        bridge.call(kb.create_collection, "before", embedder="e", model="m", dimension=3)
        first = _postmaster_pid(settings.pgdata)
        assert embedded.stop(settings.pgdata)
        embedded.start(settings.pgdata, database=settings.embedded_database)
        # Restarted behind its back: the next call works without restarting anything
        # (pre-ping drops the dead connections from the pool).
        assert [c.name for c in bridge.call(kb.list_collections)] == ["before"]
        assert _postmaster_pid(settings.pgdata) != first


def test_stopped_embedded_server_is_started_again_on_demand(data_dir: Path) -> None:
    settings = kb.Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    with kb.SyncDatabase(settings) as bridge:
        bridge.call(kb.create_collection, "kept", embedder="e", model="m", dimension=3)
        assert embedded.stop(settings.pgdata)
        # kb started it on demand; stopped, it is started again by the next call.
        assert [c.name for c in bridge.call(kb.list_collections)] == ["kept"]
        assert (settings.pgdata / "postmaster.pid").exists()


def test_external_database_down_mid_session(data_dir: Path) -> None:
    # An external server (DATABASE_URL) kb must not start: a clear error while it is down,
    # and the same bridge works again once it is back.
    pgdata = data_dir / "pgdata"
    url = embedded.start(pgdata, database="kb")
    settings = settings_for(url, connect_timeout=3)
    with kb.SyncDatabase(settings) as bridge:
        bridge.call(kb.create_collection, "ext", embedder="e", model="m", dimension=3)
        assert embedded.stop(pgdata)
        with pytest.raises(kb.DatabaseUnavailable):
            bridge.call(kb.list_collections)
        embedded.start(pgdata, database="kb")
        assert [c.name for c in bridge.call(kb.list_collections)] == ["ext"]


def test_embedded_server_killed_with_sigkill_recovers(data_dir: Path) -> None:
    env = {"KB_DATA_DIR": str(data_dir)}
    first = run_cli("kb", "db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    pgdata = data_dir / "pgdata"
    pid = _postmaster_pid(pgdata)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    # The stale postmaster.pid must not keep it down.
    again = run_cli("kb", "db", "status", "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert _postmaster_pid(pgdata) != pid
    assert '"current_revision": "0003"' in again.stdout
