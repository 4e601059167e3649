"""The `kb` command line: help that explains itself, status, upgrade, errors without tracebacks."""

from __future__ import annotations

import json

from sqlalchemy.engine import URL

from helpers import run_cli


def test_help_explains_itself() -> None:
    out = run_cli("kb", "--help")
    assert out.returncode == 0
    assert "DATABASE_URL" in out.stdout and "embedded" in out.stdout
    for command in ("db", "serve"):
        assert command in out.stdout
    db_help = run_cli("kb", "db", "--help").stdout
    for action in ("upgrade", "status", "stop"):
        assert action in db_help


async def test_status_and_upgrade_on_an_external_database(new_database) -> None:  # type: ignore[no-untyped-def]
    url: URL = await new_database()
    url = url.set(password="secret-pw")  # trust auth ignores it; it must never be printed
    out = run_cli("kb", "db", "status", "--json", url=url)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["embedded"] is False
    assert "secret-pw" not in out.stdout and "***" in info["url"]
    assert info["pending"] == []
    text = run_cli("kb", "db", "status", url=url)
    assert "external" in text.stdout and "secret-pw" not in text.stdout
    up = run_cli("kb", "db", "upgrade", url=url)
    assert up.returncode == 0 and "(head)" in up.stdout


def test_unreachable_database_is_one_clear_line() -> None:
    out = run_cli(
        "kb",
        "db",
        "status",
        url=None,
        env={"DATABASE_URL": "postgresql://u:pw123@127.0.0.1:1/x", "KB_CONNECT_TIMEOUT": "2"},
    )
    assert out.returncode == 1
    assert out.stderr.startswith("kb: error: Cannot reach the database")
    assert "Traceback" not in out.stderr and "pw123" not in out.stderr


def test_bad_scheme_is_refused() -> None:
    out = run_cli("kb", "db", "status", env={"DATABASE_URL": "mysql://u@h/d"})
    assert out.returncode == 1
    assert "postgresql+asyncpg://" in out.stderr and "Traceback" not in out.stderr


def test_serve_starts_the_app_even_when_the_database_is_down() -> None:
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "KB_"))}
    env |= {"DATABASE_URL": "postgresql://u:pw7@127.0.0.1:1/x", "KB_CONNECT_TIMEOUT": "2"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "kb"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline, healthy = time.monotonic() + 90, False
        while time.monotonic() < deadline and not healthy:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health") as r:
                    healthy = r.status == 200
            except OSError:
                time.sleep(0.5)
        assert healthy, "the app did not come up while the database was down"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "it will connect when it can" in out
    assert "pw7" not in out


async def test_read_only_cli_refuses_every_write(new_database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    url: URL = await new_database()
    note = tmp_path / "note.txt"
    note.write_text("a note that must not be stored")
    env = {"KB_READ_ONLY": "1"}
    for args in (
        ("kb", "collections", "create", "notes", "--embedder", "hashing"),
        ("kb", "ingest", str(note), "--collection", "notes", "--embedder", "hashing"),
        ("kb", "collections", "delete", "notes", "--yes"),
        ("kb", "demo", "--embedder", "hashing", "--modules", "json"),
    ):
        out = run_cli(*args, url=url, env=env)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert "read-only" in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
    listed = run_cli("kb", "collections", "--json", url=url, env=env)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
