"""The tables: collections of documents (chunks) with embeddings, metadata and created_at."""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    CheckConstraint,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from kb.errors import InvalidInput

METRICS = ("cosine", "l2", "ip")
# HNSW on `vector` indexes up to 2,000 dims; `halfvec` up to 4,000.
MAX_VECTOR_INDEX_DIM = 2000
MAX_HALFVEC_INDEX_DIM = 4000
MAX_DIMENSION = 16000
TEXT_SEARCH_CONFIG = "english"

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so migrations name constraints stably."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def check_text(value: str | None, field: str) -> str | None:
    """Refuse text PostgreSQL cannot store (NUL bytes, lone surrogates)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be text, not {type(value).__name__}")
    if "\x00" in value:
        raise InvalidInput(f"{field} contains a NUL byte (\\x00), which PostgreSQL cannot store")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{field} is not valid Unicode text ({exc.reason})") from None
    return value


def check_json(value: Any, field: str = "metadata", _depth: int = 0) -> Any:
    """Refuse JSON values PostgreSQL's jsonb cannot store (NUL bytes, NaN, non-string keys)."""
    if _depth > 100:
        raise InvalidInput(f"{field} is nested too deeply")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{field} keys must be strings, got {key!r}")
            check_text(key, f"{field} key")
            check_json(item, f"{field}[{key!r}]", _depth + 1)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_json(item, f"{field}[{i}]", _depth + 1)
    elif isinstance(value, str):
        check_text(value, field)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{field} holds {value}, which JSON cannot represent")
    elif value is not None and not isinstance(value, bool | int):
        raise InvalidInput(f"{field} holds a {type(value).__name__}, which is not JSON")
    return value


def check_vector(
    value: Sequence[float] | np.ndarray, *, dimension: int | None = None, field: str = "embedding"
) -> np.ndarray:
    """Return `value` as float32 after checking its dimension, finiteness and non-zero norm."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput(f"{field} must be a sequence of numbers") from None
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidInput(f"{field} must be a non-empty 1-d vector, got shape {arr.shape}")
    if dimension is not None and arr.size != dimension:
        raise InvalidInput(
            f"{field} has {arr.size} dimensions; this collection expects {dimension}"
        )
    if not np.all(np.isfinite(arr)):
        raise InvalidInput(f"{field} contains NaN or infinite values")
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise InvalidInput(f"{field} has values too large for a 32-bit float")
    if not np.any(out):
        raise InvalidInput(f"{field} is the zero vector, which has no direction to compare")
    return out


def content_hash(content: str) -> str:
    """Return the hex SHA-256 of `content`, the key that makes re-ingest idempotent."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def _default_content_hash(context: Any) -> str:
    return content_hash(context.get_current_parameters()["content"])


class Collection(Base):
    """A named set of documents that share one embedder (model, dimension, metric)."""

    __tablename__ = "collections"
    __table_args__ = (
        CheckConstraint("metric IN ('cosine', 'l2', 'ip')", name="metric"),
        CheckConstraint(f"dimension BETWEEN 1 AND {MAX_DIMENSION}", name="dimension"),
        CheckConstraint("length(name) BETWEEN 1 AND 200", name="name_length"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    embedder: Mapped[str] = mapped_column(String(50))
    model: Mapped[str] = mapped_column(String(500))
    dimension: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(10), default="cosine", server_default="cosine")
    settings: Mapped[dict[str, Any]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    documents: Mapped[list[Document]] = relationship(
        back_populates="collection", cascade="all, delete-orphan", passive_deletes=True
    )

    @validates("name", "description", "embedder", "model")
    def _check_text(self, key: str, value: str) -> str:
        checked = check_text(value, key)
        if key == "name" and (checked is None or not checked.strip()):
            raise InvalidInput("a collection needs a non-empty name")
        return value

    @validates("metric")
    def _check_metric(self, key: str, value: str) -> str:
        if value not in METRICS:
            raise InvalidInput(f"metric must be one of {', '.join(METRICS)}, not {value!r}")
        return value

    @validates("dimension")
    def _check_dimension(self, key: str, value: int) -> int:
        if not isinstance(value, int) or not 1 <= value <= MAX_DIMENSION:
            raise InvalidInput(f"dimension must be an integer from 1 to {MAX_DIMENSION}")
        return value

    @validates("settings")
    def _check_settings(self, key: str, value: dict[str, Any]) -> dict[str, Any]:
        return check_json(value, "settings")  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"Collection(name={self.name!r}, model={self.model!r}, dimension={self.dimension})"


class Document(Base):
    """One chunk of a source, with its embedding; browsed by (created_at, id)."""

    __tablename__ = "documents"
    __table_args__ = (
        # Keyset paging: documents of a collection newest first, ties broken by id.
        Index(
            "ix_documents_collection_created",
            "collection_id",
            text("created_at DESC"),
            text("id DESC"),
        ),
        Index(
            "ix_documents_metadata",
            "metadata",
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
        ),
        Index("ix_documents_tsv", "tsv", postgresql_using="gin"),
        Index("ix_documents_collection_hash", "collection_id", "content_hash"),
        UniqueConstraint("collection_id", "source", "chunk_index"),
        CheckConstraint("chunk_index >= 0", name="chunk_index"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        primary_key=True,
        default=uuid.uuid4,
        server_default=text("gen_random_uuid()"),
    )
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(Text, default="", server_default="")
    source: Mapped[str | None] = mapped_column(Text)
    chunk_index: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    content: Mapped[str] = mapped_column(Text)
    # `metadata` is reserved on declarative classes, hence the attribute name.
    meta: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    content_hash: Mapped[str] = mapped_column(String(64), default=_default_content_hash)
    # Untyped so collections of different dimensions share the table; each collection gets a
    # partial HNSW index on `embedding::vector(N)` (see kb.indexes).
    # Stored inside the row (STORAGE MAIN, migration 0002; SQLAlchemy cannot say so here).
    embedding: Mapped[np.ndarray] = mapped_column(Vector())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    tsv: Mapped[str | None] = mapped_column(
        TSVECTOR,
        Computed(
            f"to_tsvector('{TEXT_SEARCH_CONFIG}'::regconfig, "
            "coalesce(title, '') || ' ' || content)",
            persisted=True,
        ),
        deferred=True,
    )

    collection: Mapped[Collection] = relationship(back_populates="documents")

    @validates("title", "source", "content")
    def _check_text(self, key: str, value: str | None) -> str | None:
        return check_text(value, key)

    @validates("meta")
    def _check_meta(self, key: str, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise InvalidInput("metadata must be a JSON object (a dict)")
        return check_json(value, "metadata")  # type: ignore[no-any-return]

    @validates("embedding")
    def _check_embedding(self, key: str, value: Sequence[float] | np.ndarray) -> np.ndarray:
        # Read the loaded value only: a lazy load here would need I/O inside a validator.
        collection = self.__dict__.get("collection")
        return check_vector(value, dimension=collection.dimension if collection else None)

    @validates("collection")
    def _check_collection(self, key: str, value: Collection) -> Collection:
        embedding = self.__dict__.get("embedding")
        if value is not None and embedding is not None:
            check_vector(embedding, dimension=value.dimension)
        return value

    def __repr__(self) -> str:
        return f"Document(id={self.id}, title={self.title!r}, chunk_index={self.chunk_index})"


class CollectionTerm(Base):
    """A word in so many of a collection's documents that text ranking skips it (kb.terms).

    `documents` is a lower bound measured on a sample; kb forgets a collection's rows here
    whenever an ingest changes or removes any of its documents.
    """

    __tablename__ = "collection_terms"

    collection_id: Mapped[int] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    # A lexeme as `to_tsvector` stores it (stemmed, lower case).
    lexeme: Mapped[str] = mapped_column(Text, primary_key=True)
    documents: Mapped[int] = mapped_column(Integer)

    def __repr__(self) -> str:
        return f"CollectionTerm({self.collection_id}, {self.lexeme!r}, >={self.documents})"
