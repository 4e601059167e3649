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


def test_embedded_server_runs_with_kb_settings(data_dir: Path) -> None:
    from kb import embedded

    env = {"KB_DATA_DIR": str(data_dir)}
    assert run_cli("kb", "db", "upgrade", env=env).returncode == 0
    pgdata = data_dir / "pgdata"
    wanted = embedded.tuning()["shared_buffers"]
    assert wanted.endswith("MB") and int(wanted[:-2]) >= 128
    status = json.loads(run_cli("kb", "db", "status", "--json", env=env).stdout)
    # PostgreSQL shows whole gigabytes as GB.
    shown = status["shared_buffers"]
    mb = int(shown[:-2]) * (1024 if shown.endswith("GB") else 1)
    assert mb == int(wanted[:-2]), (shown, wanted)

    # The file is the user's to edit: kb keeps an edit across restarts.
    tuning = pgdata / embedded.TUNING_FILE
    tuning.write_text("shared_buffers = '160MB'\n")
    assert "Stopped" in run_cli("kb", "db", "stop", env=env).stdout
    status = json.loads(run_cli("kb", "db", "status", "--json", env=env).stdout)
    assert status["shared_buffers"] == "160MB"
    assert tuning.read_text() == "shared_buffers = '160MB'\n"
    conf = (pgdata / "postgresql.conf").read_text()
    assert conf.count(embedded.TUNING_FILE) == 1


def test_tuning_scales_with_memory() -> None:
    from kb import embedded

    gib = 2**30
    assert embedded.tuning(2 * gib)["shared_buffers"] == "512MB"
    assert embedded.tuning(24 * gib)["shared_buffers"] == "2048MB"
    assert embedded.tuning(256 * 2**20)["shared_buffers"] == "128MB"
    assert embedded.tuning(24 * gib)["effective_cache_size"] == "12288MB"
