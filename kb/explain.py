"""Explain a search (SQL, parameters, plan, indexes used) and measure approximate recall@k."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from kb.browse import count_documents
from kb.embedders import Embedder
from kb.search import SearchRequest, execute_request
from kb.statements import apply_settings, fetch_all, pinned

_INDEX = re.compile(
    r"(?:Index Scan|Index Only Scan)(?: Backward)? using (\S+)|Bitmap Index Scan on (\S+)"
)
# Query vectors inside a plan are thousands of characters; show their head and size.
_LONG_VECTOR = re.compile(r"'[\[{]([^\]}']{200,})[\]}]'")


@dataclass(frozen=True, slots=True)
class Explanation:
    """How a search ran: its SQL and parameters, settings, plan, indexes and a shortfall warning.

    `params` shows query vectors abbreviated (head and dimension count); `plan` is the text of
    EXPLAIN (with ANALYZE: actual times and rows) with vector literals abbreviated the same way.
    """

    sql: str
    params: dict[str, Any]
    settings: dict[str, str]
    plan: str
    indexes: tuple[str, ...]
    analyzed: bool
    rows: int
    k: int
    exact: bool
    exact_fallback: bool
    warning: str | None
    notes: tuple[str, ...]

    @property
    def uses_index(self) -> bool:
        """Tell whether the plan reads any index."""
        return bool(self.indexes)


@dataclass(frozen=True, slots=True)
class RecallReport:
    """Approximate top-k against exact top-k for one query: recall@k = |both| / |exact|."""

    k: int
    recall: float
    ef_search: int
    approximate: tuple[uuid.UUID, ...]
    exact: tuple[uuid.UUID, ...]
    missing: tuple[uuid.UUID, ...]
    approximate_ms: float
    exact_ms: float


def _short_vector(match: re.Match[str]) -> str:
    values = match.group(1).split(",")
    return f"'[{','.join(values[:3])},... {len(values)} dims]'"


def _short_list(values: list[float]) -> str:
    head = ",".join(f"{v:.6g}" for v in values[:3])
    return f"[{head},... {len(values)} dims]"


def abbreviate(value: str) -> str:
    """Shorten long vector literals in SQL, parameters or plans for display."""
    return _LONG_VECTOR.sub(_short_vector, value)


def _display_params(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in params.items():
        if name == "q" and isinstance(value, list):
            out[name] = _short_list(value)
        else:
            out[name] = str(value) if isinstance(value, uuid.UUID) else value
    return out


def indexes_in(plan: str) -> tuple[str, ...]:
    """Return the names of the indexes a text plan reads, in order of first appearance."""
    found: dict[str, None] = {}
    for match in _INDEX.finditer(plan):
        found[match.group(1) or match.group(2)] = None
    return tuple(found)


async def explain(
    session: AsyncSession,
    request: SearchRequest,
    *,
    analyze: bool = False,
    embedder: Embedder | None = None,
) -> Explanation:
    """Run a search and explain the statement that produced its results."""
    # The plan must be made on the same connection, under the settings the search ran with.
    async with pinned(session):
        done = await execute_request(session, request, embedder=embedder)
        compiled = done.query
        options = "ANALYZE, BUFFERS, " if analyze else ""
        if compiled.settings:
            await apply_settings(session, compiled.settings)
        rows = await fetch_all(
            session, f"EXPLAIN ({options}FORMAT TEXT) {compiled.sql}", compiled.params
        )
    plan = "\n".join(str(next(iter(row.values()))) for row in rows)
    ran = done.results.request
    got = len(done.results)
    warning = None
    if got < ran.k:
        warning = f"Only {got} of k={ran.k} rows came back"
        reasons = []
        if ran.min_score is not None and done.rows > got:
            reasons.append(f"the score threshold {ran.min_score} dropped some")
        if ran.mode == "text":
            reasons.append("the full-text query matches fewer documents")
        else:
            matching = 0
            for name in ran.collections:
                matching += await count_documents(session, name, filters=ran.filters)
            where = "the filter matches" if not ran.filters.is_empty else "the search covers"
            reasons.append(f"{where} {matching} documents")
            if ran.document_id is not None:
                reasons.append("the document itself is left out")
        warning += f" ({'; '.join(reasons)})." if reasons else "."
    return Explanation(
        sql=abbreviate(compiled.sql),
        params=_display_params(compiled.params),
        settings=dict(compiled.settings),
        plan=abbreviate(plan),
        indexes=indexes_in(plan),
        analyzed=analyze,
        rows=got,
        k=ran.k,
        exact=compiled.exact,
        exact_fallback=done.results.exact_fallback,
        warning=warning,
        notes=done.results.notes,
    )


async def recall_at_k(
    session: AsyncSession, request: SearchRequest, *, embedder: Embedder | None = None
) -> RecallReport:
    """Compare the approximate (HNSW) top-k with the exact top-k of the same vector search."""
    base = replace(request, mode="vector", exact=False, mmr=False, min_score=None)
    start = time.perf_counter()
    approx = await execute_request(session, base, embedder=embedder, fallback=False)
    approx_ms = (time.perf_counter() - start) * 1000.0
    # Reuse the resolved query vector: the exact run must not depend on embedding again.
    exact_request = replace(approx.results.request, exact=True)
    start = time.perf_counter()
    exact = await execute_request(session, exact_request, fallback=False)
    exact_ms = (time.perf_counter() - start) * 1000.0
    approx_ids = tuple(approx.results.ids)
    exact_ids = tuple(exact.results.ids)
    missing = tuple(i for i in exact_ids if i not in set(approx_ids))
    recall = 1.0 if not exact_ids else (len(exact_ids) - len(missing)) / len(exact_ids)
    return RecallReport(
        k=request.k,
        recall=recall,
        ef_search=approx.results.request.effective_ef_search,
        approximate=approx_ids,
        exact=exact_ids,
        missing=missing,
        approximate_ms=approx_ms,
        exact_ms=exact_ms,
    )
