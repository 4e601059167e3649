"""What the database is: where, which versions, which migration revision."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from kb import migrate
from kb.database import Database
from kb.db import translating


@dataclass(frozen=True, slots=True)
class DatabaseStatus:
    """A snapshot of the database kb is connected to; the URL never carries a password."""

    url: str
    embedded: bool
    server_version: str
    pgvector_version: str | None
    shared_buffers: str
    current_revision: str | None
    head_revision: str | None
    pending: tuple[str, ...]
    read_only: bool

    @property
    def up_to_date(self) -> bool:
        """Tell whether no migration is pending."""
        return not self.pending


async def database_status(db: Database) -> DatabaseStatus:
    """Return the server and pgvector versions and the migration state of `db`."""
    with translating(db.url):
        async with db.engine.connect() as conn:
            server = await conn.scalar(text("SHOW server_version"))
            buffers = await conn.scalar(text("SHOW shared_buffers"))
            pgvector = await conn.scalar(
                text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            )
            current = await migrate.current_revision(conn)
    return DatabaseStatus(
        url=db.display_url,
        embedded=db.embedded,
        server_version=str(server),
        pgvector_version=pgvector,
        shared_buffers=str(buffers),
        current_revision=current,
        head_revision=migrate.head_revision(),
        pending=tuple(migrate.pending_after(current)),
        read_only=db.settings.read_only,
    )
