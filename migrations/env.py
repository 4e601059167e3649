"""Alembic environment: async, URL from kb's settings, or a connection handed over by kb."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from kb.migrate import LOCK_ID, include_object, render_item
from kb.models import Base

config = context.config
if config.config_file_name is not None and not config.attributes.get("skip_logging"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        include_object=include_object,
        render_item=render_item,
        compare_type=True,
        compare_server_default=False,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout (`alembic upgrade head --sql`)."""
    from kb.config import get_settings

    url = get_settings().database_url or "postgresql+asyncpg://localhost/kb"
    _configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    _configure(connection=connection, transaction_per_migration=False)
    with context.begin_transaction():
        # Two processes starting at once (app and CLI) must not both migrate.
        if not context.is_offline_mode():
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": LOCK_ID})
        context.run_migrations()


async def run_async_migrations() -> None:
    from kb.config import get_settings
    from kb.db import ensure_database, resolve_url, translating

    url = config.attributes.get("url") or resolve_url(get_settings())
    await ensure_database(url)
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        with translating(url):
            async with engine.connect() as connection:
                await connection.run_sync(do_run_migrations)
                await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        # kb handed us a live (sync-facing) connection: migrate inside its transaction.
        do_run_migrations(connection)
        return
    asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
