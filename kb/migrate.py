"""Alembic migrations, run from kb on a connection or a URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from kb.indexes import HNSW_PREFIX

ROOT = Path(__file__).resolve().parent.parent
# Any fixed number: held with pg_advisory_xact_lock while migrating.
LOCK_ID = 7_428_501


def alembic_config() -> Config:
    """Return the Alembic config of the project (alembic.ini and migrations/ at the top level)."""
    ini = ROOT / "alembic.ini"
    cfg = Config(str(ini)) if ini.exists() else Config()
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["skip_logging"] = True
    return cfg


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Keep run-time per-collection HNSW indexes out of autogenerate and `alembic check`."""
    return not (type_ == "index" and name is not None and name.startswith(HNSW_PREFIX))


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Render pgvector types with their import, so generated revisions run as written."""
    if type_ == "type" and type(obj).__module__.startswith("pgvector."):
        autogen_context.imports.add("import pgvector.sqlalchemy")
        return f"pgvector.sqlalchemy.{obj!r}"
    return False


def head_revision() -> str | None:
    """Return the newest revision the code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def pending_after(current: str | None) -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    if head is None or current == head:
        return []
    return [rev.revision for rev in script.iterate_revisions(head, current)][::-1]


def _upgrade_sync(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def _downgrade_sync(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, revision)


async def upgrade(conn: AsyncConnection, revision: str = "head") -> None:
    """Upgrade the database behind `conn` to `revision`, inside the connection's transaction."""
    await conn.run_sync(_upgrade_sync, revision)


async def downgrade(conn: AsyncConnection, revision: str) -> None:
    """Downgrade the database behind `conn` to `revision`."""
    await conn.run_sync(_downgrade_sync, revision)


async def current_revision(conn: AsyncConnection) -> str | None:
    """Return the revision the database is at, or None before the first migration."""

    def _current(sync_conn: Connection) -> str | None:
        return MigrationContext.configure(sync_conn).get_current_revision()

    return await conn.run_sync(_current)


async def pending_revisions(conn: AsyncConnection) -> list[str]:
    """Return the revisions `upgrade head` would apply, oldest first."""
    return pending_after(await current_revision(conn))
