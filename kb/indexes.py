"""Per-collection HNSW indexes on the shared, untyped embedding column."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from kb.errors import InvalidInput
from kb.models import MAX_HALFVEC_INDEX_DIM, MAX_VECTOR_INDEX_DIM

HNSW_PREFIX = "ix_documents_hnsw_c"
# Per metric: (operator, vector opclass suffix); pgvector's <#> is the NEGATIVE inner product.
OPERATORS = {"cosine": "<=>", "l2": "<->", "ip": "<#>"}
_OPCLASS_SUFFIX = {"cosine": "cosine_ops", "l2": "l2_ops", "ip": "ip_ops"}
# pgvector's defaults and the bounds it accepts (it also wants ef_construction >= 2 * m).
DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 64
M_RANGE = (2, 100)
EF_CONSTRUCTION_RANGE = (4, 1000)


@dataclass(frozen=True, slots=True)
class GraphParams:
    """How densely a collection's HNSW graph is built: links per node and build-time ef.

    A denser graph finds more of the true neighbours at the same ef_search, for a slower build
    and a bigger index; a collection keeps its own under `settings["index"]`.
    """

    m: int = DEFAULT_M
    ef_construction: int = DEFAULT_EF_CONSTRUCTION

    def __post_init__(self) -> None:
        for name, value, (low, high) in (
            ("m", self.m, M_RANGE),
            ("ef_construction", self.ef_construction, EF_CONSTRUCTION_RANGE),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidInput(
                    f"HNSW {name} must be an integer from {low} to {high}, not {value!r}"
                )
        if self.ef_construction < 2 * self.m:
            raise InvalidInput(
                f"HNSW ef_construction ({self.ef_construction}) must be at least twice m ({self.m})"
            )

    def as_settings(self) -> dict[str, int]:
        """Return the parameters as kept in a collection's settings."""
        return {"m": self.m, "ef_construction": self.ef_construction}

    def changed(self, *, m: int | None = None, ef_construction: int | None = None) -> GraphParams:
        """Return these parameters with those given (not None) in their place, checked."""
        return GraphParams(
            m=self.m if m is None else m,
            ef_construction=self.ef_construction if ef_construction is None else ef_construction,
        )


def graph_params(settings: Mapping[str, Any] | None) -> GraphParams:
    """Return the graph parameters a collection's settings ask for (pgvector's by default)."""
    stored = (settings or {}).get("index")
    if stored is None:
        return GraphParams()
    if not isinstance(stored, Mapping):
        raise InvalidInput(f"the collection's index settings must be an object, not {stored!r}")
    unknown = set(stored) - {"m", "ef_construction"}
    if unknown:
        raise InvalidInput(f"unknown index settings: {', '.join(sorted(map(str, unknown)))}")
    return GraphParams(
        m=stored.get("m", DEFAULT_M),
        ef_construction=stored.get("ef_construction", DEFAULT_EF_CONSTRUCTION),
    )


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


# A rebuild (kb.reindex) builds the new graph under this name and swaps it in, holding the
# advisory lock (REBUILD_LOCK, collection id) from the build to the swap.
NEXT_SUFFIX = "_next"
REBUILD_LOCK = "kb.reindex"


def next_index_name(collection_id: int) -> str:
    """Return the name a rebuilt index is built under before the swap."""
    return index_name(collection_id) + NEXT_SUFFIX


def create_index_sql(
    collection_id: int,
    dimension: int,
    metric: str,
    *,
    params: GraphParams | None = None,
    name: str | None = None,
    concurrently: bool = False,
) -> str:
    """Return the CREATE INDEX statement for a collection's HNSW index."""
    params = params or GraphParams()
    kind = "vector" if dimension <= MAX_VECTOR_INDEX_DIM else "halfvec"
    opclass = f"{kind}_{_OPCLASS_SUFFIX[metric]}"
    how = "CONCURRENTLY " if concurrently else ""
    return (
        f"CREATE INDEX {how}IF NOT EXISTS {name or index_name(collection_id)} ON documents "
        f"USING hnsw ({vector_expr(dimension)} {opclass}) "
        f"WITH (m = {int(params.m)}, ef_construction = {int(params.ef_construction)}) "
        f"WHERE collection_id = {int(collection_id)}"
    )


async def create_index(
    conn: AsyncSession | AsyncConnection,
    collection_id: int,
    dimension: int,
    metric: str,
    *,
    params: GraphParams | None = None,
) -> bool:
    """Create the collection's HNSW index if the dimension allows one; return whether it exists."""
    if not is_indexable(dimension):
        return False
    await conn.execute(text(create_index_sql(collection_id, dimension, metric, params=params)))
    return True


async def drop_index(conn: AsyncSession | AsyncConnection, collection_id: int) -> None:
    """Drop a collection's HNSW index (before a bulk load, or with the collection)."""
    await conn.execute(text(f"DROP INDEX IF EXISTS {index_name(collection_id)}"))
