"""Results of browse and search: small frozen dataclasses, and DataFrames of them in one call."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    import pandas as pd

    from kb.search import SearchRequest

# What `score` means, per metric (vector searches) or per mode; higher is always better.
SCORE_DEFINITIONS = {
    "cosine": "cosine similarity = 1 - cosine distance (<=>), from -1 to 1; higher is more similar",
    "l2": "negative Euclidean distance = -(<->); higher (closer to 0) is more similar",
    "ip": "inner product = -(<#>), since pgvector's <#> is the negative inner product; "
    "higher is more similar",
    "text": "ts_rank_cd of the full-text match (cover density); higher is more relevant",
    "hybrid": "reciprocal rank fusion: sum over the vector and full-text lists of "
    "weight / (rrf_k + rank); higher is better",
}


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """One document (chunk) as browse and get_document return it."""

    id: uuid.UUID
    collection: str
    title: str
    source: str | None
    chunk_index: int
    created_at: datetime
    metadata: dict[str, Any]
    content: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (id as text, created_at in ISO 8601)."""
        return _json_ready(self)


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One hit: its rank (from 1), a score where higher is better, and the raw distance.

    `distance` is what the collection's operator returned (`operator`: <=> cosine, <-> L2,
    <#> negative inner product); it is None for full-text hits. `score_definition` says how
    `score` was derived. Hybrid hits also carry their rank in each list (None when absent).
    """

    rank: int
    score: float
    distance: float | None
    mode: str
    metric: str
    operator: str | None
    id: uuid.UUID
    collection: str
    title: str
    source: str | None
    chunk_index: int
    created_at: datetime
    metadata: dict[str, Any]
    content: str
    vector_rank: int | None = None
    text_rank: int | None = None

    @property
    def score_definition(self) -> str:
        """Say what `score` is and which direction is better."""
        return SCORE_DEFINITIONS[self.metric if self.mode == "vector" else self.mode]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (id as text, created_at in ISO 8601)."""
        return _json_ready(self)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a browse, with opaque cursors to the pages on either side (None at an end)."""

    items: tuple[DocumentRecord, ...]
    collection: str
    order: str
    limit: int
    next_cursor: str | None
    prev_cursor: str | None

    def __iter__(self) -> Iterator[DocumentRecord]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> DocumentRecord:
        return self.items[index]

    def to_dataframe(self) -> pd.DataFrame:
        """Return the page's documents as a DataFrame."""
        return to_dataframe(self.items, kind=DocumentRecord)


@dataclass(frozen=True, slots=True)
class SearchResults:
    """The hits of one search, best first, with the request that produced them.

    `request` holds the query vector that was used, so explain() and recall_at_k() can
    repeat the search without embedding again. `exact_fallback` tells that an approximate
    filtered search came back short and kb re-ran it exactly.
    """

    items: tuple[SearchResult, ...]
    request: SearchRequest
    exact_fallback: bool = False
    notes: tuple[str, ...] = field(default=())

    def __iter__(self) -> Iterator[SearchResult]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> SearchResult: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[SearchResult, ...]: ...
    def __getitem__(self, index: int | slice) -> SearchResult | tuple[SearchResult, ...]:
        return self.items[index]

    @property
    def ids(self) -> list[uuid.UUID]:
        """Return the ids of the hits, best first."""
        return [item.id for item in self.items]

    def to_dataframe(self) -> pd.DataFrame:
        """Return the hits as a DataFrame."""
        return to_dataframe(self.items, kind=SearchResult)


@dataclass(frozen=True, slots=True)
class Neighbours:
    """A document with the chunks just before and after it in the same source."""

    document: DocumentRecord
    before: tuple[DocumentRecord, ...]
    after: tuple[DocumentRecord, ...]


@dataclass(frozen=True, slots=True)
class HistogramBin:
    """How many documents were created in the interval starting at `start`."""

    start: datetime
    count: int


@dataclass(frozen=True, slots=True)
class Facet:
    """One value of a metadata key and how many documents have it."""

    value: Any
    count: int


def _json_ready(item: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(item):
        value = getattr(item, f.name)
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        out[f.name] = value
    return out


def column_names(kind: type) -> list[str]:
    """Return the DataFrame columns of a result type."""
    return [f.name for f in fields(kind)]


def to_dataframe(
    items: Iterable[Any] | Page | SearchResults, *, kind: type | None = None
) -> pd.DataFrame:
    """Return results (a Page, SearchResults or a list of records) as a pandas DataFrame.

    Ids become text; created_at stays a timezone-aware datetime; metadata stays a dict.
    """
    import pandas as pd

    if isinstance(items, Page):
        kind = DocumentRecord
    elif isinstance(items, SearchResults):
        kind = SearchResult
    rows = list(items)
    if kind is None:
        kind = type(rows[0]) if rows else DocumentRecord
    columns = column_names(kind)
    data: list[Mapping[str, Any]] = []
    for row in rows:
        record = {name: getattr(row, name) for name in columns}
        record["id"] = str(record["id"])
        data.append(record)
    frame = pd.DataFrame(data, columns=columns)
    if not rows:
        frame["created_at"] = pd.Series(dtype="datetime64[us, UTC]")
    return frame
