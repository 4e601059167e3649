"""Choose how a filtered vector search runs, from the planner's estimate of what the filter keeps.

An HNSW scan finds about `ef_search` near neighbours and then applies the filter; a filter that
keeps a share `s` of the collection leaves about `s * ef_search` of them, so recall falls as the
filter narrows (0.95 at 30 % and 0.93 at 5 % with ef_search 64, on 100k clustered vectors).
kb keeps recall by scaling ef_search by 2/s, and once that would pass pgvector's ceiling
(1,000) while the filter leaves a bounded number of rows, by searching those rows exactly,
which is then both exact and cheap. A search given its own ef_search or `exact` is left alone.
"""

from __future__ import annotations

import json
import math
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession

from kb.db import engine_of
from kb.statements import fetch_all

if TYPE_CHECKING:
    from kb.browse import CollectionRef
    from kb.search import SearchRequest

# ef_search that keeps unfiltered recall@10 near 0.97; divided by the filter's share.
BASE_EF = 64
MAX_EF = 1000
# An exact scan of this many rows costs about what an HNSW scan at MAX_EF does.
EXACT_MAX_ROWS = 20_000


@dataclass(frozen=True, slots=True)
class Estimate:
    """The planner's estimates: rows the filter keeps in the collections, rows in the
    collections, and rows the filter keeps in the whole table."""

    matching: float
    total: float
    anywhere: float = math.inf

    @property
    def share(self) -> float:
        """Return the estimated fraction of the searched rows that pass the filter."""
        return min(1.0, self.matching / self.total) if self.total > 0 else 1.0


def needs_planning(request: SearchRequest) -> bool:
    """Tell whether kb should choose the search's path (a filtered, approximate vector search)."""
    return (
        request.mode != "text"
        and not request.exact
        and request.ef_search is None
        and not request.filters.is_empty
    )


# The planner's estimates move only when the table's statistics do (when autovacuum analyzes
# it, minutes after a load), so a search under a filter used a moment ago (the next query
# typed under it) reuses its estimate instead of asking again (an EXPLAIN: ~0.6 ms of a ~5 ms
# search). That adds at most ESTIMATE_TTL_S to the statistics' own lag; an approximate search
# that comes back short under a stale estimate is still re-run exactly (kb.search).
ESTIMATE_TTL_S = 30.0
MAX_ESTIMATES = 256
_recent: weakref.WeakKeyDictionary[Engine, OrderedDict[str, tuple[float, Estimate]]] = (
    weakref.WeakKeyDictionary()
)


def forget_estimates(engine: Engine) -> None:
    """Drop the estimates remembered for an engine's searches (its statistics just changed)."""
    _recent.pop(engine, None)


async def estimate(
    session: AsyncSession, collections: Sequence[CollectionRef], where_sql: str, params: Any
) -> Estimate:
    """Return the planner's row estimates for the filter within the collections, and without it."""
    ids = ", ".join(str(int(c.id)) for c in collections)
    engine = engine_of(session)
    recent = _recent.setdefault(engine, OrderedDict()) if engine is not None else None
    key = json.dumps([ids, where_sql, params], sort_keys=True, default=str)
    now = time.monotonic()
    if recent is not None and key in recent:
        at, found = recent[key]
        if now - at < ESTIMATE_TTL_S:
            return found
        del recent[key]
    found = await _explain(session, ids, where_sql, params)
    if recent is not None:
        recent[key] = (now, found)
        while len(recent) > MAX_ESTIMATES:
            recent.popitem(last=False)
    return found


async def planned(session: AsyncSession, explain_sql: str, params: Any = None) -> dict[str, Any]:
    """Return the top node of the plan an `EXPLAIN (FORMAT JSON)` statement prints."""
    rows = await fetch_all(session, explain_sql, params)
    plan = rows[0][0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    node: dict[str, Any] = plan[0]["Plan"]
    return node


async def _explain(session: AsyncSession, ids: str, where_sql: str, params: Any) -> Estimate:
    scope = f"d.collection_id IN ({ids})"
    sql = (
        "EXPLAIN (FORMAT JSON) "  # noqa: S608 (ids are ints, the filter is bound parameters)
        f"SELECT 1 FROM documents d WHERE {scope} AND {where_sql} "
        f"UNION ALL SELECT 1 FROM documents d WHERE {scope} "
        f"UNION ALL SELECT 1 FROM documents d WHERE {where_sql}"
    )
    branches = (await planned(session, sql, params)).get("Plans", [])
    if len(branches) != 3:
        return Estimate(matching=math.inf, total=math.inf)
    matching, total, anywhere = (float(b["Plan Rows"]) for b in branches)
    return Estimate(matching=matching, total=total, anywhere=anywhere)


@dataclass(frozen=True, slots=True)
class Choice:
    """How to run a filtered search, and what to tell the user about it."""

    request: SearchRequest
    note: str | None = None
    # Read the filter's own index alone and check the collection on each row: the filter is
    # selective in the whole table, and ANDing its bitmap with the collection's (every row of
    # the collection read from the index) cost more than the search itself.
    filter_first: bool = False


def choose(request: SearchRequest, found: Estimate) -> Choice:
    """Return how to run the request (exact, or with a scaled ef_search) and why."""
    if found.share >= 1.0:
        return Choice(request)
    wanted = max(request.collection_ef or BASE_EF, 2 * request.list_depth)
    # Twice the plain 1/s: the planner's share is an estimate, and 1/s alone measured 0.98.
    ef = math.ceil(2 * wanted / max(found.share, 1e-9))
    if ef <= MAX_EF:
        note = (
            f"The filter keeps about {found.share:.0%} of the documents; kb raised "
            f"ef_search to {ef} to keep the approximate search's recall."
        )
        return Choice(replace(request, ef_search=ef), note)
    if found.matching <= EXACT_MAX_ROWS:
        note = (
            f"The filter keeps about {int(found.matching):,} documents; kb searched them "
            "exactly (an approximate search would miss neighbours at this selectivity)."
        )
        return Choice(replace(request, exact=True), note, found.anywhere <= EXACT_MAX_ROWS)
    note = (
        f"The filter keeps about {found.share:.1%} of the documents; kb searched with "
        f"ef_search {MAX_EF}, the most pgvector allows. Recall may be lower; pass exact=True "
        "for exact results."
    )
    return Choice(replace(request, ef_search=MAX_EF), note)
