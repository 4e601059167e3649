"""The async engine, sessions, and the translation of driver errors into kb errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
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
    """Create an AsyncEngine with the pool settings, pre-ping, timeouts and read-only mode."""
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
    return _create_async_engine(
        target,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout,
        pool_pre_ping=True,
        echo=settings.echo_sql,
        connect_args={"timeout": settings.connect_timeout, "server_settings": server_settings},
    )


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
