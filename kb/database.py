"""A connected knowledge base: settings, URL, engine and session factory in one handle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from kb import migrate
from kb.config import Settings, get_settings, redact_url
from kb.db import (
    create_engine,
    ensure_database,
    resolve_url,
    session_scope,
    sessionmaker,
    translating,
)


@dataclass(eq=False)
class Database:
    """An open connection pool to one knowledge base; make it with `await kb.connect()`."""

    settings: Settings
    url: URL
    engine: AsyncEngine
    _factory: async_sessionmaker[AsyncSession] = field(repr=False)

    @property
    def display_url(self) -> str:
        """Return the URL with the password hidden."""
        return redact_url(self.url)

    @property
    def embedded(self) -> bool:
        """Tell whether this is kb's embedded server."""
        return self.settings.uses_embedded_server

    def session(self) -> AbstractAsyncContextManager[AsyncSession]:
        """Open a session that commits on success, rolls back on error and always closes."""
        return session_scope(self._factory)

    async def upgrade(self, revision: str = "head") -> None:
        """Apply migrations up to `revision` (the app and `kb db upgrade` do this on start)."""
        with translating(self.url):
            async with self.engine.begin() as conn:
                await migrate.upgrade(conn, revision)

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def connect(
    settings: Settings | None = None, *, url: URL | str | None = None, upgrade: bool = True
) -> Database:
    """Connect to the knowledge base (starting the embedded server if needed) and migrate it."""
    settings = settings or get_settings()
    if url is None:
        # Starting the embedded server blocks for a second or two; keep the loop free.
        url = await asyncio.to_thread(resolve_url, settings)
    await ensure_database(url, connect_timeout=settings.connect_timeout)
    engine = create_engine(settings, url=url)
    db = Database(settings=settings, url=engine.url, engine=engine, _factory=sessionmaker(engine))
    if upgrade and not settings.read_only:
        try:
            await db.upgrade()
        except BaseException:
            await engine.dispose()
            raise
    return db


@asynccontextmanager
async def session(settings: Settings | None = None) -> AsyncIterator[AsyncSession]:
    """Connect, yield one session, and close everything: for one-off scripts."""
    db = await connect(settings)
    try:
        async with db.session() as s:
            yield s
    finally:
        await db.close()


_default: Database | None = None
_default_lock = asyncio.Lock()


async def get_db() -> AsyncIterator[AsyncSession]:
    """Yield a session from a process-wide Database: a FastAPI-style dependency."""
    global _default
    async with _default_lock:
        if _default is None:
            _default = await connect()
    async with _default.session() as s:
        yield s
