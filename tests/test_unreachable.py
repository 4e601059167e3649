"""A database that cannot be reached gives one clear kb error, never a raw OSError."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import kb
from helpers import settings_for


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_nothing_listening(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://someone:s3cret-pw@127.0.0.1:{_closed_port()}/kb"
    with pytest.raises(kb.DatabaseUnavailable) as info:
        await kb.connect(settings_for(url, connect_timeout=3))
    message = str(info.value)
    assert "s3cret-pw" not in message
    assert "127.0.0.1" in message and "DATABASE_URL" in message


async def test_unknown_host() -> None:
    url = "postgresql+asyncpg://u:pw@no-such-host.invalid/kb"
    with pytest.raises(kb.DatabaseUnavailable, match=r"no-such-host\.invalid"):
        await kb.connect(settings_for(url, connect_timeout=3))


async def test_wrong_password_on_a_real_server(server_url) -> None:  # type: ignore[no-untyped-def]
    # The embedded server trusts local users, so ask for a database that does not exist
    # under a role that does not exist: the server itself answers with the refusal.
    url = server_url.set(username="nobody_here", database="kb")
    with pytest.raises(kb.DatabaseUnavailable, match="nobody_here"):
        await kb.connect(settings_for(url, connect_timeout=3))


def test_embedded_server_with_an_unusable_data_dir(tmp_path: Path) -> None:
    from kb import embedded

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(kb.DatabaseUnavailable, match="KB_DATA_DIR"):
        embedded.start(blocker / "sub" / "pgdata", database="kb", timeout=5)


def test_embedded_data_dir_too_long(tmp_path: Path) -> None:
    from kb import embedded

    with pytest.raises(kb.DatabaseUnavailable, match="too long"):
        embedded.start(tmp_path / ("x" * 120), database="kb", timeout=5)


async def test_engine_reports_down_database_on_use(own_db: kb.Database) -> None:
    from sqlalchemy import text

    from kb.db import create_engine, session_scope

    url = f"postgresql+asyncpg://u:pw@127.0.0.1:{_closed_port()}/kb"
    engine = create_engine(settings_for(url, connect_timeout=2), url=url)
    with pytest.raises(kb.DatabaseUnavailable, match="Cannot reach"):
        async with session_scope(engine) as s:
            await s.execute(text("SELECT 1"))
    await engine.dispose()
