"""Browse a collection: keyset pages by (created_at, id), filters, counts, histogram, facets.

A page at any depth costs the same as the first: the cursor holds the last row's
(created_at, id) and the next page starts strictly after it on the
(collection_id, created_at DESC, id DESC) index. Rows inserted while someone pages never cause
duplicates or gaps among the rows that were already there.
"""

from __future__ import annotations

import math
import uuid
import zoneinfo
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from kb import refs
from kb.collections import not_found_message
from kb.cursor import ORDERS, Position, decode_cursor, encode_cursor
from kb.errors import CollectionNotFound, InvalidInput, NotFound
from kb.filters import Filters, coerce_filters
from kb.models import Collection, check_text
from kb.results import DocumentRecord, Facet, HistogramBin, Neighbours, Page
from kb.statements import apply_settings, fetch_all, plan_settings

MAX_PAGE_SIZE = 500
HISTOGRAM_UNITS = ("hour", "day", "week", "month", "year")
DOC_COLUMNS = (
    "d.id, d.collection_id, d.title, d.source, d.chunk_index, d.created_at, d.metadata, d.content"
)

FilterArg = Filters | Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class CollectionRef:
    """What queries need to know of a collection (read in the same round trip as settings)."""

    id: int
    name: str
    embedder: str
    model: str
    dimension: int
    metric: str
    # The collection's own default hnsw.ef_search (kb.calibration), if it has one.
    ef_search: int | None = None


# The collection's default ef_search from its settings, NULL unless a whole number in range.
EF_SEARCH_SQL = (
    "CASE WHEN jsonb_typeof(c.settings -> 'ef_search') = 'number' "
    "AND (c.settings ->> 'ef_search')::numeric BETWEEN 1 AND 1000 "
    "THEN round((c.settings ->> 'ef_search')::numeric)::int END"
)

CollectionArg = str | Collection | CollectionRef


def _ref(item: Any) -> CollectionRef:
    if isinstance(item, CollectionRef):
        return item
    is_object = isinstance(item, Collection)
    get = item.__getattribute__ if is_object else item.__getitem__
    ef = collection_ef(item.settings) if is_object else item["ef_search"]
    return CollectionRef(
        id=int(get("id")),
        name=get("name"),
        embedder=get("embedder"),
        model=get("model"),
        dimension=int(get("dimension")),
        metric=get("metric"),
        ef_search=None if ef is None else int(ef),
    )


def collection_ef(settings: Mapping[str, Any] | None) -> int | None:
    """Return a collection's default ef_search from its settings (what EF_SEARCH_SQL reads)."""
    value = (settings or {}).get("ef_search")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return round(value) if 1 <= value <= 1000 else None


async def lookup_collections(
    session: AsyncSession,
    collections: Sequence[CollectionArg],
    *,
    settings: Mapping[str, str] | None = None,
) -> list[CollectionRef]:
    """Return the collections in the order given, applying `settings` (see kb.statements) in
    the same round trip; raise CollectionNotFound naming the known ones for an unknown name."""
    names = [c for c in collections if isinstance(c, str)]
    for name in names:
        check_name(name)
    plan = await plan_settings(session, settings or {})
    found: dict[str, CollectionRef] = {}
    if names or plan.calls:
        calls = "".join(f", {call} AS s{i}" for i, call in enumerate(plan.calls))
        rows = await fetch_all(
            session,
            "SELECT c.id, c.name, c.embedder, c.model, c.dimension, c.metric, "  # noqa: S608
            f"{EF_SEARCH_SQL} AS ef_search{calls} "
            "FROM collections c WHERE c.name = ANY(CAST(:names AS text[]))",
            {"names": names, **plan.params},
        )
        found = {row["name"]: _ref(row) for row in rows}
        refs.remember(session, list(found.values()))
        if rows:
            plan.done()
        elif plan.calls:
            await apply_settings(session, settings or {})
    out = []
    for c in collections:
        if isinstance(c, str):
            if c not in found:
                await _not_found(session, c)
            out.append(found[c])
        elif isinstance(c, Collection | CollectionRef):
            out.append(_ref(c))
        else:
            raise CollectionNotFound(f"No collection named {c!r}.")
    return out


async def _not_found(session: AsyncSession, name: str) -> None:
    rows = await fetch_all(session, "SELECT name FROM collections ORDER BY name")
    raise CollectionNotFound(not_found_message(name, [row["name"] for row in rows]))


def check_name(name: Any) -> None:
    """Refuse a collection name that cannot exist (not text, or holding a NUL byte)."""
    if not isinstance(name, str) or "\x00" in name:
        raise CollectionNotFound(f"No collection named {name!r}.")


async def resolve_collection(session: AsyncSession, collection: CollectionArg) -> CollectionRef:
    """Return the collection named `collection` (or the one given), else CollectionNotFound."""
    return (await lookup_collections(session, [collection]))[0]


def document_id(value: uuid.UUID | str) -> uuid.UUID:
    """Return `value` as a UUID, or raise InvalidInput saying it is not a document id."""
    if isinstance(value, uuid.UUID):
        return uuid.UUID(int=value.int)
    if isinstance(value, str) and 0 < len(value) <= 100:
        try:
            return uuid.UUID(value.strip())
        except ValueError:
            pass
    raise InvalidInput(f"{value!r} is not a document id (a UUID).")


def record_fields(
    row: Mapping[str, Any] | asyncpg.Record, names: Mapping[int, str]
) -> dict[str, Any]:
    """Return the DocumentRecord fields of a row selected with DOC_COLUMNS."""
    return {
        "id": uuid.UUID(int=row["id"].int),
        "collection": names.get(row["collection_id"], str(row["collection_id"])),
        "title": row["title"],
        "source": row["source"],
        "chunk_index": row["chunk_index"],
        "created_at": row["created_at"],
        "metadata": dict(row["metadata"] or {}),
        "content": row["content"],
    }


def record(row: Mapping[str, Any] | asyncpg.Record, names: Mapping[int, str]) -> DocumentRecord:
    """Build a DocumentRecord from a row selected with DOC_COLUMNS."""
    return DocumentRecord(**record_fields(row, names))


def check_limit(value: int, name: str, maximum: int) -> int:
    """Return `value` if it is an integer from 1 to `maximum`, else raise InvalidInput."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidInput(f"{name} must be an integer from 1 to {maximum}, not {value!r}")
    return value


def where(collection: CollectionRef, filters: Filters) -> tuple[str, dict[str, Any]]:
    """Return the WHERE body for one collection plus filters, and its parameters."""
    clauses, params = filters.sql("d")
    # The id is an int from our own table, written as a literal so that every plan, generic
    # ones included, knows the collection (its statistics, its partial indexes).
    clauses.insert(0, f"d.collection_id = {int(collection.id)}")
    return " AND ".join(clauses), params


async def browse(
    session: AsyncSession,
    collection: CollectionArg,
    *,
    limit: int = 50,
    order: str = "newest",
    after: str | None = None,
    before: str | None = None,
    filters: FilterArg = None,
) -> Page:
    """Return one page of a collection's documents, newest (or oldest) first, by cursor."""
    check_limit(limit, "page size", MAX_PAGE_SIZE)
    if order not in ORDERS:
        raise InvalidInput(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    if after is not None and before is not None:
        raise InvalidInput("give either an after cursor or a before cursor, not both")
    given = after if after is not None else before
    decoded = decode_cursor(given) if given is not None else None
    chosen = coerce_filters(filters)
    coll = await resolve_collection(session, collection)
    position = _position(decoded, coll, order)
    forward = before is None
    rows = await _keyset(
        session,
        coll,
        chosen,
        order=order,
        position=position,
        forward=forward,
        limit=limit + 1,
    )
    more = len(rows) > limit
    items = rows[:limit]
    if not forward:
        items.reverse()
    first = _cursor(items[0], coll, order) if items else None
    last = _cursor(items[-1], coll, order) if items else None
    if forward:
        next_cursor = last if more else None
        prev_cursor = (first or given) if position is not None else None
    else:
        prev_cursor = first if more else None
        next_cursor = last or given
    return Page(
        items=tuple(items),
        collection=coll.name,
        order=order,
        limit=limit,
        next_cursor=next_cursor,
        prev_cursor=prev_cursor,
    )


def _position(position: Position | None, coll: CollectionRef, order: str) -> Position | None:
    if position is None:
        return None
    if position.collection_id != coll.id:
        raise InvalidInput("This cursor belongs to another collection; start from the first page.")
    if position.order != order:
        raise InvalidInput(
            f"This cursor was made for {position.order} first, not {order} first; "
            "start from the first page."
        )
    return position


def _cursor(item: DocumentRecord, coll: CollectionRef, order: str) -> str:
    return encode_cursor(
        Position(collection_id=coll.id, order=order, created_at=item.created_at, id=item.id)
    )


async def _keyset(
    session: AsyncSession,
    coll: CollectionRef,
    filters: Filters,
    *,
    order: str,
    position: Position | None,
    forward: bool,
    limit: int,
) -> list[DocumentRecord]:
    body, params = where(coll, filters)
    # Newest first reads the index forwards (DESC); paging back reads it the other way.
    descending = (order == "newest") == forward
    if position is not None:
        body += (
            f" AND (d.created_at, d.id) {'<' if descending else '>'} "
            "(CAST(:k_created AS timestamptz), CAST(:k_id AS uuid))"
        )
        params["k_created"] = position.created_at
        params["k_id"] = position.id
    direction = "DESC" if descending else "ASC"
    sql = (
        f"SELECT {DOC_COLUMNS} FROM documents d WHERE {body} "  # noqa: S608 (ints and fixed text)
        f"ORDER BY d.created_at {direction}, d.id {direction} LIMIT {int(limit)}"
    )
    rows = await fetch_all(session, sql, params)
    return [record(row, {coll.id: coll.name}) for row in rows]


async def iter_documents(
    session: AsyncSession,
    collection: CollectionArg,
    *,
    order: str = "newest",
    filters: FilterArg = None,
    batch_size: int = MAX_PAGE_SIZE,
) -> AsyncIterator[list[DocumentRecord]]:
    """Yield every matching document in batches, each batch one keyset query."""
    coll = await resolve_collection(session, collection)
    check_limit(batch_size, "batch size", 10_000)
    if order not in ORDERS:
        raise InvalidInput(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    chosen = coerce_filters(filters)
    position: Position | None = None
    while True:
        batch = await _keyset(
            session, coll, chosen, order=order, position=position, forward=True, limit=batch_size
        )
        if batch:
            yield batch
        if len(batch) < batch_size:
            return
        last = batch[-1]
        position = Position(coll.id, order, last.created_at, last.id)


async def count_documents(
    session: AsyncSession, collection: CollectionArg, *, filters: FilterArg = None
) -> int:
    """Return how many documents the collection has (matching `filters` when given)."""
    coll = await resolve_collection(session, collection)
    body, params = where(coll, coerce_filters(filters))
    rows = await fetch_all(session, f"SELECT count(*) AS n FROM documents d WHERE {body}", params)  # noqa: S608
    return int(rows[0]["n"])


async def created_histogram(
    session: AsyncSession,
    collection: CollectionArg,
    *,
    unit: str = "day",
    filters: FilterArg = None,
    tz: str = "UTC",
) -> list[HistogramBin]:
    """Return document counts per day (or hour/week/month/year) of created_at, oldest first."""
    coll = await resolve_collection(session, collection)
    if unit not in HISTOGRAM_UNITS:
        raise InvalidInput(f"unit must be one of {', '.join(HISTOGRAM_UNITS)}, not {unit!r}")
    check_text(tz, "time zone")
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"{tz!r} is not a time zone name (e.g. UTC, Europe/Paris)") from None
    body, params = where(coll, coerce_filters(filters))
    params.update(h_unit=unit, h_tz=tz)
    sql = (
        "SELECT date_trunc(CAST(:h_unit AS text), d.created_at, CAST(:h_tz AS text)) "  # noqa: S608
        f"AS start, count(*) AS n FROM documents d WHERE {body} GROUP BY 1 ORDER BY 1"
    )
    return [
        HistogramBin(row["start"], int(row["n"])) for row in await fetch_all(session, sql, params)
    ]


async def facets(
    session: AsyncSession,
    collection: CollectionArg,
    key: str,
    *,
    limit: int = 20,
    filters: FilterArg = None,
) -> list[Facet]:
    """Return the most common values of a metadata key (list values count per element)."""
    coll = await resolve_collection(session, collection)
    if not isinstance(key, str) or not key:
        raise InvalidInput("a facet needs a metadata key")
    check_text(key, "metadata key")
    check_limit(limit, "facet limit", 1000)
    body, params = where(coll, coerce_filters(filters))
    params["fk"] = key
    sql = (
        "SELECT e.value AS value, count(*) AS n FROM documents d "  # noqa: S608
        "CROSS JOIN LATERAL jsonb_array_elements(CASE "
        "WHEN jsonb_typeof(d.metadata -> CAST(:fk AS text)) = 'array' "
        "THEN d.metadata -> CAST(:fk AS text) "
        "ELSE jsonb_build_array(d.metadata -> CAST(:fk AS text)) END) AS e(value) "
        f"WHERE {body} AND d.metadata -> CAST(:fk AS text) IS NOT NULL "
        f"GROUP BY e.value ORDER BY n DESC, e.value LIMIT {int(limit)}"
    )
    return [Facet(row["value"], int(row["n"])) for row in await fetch_all(session, sql, params)]


async def _document_row(session: AsyncSession, doc_id: uuid.UUID) -> tuple[asyncpg.Record, str]:
    rows = await fetch_all(
        session,
        f"SELECT {DOC_COLUMNS}, c.name AS collection_name FROM documents d "  # noqa: S608
        "JOIN collections c ON c.id = d.collection_id WHERE d.id = CAST(:doc AS uuid)",
        {"doc": doc_id},
    )
    if not rows:
        raise NotFound(f"No document with id {doc_id}.")
    return rows[0], rows[0]["collection_name"]


async def get_document(session: AsyncSession, document: uuid.UUID | str) -> DocumentRecord:
    """Return one document by id, or raise NotFound."""
    row, name = await _document_row(session, document_id(document))
    return record(row, {row["collection_id"]: name})


async def neighbours(
    session: AsyncSession, document: uuid.UUID | str, *, window: int = 2
) -> Neighbours:
    """Return a document with up to `window` chunks before and after it from the same source."""
    check_limit(window, "window", 100)
    row, name = await _document_row(session, document_id(document))
    names = {row["collection_id"]: name}
    doc = record(row, names)
    if doc.source is None:
        return Neighbours(document=doc, before=(), after=())
    parts = []
    for op, direction in (("<", "DESC"), (">", "ASC")):
        parts.append(
            f"(SELECT {DOC_COLUMNS} FROM documents d "  # noqa: S608 (ints and fixed text)
            f"WHERE d.collection_id = {int(row['collection_id'])} AND d.source = :src "
            f"AND d.chunk_index {op} :ci ORDER BY d.chunk_index {direction} LIMIT {int(window)})"
        )
    sql = " UNION ALL ".join(parts)
    rows = await fetch_all(session, sql, {"src": doc.source, "ci": doc.chunk_index})
    around = [record(r, names) for r in rows]
    before = sorted((r for r in around if r.chunk_index < doc.chunk_index), key=_chunk)
    after = sorted((r for r in around if r.chunk_index > doc.chunk_index), key=_chunk)
    return Neighbours(document=doc, before=tuple(before), after=tuple(after))


def _chunk(item: DocumentRecord) -> int:
    return item.chunk_index
