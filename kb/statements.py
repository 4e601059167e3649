"""Run kb's read statements on the session's own asyncpg connection, and kb's search settings.

Searches and browse pages are a few milliseconds of database work, and going through
SQLAlchemy's `text()` execution cost about as much again in Python per statement (bind
processing, result proxies, greenlet switches). These statements are plain SQL with named
parameters, so kb sends them straight to the driver connection the session holds, as
asyncpg prepared statements: same connection, same transaction (when one is open), same pool.
Outside a transaction a statement runs on its own, which is all a read needs at PostgreSQL's
READ COMMITTED (every statement sees a fresh snapshot either way); a session that asked for a
stricter isolation level gets its transaction opened first, so its snapshot holds.

Settings (`hnsw.ef_search` and friends) follow the same rule. Inside a transaction they are
transaction-local, like `SET LOCAL`. Outside one, kb sets them on the connection and remembers
what it set, so a search with the settings the connection already has costs no round trip and
no transaction at all: kb's pooled connections carry kb's search settings.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from functools import lru_cache
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.util import greenlet_spawn

from kb.db import translating

# `:name` as SQLAlchemy's text() reads it; `::type` casts and `:1`-style text are left alone.
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")

# Session-level settings kb has made on each connection (outside any transaction, so they
# cannot be rolled back). A connection that is replaced takes its entry with it.
_APPLIED: weakref.WeakKeyDictionary[asyncpg.Connection, dict[str, str]] = (
    weakref.WeakKeyDictionary()
)

# While `pinned()` runs, the session's connection cannot change; asking SQLAlchemy for it
# again would cost a greenlet switch per statement.
_PINNED = "kb.statements.driver"
_BORROWED = "kb.statements.borrowed"


@lru_cache(maxsize=1024)
def positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """Return `sql` with `:name` parameters numbered `$1..$n`, and the names in that order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PARAM.sub(number, sql), tuple(names)


def _url(session: AsyncSession) -> Any:
    bind = session.bind
    return getattr(getattr(bind, "engine", bind), "url", None)


async def driver(session: AsyncSession) -> asyncpg.Connection:
    """Return the asyncpg connection under the session (checked out from the pool if needed)."""
    pinned_conn: asyncpg.Connection | None = session.info.get(_PINNED)
    if pinned_conn is not None:
        return pinned_conn
    with translating(_url(session)):
        conn = await session.connection()
        raw = await conn.get_raw_connection()
        found = _asyncpg(raw)
        if _wants_snapshot(raw.dbapi_connection) and not found.is_in_transaction():
            # The session asked for REPEATABLE READ (or stricter, or read-only): SQLAlchemy
            # opens that transaction lazily, at its first statement; open it now so that
            # every statement kb runs shares its snapshot.
            await conn.exec_driver_sql("SELECT 1")
    return found


def _asyncpg(proxied: Any) -> asyncpg.Connection:
    found = proxied.driver_connection
    if not isinstance(found, asyncpg.Connection):
        raise TypeError("kb needs the asyncpg driver (a postgresql+asyncpg:// URL)")
    return found


def _wants_snapshot(adapter: Any) -> bool:
    level = getattr(adapter, "isolation_level", None)
    if level not in (None, "autocommit", "READ COMMITTED"):
        return True
    return bool(getattr(adapter, "readonly", False) or getattr(adapter, "deferrable", False))


@asynccontextmanager
async def _borrowed(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """Check a connection out of the engine's pool for a block, past the session."""
    with translating(engine.url):
        borrowed = await engine.raw_connection()
    try:
        yield _asyncpg(borrowed)
    except BaseException:
        lost = borrowed.driver_connection
        if isinstance(lost, asyncpg.Connection) and lost.is_closed():
            # Lost mid-call (a restarted server): never hand it out again.
            borrowed.invalidate()
        raise
    finally:
        # Back to the pool the way SQLAlchemy's own connections go (its reset may await).
        await greenlet_spawn(borrowed.close)


@asynccontextmanager
async def pinned(session: AsyncSession) -> AsyncIterator[asyncpg.Connection]:
    """Hold one driver connection for a block of several statements run for the session."""
    if _PINNED in session.info:
        yield session.info[_PINNED]
        return
    engine = session.bind
    async with AsyncExitStack() as stack:
        if isinstance(engine, AsyncEngine) and not session.in_transaction():
            # The session has started nothing, so its statements would each run on their own
            # anyway: borrow a pooled connection for the block and skip the session's
            # transaction bookkeeping (a third of a warm search's time).
            conn = await stack.enter_async_context(_borrowed(engine))
            session.info[_BORROWED] = True
        else:
            conn = await driver(session)
        session.info[_PINNED] = conn
        try:
            yield conn
        finally:
            session.info.pop(_PINNED, None)
            session.info.pop(_BORROWED, None)


async def fetch_all(
    session: AsyncSession, sql: str, params: Mapping[str, Any] | None = None
) -> list[asyncpg.Record]:
    """Run one statement and return its rows, with driver errors turned into kb errors."""
    conn = await driver(session)
    try:
        with translating(_url(session)):
            return await fetch_on(conn, sql, params)
    except BaseException:
        if conn.is_closed() and not session.info.get(_BORROWED):
            # Lost mid-call: make SQLAlchemy drop the session's connection, as it would had
            # the statement gone through it.
            with suppress(Exception):
                await (await session.connection()).invalidate()
        raise


async def fetch_on(
    conn: asyncpg.Connection, sql: str, params: Mapping[str, Any] | None = None
) -> list[asyncpg.Record]:
    """Run one statement with `:name` parameters on an asyncpg connection; return its rows."""
    text, names = positional(sql)
    values = params or {}
    rows: list[asyncpg.Record] = await conn.fetch(text, *[values[name] for name in names])
    return rows


class SettingsPlan:
    """The `set_config` calls that make `settings` hold on a connection, and their bookkeeping.

    Build it, put `calls` in a SELECT list (with `params`), and call `done()` once that
    statement has succeeded.
    """

    def __init__(self, conn: asyncpg.Connection, settings: Mapping[str, str]) -> None:
        self.conn = conn
        self.local = conn.is_in_transaction()
        known = {} if self.local else _APPLIED.get(conn, {})
        self.pending = {k: v for k, v in settings.items() if known.get(k) != v}
        self.calls: list[str] = []
        self.params: dict[str, str] = {}
        flag = "true" if self.local else "false"
        for i, (name, value) in enumerate(self.pending.items()):
            self.calls.append(f"set_config(:g{i}, :v{i}, {flag})")
            self.params[f"g{i}"] = name
            self.params[f"v{i}"] = value

    def done(self) -> None:
        """Record settings made at session level (transaction-local ones end with it)."""
        if self.pending and not self.local:
            _APPLIED.setdefault(self.conn, {}).update(self.pending)


async def plan_settings(session: AsyncSession, settings: Mapping[str, str]) -> SettingsPlan:
    """Return what applying `settings` to the session's connection still takes."""
    return SettingsPlan(await driver(session), settings)


async def apply_settings(session: AsyncSession, settings: Mapping[str, str]) -> None:
    """Make planner/pgvector settings hold for the session's next statements."""
    plan = await plan_settings(session, settings)
    if plan.calls:
        await fetch_all(session, "SELECT " + ", ".join(plan.calls), plan.params)
        plan.done()
