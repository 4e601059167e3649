"""What every write into a collection ends with, after its rows are committed.

Each step keeps searches fast, none keeps them correct: a step that fails is reported as a
warning with its consequence, never as the write's error (the rows are already stored).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import text

from kb import calibration, planning, terms
from kb.database import Database
from kb.db import translating

# PostgreSQL queues a GIN index's new entries in a pending list (up to gin_pending_list_limit,
# 4 MB by default) and merges them only when the list overflows or VACUUM runs. Every search
# through the index reads the whole list: with ~1,000 new chunks pending, a full-text search
# of a rare word took 1.7 ms instead of 0.6 and a hybrid one 3.2 ms instead of 1.5 (100k
# documents). Autovacuum merges only after a fifth of the table is new, so a few files added
# to a big knowledge base would otherwise leave every search paying for them. The merge costs
# ~0.15 s for a full list. Only the owner of an index may merge it: indexes kb's role does not
# own are left to autovacuum.
MERGE_PENDING_SQL = """
SELECT coalesce(sum(gin_clean_pending_list(c.oid)), 0)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_am am ON am.oid = c.relam
WHERE i.indrelid = to_regclass('documents') AND am.amname = 'gin' AND i.indisvalid
  AND pg_has_role(c.relowner, 'USAGE')
"""


# The planner's statistics on `documents` (which collections it holds and how many rows each)
# move only when ANALYZE runs, and autovacuum analyzes only after a tenth of the table has
# changed: 50,000 documents added as a new collection to 136,000 stayed unseen (estimated at 1
# row). kb's filtered searches choose their path from those estimates (kb.planning), so under
# a 5 % filter they ran approximately at the default ef_search instead of exactly, and under a
# 1 % one took 17 ms instead of 6. ANALYZE samples a fixed 30,000 rows (1.3 s there), so it
# runs only after a write added many rows and the planner knows of fewer rows in the
# collection than were added (the collection more than doubled since its statistics).
ANALYZE_MIN_ROWS = 5000
# ANALYZE waits for index builds running CONCURRENTLY (another ingest's, a reindex): rather
# than hold this write's end, it is left to the next write or to autovacuum.
ANALYZE_LOCK_TIMEOUT = "2s"
# Only the table's owner may analyze it (others get a warning the driver drops).
OWNS_DOCUMENTS_SQL = (
    "SELECT pg_has_role(relowner, 'USAGE') FROM pg_class WHERE oid = to_regclass('documents')"
)


async def refresh_statistics(db: Database, collection_id: int, added: int) -> bool:
    """ANALYZE the documents after a large write the planner misses; return whether it ran."""
    if added < ANALYZE_MIN_ROWS:
        return False
    async with db.session() as s:
        if not await s.scalar(text(OWNS_DOCUMENTS_SQL)):
            return False
        plan = await planning.planned(
            s,
            "EXPLAIN (FORMAT JSON) SELECT 1 FROM documents "  # noqa: S608 (an int)
            f"WHERE collection_id = {int(collection_id)}",
        )
        if float(plan["Plan Rows"]) >= added:
            return False
        await s.execute(text(f"SET LOCAL lock_timeout = '{ANALYZE_LOCK_TIMEOUT}'"))
        await s.execute(text("ANALYZE documents"))
    planning.forget_estimates(db.engine.sync_engine)
    return True


async def merge_pending(db: Database) -> int:
    """Merge the pending entries of the documents' GIN indexes; return the pages merged."""
    async with db.session() as s:
        pages = await s.scalar(text(MERGE_PENDING_SQL))
    return int(pages or 0)


@dataclass(frozen=True)
class Step:
    """One upkeep step and what searches lose when it fails."""

    run: Callable[[Database, int, int], Awaitable[object]]
    consequence: str


# The steps look their functions up when they run, so a wrapped function (a benchmark's
# clock, a test's stand-in) is the one called.
async def _merge(db: Database, collection_id: int, added: int) -> None:
    await merge_pending(db)


async def _analyze(db: Database, collection_id: int, added: int) -> None:
    await refresh_statistics(db, collection_id, added)


async def _measure_ef(db: Database, collection_id: int, added: int) -> None:
    await calibration.calibrate_if_due(db, collection_id)


async def _count_terms(db: Database, collection_id: int, added: int) -> None:
    await terms.count_terms_if_due(db, collection_id)


MERGE_PENDING = Step(
    _merge,
    "the new entries of its full-text and metadata indexes could not be merged ({exc}); "
    "searches read them one by one until the next ingest or autovacuum merges them",
)
ANALYZE = Step(
    _analyze,
    "the planner's statistics could not be refreshed ({exc}); filtered searches may take "
    "a slower path until autovacuum analyzes the table",
)
MEASURE_EF = Step(
    _measure_ef,
    "its search ef_search could not be measured ({exc}); searches use the default until the "
    "next ingest measures it",
)
COUNT_TERMS = Step(
    _count_terms,
    "its common words could not be counted ({exc}); hybrid searches are slower for them "
    "until the next ingest counts them",
)


async def after_write(db: Database, collection_id: int, *, indexed: bool, added: int) -> list[str]:
    """Run the upkeep steps of a finished write; return the consequences of those that failed.

    `indexed` says whether the collection's vector index exists: ef_search is measured on it.
    `added` is how many new rows the write stored (not counting rows it replaced).
    The caller reports what failed (a report's warnings, a log): nothing is logged here.
    """
    if db.settings.read_only:
        # The merge writes index pages even in a read-only transaction: a read-only handle
        # wrote nothing to keep up.
        return []
    # Merged first: the measurements then read the indexes as searches will.
    steps = [MERGE_PENDING, ANALYZE, *([MEASURE_EF] if indexed else []), COUNT_TERMS]
    problems = []
    for step in steps:
        try:
            with translating(db.url):
                await step.run(db, collection_id, added)
        except Exception as exc:
            problems.append(step.consequence.format(exc=exc))
    return problems
