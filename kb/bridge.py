"""The sync bridge: one background event loop per process that owns the async engine.

Streamlit reruns scripts on fresh threads and plain scripts have no loop at all, while
asyncpg connections belong to the loop that opened them. Every sync call is therefore
submitted to one long-lived loop in a daemon thread, which also owns the Database.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from contextlib import suppress
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from kb.config import Settings, get_settings
from kb.database import Database, connect
from kb.errors import DatabaseUnavailable, KBError

T = TypeVar("T")
P = ParamSpec("P")


class BridgeError(KBError, RuntimeError):
    """The bridge was used wrongly (closed, or called from its own loop thread)."""


class SyncDatabase:
    """A Database driven from synchronous code through a background event loop."""

    def __init__(self, settings: Settings | None = None, *, upgrade: bool = True) -> None:
        self.settings = settings or get_settings()
        self._upgrade = upgrade
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kb-bridge", daemon=True
        )
        self._thread.start()
        self._db: Database | None = None
        self._db_lock: asyncio.Lock | None = None
        self._closed = False

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the bridge's loop and return its result."""
        if self._closed:
            coro.close()
            raise BridgeError("This kb SyncDatabase is closed.")
        if threading.current_thread() is self._thread:
            coro.close()
            # Blocking on our own loop would wait forever.
            raise BridgeError("SyncDatabase.run() was called from its own event loop; use await.")
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    async def _database(self) -> Database:
        if self._db_lock is None:
            self._db_lock = asyncio.Lock()
        async with self._db_lock:
            # Connect lazily and retry after a failure, so the app recovers once the
            # database comes back.
            if self._db is None:
                self._db = await connect(self.settings, upgrade=self._upgrade)
            return self._db

    async def _with_database(self, fn: Callable[[Database], Awaitable[T]]) -> T:
        try:
            return await fn(await self._database())
        except DatabaseUnavailable:
            if not self.settings.uses_embedded_server:
                raise
        # kb started the embedded server on demand; if it has stopped since, start it again
        # (with a fresh pool) and retry once.
        await self._reset()
        return await fn(await self._database())

    async def _reset(self) -> None:
        assert self._db_lock is not None
        async with self._db_lock:
            db, self._db = self._db, None
        if db is not None:
            with suppress(Exception):
                await db.close()

    @property
    def database(self) -> Database:
        """Return the connected Database, connecting on first use."""
        return self.run(self._database())

    def call(
        self,
        fn: Callable[Concatenate[AsyncSession, P], Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run `fn(session, *args, **kwargs)` in a new session, commit, and return its result."""

        async def _call(db: Database) -> T:
            async with db.session() as session:
                return await fn(session, *args, **kwargs)

        return self.run(self._with_database(_call))

    def with_db(
        self,
        fn: Callable[Concatenate[Database, P], Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run `fn(database, *args, **kwargs)` on the bridge (for calls that manage sessions)."""

        async def _call(db: Database) -> T:
            return await fn(db, *args, **kwargs)

        return self.run(self._with_database(_call))

    def close(self) -> None:
        """Dispose the engine and stop the loop thread."""
        if self._closed:
            return
        if self._db is not None:
            # Closing must not fail because the database is already gone.
            with suppress(Exception):
                self.run(self._db.close(), timeout=30)
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> SyncDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
