"""Bad values at the model boundary give a clear kb error and write nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

import kb
from kb.models import Collection, Document, content_hash

# Building a Document with a bad value on a persistent Collection warns that the half-built
# object was not cascaded into the session, which is the point of these tests.
pytestmark = pytest.mark.filterwarnings("ignore:Object of type <Document> not in session")


async def _collection(session: AsyncSession, dim: int = 3) -> Collection:
    return await kb.create_collection(
        session, f"models-{dim}", embedder="hashing", model="test", dimension=dim
    )


async def _count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Document)) or 0)


async def test_document_round_trip(session: AsyncSession) -> None:
    c = await _collection(session)
    doc = Document(
        collection=c,
        title="t",
        source="a.txt",
        content="hello",
        meta={"k": [1, "v"]},
        embedding=[1.0, 0.0, 0.5],
    )
    session.add(doc)
    await session.flush()
    row = (
        await session.execute(
            select(Document.content_hash, Document.created_at, Document.meta).where(
                Document.id == doc.id
            )
        )
    ).one()
    assert row.content_hash == content_hash("hello")
    assert row.created_at is not None and row.created_at.tzinfo is not None
    assert row.meta == {"k": [1, "v"]}
    assert doc.id.version == 4


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("content", "bad\x00byte", "NUL"),
        ("title", "bad\x00title", "NUL"),
        ("source", "a\x00.txt", "NUL"),
        ("content", "lone \ud800 surrogate", "Unicode"),
        ("meta", {"k": "v\x00"}, "NUL"),
        ("meta", {"k\x00": 1}, "NUL"),
        ("meta", {"k": math.nan}, "JSON"),
        ("meta", {"k": object()}, "JSON"),
        ("meta", ["not", "a", "dict"], "object"),
        ("embedding", [1.0, 2.0], "dimensions"),
        ("embedding", [1.0, math.nan, 0.0], "NaN"),
        ("embedding", [1.0, math.inf, 0.0], "NaN or infinite"),
        ("embedding", [0.0, 0.0, 0.0], "zero vector"),
        ("embedding", [1e39, 1.0, 1.0], "32-bit"),
        ("embedding", "abc", "numbers"),
    ],
)
async def test_bad_values_are_refused_and_nothing_is_written(
    session: AsyncSession, field: str, value: object, message: str
) -> None:
    c = await _collection(session)
    before = await _count(session)
    good = {"collection": c, "content": "ok", "embedding": [1.0, 0.0, 0.0]}
    with pytest.raises(kb.InvalidInput, match=message):
        session.add(Document(**{**good, field: value}))
    await session.flush()
    assert await _count(session) == before


async def test_wrong_dimension_is_caught_without_a_loaded_collection(session: AsyncSession) -> None:
    # Given only the id, the per-collection HNSW index expression refuses the vector.
    c = await _collection(session)
    before = await _count(session)
    with pytest.raises(kb.InvalidInput, match="dimensions"):
        async with kb.session_scope(async_sessionmaker_for(session)) as s:
            s.add(Document(collection_id=c.id, content="x", embedding=np.ones(5)))
    assert await _count(session) == before


def async_sessionmaker_for(session: AsyncSession):  # type: ignore[no-untyped-def]
    from sqlalchemy.ext.asyncio import async_sessionmaker

    return async_sessionmaker(bind=session.bind, join_transaction_mode="create_savepoint")


async def test_collection_validation(session: AsyncSession) -> None:
    with pytest.raises(kb.InvalidInput, match="metric"):
        Collection(name="x", embedder="e", model="m", dimension=3, metric="dot")
    with pytest.raises(kb.InvalidInput, match="dimension"):
        Collection(name="x", embedder="e", model="m", dimension=0)
    with pytest.raises(kb.InvalidInput, match="name"):
        Collection(name="  ", embedder="e", model="m", dimension=3)
    await _collection(session)
    with pytest.raises(kb.InvalidInput, match="already exists"):
        await _collection(session)


async def test_every_collection_gets_an_hnsw_index_for_its_dimension(session: AsyncSession) -> None:
    small = await _collection(session, 3)
    big = await kb.create_collection(
        session, "big", embedder="e", model="m", dimension=3072, metric="ip"
    )
    rows = (
        await session.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'documents' "
                "AND indexname LIKE 'ix_documents_hnsw_c%'"
            )
        )
    ).all()
    defs = {name: d for name, d in rows}
    assert "vector(3)" in defs[f"ix_documents_hnsw_c{small.id}"]
    assert "vector_cosine_ops" in defs[f"ix_documents_hnsw_c{small.id}"]
    assert "halfvec(3072)" in defs[f"ix_documents_hnsw_c{big.id}"]
    assert "halfvec_ip_ops" in defs[f"ix_documents_hnsw_c{big.id}"]


async def test_delete_collection_takes_documents_and_index(session: AsyncSession) -> None:
    c = await _collection(session)
    session.add_all(
        [
            Document(collection=c, content=f"d{i}", source="s", chunk_index=i, embedding=[1, i, 0])
            for i in range(3)
        ]
    )
    await session.flush()
    assert await kb.delete_collection(session, c.name) == 3
    with pytest.raises(kb.CollectionNotFound, match=c.name):
        await kb.get_collection(session, c.name)
    left = await session.scalar(
        text(f"SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_documents_hnsw_c{c.id}'")
    )
    assert left == 0
