"""Helpers shared by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import URL

from kb.config import Settings

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
