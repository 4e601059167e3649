"""Words in so many of a collection's documents that a hybrid search does not rank by them.

A hybrid search ranks every full-text match of its query when there are at most
kb.hybrid.TEXT_RANK_MAX of them, and only the vector half's candidates when there are more.
Finding out which takes collecting TEXT_RANK_MAX + 1 matches from the GIN index, and a GIN scan
reads every document holding the word in the whole table, whatever the collection: ~25 ms for
a word in 136k documents. So kb counts instead. After an ingest, `count_terms` reads the words
of a random sample of the collection's documents (`ts_stat`) and keeps, in `collection_terms`,
each word whose count in the whole collection is above TEXT_RANK_MAX with the certainty of
SIGMAS standard deviations (an exact binomial bound, `lower_bound`). A hybrid search for one
such word skips the scan (kb.hybrid). Words the census is unsure of are still scanned for:
a miss costs the old time, and a word is wrongly marked with a one-sided 5-sigma chance.

The counts kept are lower bounds, and adding documents only raises a word's count, so they
hold while a collection grows. An ingest batch that changes or removes documents forgets the
collection's counts in its own transaction (`forget`); counting takes the collection's write
lock, so it never stores counts read before such a batch committed. An ingest counts again
when the collection has no counts, or has grown by half since they were taken.

A database kb may not migrate (read-only, or connected with `upgrade=False`) can predate the
table (migration 0003): searches then collect as before and ingests keep no counts
(`table_ready`).
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession

from kb import hybrid
from kb.browse import resolve_collection
from kb.collections import collection_size, lock_writes
from kb.db import engine_of
from kb.errors import InvalidInput, KBError
from kb.statements import fetch_all

if TYPE_CHECKING:
    from kb.database import Database

# Documents read per census: 0.1 to 0.35 s on 2 cores. Against 100k documents a word is marked
# once the sample says ~3,800 or more (76 finds); against 1M, ~9,000 (18 finds). A word below
# that is scanned for, which is cheap for words that rare.
SAMPLE = 2000
SIGMAS = 5.0
# The one-sided tail of a normal distribution beyond SIGMAS: the chance a word is marked
# common when it is not.
ALPHA = 0.5 * math.erfc(SIGMAS / math.sqrt(2.0))
# The key of the collection's settings that records the last census.
SETTINGS_KEY = "text_census"
# A collection this much larger than at its last census is counted again by an ingest.
RECOUNT_GROWTH = 1.5

# Engines whose database has the table; one that lacks it is asked again each time, so an
# upgrade made meanwhile is seen.
_ready: WeakKeyDictionary[Engine, bool] = WeakKeyDictionary()

_FORGET_TERMS = "DELETE FROM collection_terms WHERE collection_id = :c"
_FORGET_RECORD = (
    f"UPDATE collections SET settings = settings - '{SETTINGS_KEY}' "  # noqa: S608 (constant)
    f"WHERE id = :c AND settings -> '{SETTINGS_KEY}' IS NOT NULL"
)


@dataclass(frozen=True, slots=True)
class TermCensus:
    """What `count_terms` found: the collection's size, the sample, and the words kept."""

    collection: str
    rows: int
    sample: int
    common: dict[str, int]
    seconds: float
    measured_at: datetime

    def as_settings(self) -> dict[str, Any]:
        """Return the record kept in the collection's settings."""
        return {
            "rows": self.rows,
            "sample": self.sample,
            "common_words": len(self.common),
            "seconds": round(self.seconds, 3),
            "measured_at": self.measured_at.isoformat(),
        }


def _tail(k: int, n: int, p: float) -> float:
    """Return P(X >= k) for X ~ Binomial(n, p), for p at most k / n (terms fall from k on)."""
    log_first = (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )
    term = math.exp(log_first)
    total = term
    ratio = p / (1.0 - p)
    for j in range(k, n):
        term *= (n - j) / (j + 1) * ratio
        total += term
        if term <= total * 1e-12:
            break
    return total


@functools.lru_cache(maxsize=4096)
def lower_bound(in_sample: int, sample: int, rows: int) -> int:
    """Return a count the word's documents in the collection are above with near certainty.

    A sample of `sample` of `rows` documents finds the word in `in_sample`. The bound is the
    exact one-sided (Clopper-Pearson) binomial lower bound at ALPHA: the smallest share under
    which so many finds or more would happen with chance ALPHA. Sampling without replacement
    varies less than the binomial, so the bound is if anything low. The normal approximation
    (Wilson) is not used: with few finds, in a large collection, it claims far more than it
    knows. A sample of the whole collection is exact.
    """
    if sample >= rows:
        return in_sample
    if in_sample <= 0:
        return 0
    low, high = 0.0, in_sample / sample
    for _ in range(32):  # to 2e-10 of the share: under a hundredth of a document at 10M
        mid = (low + high) / 2
        if _tail(in_sample, sample, mid) < ALPHA:
            low = mid
        else:
            high = mid
    return math.floor(low * rows)


def _least_in_sample(sample: int, rows: int) -> int:
    """Return the fewest finds in the sample whose bound exceeds TEXT_RANK_MAX (or sample + 1)."""
    if sample >= rows:
        return hybrid.TEXT_RANK_MAX + 1
    low, high = 1, sample + 1
    while low < high:
        mid = (low + high) // 2
        if lower_bound(mid, sample, rows) > hybrid.TEXT_RANK_MAX:
            high = mid
        else:
            low = mid + 1
    return low


async def table_ready(session: AsyncSession) -> bool:
    """Tell whether the session's database has `collection_terms` (migration 0003)."""
    engine = engine_of(session)
    if engine is not None and engine in _ready:
        return True
    rows = await fetch_all(
        session, "SELECT to_regclass('collection_terms') IS NOT NULL AS ready", {}
    )
    ready = bool(rows[0]["ready"])
    if ready and engine is not None:
        _ready[engine] = True
    return ready


async def count_terms(
    session: AsyncSession, collection: str, *, sample: int = SAMPLE
) -> TermCensus:
    """Count the collection's words on a sample and keep those too common to rank by text."""
    if not 100 <= sample <= 100_000:
        raise InvalidInput("the sample must be from 100 to 100,000 documents")
    if not await table_ready(session):
        raise KBError(
            "This database predates word counts (migration 0003): run `kb db upgrade` "
            "(or `alembic upgrade head`) first."
        )
    start = time.perf_counter()
    coll = await resolve_collection(session, collection)
    # No batch commits between the count and the store (see the module's docstring).
    await lock_writes(session, coll.id)
    rows = int(
        (
            await fetch_all(
                session,
                "SELECT count(*) AS n FROM documents WHERE collection_id = :c",
                {"c": coll.id},
            )
        )[0]["n"]
    )
    common: dict[str, int] = {}
    taken = min(sample, rows)
    if rows > hybrid.TEXT_RANK_MAX:
        # ts_stat runs the query it is given as text: the id and the size are integers.
        found = await fetch_all(
            session,
            "SELECT word, ndoc FROM ts_stat('SELECT d.tsv FROM documents d WHERE d.id IN "  # noqa: S608
            f"(SELECT x.id FROM documents x WHERE x.collection_id = {int(coll.id)} "
            f"ORDER BY random() LIMIT {int(taken)})') "
            "WHERE ndoc >= :least",
            # No word in fewer sampled documents than this can reach the bound.
            {"least": _least_in_sample(taken, rows)},
        )
        for row in found:
            bound = lower_bound(int(row["ndoc"]), taken, rows)
            if bound > hybrid.TEXT_RANK_MAX:
                common[str(row["word"])] = bound
    await fetch_all(session, _FORGET_TERMS, {"c": coll.id})
    if common:
        words = sorted(common)
        await fetch_all(
            session,
            "INSERT INTO collection_terms (collection_id, lexeme, documents) "
            "SELECT :c, w, n FROM unnest(CAST(:words AS text[]), CAST(:counts AS integer[])) "
            "AS t(w, n)",
            {"c": coll.id, "words": words, "counts": [common[w] for w in words]},
        )
    census = TermCensus(
        collection=coll.name,
        rows=rows,
        sample=taken,
        common=common,
        seconds=time.perf_counter() - start,
        measured_at=datetime.now(UTC),
    )
    await fetch_all(
        session,
        "UPDATE collections SET settings = coalesce(settings, '{}'::jsonb) "  # noqa: S608
        f"|| jsonb_build_object('{SETTINGS_KEY}', CAST(:record AS jsonb)) WHERE id = :c",
        {"record": json.dumps(census.as_settings()), "c": coll.id},
    )
    return census


async def forget(session: AsyncSession, collection_id: int) -> None:
    """Drop the collection's counts, in the session's transaction (documents changed)."""
    if not await table_ready(session):
        return
    await fetch_all(session, _FORGET_TERMS, {"c": collection_id})
    await fetch_all(session, _FORGET_RECORD, {"c": collection_id})


def needs_count(settings: dict[str, Any] | None, rows: int) -> bool:
    """Tell whether an ingest should count the words of a collection of `rows` documents."""
    if rows <= hybrid.TEXT_RANK_MAX:
        return False
    record = (settings or {}).get(SETTINGS_KEY)
    if not isinstance(record, dict) or not isinstance(record.get("rows"), int):
        return True
    counted: int = record["rows"]
    return rows >= RECOUNT_GROWTH * counted


async def count_terms_if_due(db: Database, collection_id: int) -> TermCensus | None:
    """Count a collection's words after an ingest when it is due (see `needs_count`)."""
    async with db.session() as s:
        found = await collection_size(s, collection_id)
        if (
            found is None
            or not needs_count(found.settings, found.documents)
            or not await table_ready(s)
        ):
            return None
        return await count_terms(s, found.name)
