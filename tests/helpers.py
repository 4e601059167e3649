"""Helpers shared by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from sqlalchemy.engine import URL

from kb.config import Settings
from kb.db import asyncpg_kwargs

ROOT = Path(__file__).resolve().parent.parent


def settings_for(url: URL | str, **overrides: object) -> Settings:
    """Settings for a test database, ignoring the developer's .env and environment."""
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=url if isinstance(url, str) else url.render_as_string(False),
        **overrides,
    )


def url_text(url: URL) -> str:
    """Return the URL as text with its password, for child processes."""
    return url.render_as_string(hide_password=False)


def run_cli(
    *args: str,
    url: URL | None = None,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run a command (`kb`, `alembic`, ...) from the venv in a child process."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "KB_"))}
    if url is not None:
        child_env["DATABASE_URL"] = url_text(url)
    child_env.update(env or {})
    exe = Path(sys.executable).parent / args[0]
    return subprocess.run(
        [str(exe), *args[1:]],
        cwd=cwd,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@asynccontextmanager
async def login_role(url: URL, name: str, privileges: str = "SELECT") -> AsyncIterator[URL]:
    """Yield `url` as a new login role granted `privileges` on every table; drop it after.

    The role owns nothing (as an app's role often does not): the tables stay the owner's.
    """
    admin = await asyncpg.connect(**asyncpg_kwargs(url))
    try:
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
        await admin.execute(f"CREATE ROLE {name} LOGIN")
        # A writer stages its batches in temporary tables; a reader gets nothing beyond SELECT.
        writes = privileges != "SELECT"
        on_database = "CONNECT, TEMP" if writes else "CONNECT"
        await admin.execute(f'GRANT {on_database} ON DATABASE "{url.database}" TO {name}')
        await admin.execute(f"GRANT USAGE ON SCHEMA public TO {name}")
        await admin.execute(f"GRANT {privileges} ON ALL TABLES IN SCHEMA public TO {name}")
        if writes:
            await admin.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {name}")
        yield url.set(username=name)
    finally:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", name
        )
        await admin.execute(f"DROP OWNED BY {name}")
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
        await admin.close()
