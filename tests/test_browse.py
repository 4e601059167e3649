"""Browse on a real database: keyset paging, filters, counts, histogram, facets, neighbours."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

import kb
from helpers import settings_for
from kb.models import Document
from kb.statements import driver

N = 3000
DIM = 8
BASE = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
LANGS = ("en", "fr", "de")


@dataclass
class Corpus:
    db: kb.Database
    rows: list[dict[str, Any]]

    def truth(self, keep: Callable[[dict[str, Any]], bool] = lambda r: True) -> list[uuid.UUID]:
        """Ids of matching rows, newest first, ties by id descending (as PostgreSQL orders)."""
        chosen = [r for r in self.rows if keep(r)]
        chosen.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
        return [r["id"] for r in chosen]


def make_rows(collection_id: int, n: int, start: datetime) -> list[dict[str, Any]]:
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    rows = []
    for i in range(n):
        year = 2020 + i % 5
        rows.append(
            {
                "id": uuid.uuid4(),
                "collection_id": collection_id,
                # Three documents share each timestamp, so the id has to break ties.
                "created_at": start + timedelta(minutes=37 * (i // 3)),
                "title": f"Doc {i}" + (" 100% _sure_" if i % 50 == 0 else ""),
                "source": None if i % 100 == 0 else f"folder/file_{i // 10}.txt",
                "chunk_index": i % 10,
                "content": f"Content of document {i}. "
                + ("The QUICK brown fox." if i % 7 == 0 else "Nothing here."),
                "meta": {
                    "lang": LANGS[i % 3],
                    # Half the years are numbers, half text: people type "2021" either way.
                    "year": year if i % 2 else str(year),
                    "tags": [f"t{i % 4}", f"u{i % 6}"],
                    "n": i,
                },
                "embedding": vectors[i],
            }
        )
    return rows


async def insert(db: kb.Database, rows: list[dict[str, Any]]) -> None:
    async with db.session() as s:
        s.add_all([Document(**row) for row in rows])


@pytest.fixture(scope="module")
async def corpus(new_database: Callable[[], Awaitable[URL]]) -> AsyncIterator[Corpus]:
    url = await new_database()
    db = await kb.connect(settings_for(url), url=url, upgrade=False)
    async with db.session() as s:
        coll = await kb.create_collection(
            s, "docs", embedder="hashing", model=f"feature-hashing-{DIM}", dimension=DIM
        )
        other = await kb.create_collection(
            s, "other", embedder="hashing", model=f"feature-hashing-{DIM}", dimension=DIM
        )
    rows = make_rows(coll.id, N, BASE)
    await insert(db, rows)
    # Same timestamps in another collection: browse must never mix them in.
    await insert(db, make_rows(other.id, 50, BASE))
    async with db.session() as s:
        await s.execute(text("ANALYZE documents"))
    try:
        yield Corpus(db, rows)
    finally:
        await db.close()


async def walk(
    db: kb.Database, *, limit: int, order: str = "newest", filters: Any = None
) -> tuple[list[kb.Page], list[uuid.UUID]]:
    pages: list[kb.Page] = []
    ids: list[uuid.UUID] = []
    cursor = None
    async with db.session() as s:
        while True:
            page = await kb.browse(
                s, "docs", limit=limit, order=order, after=cursor, filters=filters
            )
            pages.append(page)
            ids.extend(d.id for d in page)
            if page.next_cursor is None:
                return pages, ids
            cursor = page.next_cursor


async def test_pages_cover_every_document_once_in_order(corpus: Corpus) -> None:
    expected = corpus.truth()
    for limit in (500, 137):
        pages, ids = await walk(corpus.db, limit=limit)
        assert ids == expected
        assert all(len(p) == limit for p in pages[:-1])
        assert pages[0].prev_cursor is None and pages[-1].next_cursor is None
        assert {d.collection for p in pages for d in p} == {"docs"}
    _, oldest = await walk(corpus.db, limit=500, order="oldest")
    assert oldest == expected[::-1]


async def test_previous_cursors_walk_back_through_the_same_pages(corpus: Corpus) -> None:
    pages, _ = await walk(corpus.db, limit=400)
    back = [pages[-1]]
    async with corpus.db.session() as s:
        while back[-1].prev_cursor is not None:
            back.append(await kb.browse(s, "docs", limit=400, before=back[-1].prev_cursor))
    back.reverse()
    # Going back yields the same rows; only the page boundaries may shift at the start.
    assert [d.id for p in back for d in p] == [d.id for p in pages for d in p]
    assert [len(p) for p in back[1:]] == [len(p) for p in pages[1:]]


async def test_cursors_are_opaque_url_safe_and_bound_to_their_view(corpus: Corpus) -> None:
    async with corpus.db.session() as s:
        page = await kb.browse(s, "docs", limit=5)
        assert page.next_cursor is not None
        assert all(c.isalnum() or c in "-_" for c in page.next_cursor)
        with pytest.raises(kb.InvalidInput, match="another collection"):
            await kb.browse(s, "other", after=page.next_cursor)
        with pytest.raises(kb.InvalidInput, match="newest first"):
            await kb.browse(s, "docs", order="oldest", after=page.next_cursor)
        last = await kb.browse(s, "docs", limit=5, order="oldest")
        # At the very start, "before" is an empty page that points back to where it was.
        assert last.prev_cursor is None


async def test_paging_is_stable_while_rows_arrive(corpus: Corpus) -> None:
    db = corpus.db
    async with db.session() as s:
        live = await kb.create_collection(
            s, "live", embedder="hashing", model=f"feature-hashing-{DIM}", dimension=DIM
        )
    original = make_rows(live.id, 600, BASE)
    await insert(db, original)
    seen: list[uuid.UUID] = []
    cursor = None
    rounds = 0
    while True:
        async with db.session() as s:
            page = await kb.browse(s, "live", limit=50, after=cursor)
        seen.extend(d.id for d in page)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        rounds += 1
        # New rows land at the top, in the part already read, and in the part still ahead.
        extra = make_rows(live.id, 3, datetime.now(UTC))
        extra[1]["created_at"] = page[-1].created_at  # the very position of the cursor
        extra[2]["created_at"] = BASE + timedelta(minutes=37 * (rounds % 200))
        for j, row in enumerate(extra):
            row["source"] = f"late/{rounds}/{j}"
        await insert(db, extra)
    assert rounds > 5
    assert len(seen) == len(set(seen)), "a row was shown twice"
    assert {r["id"] for r in original} <= set(seen), "a row that existed was skipped"


async def test_deep_pages_cost_the_same_as_the_first(corpus: Corpus) -> None:
    db = corpus.db
    statements: list[tuple[str, Any]] = []

    def capture(logged: Any) -> None:
        if "FROM documents d WHERE d.collection_id" in logged.query:
            statements.append((logged.query, logged.args))

    async with db.session() as s:
        # kb runs browse statements on the session's asyncpg connection: log them there.
        conn = await driver(s)
        conn.add_query_logger(capture)
        try:
            first = await kb.browse(s, "docs", limit=100)
            cursor = first.next_cursor
            for _ in range(28):
                cursor = (await kb.browse(s, "docs", limit=100, after=cursor)).next_cursor
            await asyncio.sleep(0)  # asyncpg calls query loggers soon, not at once
        finally:
            conn.remove_query_logger(capture)
    assert len(statements) == 29
    async with db.session() as s:
        raw = (await (await s.connection()).get_raw_connection()).driver_connection
        for statement, params in (statements[0], statements[-1]):
            value = await raw.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", *params)
            plan = value if isinstance(value, list) else json.loads(value)
            scans = list(_nodes(plan[0]["Plan"]))
            index = [n for n in scans if n.get("Index Name") == "ix_documents_collection_created"]
            assert index, scans
            # The deep page reads 101 rows off the index, like the first: it starts at the
            # cursor (an index condition) instead of reading and dropping the rows before it.
            assert index[0]["Actual Rows"] == 101
            assert index[0].get("Rows Removed by Filter", 0) == 0
            if params:
                assert "created_at" in index[0]["Index Cond"]


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        ({"metadata": {"lang": "fr"}}, lambda r: r["meta"]["lang"] == "fr"),
        ({"metadata": {"tags": ["t1", "u3"]}}, lambda r: {"t1", "u3"} <= set(r["meta"]["tags"])),
        ({"metadata_text": {"year": "2021"}}, lambda r: str(r["meta"]["year"]) == "2021"),
        ({"metadata_text": {"tags": "u5"}}, lambda r: "u5" in r["meta"]["tags"]),
        ({"metadata": {"year": 2021}}, lambda r: r["meta"]["year"] == 2021),
        ({"title_contains": "100% _SURE_"}, lambda r: "100% _sure_" in r["title"]),
        ({"title_contains": "0%"}, lambda r: "0%" in r["title"]),
        ({"title_contains": "c 1_"}, lambda r: False),
        ({"source_contains": "FILE_12"}, lambda r: "file_12" in (r["source"] or "")),
        ({"content_contains": "quick BROWN"}, lambda r: "QUICK brown" in r["content"]),
        ({"metadata": {"no_such_key": 1}}, lambda r: False),
        (
            {
                "metadata": {"lang": "de"},
                "created_from": BASE + timedelta(days=3),
                "created_to": BASE + timedelta(days=9),
                "content_contains": "fox",
            },
            lambda r: (
                r["meta"]["lang"] == "de"
                and BASE + timedelta(days=3) <= r["created_at"] < BASE + timedelta(days=9)
                and "fox" in r["content"]
            ),
        ),
        (
            {"created_from": date(2025, 3, 5), "created_to": datetime(2025, 3, 6, 12)},
            lambda r: (
                datetime(2025, 3, 5, tzinfo=UTC)
                <= r["created_at"]
                < datetime(2025, 3, 6, 12, tzinfo=UTC)
            ),
        ),
    ],
)
async def test_filters_match_exactly_the_documents_they_describe(
    corpus: Corpus, filters: dict[str, Any], keep: Callable[[dict[str, Any]], bool]
) -> None:
    expected = corpus.truth(keep)
    _, ids = await walk(corpus.db, limit=500, filters=filters)
    assert ids == expected
    async with corpus.db.session() as s:
        assert await kb.count_documents(s, "docs", filters=filters) == len(expected)


async def test_counts_histogram_and_facets(corpus: Corpus) -> None:
    async with corpus.db.session() as s:
        assert await kb.count_documents(s, "docs") == N
        assert await kb.count_documents(s, "other") == 50

        days = await kb.created_histogram(s, "docs", unit="day")
        want = Counter(r["created_at"].date() for r in corpus.rows)
        assert [(b.start.date(), b.count) for b in days] == sorted(want.items())
        assert all(b.start.tzinfo is not None and b.start.hour == 0 for b in days)

        weeks = await kb.created_histogram(
            s, "docs", unit="week", filters={"metadata": {"lang": "en"}}
        )
        en = [r for r in corpus.rows if r["meta"]["lang"] == "en"]
        want_weeks = Counter(
            (r["created_at"] - timedelta(days=r["created_at"].weekday())).date() for r in en
        )
        assert [(b.start.date(), b.count) for b in weeks] == sorted(want_weeks.items())
        assert all(b.start.weekday() == 0 for b in weeks)  # ISO weeks start on Monday

        langs = await kb.facets(s, "docs", "lang")
        assert {(f.value, f.count) for f in langs} == set(
            Counter(r["meta"]["lang"] for r in corpus.rows).items()
        )
        # List values count once per element; numbers and text stay apart.
        tags = await kb.facets(s, "docs", "tags", limit=3)
        all_tags = Counter(t for r in corpus.rows for t in r["meta"]["tags"])
        assert [f.count for f in tags] == sorted(all_tags.values(), reverse=True)[:3]
        years = {(f.value, f.count) for f in await kb.facets(s, "docs", "year", limit=100)}
        assert (2021, 300) in years and ("2021", 300) in years
        assert await kb.facets(s, "docs", "no_such_key") == []


async def test_get_document_and_its_neighbouring_chunks(corpus: Corpus) -> None:
    by_n = {r["meta"]["n"]: r for r in corpus.rows}
    async with corpus.db.session() as s:
        doc = await kb.get_document(s, str(by_n[125]["id"]))
        assert doc.title == "Doc 125" and doc.collection == "docs"
        assert doc.metadata == by_n[125]["meta"] and doc.content == by_n[125]["content"]

        around = await kb.neighbours(s, by_n[125]["id"], window=2)
        assert around.document.id == by_n[125]["id"]
        assert [d.chunk_index for d in around.before] == [3, 4]
        assert [d.chunk_index for d in around.after] == [6, 7]
        assert {d.source for d in around.before + around.after} == {by_n[125]["source"]}

        start = await kb.neighbours(s, by_n[121]["id"], window=3)
        assert [d.chunk_index for d in start.before] == [0]
        no_source = await kb.neighbours(s, by_n[200]["id"])
        assert no_source.before == () and no_source.after == ()

        with pytest.raises(kb.NotFound):
            await kb.get_document(s, uuid.uuid4())


async def test_page_as_dataframe(corpus: Corpus) -> None:
    async with corpus.db.session() as s:
        page = await kb.browse(s, "docs", limit=7)
    frame = page.to_dataframe()
    assert list(frame.columns) == [
        "id",
        "collection",
        "title",
        "source",
        "chunk_index",
        "created_at",
        "metadata",
        "content",
    ]
    assert len(frame) == 7 and frame["id"].tolist() == [str(d.id) for d in page]
    assert str(frame["created_at"].dt.tz) == "UTC"
    assert kb.to_dataframe([]).empty
