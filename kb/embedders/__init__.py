"""Embedders: turn a batch of texts into vectors, one provider per collection.

Every provider satisfies the small `Embedder` protocol; `make_embedder` builds one from the
kind and model recorded on a collection, and `embed_texts` checks every vector before it can
reach the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kb.config import Settings, get_settings
from kb.errors import EmbedderMismatch, InvalidInput, KBError

KINDS = ("local", "openai", "hashing")
KIND_LABELS = {
    "local": "Local model (sentence-transformers)",
    "openai": "OpenAI-compatible API",
    "hashing": "Feature hashing (lexical, no model)",
}


class EmbedderError(KBError):
    """An embedding provider failed (model missing, API refused, bad answer)."""


@runtime_checkable
class Embedder(Protocol):
    """Embed a batch of texts into vectors of a fixed dimension."""

    @property
    def kind(self) -> str:
        """Return the provider: local, openai or hashing."""

    @property
    def model(self) -> str:
        """Return the model name recorded on collections."""

    @property
    def dimension(self) -> int:
        """Return the length of every vector."""

    @property
    def metric(self) -> str:
        """Return the distance metric the vectors are meant for."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return one float32 row per text."""


def check_vectors(vectors: np.ndarray, *, count: int, dimension: int, model: str) -> np.ndarray:
    """Return `vectors` as float32 after checking shape, finiteness and non-zero norms."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != count:
        raise EmbedderError(f"{model} returned {arr.shape} for {count} texts")
    if arr.shape[1] != dimension:
        raise EmbedderError(
            f"{model} returned {arr.shape[1]}-dimensional vectors; expected {dimension}"
        )
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise EmbedderError(
            f"{model} returned NaN or infinite values for text #{int(bad.argmax())}"
        )
    zero = ~arr.any(axis=1)
    if zero.any():
        raise EmbedderError(f"{model} returned a zero vector for text #{int(zero.argmax())}")
    return arr


def embed_texts(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Embed `texts` and check every vector (dimension, finite, non-zero)."""
    if isinstance(texts, str):
        raise InvalidInput("embed_texts takes a list of texts, not one string")
    if not texts:
        return np.zeros((0, embedder.dimension), dtype=np.float32)
    return check_vectors(
        embedder.embed(list(texts)),
        count=len(texts),
        dimension=embedder.dimension,
        model=embedder.model,
    )


async def aembed_texts(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Embed in a worker thread, so the event loop keeps serving while the model runs."""
    return await asyncio.to_thread(embed_texts, embedder, texts)


def make_embedder(
    kind: str | None = None,
    model: str | None = None,
    *,
    dimension: int | None = None,
    settings: Settings | None = None,
) -> Embedder:
    """Build an embedder of `kind` (local, openai, hashing); defaults come from settings."""
    settings = settings or get_settings()
    kind = (kind or settings.embedder).strip().lower()
    if kind == "hashing":
        from kb.embedders.hashing import HashingEmbedder

        return HashingEmbedder.from_model(model, dimension=dimension)
    if kind == "local":
        from kb.embedders.local import LocalEmbedder

        return LocalEmbedder(model or settings.local_model, precision=settings.local_precision)
    if kind == "openai":
        from kb.embedders.openai import OpenAIEmbedder

        return OpenAIEmbedder(
            model=model or settings.openai_model,
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key,
            dimension=dimension,
        )
    raise InvalidInput(f"Unknown embedder {kind!r}; choose one of {', '.join(KINDS)}.")


def embedder_for(collection: Any, *, settings: Settings | None = None) -> Embedder:
    """Build the embedder a collection was made with (its recorded kind, model and dimension)."""
    embedder = make_embedder(
        collection.embedder, collection.model, dimension=collection.dimension, settings=settings
    )
    check_compatible(
        embedder, name=collection.name, model=collection.model, dimension=collection.dimension
    )
    return embedder


def check_compatible(embedder: Embedder, *, name: str, model: str, dimension: int) -> None:
    """Refuse an embedder whose model or dimension differs from a collection's."""
    if embedder.model != model or embedder.dimension != dimension:
        raise EmbedderMismatch(
            f"Collection {name!r} was built with {model} ({dimension} dims); "
            f"the embedder given is {embedder.model} ({embedder.dimension} dims). "
            "Use the collection's own embedder, or ingest into a new collection."
        )


__all__ = [
    "KINDS",
    "KIND_LABELS",
    "Embedder",
    "EmbedderError",
    "aembed_texts",
    "check_compatible",
    "check_vectors",
    "embed_texts",
    "embedder_for",
    "make_embedder",
]
