"""Word counts per collection (kb.terms): taken by ingests, forgotten when documents change,
and used by hybrid searches to skip collecting matches of a word known to be too common."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable

import numpy as np
import pytest
from sqlalchemy.engine import URL

import kb
from helpers import run_cli, settings_for
from kb import hybrid, terms
from kb.ingest.writer import Row, write_rows
from kb.statements import fetch_all

DIM = 16
# Small enough that a test collection has words above and below it.
RANK_MAX = 50


@pytest.fixture(autouse=True)
def _small_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hybrid, "TEXT_RANK_MAX", RANK_MAX)


def _content(i: int) -> str:
    # "ocean" in all 300 documents, "tide" in 150, "harbour" in 30.
    words = ["ocean", f"number{i}"]
    if i % 2 == 0:
        words.append("tide")
    if i % 10 == 0:
        words.append("harbour")
    return " ".join(words)


VECTORS = np.random.default_rng(3).standard_normal((300, DIM)).astype(np.float32)


async def _fill(db: kb.Database, name: str, content: Callable[[int], str] = _content) -> None:
    async with db.session() as s:
        await kb.ensure_collection(
            s, name, embedder="hashing", model=f"feature-hashing-{DIM}", dimension=DIM
        )
    rows = [
        Row(source=f"{name}/{i}", content=content(i), embedding=v, metadata={"tenth": i % 10})
        for i, v in enumerate(VECTORS)
    ]
    await write_rows(db, name, rows)


async def _counted(db: kb.Database, name: str) -> dict[str, int]:
    async with db.session() as s:
        rows = await fetch_all(
            s,
            "SELECT t.lexeme, t.documents FROM collection_terms t "
            "JOIN collections c ON c.id = t.collection_id WHERE c.name = :n",
            {"n": name},
        )
    return {r["lexeme"]: int(r["documents"]) for r in rows}


def _hybrid(word: str, name: str = "sea", **options: object) -> kb.SearchRequest:
    return kb.make_request(
        word, collection=name, mode="hybrid", vector=VECTORS[5], k=10, candidates=20, **options
    )


def _collected(explanation: kb.Explanation) -> bool:
    """Whether the statement read documents to collect the word's matches (CTE m)."""
    lines = explanation.plan.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "CTE m")
    depth = len(lines[start]) - len(lines[start].lstrip())
    section = []
    for line in lines[start + 1 :]:
        if len(line) - len(line.lstrip()) <= depth:
            break
        section.append(line)
    scans = [line for line in section if " on documents " in line]
    assert scans, explanation.plan
    return any("never executed" not in line for line in scans)


async def test_an_ingest_counts_the_words_in_too_many_documents(own_db: kb.Database) -> None:
    await _fill(own_db, "sea")
    # 300 documents, a whole sample: exact counts, and only words above the bound.
    assert await _counted(own_db, "sea") == {"ocean": 300, "tide": 150}
    async with own_db.session() as s:
        record = (await kb.get_collection(s, "sea")).settings[terms.SETTINGS_KEY]
    assert record["rows"] == 300 and record["sample"] == 300 and record["common_words"] == 2


async def test_a_hybrid_search_for_a_counted_word_skips_collecting_its_matches(
    own_db: kb.Database,
) -> None:
    await _fill(own_db, "sea")
    async with own_db.session() as s:
        counted = await kb.explain(s, _hybrid("ocean"), analyze=True)
        uncounted = await kb.explain(s, _hybrid("harbour"), analyze=True)
        both = await kb.explain(s, _hybrid("ocean harbour"), analyze=True)
        with_counts = await kb.run_search(s, _hybrid("ocean"))
    assert not _collected(counted) and _collected(uncounted)
    # Two words: their documents together are not counted, so the matches are collected
    # (30 of them, under the bound, so every match is ranked).
    assert _collected(both) and not both.notes
    assert counted.notes == (hybrid.TOO_COMMON_NOTE,) and not uncounted.notes
    # The same results as when the statement collects 301 matches and finds too many.
    async with own_db.session() as s:
        await fetch_all(s, "DELETE FROM collection_terms")
    async with own_db.session() as s:
        collected = await kb.explain(s, _hybrid("ocean"), analyze=True)
        without_counts = await kb.run_search(s, _hybrid("ocean"))
    assert _collected(collected)
    assert [r.id for r in with_counts] == [r.id for r in without_counts]
    assert [r.text_rank for r in with_counts] == [r.text_rank for r in without_counts]
    assert with_counts.notes == without_counts.notes == (hybrid.TOO_COMMON_NOTE,)


async def test_a_filtered_hybrid_search_collects_the_matches_it_filters(
    own_db: kb.Database,
) -> None:
    await _fill(own_db, "sea")
    # "ocean" is in all 300 documents but only 30 of them pass this filter.
    only = kb.Filters(metadata={"tenth": 3})
    async with own_db.session() as s:
        plan = await kb.explain(s, _hybrid("ocean", filters=only), analyze=True)
        found = await kb.run_search(s, _hybrid("ocean", filters=only))
    assert _collected(plan), plan.plan
    assert hybrid.TOO_COMMON_NOTE not in found.notes, found.notes
    assert {r.metadata["tenth"] for r in found} == {3}


async def test_changed_documents_take_their_counts_with_them(
    own_db: kb.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _fill(own_db, "sea")
    assert "ocean" in await _counted(own_db, "sea")

    def dry(i: int) -> str:
        return _content(i).replace("ocean", "desert") if i >= 20 else _content(i)

    # Even with no census after it, the batch that rewrote the documents dropped the counts.
    async def no_census(db: kb.Database, collection_id: int) -> None:
        return None

    monkeypatch.setattr(terms, "count_terms_if_due", no_census)
    await _fill(own_db, "sea", dry)
    assert await _counted(own_db, "sea") == {}
    async with own_db.session() as s:
        assert terms.SETTINGS_KEY not in (await kb.get_collection(s, "sea")).settings
        found = await kb.run_search(s, _hybrid("ocean"))
    # 20 documents hold "ocean" now: all ranked, no note.
    assert not found.notes
    monkeypatch.undo()
    monkeypatch.setattr(hybrid, "TEXT_RANK_MAX", RANK_MAX)
    # The next ingest counts again.
    await _fill(own_db, "sea", dry)
    assert await _counted(own_db, "sea") == {"desert": 280, "tide": 150}


async def test_adding_documents_keeps_the_counts_until_the_collection_grows_by_half(
    own_db: kb.Database,
) -> None:
    await _fill(own_db, "sea")
    extra = [
        Row(source=f"more/{i}", content="ocean harbour", embedding=VECTORS[i]) for i in range(100)
    ]
    await write_rows(own_db, "sea", extra)
    # 400 documents, 1.33 times the 300 counted: the counts stand (they only grew).
    assert await _counted(own_db, "sea") == {"ocean": 300, "tide": 150}
    more = [
        Row(source=f"more/{i}", content="harbour", embedding=VECTORS[i]) for i in range(100, 150)
    ]
    await write_rows(own_db, "sea", more)
    assert await _counted(own_db, "sea") == {"ocean": 400, "tide": 150, "harbour": 180}


async def test_a_deleted_collection_takes_its_counts_with_it(own_db: kb.Database) -> None:
    await _fill(own_db, "sea")
    async with own_db.session() as s:
        await kb.delete_collection(s, "sea")
        left = await fetch_all(s, "SELECT count(*) AS n FROM collection_terms")
    assert left[0]["n"] == 0


def _hypergeometric_tail(k: int, rows: int, holding: int, sample: int) -> float:
    """Return the chance that a sample of `sample` of `rows` documents finds `k` or more of
    the `holding` documents with a word (exact)."""

    def log_choose(n: int, r: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(r + 1) - math.lgamma(n - r + 1)

    whole = log_choose(rows, sample)
    return sum(
        math.exp(log_choose(holding, j) + log_choose(rows - holding, sample - j) - whole)
        for j in range(k, min(holding, sample) + 1)
    )


@pytest.mark.parametrize("rows", [5_000, 100_000, 1_000_000, 10_000_000])
def test_a_word_in_too_few_documents_is_marked_common_at_most_at_five_sigma(rows: int) -> None:
    sample, limit = 2_000, 2_000
    needed = next(k for k in range(1, sample + 1) if terms.lower_bound(k, sample, rows) > limit)
    # A word in exactly `limit` documents (the worst case: fewer are found less often) reaches
    # that many finds with at most the chance of a one-sided 5-sigma error.
    assert _hypergeometric_tail(needed, rows, limit, sample) <= terms.ALPHA * 1.01
    # Not so cautious as to be useless: a word in a tenth of the documents is marked with near
    # certainty.
    assert _hypergeometric_tail(needed, rows, rows // 10, sample) > 0.999 or rows < 25_000


def test_the_sampled_bound_stays_under_the_true_count() -> None:
    rng = np.random.default_rng(7)
    rows, sample = 100_000, 2_000
    for true in (1_000, 2_000, 5_000, 10_000, 50_000, 99_000, 100_000):
        drawn = rng.hypergeometric(true, rows - true, sample, size=500)
        bounds = [terms.lower_bound(int(k), sample, rows) for k in drawn]
        assert max(bounds) <= true, (true, max(bounds))
    assert terms.lower_bound(0, sample, rows) == 0
    assert terms.lower_bound(300, 300, 300) == 300  # the whole collection: exact


def test_a_census_is_due_when_there_is_none_or_the_collection_grew_by_half() -> None:
    assert not terms.needs_count({}, RANK_MAX)
    assert terms.needs_count({}, RANK_MAX + 1)
    record = {terms.SETTINGS_KEY: {"rows": 1000}}
    assert not terms.needs_count(record, 1499)
    assert terms.needs_count(record, 1500)


async def test_the_cli_counts_and_lists_the_common_words(own_db: kb.Database) -> None:
    # The child process ranks up to the real 2,000 matches: a collection above that.
    n = 2_500
    vectors = np.random.default_rng(4).standard_normal((n, DIM)).astype(np.float32)
    async with own_db.session() as s:
        await kb.create_collection(
            s, "big", embedder="hashing", model=f"feature-hashing-{DIM}", dimension=DIM
        )
    rows = [
        Row(source=f"big/{i}", content="ocean tide" if i % 2 else "ocean", embedding=v)
        for i, v in enumerate(vectors)
    ]
    await write_rows(own_db, "big", rows)
    proc = run_cli("kb", "collections", "count-words", "big", "--json", url=own_db.url)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["rows"] == n and out["sample"] == terms.SAMPLE
    # "ocean" is in every document, "tide" in half: only "ocean" is certainly above 2,000.
    assert list(out["words"]) == ["ocean"] and 2_000 < out["words"]["ocean"] <= n
    assert await _counted(own_db, "big") == out["words"]
    listed = run_cli("kb", "collections", "count-words", "big", url=own_db.url)
    assert "1 words in more than 2,000 of its 2,500 documents" in listed.stdout
    assert "ocean  >=" in listed.stdout
    missing = run_cli("kb", "collections", "count-words", "nowhere", url=own_db.url)
    assert missing.returncode != 0 and "nowhere" in missing.stderr


async def test_a_database_before_the_counts_searches_and_ingests_as_before(
    new_database: Callable[[], Awaitable[URL]],
) -> None:
    url = await new_database()
    downgraded = run_cli("alembic", "downgrade", "0002", url=url)
    assert downgraded.returncode == 0, downgraded.stderr
    # Read-only use, or upgrade=False, leaves a database as it is.
    db = await kb.connect(settings_for(url), url=url, upgrade=False)
    try:
        await _fill(db, "sea")
        # A second ingest that changes every document (a batch that would forget counts).
        await _fill(db, "sea", lambda i: _content(i) + " reef")
        async with db.session() as s:
            found = await kb.run_search(s, _hybrid("ocean"))
            assert len(found) == 10 and found.notes == (hybrid.TOO_COMMON_NOTE,)
            with pytest.raises(kb.KBError, match="kb db upgrade"):
                await kb.count_terms(s, "sea")
        await db.upgrade()
        # The same handle sees the upgrade: the next ingest counts, the next search uses it.
        await _fill(db, "sea", lambda i: _content(i) + " shore")
        assert await _counted(db, "sea") == {"ocean": 300, "tide": 150, "shore": 300}
        async with db.session() as s:
            plan = await kb.explain(s, _hybrid("ocean"), analyze=True)
        assert not _collected(plan)
    finally:
        await db.close()
