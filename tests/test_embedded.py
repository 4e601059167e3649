"""kb's own embedded server: started on demand, reused, stopped, through the real CLI."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import run_cli


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kbe", dir="/tmp"))
    try:
        yield path
    finally:
        run_cli("kb", "db", "stop", env={"KB_DATA_DIR": str(path)})
        shutil.rmtree(path, ignore_errors=True)


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[0])


def test_start_reuse_and_stop(data_dir: Path) -> None:
    env = {"KB_DATA_DIR": str(data_dir)}
    first = run_cli("kb", "db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    pid = _postmaster_pid(data_dir)

    status = run_cli("kb", "db", "status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["embedded"] is True
    assert info["server_version"].startswith("18")
    assert info["pgvector_version"]
    assert info["current_revision"] == info["head_revision"]
    assert info["pending"] == []
    # A second start reuses the running server and its data.
    assert _postmaster_pid(data_dir) == pid

    stopped = run_cli("kb", "db", "stop", env=env)
    assert "Stopped" in stopped.stdout, stopped.stderr
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
    assert "No embedded server" in run_cli("kb", "db", "stop", env=env).stdout

    # Started again, the data made before is still there.
    again = run_cli("kb", "db", "status", "--json", env=env)
    assert json.loads(again.stdout)["current_revision"] == info["current_revision"]
