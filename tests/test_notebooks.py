"""The notebooks run top to bottom on a fresh Jupyter kernel against a test database."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from sqlalchemy.engine import URL

import kb
from helpers import ROOT, settings_for, url_text

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.notebook


@pytest.fixture(scope="module")
async def demo_url(new_database) -> AsyncIterator[URL]:  # type: ignore[no-untyped-def]
    """A database holding a small demo knowledge base built with the real local model."""
    url: URL = await new_database()
    from kb.demo import build_demo

    async with await kb.connect(settings_for(url), url=url, upgrade=False) as db:
        await build_demo(
            db,
            modules=["json", "csv", "pathlib", "io", "random", "datetime", "re"],
            builtin_names=["open", "print", "len", "sorted", "zip", "range"],
        )
    yield url


def test_there_are_three_notebooks() -> None:
    assert [p.stem for p in NOTEBOOKS] == ["01_quickstart", "02_analysis", "03_ingest_and_evaluate"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_uses_only_the_public_api(path: Path) -> None:
    source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
    for private in (
        "sqlalchemy",
        "asyncpg",
        "sqlalchemy.text",
        "import text",
        "SELECT ",
        "create_async_engine",
        "kb.db",
        "nest_asyncio",
    ):
        assert private not in source, f"{path.name} uses {private!r}"
    used = {
        word.split("(")[0] for word in source.replace("\n", " ").split() if word.startswith("kb.")
    }
    for name in used:
        attr = name.removeprefix("kb.").split(".")[0].rstrip(",:)")
        assert attr in kb.__all__, f"{path.name} uses kb.{attr}, which is not public"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(
    path: Path, demo_url: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel inherits this environment: it must find the test database, not a .env.
    for name in list(os.environ):
        if name.startswith(("DATABASE_", "KB_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATABASE_URL", url_text(demo_url))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    book = nbformat.read(path, as_version=4)
    client = NotebookClient(
        book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any failure
    errors = [
        out
        for cell in book.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors
