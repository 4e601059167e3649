"""`kb collections`, `kb ingest` and `kb demo` from the shell, against a real database."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

import kb
from helpers import ROOT, settings_for, url_text
from kb.cli import main


def kb_cli(
    *args: str, url: URL, cwd: Path = ROOT, stdin: int | None = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    """Run `kb ...` in a child process with no terminal on stdin (as in a script or CI)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "KB_"))}
    env["DATABASE_URL"] = url_text(url)
    return subprocess.run(
        [str(Path(sys.executable).parent / "kb"), *args],
        cwd=cwd,
        env=env,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _help(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*args, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_every_command_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    top = _help(capsys)
    for command in ("collections", "ingest", "demo"):
        assert command in top
    listing = _help(capsys, "collections")
    assert "create" in listing and "delete" in listing and "--json" in listing
    create = _help(capsys, "collections", "create")
    for word in ("local", "openai", "hashing", "--metric", "--dimension", "--model"):
        assert word in create
    assert "--yes" in _help(capsys, "collections", "delete")
    ingest = _help(capsys, "ingest")
    for word in (".pdf", ".jsonl", "--chunk-size", "--chunk-overlap", "--include", "--exclude"):
        assert word in ingest
    assert "files_skipped" in ingest and "run the\nsame command again" in ingest
    assert "pydoc" in _help(capsys, "demo")
    assert "--no-demo" in _help(capsys, "serve")


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `kb ...` in this process (fast); return (status, stdout, stderr)."""
    status = main(list(args))
    out = capsys.readouterr()
    return status, out.out, out.err


def test_collections_and_ingest_from_the_shell(
    own_db: kb.Database,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = own_db.url
    monkeypatch.setenv("DATABASE_URL", url_text(url))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nAlpha paragraph.\n\nBeta paragraph.", encoding="utf-8")
    (docs / "b.txt").write_bytes(b"caf\xe9 latin-1 \x00 text")
    (docs / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(64))

    status, out, _ = _run(capsys, "collections", "--json")
    assert status == 0 and json.loads(out) == []
    status, out, _ = _run(
        capsys, "collections", "create", "notes", "--embedder", "hashing", "--dimension", "32",
        "--metric", "l2", "--description", "shell test",
    )  # fmt: skip
    assert status == 0 and "feature-hashing-32 (32 dims, l2)" in out

    # A real child process: relative paths, the JSON report, nothing on stderr but progress.
    child = kb_cli("ingest", "docs", "--collection", "notes", "--json", url=url, cwd=tmp_path)
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    assert report["files_read"] == 2 and report["chunks_added"] == 2
    assert report["duplicates_skipped"] == 0 and report["seconds"] >= 0
    assert report["files_skipped"] == [
        {"path": "docs/photo.jpg", "reason": "unsupported file type .jpg (kb reads "
         ".csv, .htm, .html, .jsonl, .markdown, .md, .ndjson, .pdf, .text, .tsv, .txt)"}
    ]  # fmt: skip
    assert report["nul_bytes_removed"] == 1
    assert "Traceback" not in child.stderr

    monkeypatch.chdir(tmp_path)
    status, out, _ = _run(capsys, "ingest", "docs", "-c", "notes", "--json")
    again = json.loads(out)
    assert status == 0 and (again["chunks_added"], again["duplicates_skipped"]) == (0, 2)
    status, out, _ = _run(capsys, "ingest", "docs", "-c", "notes")
    assert "0 added" in out and "2 already stored" in out and "skipped docs/photo.jpg" in out

    status, out, _ = _run(capsys, "collections", "--json")
    [info] = json.loads(out)
    keys = ("name", "documents", "embedder", "model", "dimension", "metric")
    assert {k: info[k] for k in keys} == {
        "name": "notes",
        "documents": 2,
        "embedder": "hashing",
        "model": "feature-hashing-32",
        "dimension": 32,
        "metric": "l2",
    }
    status, out, _ = _run(capsys, "collections")
    assert "notes" in out and "feature-hashing-32" in out

    child = kb_cli("ingest", "docs", "-c", "notes", "--embedder", "local", url=url, cwd=tmp_path)
    assert child.returncode == 1
    assert child.stderr.startswith(
        "kb: error: Collection 'notes' was built with feature-hashing-32"
    )
    assert "all-MiniLM-L6-v2 (384 dims)" in child.stderr and "Traceback" not in child.stderr

    child = kb_cli("collections", "delete", "notes", url=url)
    assert child.returncode == 2 and "--yes" in child.stderr

    # On a terminal it asks, and "n" keeps the collection.
    leader, follower = pty.openpty()
    try:
        os.write(leader, b"n\n")
        child = kb_cli("collections", "delete", "notes", url=url, stdin=follower)
    finally:
        os.close(leader)
        os.close(follower)
    assert child.returncode == 1 and "Nothing deleted." in child.stdout

    status, out, _ = _run(capsys, "collections", "delete", "notes", "--yes")
    assert status == 0 and "2 document(s)" in out
    status, _, err = _run(capsys, "collections", "delete", "notes", "--yes")
    assert status == 1 and "No collection named 'notes'" in err


async def test_kb_demo_builds_both_collections(
    new_database: Callable[[], Awaitable[URL]],
) -> None:
    url = await new_database()
    out = kb_cli("demo", "--embedder", "hashing", "--modules", "json,textwrap", "--json", url=url)
    assert out.returncode == 0, out.stderr
    reports = {r["collection"]: r for r in json.loads(out.stdout)}
    assert set(reports) == {"python-stdlib", "python-builtins"}
    assert reports["python-stdlib"]["files_read"] == 2
    assert reports["python-builtins"]["chunks_added"] > 100


async def test_serve_builds_the_demo_on_first_run_only(
    new_database: Callable[[], Awaitable[URL]], capsys: pytest.CaptureFixture[str]
) -> None:
    from kb.cli.serve import _seed_demo

    url = await new_database()
    # The default embedder comes from settings; hashing keeps this test fast.
    db = await kb.connect(settings_for(url, embedder="hashing"), url=url, upgrade=False)
    try:
        await _seed_demo(db)
        first = capsys.readouterr().out
        assert "building the demo knowledge base" in first and "kb: demo ready" in first
        async with db.session() as s:
            infos = {c.name: c for c in await kb.list_collections(s)}
        assert set(infos) == {"python-stdlib", "python-builtins"}
        assert infos["python-stdlib"].documents > 300 and infos["python-builtins"].documents > 100
        await _seed_demo(db)
        assert capsys.readouterr().out == ""  # not empty any more: nothing to do
    finally:
        await db.close()


def test_the_progress_bar_shows_files_chunks_rate_and_eta(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kb.cli.ingest import _Bar
    from kb.ingest import IngestProgress

    bar = _Bar(enabled=True)
    bar(IngestProgress("reading", 0, 4, 0, 0, None, 0.0, None, 0.1))
    bar(IngestProgress("embedding", 2, 4, 1, 300, None, 150.0, 2.5, 2.0))
    bar(IngestProgress("done", 4, 4, 1, 600, 600, 160.0, 0.0, 3.7))
    bar.close()
    err = capsys.readouterr().err
    assert "2/4" in err and "300 chunks, 150.0 chunks/s, ETA 2s" in err
    assert "600/600 chunks" in err and "ETA ?" in err
