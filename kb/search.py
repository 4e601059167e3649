"""Similarity, full-text and hybrid search over one or more collections.

Vector searches take the shape the per-collection HNSW index serves:
`ORDER BY (embedding::vector(N)) <op> :q LIMIT k` under `WHERE collection_id = <id>`, the id
written as a literal so the partial index predicate is provable in every plan. The distance is
selected as is and turned into a score (higher is better) afterwards; ordering by a score would
lose the index. Filtered searches run with pgvector's iterative index scans in strict order, so
k rows come back whenever k rows match; if the index still comes back short (its scan budget
spent on a very selective filter), kb re-runs the search exactly, which is then cheap because
the filter leaves few rows.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict, Unpack

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from kb import hybrid, planning, refs, terms
from kb.browse import (
    DOC_COLUMNS,
    CollectionRef,
    check_limit,
    document_id,
    lookup_collections,
    record_fields,
)
from kb.embedders import Embedder, EmbedderError, aembed_texts, embedder_for
from kb.errors import EmbedderMismatch, InvalidInput, NotFound
from kb.filters import Filters, coerce_filters
from kb.indexes import OPERATORS, is_indexable, vector_expr, vector_type
from kb.models import TEXT_SEARCH_CONFIG, check_text, check_vector
from kb.results import SearchResult, SearchResults
from kb.statements import apply_settings, fetch_all, pinned

MODES = ("vector", "text", "hybrid")
MAX_K = 1000
MAX_QUERY_CHARS = 10_000
DEFAULT_EF_SEARCH = 64
MAX_EF_SEARCH = 1000
DEFAULT_RRF_K = 60
DEFAULT_CANDIDATES = 60


class SearchOptions(TypedDict, total=False):
    """Options every search takes (all keyword-only)."""

    k: int
    filters: Filters | Mapping[str, Any] | None
    exact: bool
    ef_search: int | None
    min_score: float | None
    mmr: bool
    mmr_lambda: float
    fetch_k: int | None
    vector_weight: float
    text_weight: float
    rrf_k: int
    candidates: int | None


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """Everything that defines a search; `SearchResults.request` records the one that ran.

    The query vector is `vector` when set (a raw vector, the embedded text of a finished
    search, or the vector of `document_id`), else `query` embedded with the collection's own
    embedder. `query` is also the full-text query of the text and hybrid modes.
    """

    collections: tuple[str, ...]
    mode: str = "vector"
    query: str | None = None
    vector: tuple[float, ...] | None = None
    document_id: uuid.UUID | None = None
    k: int = 10
    filters: Filters = field(default_factory=Filters)
    exact: bool = False
    ef_search: int | None = None
    min_score: float | None = None
    mmr: bool = False
    mmr_lambda: float = 0.5
    fetch_k: int | None = None
    vector_weight: float = 1.0
    text_weight: float = 1.0
    rrf_k: int = DEFAULT_RRF_K
    candidates: int | None = None
    # The searched collections' own default ef_search (kb.calibration), filled in by kb.
    collection_ef: int | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def fetch(self) -> int:
        """Return how many rows the final query returns (MMR picks k of fetch_k)."""
        if self.mmr:
            return self.fetch_k or min(MAX_K, max(4 * self.k, 20))
        return self.k

    @property
    def list_depth(self) -> int:
        """Return how deep each ranked list goes (hybrid fuses two lists of this length)."""
        if self.mode == "hybrid":
            return max(self.candidates or DEFAULT_CANDIDATES, self.fetch)
        return self.fetch

    @property
    def effective_ef_search(self) -> int:
        """Return the hnsw.ef_search the approximate query runs with."""
        if self.ef_search is not None:
            return self.ef_search
        # Twice the rows wanted, at least the collection's measured ef_search (kb.calibration)
        # or else 64: pgvector's default of 40 loses recall past k=10.
        # A hybrid search wants `fetch` fused rows, not its whole vector list: the fused top
        # comes from the head of each list, and a graph search as wide as the list (ef 120
        # for 60 candidates) cost ~0.2 ms more with the same fused results (agreement with
        # an exact vector list 0.995 at ef 64, 80 and 120, on 100k rows).
        base = self.collection_ef or DEFAULT_EF_SEARCH
        return min(MAX_EF_SEARCH, max(base, 2 * self.fetch))


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{name} must be a finite number, not {value!r}")
    return float(value)


def _validate(r: SearchRequest) -> None:
    if not r.collections:
        raise InvalidInput("name at least one collection to search")
    for name in r.collections:
        if not isinstance(name, str):
            raise InvalidInput(f"a collection name is text, not {type(name).__name__}")
    if r.mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}, not {r.mode!r}")
    check_limit(r.k, "k", MAX_K)
    if not isinstance(r.filters, Filters):
        raise InvalidInput("filters must be a kb.Filters")
    if r.query is not None:
        check_text(r.query, "query")
        if not r.query.strip():
            raise InvalidInput("the query is empty; type some words to search for")
        if len(r.query) > MAX_QUERY_CHARS:
            raise InvalidInput(f"the query is longer than {MAX_QUERY_CHARS} characters")
    if r.mode in ("text", "hybrid") and r.query is None:
        raise InvalidInput(f"a {r.mode} search needs query text")
    if r.mode == "vector" and r.query is None and r.vector is None and r.document_id is None:
        raise InvalidInput("a vector search needs query text, a vector or a document id")
    if r.ef_search is not None:
        check_limit(r.ef_search, "ef_search", MAX_EF_SEARCH)
    if r.min_score is not None:
        _number(r.min_score, "min_score")
    if not 0.0 <= _number(r.mmr_lambda, "mmr_lambda") <= 1.0:
        raise InvalidInput("mmr_lambda must be from 0 (most diverse) to 1 (most relevant)")
    if r.fetch_k is not None:
        check_limit(r.fetch_k, "fetch_k", MAX_K)
        if r.fetch_k < r.k:
            raise InvalidInput("fetch_k must be at least k")
    if r.candidates is not None:
        check_limit(r.candidates, "candidates", MAX_K)
    if r.collection_ef is not None:
        check_limit(r.collection_ef, "collection_ef", MAX_EF_SEARCH)
    weights = (_number(r.vector_weight, "vector_weight"), _number(r.text_weight, "text_weight"))
    if min(weights) < 0 or max(weights) == 0:
        raise InvalidInput("hybrid weights must be >= 0 and not both 0")
    check_limit(r.rrf_k, "rrf_k", 10_000)


def make_request(
    query: str | None = None,
    *,
    collection: str | Sequence[str],
    mode: str = "vector",
    vector: Sequence[float] | np.ndarray | None = None,
    document: uuid.UUID | str | None = None,
    **options: Unpack[SearchOptions],
) -> SearchRequest:
    """Build and validate a SearchRequest (raises InvalidInput for anything out of range)."""
    names = (collection,) if isinstance(collection, str) else tuple(collection)
    opts: dict[str, Any] = dict(options)
    opts["filters"] = coerce_filters(opts.get("filters"))
    vec = None
    if vector is not None:
        vec = tuple(check_vector(vector, field="query vector").tolist())
    doc = document_id(document) if document is not None else None
    return SearchRequest(
        collections=tuple(dict.fromkeys(names)),
        mode=mode,
        query=query,
        vector=vec,
        document_id=doc,
        **opts,
    )


async def search(
    session: AsyncSession,
    query: str,
    *,
    collection: str | Sequence[str],
    mode: str = "vector",
    embedder: Embedder | None = None,
    **options: Unpack[SearchOptions],
) -> SearchResults:
    """Search by text: vector (embedded with the collection's embedder), text or hybrid."""
    if not isinstance(query, str):
        raise InvalidInput(f"the query must be text, not {type(query).__name__}")
    request = make_request(query, collection=collection, mode=mode, **options)
    return await run_search(session, request, embedder=embedder)


async def search_many(
    session: AsyncSession,
    queries: Sequence[str],
    *,
    collection: str | Sequence[str],
    mode: str = "vector",
    embedder: Embedder | None = None,
    **options: Unpack[SearchOptions],
) -> list[SearchResults]:
    """Run several text queries with one embedding call; results in the order of `queries`."""
    if isinstance(queries, str):
        raise InvalidInput("search_many takes a list of queries, not one string")
    requests = [make_request(q, collection=collection, mode=mode, **options) for q in queries]
    if not requests:
        return []
    if mode != "text":
        colls = await _collections(session, requests[0])
        model = embedder or embedder_for(colls[0])
        _check_embedder(model, colls[0])
        vectors = await aembed_texts(model, [r.query or "" for r in requests])
        requests = [
            replace(r, vector=tuple(float(x) for x in v))
            for r, v in zip(requests, vectors, strict=True)
        ]
    return [await run_search(session, r, embedder=embedder) for r in requests]


async def search_by_vector(
    session: AsyncSession,
    vector: Sequence[float] | np.ndarray,
    *,
    collection: str | Sequence[str],
    **options: Unpack[SearchOptions],
) -> SearchResults:
    """Search by a raw query vector (checked: right dimension, finite, non-zero)."""
    request = make_request(collection=collection, vector=vector, **options)
    return await run_search(session, request)


async def similar(
    session: AsyncSession,
    document: uuid.UUID | str,
    *,
    collection: str | Sequence[str] | None = None,
    **options: Unpack[SearchOptions],
) -> SearchResults:
    """Return documents like an existing one ("more like this"); no model is needed."""
    doc = document_id(document)
    names: str | Sequence[str]
    if collection is None:
        rows = await fetch_all(
            session,
            "SELECT c.name FROM documents d JOIN collections c ON c.id = d.collection_id "
            "WHERE d.id = CAST(:doc AS uuid)",
            {"doc": doc},
        )
        if not rows:
            raise NotFound(f"No document with id {doc}.")
        names = rows[0]["name"]
    else:
        names = collection
    request = make_request(collection=names, document=doc, **options)
    return await run_search(session, request)


# ---------------------------------------------------------------------------------------------
# Running a request


@dataclass(frozen=True, slots=True)
class CompiledQuery:
    """One SQL statement with its bound parameters and the transaction-local settings it needs."""

    sql: str
    params: dict[str, Any]
    settings: dict[str, str]
    exact: bool


@dataclass(frozen=True, slots=True)
class Executed:
    """What running a request did: the results and the statement that produced them."""

    results: SearchResults
    query: CompiledQuery
    rows: int


async def run_search(
    session: AsyncSession, request: SearchRequest, *, embedder: Embedder | None = None
) -> SearchResults:
    """Run a SearchRequest and return its results."""
    return (await execute_request(session, request, embedder=embedder)).results


async def execute_request(
    session: AsyncSession,
    request: SearchRequest,
    *,
    embedder: Embedder | None = None,
    fallback: bool = True,
) -> Executed:
    """Resolve, compile and run a request (re-running exactly if a filtered index scan is short)."""
    # One round trip finds the collections and applies the search's settings (none, when the
    # connection has them already).
    asked = request
    plan = planning.needs_planning(request)
    filter_first = False
    notes: list[str] = []
    async with pinned(session):
        # Remembered collections save the lookup; the statement then checks them (kb.refs).
        colls = refs.recall(session, request.collections)
        remembered = colls is not None
        try:
            if colls is None:
                # A filtered search's settings wait until its path is chosen.
                colls = await _collections(session, request, apply=not plan)
                defaults = with_collection_defaults(request, colls)
                if defaults is not request:
                    request = defaults
                    if not plan:
                        # Applied with the lookup before the collection's own ef_search was known.
                        await apply_settings(session, settings_for(request))
            else:
                _check_shared_embedder(request, colls)
                request = with_collection_defaults(request, colls)
                if not plan:
                    await apply_settings(session, settings_for(request))
            request = await _resolve_vector(session, request, colls, embedder)
        except _STALE_FACTS:
            if not remembered:
                raise
            # Checked against what kb remembered, which a collection deleted and re-created
            # (another dimension or embedder) has made stale: look it up again before failing
            # (the retry remembers nothing, so a real error is raised).
            refs.forget(session, asked.collections)
            return await execute_request(session, asked, embedder=embedder, fallback=fallback)
        if plan:
            where_sql, where_params = request.filters.sql("d")
            found = await planning.estimate(session, colls, " AND ".join(where_sql), where_params)
            choice = planning.choose(request, found)
            request, filter_first = choice.request, choice.filter_first
            if choice.note:
                notes.append(choice.note)
        counted = (
            request.mode == "hybrid"
            and request.filters.is_empty
            and await terms.table_ready(session)
        )
        compiled = compile_request(
            request, colls, filter_first=plan and filter_first, counted_words=counted
        )
        # The guard is bookkeeping: `Executed.query` (what explain shows) is the search itself.
        ran = _guard(compiled, request, colls) if remembered else compiled
        # Applied above already, unless the path was chosen since or the collections' vectors
        # have no index (an exact scan, with settings of its own).
        apply = plan or compiled.settings != settings_for(request)
        rows = await run_compiled(session, ran, apply=apply)
        if remembered:
            if not rows or not rows[0][refs.VALID]:
                # A collection was deleted, re-created or renamed since it was remembered.
                refs.forget(session, asked.collections)
                return await execute_request(session, asked, embedder=embedder, fallback=fallback)
            rows = [_without_guard(row) for row in rows if row["id"] is not None]
        exact_fallback = False
        short = _vector_hits(rows, request) < request.list_depth
        if fallback and short and not compiled.exact and not request.filters.is_empty:
            exact_fallback = True
            compiled = compile_request(replace(request, exact=True), colls)
            rows = await run_compiled(session, compiled)
            notes.append(
                "The approximate index scan returned fewer rows than asked under this filter; "
                "kb re-ran the search exactly."
            )
    if rows and rows[0].get("text_too_common"):
        notes.append(hybrid.TOO_COMMON_NOTE)
    metric = colls[0].metric
    scored = [(_row_score(row, request.mode, metric), row) for row in rows]
    if request.min_score is not None:
        threshold = request.min_score
        scored = [pair for pair in scored if pair[0] >= threshold]
    if request.mmr:
        scored = _mmr(scored, request)
    names = {c.id: c.name for c in colls}
    ranked = tuple(
        _result(rank, score, row, request.mode, metric, names)
        for rank, (score, row) in enumerate(scored[: request.k], start=1)
    )
    results = SearchResults(
        items=ranked, request=request, exact_fallback=exact_fallback, notes=tuple(notes)
    )
    return Executed(results=results, query=compiled, rows=len(rows))


# What a check of a request against a collection's dimension, metric or embedder raises.
_STALE_FACTS = (InvalidInput, EmbedderMismatch, EmbedderError, NotFound)


def with_collection_defaults(
    request: SearchRequest, colls: Sequence[CollectionRef]
) -> SearchRequest:
    """Return the request with the collections' own default ef_search (the widest of them)."""
    if request.mode == "text" or request.exact or request.ef_search is not None:
        return request
    measured = [c.ef_search for c in colls if c.ef_search is not None]
    ef = max(measured) if measured else None
    return request if ef == request.collection_ef else replace(request, collection_ef=ef)


async def run_compiled(
    session: AsyncSession, compiled: CompiledQuery, *, apply: bool = True
) -> list[dict[str, Any]]:
    """Apply the query's settings (unless done already) and run it."""
    if apply and compiled.settings:
        await apply_settings(session, compiled.settings)
    return [dict(row) for row in await fetch_all(session, compiled.sql, compiled.params)]


# The query vector arrives as real[] and is cast to vector in the SQL. A generic plan can cast
# it again for every row it scans (a 5 % filter's exact path over 6,800 rows: 27 ms, against
# 20 ms planned for its vector); a custom plan folds it into a constant once. Exact scans are
# planned every time, whatever the pooled connection was left with.
EXACT_SETTINGS = {"plan_cache_mode": "force_custom_plan"}


def settings_for(request: SearchRequest, *, exact: bool = False) -> dict[str, str]:
    """Return the settings a search runs with (see kb.statements)."""
    if request.mode == "text":
        return {}
    if exact or request.exact:
        return dict(EXACT_SETTINGS)
    return {
        # Keep scanning the graph until enough rows pass the filter, in exact order.
        "hnsw.iterative_scan": "strict_order",
        "hnsw.ef_search": str(request.effective_ef_search),
        # A generic plan would judge filters without their values: plan each filtered run.
        # Without a filter the plan is the same for every vector (the collection id is a
        # literal), and re-planning a hybrid statement would cost most of a millisecond.
        "plan_cache_mode": "auto" if request.filters.is_empty else "force_custom_plan",
    }


_ORDER = {"vector": "r.distance, r.id", "text": "r.text_score DESC, r.id"}


def _guard(
    compiled: CompiledQuery, request: SearchRequest, colls: Sequence[CollectionRef]
) -> CompiledQuery:
    order = _ORDER.get(request.mode, "r.fused_score DESC, r.id")
    sql, params = refs.guarded(compiled.sql, colls, order)
    return replace(compiled, sql=sql, params={**compiled.params, **params})


def _without_guard(row: dict[str, Any]) -> dict[str, Any]:
    row.pop(refs.VALID, None)
    return row


async def _collections(
    session: AsyncSession, request: SearchRequest, *, apply: bool = False
) -> list[CollectionRef]:
    colls = await lookup_collections(
        session, request.collections, settings=settings_for(request) if apply else None
    )
    _check_shared_embedder(request, colls)
    return colls


def _check_shared_embedder(request: SearchRequest, colls: Sequence[CollectionRef]) -> None:
    if request.mode != "text" or request.vector is not None:
        first = colls[0]
        for other in colls[1:]:
            if (other.embedder, other.model, other.dimension, other.metric) != (
                first.embedder,
                first.model,
                first.dimension,
                first.metric,
            ):
                raise EmbedderMismatch(
                    f"Collections {first.name!r} ({first.model}, {first.dimension} dims, "
                    f"{first.metric}) and {other.name!r} ({other.model}, {other.dimension} "
                    f"dims, {other.metric}) do not share an embedder; search them separately."
                )


def _check_embedder(embedder: Embedder, coll: CollectionRef) -> None:
    if embedder.model != coll.model or embedder.dimension != coll.dimension:
        raise EmbedderMismatch(
            f"Collection {coll.name!r} was built with {coll.model} ({coll.dimension} dims); "
            f"the embedder given is {embedder.model} ({embedder.dimension} dims)."
        )


async def _resolve_vector(
    session: AsyncSession,
    request: SearchRequest,
    colls: list[CollectionRef],
    embedder: Embedder | None,
) -> SearchRequest:
    if request.mode == "text":
        return request
    dim = colls[0].dimension
    if request.vector is not None:
        check_vector(request.vector, dimension=dim, field="query vector")
        return request
    if request.document_id is not None:
        rows = await fetch_all(
            session,
            "SELECT d.collection_id, CAST(d.embedding AS real[]) AS vec FROM documents d "
            "WHERE d.id = CAST(:doc AS uuid)",
            {"doc": request.document_id},
        )
        if not rows:
            raise NotFound(f"No document with id {request.document_id}.")
        vec = rows[0]["vec"]
        if len(vec) != dim:
            raise EmbedderMismatch(
                f"Document {request.document_id} has a {len(vec)}-dimensional embedding; "
                f"collection {colls[0].name!r} holds {dim}-dimensional ones."
            )
        return replace(request, vector=tuple(float(x) for x in vec))
    model = embedder or embedder_for(colls[0])
    _check_embedder(model, colls[0])
    vectors = await aembed_texts(model, [request.query or ""])
    return replace(request, vector=tuple(float(x) for x in vectors[0]))


# ---------------------------------------------------------------------------------------------
# SQL


def _query_vector(typed: str) -> str:
    # The query vector travels as a binary float4[] parameter: no text to format or parse.
    return f"CAST(CAST(:q AS real[]) AS {typed})"


def _distance_sql(coll: CollectionRef, exact: bool) -> str:
    op = OPERATORS[coll.metric]
    if exact or not is_indexable(coll.dimension):
        # The stored full-precision vectors, out of reach of any index: an exhaustive scan.
        return f"d.embedding {op} {_query_vector('vector')}"
    typed = vector_type(coll.dimension)
    return f"{vector_expr(coll.dimension, 'd.embedding')} {op} {_query_vector(typed)}"


def _ids_sql(colls: Sequence[CollectionRef]) -> str:
    ids = [int(c.id) for c in colls]
    if len(ids) == 1:
        return f"d.collection_id = {ids[0]}"
    return f"d.collection_id IN ({', '.join(map(str, ids))})"


def _vector_sql(
    colls: Sequence[CollectionRef],
    filters_sql: list[str],
    *,
    columns: str,
    limit: int,
    exact: bool,
    exclude: bool,
    filter_first: bool = False,
) -> str:
    branches = []
    for coll in colls:
        distance = _distance_sql(coll, exact)
        # `+ 0` keeps the planner from reading the collection's rows off an index.
        scope = f"d.collection_id + 0 = {int(coll.id)}" if filter_first else _ids_sql([coll])
        conditions = [scope, *filters_sql]
        if exclude:
            conditions.append("d.id <> CAST(:exclude AS uuid)")
        where = " AND ".join(conditions)
        if exact and columns != "d.id":
            # The sort copies every row it is fed whole: rank ids alone, then read the kept
            # rows' columns (an exact scan of 100k documents: 79 -> 60 ms).
            branches.append(
                f"SELECT {columns}, t.distance FROM (SELECT d.id, {distance} AS distance "  # noqa: S608
                f"FROM documents d WHERE {where} ORDER BY {distance} LIMIT {int(limit)}) AS t "
                "JOIN documents d ON d.id = t.id ORDER BY t.distance, d.id"
            )
            continue
        branches.append(
            f"SELECT {columns}, {distance} AS distance FROM documents d "  # noqa: S608
            f"WHERE {where} ORDER BY {distance} LIMIT {int(limit)}"
        )
    if len(branches) == 1:
        return branches[0]
    union = " UNION ALL ".join(f"({b})" for b in branches)
    return f"SELECT * FROM ({union}) AS u ORDER BY distance, id LIMIT {int(limit)}"  # noqa: S608


def _text_sql(
    colls: Sequence[CollectionRef],
    filters_sql: list[str],
    *,
    columns: str,
    limit: int,
    exclude: bool,
) -> str:
    conditions = [_ids_sql(colls), "d.tsv @@ tq.query", *filters_sql]
    if exclude:
        conditions.append("d.id <> CAST(:exclude AS uuid)")
    return (
        f"SELECT {columns}, ts_rank_cd(d.tsv, tq.query) AS text_score "  # noqa: S608
        f"FROM documents d, websearch_to_tsquery('{TEXT_SEARCH_CONFIG}', CAST(:text AS text)) "
        f"AS tq(query) WHERE {' AND '.join(conditions)} "
        f"ORDER BY text_score DESC, d.id LIMIT {int(limit)}"
    )


def compile_request(
    request: SearchRequest,
    colls: Sequence[CollectionRef],
    *,
    filter_first: bool = False,
    counted_words: bool = False,
) -> CompiledQuery:
    """Return the SQL, parameters and settings that run `request` on `colls`.

    `filter_first` (exact searches only) keeps the collection condition out of the indexes,
    for a filter that is selective in the whole table (see kb.planning). `counted_words`
    lets a hybrid search without filters use the collections' word counts (kb.terms).
    """
    filters_sql, params = request.filters.sql("d")
    exclude = request.document_id is not None
    if exclude:
        params["exclude"] = request.document_id
    depth = request.list_depth
    columns = DOC_COLUMNS + (", CAST(d.embedding AS real[]) AS embedding" if request.mmr else "")
    exact = request.exact or not all(is_indexable(c.dimension) for c in colls)
    settings = settings_for(request, exact=exact)
    if request.mode != "text":
        assert request.vector is not None
        params["q"] = list(request.vector)
    if request.mode == "vector":
        sql = _vector_sql(
            colls,
            filters_sql,
            columns=columns,
            limit=depth,
            exact=exact,
            exclude=exclude,
            filter_first=filter_first and exact and bool(filters_sql),
        )
    elif request.mode == "text":
        params["text"] = request.query
        sql = _text_sql(colls, filters_sql, columns=columns, limit=depth, exclude=exclude)
    else:
        params.update(
            text=request.query,
            w_vector=request.vector_weight,
            w_text=request.text_weight,
            rrf_k=request.rrf_k,
        )
        vec = _vector_sql(
            colls, filters_sql, columns="d.id", limit=depth, exact=exact, exclude=exclude
        )
        text_conditions = [_ids_sql(colls), "d.tsv @@ tq.query", *filters_sql]
        if exclude:
            text_conditions.append("d.id <> CAST(:exclude AS uuid)")
        counted = [c.id for c in colls] if counted_words and not filters_sql else []
        op = OPERATORS[colls[0].metric]
        sql = hybrid.hybrid_sql(
            columns=columns,
            vector_sql=vec,
            text_conditions=text_conditions,
            depth=depth,
            fetch=request.fetch,
            exact_distance=f"d.embedding {op} {_query_vector('vector')}",
            counted=counted,
        )
    return CompiledQuery(sql=sql, params=params, settings=settings, exact=exact)


# ---------------------------------------------------------------------------------------------
# Rows to results


def _score(distance: float, metric: str) -> float:
    if metric == "cosine":
        return 1.0 - distance
    # L2: the negated distance; inner product: pgvector's <#> is its negation already.
    return -distance


def _vector_hits(rows: list[dict[str, Any]], request: SearchRequest) -> int:
    if request.mode == "text":
        return request.list_depth  # no index scan to come back short
    if request.mode == "hybrid":
        return int(rows[0]["vector_hits"]) if rows else 0
    return len(rows)


def _row_score(row: Mapping[str, Any], mode: str, metric: str) -> float:
    if mode == "vector":
        return _score(float(row["distance"]), metric)
    if mode == "text":
        return float(row["text_score"])
    return float(row["fused_score"])


def _result(
    rank: int,
    score: float,
    row: Mapping[str, Any],
    mode: str,
    metric: str,
    names: Mapping[int, str],
) -> SearchResult:
    distance = row.get("distance")
    return SearchResult(
        rank=rank,
        score=score,
        distance=None if distance is None else float(distance),
        mode=mode,
        metric=metric,
        operator=None if mode == "text" else OPERATORS[metric],
        **record_fields(row, names),
        vector_rank=row.get("vector_rank"),
        text_rank=row.get("text_rank"),
    )


def _mmr(
    scored: list[tuple[float, dict[str, Any]]], request: SearchRequest
) -> list[tuple[float, dict[str, Any]]]:
    """Pick k of the candidates by maximal marginal relevance.

    Relevance is the candidate's score scaled to 0..1 over the candidates; redundancy is the
    highest cosine similarity to an item already picked; each step maximises
    lambda * relevance - (1 - lambda) * redundancy.
    """
    if len(scored) <= 1:
        return scored
    vectors = np.asarray([row["embedding"] for _, row in scored], dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1.0, norms)
    sims = unit @ unit.T
    scores = np.asarray([score for score, _ in scored])
    spread = scores.max() - scores.min()
    relevance = (scores - scores.min()) / spread if spread > 0 else np.ones_like(scores)
    lam = request.mmr_lambda
    chosen: list[int] = [0]
    redundancy = sims[0].copy()
    remaining = set(range(1, len(scored)))
    while remaining and len(chosen) < request.k:
        best = max(remaining, key=lambda j: lam * relevance[j] - (1 - lam) * redundancy[j])
        chosen.append(best)
        remaining.discard(best)
        redundancy = np.maximum(redundancy, sims[best])
    return [scored[j] for j in chosen]
