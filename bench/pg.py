"""The PostgreSQL a run measures: embedded (default) or given, with databases made per run."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
from pgvector.asyncpg import register_vector
from sqlalchemy.engine import URL, make_url

import kb
from kb.config import Settings, normalize_database_url
from kb.db import asyncpg_kwargs

# Index builds on the M and L tiers run longer than kb's default statement timeout.
STATEMENT_TIMEOUT_S = 1800.0


# Set while server() runs kb's embedded server: kb reaches it by URL, and so would take it
# for someone else's server (and give index builds less memory than on its own).
_embedded_running = False


def settings_for(url: URL) -> Settings:
    """Settings for a benchmark database, ignoring the developer's .env and environment."""
    from kb.ingest.indexing import embedded_build_memory

    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=url.render_as_string(hide_password=False),
        statement_timeout=STATEMENT_TIMEOUT_S,
        index_build_memory=embedded_build_memory() if _embedded_running else "",
    )


async def raw_connect(url: URL, *, vector_codec: bool = True) -> asyncpg.Connection:
    """Open a plain asyncpg connection; with the binary pgvector codec on it alone."""
    conn = await asyncpg.connect(**asyncpg_kwargs(url), statement_cache_size=256)
    await conn.execute(f"SET statement_timeout = {int(STATEMENT_TIMEOUT_S * 1000)}")
    if vector_codec:
        await register_vector(conn)
    return conn


async def raw_pool(url: URL, size: int) -> asyncpg.Pool:
    """Open a pool of plain asyncpg connections with the pgvector codec."""

    async def init(conn: asyncpg.Connection) -> None:
        await register_vector(conn)

    pool = await asyncpg.create_pool(**asyncpg_kwargs(url), min_size=size, max_size=size, init=init)
    assert pool is not None
    return pool


@contextlib.contextmanager
def server(database_url: str | None) -> Any:
    """Yield the URL of a server to create databases on: the given one, or an embedded one."""
    if database_url:
        yield make_url(normalize_database_url(database_url)).set(database="postgres")
        return
    from kb import embedded

    global _embedded_running
    # A short path: the Unix socket lives in the data dir and its path is capped near 107 bytes.
    # kb's own start, so the server runs with the settings kb gives its embedded server.
    tmp = Path(tempfile.mkdtemp(prefix="kbb", dir="/tmp"))
    pgdata = tmp / "pg"
    try:
        url = embedded.start(pgdata, database="postgres", keep=False)
        _embedded_running = True
        yield url
    finally:
        _embedded_running = False
        with contextlib.suppress(Exception):
            embedded.stop(pgdata)
        shutil.rmtree(tmp, ignore_errors=True)


class Databases:
    """Make fresh migrated databases on one server, and drop them all at the end."""

    def __init__(self, server_url: URL) -> None:
        self.server_url = server_url
        self.prefix = f"kbbench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self._admin: asyncpg.Connection | None = None
        self._template: str | None = None
        self._made: list[str] = []

    async def __aenter__(self) -> Databases:
        self._admin = await asyncpg.connect(**asyncpg_kwargs(self.server_url))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._admin is not None
        for name in [*self._made, *([self._template] if self._template else [])]:
            with contextlib.suppress(asyncpg.PostgresError):
                await self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await self._admin.close()

    async def _template_name(self) -> str:
        if self._template is None:
            assert self._admin is not None
            name = f"{self.prefix}_tpl"
            await self._admin.execute(f'CREATE DATABASE "{name}"')
            self._template = name
            url = self.server_url.set(database=name)
            db = await kb.connect(settings_for(url), url=url)  # migrates to head
            await db.close()
        return self._template

    async def create(self, label: str) -> URL:
        """Create a fresh database migrated to head; return its URL."""
        assert self._admin is not None
        template = await self._template_name()
        name = f"{self.prefix}_{label}"
        await self._admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        self._made.append(name)
        return self.server_url.set(database=name)

    async def drop(self, url: URL) -> None:
        """Drop a database made here."""
        assert self._admin is not None
        name = str(url.database)
        await self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self._made:
            self._made.remove(name)

    @contextlib.asynccontextmanager
    async def scratch(self, label: str) -> AsyncIterator[URL]:
        """Yield a fresh database that is dropped when the block ends."""
        url = await self.create(label)
        try:
            yield url
        finally:
            await self.drop(url)


def as_vector_param(vec: np.ndarray) -> np.ndarray:
    """Return a query vector as the float32 array the binary codec sends."""
    return np.ascontiguousarray(vec, dtype=np.float32)
