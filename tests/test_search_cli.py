"""`kb browse`, `kb search`, `kb similar`, `kb export` as a person (or a script) runs them."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from sqlalchemy.engine import URL

import kb
from helpers import run_cli, settings_for
from kb.embedders import embed_texts, make_embedder
from kb.models import Document

NOTES = [
    ("PostgreSQL tuning", "Raise shared_buffers and work_mem for large sorts in PostgreSQL.", "db"),
    ("Vector indexes", "HNSW indexes make nearest neighbour search over vectors fast.", "db"),
    ("Backups", "Take nightly base backups and keep the write-ahead log archive.", "db"),
    ("Sourdough", "Feed the sourdough starter with flour and water every day.", "food"),
    ("Pasta", "Cook the pasta in salted boiling water until al dente.", "food"),
    ("Coffee", "Grind coffee beans just before brewing for the best taste.", "food"),
    ("Running", "Start running slowly and build distance week after week.", "sport"),
    ("Cycling", "Check the tyre pressure before every long bike ride.", "sport"),
]
FIELDS = {"id", "title", "source", "chunk_index", "created_at", "metadata"}


@pytest.fixture(scope="module")
async def cli_url(new_database: Callable[[], Awaitable[URL]]) -> AsyncIterator[URL]:
    url = await new_database()
    db = await kb.connect(settings_for(url), url=url, upgrade=False)
    model = make_embedder("hashing", dimension=256)
    texts = [f"{title}. {content}" for title, content, _ in NOTES]
    vectors = embed_texts(model, texts)
    async with db.session() as s:
        coll = await kb.create_collection(
            s, "notes", embedder="hashing", model=model.model, dimension=256
        )
        # Sixty documents: the eight notes, each in several dated copies.
        s.add_all(
            Document(
                collection_id=coll.id,
                title=NOTES[i % 8][0],
                source=f"notes/{i}.md",
                content=NOTES[i % 8][1],
                meta={"topic": NOTES[i % 8][2], "copy": i // 8},
                embedding=vectors[i % 8],
                created_at=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(hours=i),
            )
            for i in range(60)
        )
    await db.close()
    yield url


def _json(out: Any) -> Any:
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    return json.loads(out.stdout)


def test_browse_pages_with_cursors(cli_url: URL) -> None:
    first = run_cli("kb", "browse", "-c", "notes", "--limit", "25", "--json", url=cli_url)
    page = _json(first)
    assert len(page) == 25 and all(set(doc) >= FIELDS for doc in page)
    assert page[0]["source"] == "notes/59.md"  # newest first
    cursor = re.search(r"next page: --after (\S+)", first.stderr)
    assert cursor is not None
    second = _json(
        run_cli(
            "kb",
            "browse",
            "-c",
            "notes",
            "-n",
            "25",
            "--after",
            cursor.group(1),
            "--json",
            url=cli_url,
        )
    )
    assert second[0]["source"] == "notes/34.md"
    assert not {d["id"] for d in page} & {d["id"] for d in second}


def test_search_json_shape_and_filters(cli_url: URL) -> None:
    hits = _json(
        run_cli(
            "kb",
            "search",
            "nearest neighbour vectors",
            "-c",
            "notes",
            "-k",
            "5",
            "--filter",
            "topic=db",
            "--json",
            url=cli_url,
        )
    )
    assert len(hits) == 5
    for hit in hits:
        assert FIELDS | {"rank", "score", "distance"} <= set(hit)
        assert hit["metadata"]["topic"] == "db"
        assert hit["score"] == pytest.approx(1 - hit["distance"])
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0]["title"] == "Vector indexes"
    assert hits[0]["score"] >= hits[-1]["score"]


def test_search_queries_file_prints_one_line_per_query(cli_url: URL, tmp_path: Path) -> None:
    queries = tmp_path / "queries.txt"
    queries.write_text(
        "sourdough starter flour\n\nbike tyre pressure\nbackups of the write-ahead log\n",
        encoding="utf-8",
    )
    out = run_cli(
        "kb",
        "search",
        "--queries",
        str(queries),
        "-c",
        "notes",
        "-k",
        "3",
        "--mode",
        "hybrid",
        "--json",
        url=cli_url,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3  # the blank line is skipped
    tops = [json.loads(line)[0]["title"] for line in lines]
    assert tops == ["Sourdough", "Cycling", "Backups"]
    assert all(len(json.loads(line)) == 3 for line in lines)


def test_similar_and_text_output(cli_url: URL) -> None:
    doc = _json(run_cli("kb", "browse", "-c", "notes", "-n", "1", "--json", url=cli_url))[0]
    similar = _json(run_cli("kb", "similar", doc["id"], "-k", "4", "--json", url=cli_url))
    assert doc["id"] not in {h["id"] for h in similar}
    assert {h["title"] for h in similar} == {doc["title"]}  # its dated copies
    assert all(h["score"] == pytest.approx(1.0, abs=1e-5) for h in similar)

    human = run_cli("kb", "search", "pasta water", "-c", "notes", "-k", "2", url=cli_url)
    assert human.returncode == 0, human.stderr
    assert "cosine similarity = 1 - cosine distance" in human.stdout and "Pasta" in human.stdout


def test_explain_shows_sql_plan_and_index(cli_url: URL) -> None:
    out = _json(
        run_cli(
            "kb",
            "search",
            "coffee beans",
            "-c",
            "notes",
            "--since",
            "2024-01-01",
            "--explain",
            "--analyze",
            "--json",
            url=cli_url,
        )
    )
    assert (
        "ORDER BY (d.embedding::vector(256)) <=> CAST(CAST(:q AS real[]) AS vector(256))"
        in out["sql"]
    )
    assert out["params"]["f_from"].startswith("2024-01-01")
    assert "actual time" in out["plan"] and out["analyzed"] is True
    assert out["rows"] == 10 and out["warning"] is None


def test_export_files(cli_url: URL, tmp_path: Path) -> None:
    target = tmp_path / "food.parquet"
    out = run_cli(
        "kb",
        "export",
        "-c",
        "notes",
        "--format",
        "parquet",
        "-o",
        str(target),
        "--filter",
        "topic=food",
        url=cli_url,
    )
    assert out.returncode == 0, out.stderr
    table = pq.read_table(target).to_pylist()
    assert len(table) == 22 and "exported 22 rows" in out.stderr
    assert {json.loads(r["metadata"])["topic"] for r in table} == {"food"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "x", "-c", "nope"], "No collection named 'nope'"),
        (["search", "x", "-c", "notes", "-k", "0"], "k must be an integer from 1 to 1000"),
        (["browse", "-c", "notes", "--after", "not-a-cursor"], "Malformed cursor"),
        (["export", "-c", "notes", "--format", "parquet"], "give --output FILE"),
    ],
)
def test_bad_input_is_one_clear_line(cli_url: URL, args: list[str], message: str) -> None:
    out = run_cli("kb", *args, url=cli_url)
    assert out.returncode == 1
    assert out.stderr.startswith("kb: error:") and message in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
