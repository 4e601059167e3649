"""`kb db ...`: migrate, inspect and stop the database."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict
from typing import Any

from kb import embedded
from kb.config import get_settings
from kb.database import connect
from kb.status import DatabaseStatus, database_status


def register(sub: Any) -> None:
    """Add the `db` command group."""
    parser = sub.add_parser("db", help="migrate, inspect or stop the database")
    db_sub = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)

    p = db_sub.add_parser(
        "upgrade", help="apply pending migrations (same as `alembic upgrade head`)"
    )
    p.set_defaults(handler=_upgrade)

    p = db_sub.add_parser(
        "status",
        help="show where the database is, its versions and migration state",
        description="Show the database URL (password hidden), whether it is the embedded "
        "server, the PostgreSQL and pgvector versions, the current migration revision and "
        "any pending migrations. Exits 1 when migrations are pending.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_status)

    p = db_sub.add_parser("stop", help="stop the embedded PostgreSQL server")
    p.set_defaults(handler=_stop)


async def _status_async() -> DatabaseStatus:
    db = await connect(upgrade=False)
    try:
        return await database_status(db)
    finally:
        await db.close()


def _upgrade(args: argparse.Namespace) -> int:
    async def run() -> DatabaseStatus:
        db = await connect(upgrade=True)
        try:
            return await database_status(db)
        finally:
            await db.close()

    status = asyncio.run(run())
    print(f"{status.url}: at revision {status.current_revision} (head)")
    return 0


def _status(args: argparse.Namespace) -> int:
    status = asyncio.run(_status_async())
    if args.json:
        print(json.dumps({**asdict(status), "pending": list(status.pending)}))
    else:
        rows = [
            ("database", status.url),
            ("server", "embedded (kb db stop stops it)" if status.embedded else "external"),
            ("PostgreSQL", status.server_version),
            ("pgvector", status.pgvector_version or "not installed (run kb db upgrade)"),
            ("shared_buffers", status.shared_buffers),
            ("revision", status.current_revision or "none (run kb db upgrade)"),
            ("head", status.head_revision or "-"),
            ("pending", ", ".join(status.pending) or "none"),
            ("read-only", "yes" if status.read_only else "no"),
        ]
        for key, value in rows:
            print(f"{key:<11} {value}")
    return 1 if status.pending else 0


def _stop(args: argparse.Namespace) -> int:
    settings = get_settings()
    if not settings.uses_embedded_server:
        print("DATABASE_URL is set: kb does not manage that server; nothing to stop.")
        return 0
    if embedded.stop(settings.pgdata):
        print(f"Stopped the embedded server in {settings.pgdata}.")
    else:
        print(f"No embedded server is running in {settings.pgdata}.")
    return 0
