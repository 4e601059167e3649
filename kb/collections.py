"""Create, list, get and delete collections."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from kb import indexes, refs
from kb.errors import CollectionNotFound, EmbedderMismatch, InvalidInput
from kb.models import Collection, Document
from kb.statements import fetch_all

# Advisory locks are (namespace, collection id); any fixed number marks kb's writes.
LOCK_NAMESPACE = 7_428_502
_LOCK = text("SELECT pg_advisory_xact_lock(:namespace, :collection_id)")


async def lock_writes(session: AsyncSession, collection_id: int) -> None:
    """Hold the collection's write lock until the session's transaction ends."""
    await session.execute(_LOCK, {"namespace": LOCK_NAMESPACE, "collection_id": collection_id})


@dataclass(frozen=True, slots=True)
class CollectionSize:
    """A collection's name, dimension, settings and document count (for upkeep by id)."""

    name: str
    dimension: int
    settings: dict[str, Any]
    documents: int


async def collection_size(session: AsyncSession, collection_id: int) -> CollectionSize | None:
    """Return the collection's facts that an ingest's upkeep decides on, or None if it is gone."""
    rows = await fetch_all(
        session,
        "SELECT c.name, c.dimension, c.settings, (SELECT count(*) FROM documents d "
        "WHERE d.collection_id = c.id) AS n FROM collections c WHERE c.id = :c",
        {"c": collection_id},
    )
    if not rows:
        return None
    settings = rows[0]["settings"]
    if isinstance(settings, str):
        settings = json.loads(settings)
    return CollectionSize(
        name=rows[0]["name"],
        dimension=int(rows[0]["dimension"]),
        settings=dict(settings or {}),
        documents=int(rows[0]["n"]),
    )


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    """A collection with its document count and time span."""

    id: int
    name: str
    description: str
    embedder: str
    model: str
    dimension: int
    metric: str
    created_at: datetime
    documents: int
    oldest: datetime | None
    newest: datetime | None
    settings: dict[str, Any]


async def create_collection(
    session: AsyncSession,
    name: str,
    *,
    embedder: str,
    model: str,
    dimension: int,
    metric: str = "cosine",
    description: str = "",
    settings: dict[str, Any] | None = None,
    index: bool = True,
) -> Collection:
    """Create a collection and its HNSW index; refuse a name that is taken.

    `index=False` leaves the index to be built after a bulk load (see kb.ingest.indexing).
    """
    name = name.strip() if isinstance(name, str) else name
    params = indexes.graph_params(settings)
    collection = Collection(
        name=name,
        description=description,
        embedder=embedder,
        model=model,
        dimension=dimension,
        metric=metric,
        settings=settings or {},
    )
    try:
        async with session.begin_nested():
            session.add(collection)
            await session.flush()
    except IntegrityError:
        raise InvalidInput(f"A collection named {name!r} already exists.") from None
    if index:
        await indexes.create_index(session, collection.id, dimension, metric, params=params)
    return collection


async def ensure_collection(
    session: AsyncSession,
    name: str,
    *,
    embedder: str,
    model: str,
    dimension: int,
    metric: str = "cosine",
    description: str = "",
    settings: dict[str, Any] | None = None,
    index: bool = True,
) -> Collection:
    """Return the collection `name`, creating it if missing; refuse one with another model."""
    try:
        found = await get_collection(session, name)
    except CollectionNotFound:
        try:
            return await create_collection(
                session,
                name,
                embedder=embedder,
                model=model,
                dimension=dimension,
                metric=metric,
                description=description,
                settings=settings,
                index=index,
            )
        except InvalidInput as exc:
            # Another session may have created it in the meantime: use theirs if so.
            try:
                found = await get_collection(session, name)
            except CollectionNotFound:
                raise exc from None
    if found.model != model or found.dimension != dimension:
        raise EmbedderMismatch(
            f"Collection {found.name!r} was built with {found.model} ({found.dimension} dims); "
            f"the embedder given is {model} ({dimension} dims). "
            "Use the collection's own embedder, or ingest into a new collection."
        )
    return found


async def get_collection(session: AsyncSession, name: str) -> Collection:
    """Return the collection called `name`, or raise CollectionNotFound."""
    if not isinstance(name, str) or "\x00" in name:
        raise CollectionNotFound(f"No collection named {name!r}.")
    found = await session.scalar(select(Collection).where(Collection.name == name))
    if found is None:
        names = (await session.scalars(select(Collection.name).order_by(Collection.name))).all()
        raise CollectionNotFound(not_found_message(name, names))
    return found


def not_found_message(name: str, known: Sequence[str]) -> str:
    """Return the 'no such collection' message, naming the collections that do exist."""
    hint = f" Known collections: {', '.join(known)}." if known else " There are no collections yet."
    return f"No collection named {name!r}.{hint}"


async def list_collections(session: AsyncSession) -> list[CollectionInfo]:
    """Return every collection with its document count and oldest/newest created_at."""
    stats = (
        select(
            Document.collection_id,
            func.count().label("n"),
            func.min(Document.created_at).label("oldest"),
            func.max(Document.created_at).label("newest"),
        )
        .group_by(Document.collection_id)
        .subquery()
    )
    rows = await session.execute(
        select(Collection, stats.c.n, stats.c.oldest, stats.c.newest)
        .outerjoin(stats, stats.c.collection_id == Collection.id)
        .order_by(Collection.name)
    )
    return [
        CollectionInfo(
            id=c.id,
            name=c.name,
            description=c.description,
            embedder=c.embedder,
            model=c.model,
            dimension=c.dimension,
            metric=c.metric,
            created_at=c.created_at,
            documents=n or 0,
            oldest=oldest,
            newest=newest,
            settings=dict(c.settings or {}),
        )
        for c, n, oldest, newest in rows
    ]


async def delete_collection(session: AsyncSession, name: str) -> int:
    """Delete a collection with all its documents; return how many documents went with it."""
    collection = await get_collection(session, name)
    count = await session.scalar(
        select(func.count()).select_from(Document).where(Document.collection_id == collection.id)
    )
    await session.execute(delete(Document).where(Document.collection_id == collection.id))
    await indexes.drop_index(session, collection.id)
    await session.delete(collection)
    await session.flush()
    # Its name may come back with another dimension or embedder: searches must look it up.
    refs.forget(session, [name])
    return int(count or 0)
