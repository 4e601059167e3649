"""The async engine, sessions, and the translation of driver errors into kb errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from kb import embedded
from kb.config import Settings, get_settings, redact_url
from kb.errors import (
    DatabaseBusy,
    DatabaseUnavailable,
    InvalidInput,
    KBError,
    QueryTimeout,
    ReadOnlyError,
)

_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InvalidPasswordError,
    asyncpg.exceptions.InvalidCatalogNameError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)


def resolve_url(settings: Settings | None = None) -> URL:
    """Return the database URL to use, starting the embedded server when DATABASE_URL is unset."""
    settings = settings or get_settings()
    if settings.database_url is not None:
        return make_url(settings.database_url)
    return embedded.start(
        settings.pgdata, database=settings.embedded_database, timeout=settings.startup_timeout
    )


def unavailable(url: URL | str, cause: BaseException | str) -> DatabaseUnavailable:
    """Build the 'database unreachable' error a person can act on."""
    reason = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}".strip()
    return DatabaseUnavailable(
        f"Cannot reach the database at {redact_url(url)} ({reason}). "
        "Check that the server is running and accepts connections, and that DATABASE_URL "
        "(host, port, user, password, database name) is right; unset DATABASE_URL to use "
        "the embedded server."
    )


def asyncpg_kwargs(url: URL) -> dict[str, Any]:
    """Return asyncpg.connect keyword arguments for a URL (a Unix socket dir in ?host= too)."""
    host = url.query.get("host") or url.host
    if isinstance(host, tuple):
        host = host[0]
    return {
        "host": host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "database": url.database,
    }


async def ensure_database(url: URL | str, *, connect_timeout: float = 10.0) -> None:
    """Create the database named in `url` if it does not exist yet."""
    url = make_url(url)
    kwargs = asyncpg_kwargs(url)
    try:
        conn = await asyncpg.connect(**kwargs, timeout=connect_timeout)
    except asyncpg.exceptions.InvalidCatalogNameError:
        pass
    except _CONNECT_ERRORS as exc:
        raise unavailable(url, exc) from None
    else:
        await conn.close()
        return
    try:
        admin = await asyncpg.connect(**{**kwargs, "database": "postgres"}, timeout=connect_timeout)
    except _CONNECT_ERRORS as exc:
        raise unavailable(url, exc) from None
    try:
        name = str(url.database).replace('"', '""')
        await admin.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.exceptions.DuplicateDatabaseError:
        pass  # another process created it first
    except asyncpg.exceptions.InsufficientPrivilegeError:
        raise DatabaseUnavailable(
            f"The database {url.database!r} does not exist on {redact_url(url)} and the user "
            f"{url.username!r} may not create it; create it first."
        ) from None
    finally:
        await admin.close()


def create_engine(settings: Settings | None = None, *, url: URL | str | None = None) -> AsyncEngine:
    """Create an AsyncEngine with the pool settings, a ping on checkout, timeouts, read-only."""
    settings = settings or get_settings()
    target = make_url(url) if url is not None else resolve_url(settings)
    server_settings = {
        "application_name": "kb-explorer",
        "statement_timeout": str(int(settings.statement_timeout * 1000)),
        # A session that dies mid-transaction must not hold locks forever.
        "idle_in_transaction_session_timeout": "300000",
    }
    if settings.read_only:
        server_settings["default_transaction_read_only"] = "on"
    engine = _create_async_engine(
        target,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout,
        # The connection used last is handed out first. Each connection keeps its own prepared
        # statements and their plans (PostgreSQL plans a statement afresh on its first five
        # runs before it may keep a generic plan: ~3 ms each for a hybrid search), so a
        # first-in-first-out pool that once grew under concurrency spread a lone user's
        # searches over every connection and kept them all cold (hybrid search 7.0 -> 3.9 ms
        # after a burst of 5). Extra connections then sit idle, and the pinged-when-idle
        # check below keeps them honest.
        pool_use_lifo=True,
        echo=settings.echo_sql,
        connect_args={"timeout": settings.connect_timeout, "server_settings": server_settings},
    )
    event.listen(engine.sync_engine, "checkout", _ping)
    event.listen(engine.sync_engine, "checkin", _checked_in)
    return engine


# A connection back in the pool for less than this was working a moment ago (the window
# HikariCP uses for the same purpose); older ones are pinged before use.
PING_AFTER_IDLE_S = 0.5
_CHECKED_IN = "kb.checked_in"


def _checked_in(dbapi_connection: Any, record: Any) -> None:
    if record is not None:
        record.info[_CHECKED_IN] = time.monotonic()


def _ping(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Check a pooled connection on checkout; a dead one is replaced, transparently.

    SQLAlchemy's own pre-ping costs three round trips on asyncpg (BEGIN, a query, ROLLBACK);
    this is one simple query, and none for a connection that was in use half a second ago.
    A restarted server is still caught before use: its connections all sat idle through the
    restart, and one that fails mid-call is invalidated (kb.statements).
    """
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and driver.is_closed():
        # The server hung up (asyncpg saw it); no need to ask.
        raise sa_exc.DisconnectionError("the server closed this pooled connection")
    last = record.info.get(_CHECKED_IN) if record is not None else None
    if last is not None and time.monotonic() - last < PING_AFTER_IDLE_S:
        return
    try:
        dbapi_connection.run_async(lambda conn: conn.execute("SELECT 1"))
    except Exception as exc:
        # The pool discards this connection and checks out (or opens) another.
        raise sa_exc.DisconnectionError(f"stale pooled connection: {exc}") from exc


def engine_of(session: AsyncSession) -> Engine | None:
    """Return the (sync) Engine under a session bound to an engine or a connection."""
    bind = session.bind
    if isinstance(bind, AsyncConnection):
        bind = bind.engine
    # (An AsyncEngine's `.engine` is its sync Engine, which has no `.sync_engine`.)
    return bind.sync_engine if isinstance(bind, AsyncEngine) else None


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Return the session factory kb uses: no expiry on commit, so results stay readable."""
    return async_sessionmaker(engine, expire_on_commit=False)


def translate(exc: BaseException, url: URL | str | None = None) -> KBError | None:
    """Map a driver or pool exception to the kb error a person can act on, or None."""
    if isinstance(exc, KBError):
        return exc
    if isinstance(exc, sa_exc.TimeoutError):
        return DatabaseBusy(
            "All database connections are busy (the pool is exhausted); try again in a moment, "
            "or raise DATABASE_POOL_SIZE / DATABASE_MAX_OVERFLOW."
        )
    orig: BaseException = exc
    if isinstance(exc, sa_exc.DBAPIError) and isinstance(exc.orig, BaseException):
        orig = exc.orig
    # SQLAlchemy's asyncpg adapter wraps the driver's exception; look at both.
    cause: BaseException = orig.__cause__ or orig
    for candidate in (orig, cause):
        if isinstance(candidate, asyncpg.exceptions.QueryCanceledError):
            return QueryTimeout(
                "The query ran past the statement timeout (KB_STATEMENT_TIMEOUT) and was "
                "cancelled; narrow it with filters or raise the timeout."
            )
        if isinstance(candidate, asyncpg.exceptions.ReadOnlySQLTransactionError):
            return ReadOnlyError("kb is in read-only mode (KB_READ_ONLY); this would write.")
        if isinstance(candidate, asyncpg.exceptions.InsufficientPrivilegeError):
            return ReadOnlyError(f"The database user may not do this: {candidate}")
        if isinstance(
            candidate,
            asyncpg.exceptions.DataError | asyncpg.exceptions.CharacterNotInRepertoireError,
        ):
            return InvalidInput(f"The database refused a value: {candidate}")
        if isinstance(candidate, _CONNECT_ERRORS) or (
            isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
        ):
            return unavailable(url or "<database>", candidate)
    return None


@contextmanager
def translating(url: URL | str | None = None) -> Iterator[None]:
    """Re-raise driver and pool errors inside the block as kb errors."""
    try:
        yield
    except KBError:
        raise
    except Exception as exc:
        mapped = translate(exc, url)
        if mapped is None:
            raise
        raise mapped from exc


@asynccontextmanager
async def session_scope(
    factory: async_sessionmaker[AsyncSession] | AsyncEngine,
) -> AsyncIterator[AsyncSession]:
    """Yield a session that commits on success, rolls back on any exception, and always closes."""
    if isinstance(factory, AsyncEngine):
        factory = sessionmaker(factory)
    bind = factory.kw.get("bind")
    url = getattr(getattr(bind, "engine", bind), "url", None)
    session = factory()
    try:
        with translating(url):
            yield session
            await session.commit()
    except BaseException:
        # The original error matters more than a failed rollback on a dead connection.
        with suppress(Exception):
            await session.rollback()
        raise
    finally:
        await session.close()
