"""Per-collection HNSW indexes on the shared, untyped embedding column."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from kb.models import MAX_HALFVEC_INDEX_DIM, MAX_VECTOR_INDEX_DIM

HNSW_PREFIX = "ix_documents_hnsw_c"
# Per metric: (operator, vector opclass suffix); pgvector's <#> is the NEGATIVE inner product.
OPERATORS = {"cosine": "<=>", "l2": "<->", "ip": "<#>"}
_OPCLASS_SUFFIX = {"cosine": "cosine_ops", "l2": "l2_ops", "ip": "ip_ops"}


def vector_type(dimension: int) -> str:
    """Return the SQL type the collection's vectors are cast to (and indexed as)."""
    if dimension <= MAX_VECTOR_INDEX_DIM:
        return f"vector({int(dimension)})"
    return f"halfvec({int(dimension)})"


def vector_expr(dimension: int, column: str = "embedding") -> str:
    """Return the expression both the index and every search must use."""
    return f"({column}::{vector_type(dimension)})"


def is_indexable(dimension: int) -> bool:
    """Tell whether an HNSW index can cover vectors of this dimension."""
    return dimension <= MAX_HALFVEC_INDEX_DIM


def index_name(collection_id: int) -> str:
    """Return the name of a collection's HNSW index."""
    return f"{HNSW_PREFIX}{int(collection_id)}"


def create_index_sql(
    collection_id: int, dimension: int, metric: str, *, m: int = 16, ef_construction: int = 64
) -> str:
    """Return the CREATE INDEX statement for a collection's HNSW index."""
    kind = "vector" if dimension <= MAX_VECTOR_INDEX_DIM else "halfvec"
    opclass = f"{kind}_{_OPCLASS_SUFFIX[metric]}"
    return (
        f"CREATE INDEX IF NOT EXISTS {index_name(collection_id)} ON documents "
        f"USING hnsw ({vector_expr(dimension)} {opclass}) "
        f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)}) "
        f"WHERE collection_id = {int(collection_id)}"
    )


async def create_index(
    conn: AsyncSession | AsyncConnection, collection_id: int, dimension: int, metric: str
) -> bool:
    """Create the collection's HNSW index if the dimension allows one; return whether it exists."""
    if not is_indexable(dimension):
        return False
    await conn.execute(text(create_index_sql(collection_id, dimension, metric)))
    return True


async def drop_index(conn: AsyncSession | AsyncConnection, collection_id: int) -> None:
    """Drop a collection's HNSW index (before a bulk load, or with the collection)."""
    await conn.execute(text(f"DROP INDEX IF EXISTS {index_name(collection_id)}"))
