"""Feature hashing of words: a deterministic lexical embedder that needs no model."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence

import numpy as np

from kb.errors import InvalidInput

_WORD = re.compile(r"\w+", re.UNICODE)
_PREFIX = "feature-hashing-"
DEFAULT_DIMENSION = 384


class HashingEmbedder:
    """Hash each word (and word pair) to a signed bucket; L2-normalised term counts."""

    kind = "hashing"
    metric = "cosine"

    def __init__(self, dimension: int = DEFAULT_DIMENSION) -> None:
        if not 8 <= dimension <= 16000:
            raise InvalidInput("the hashing embedder's dimension must be from 8 to 16000")
        self.dimension = dimension
        self.model = f"{_PREFIX}{dimension}"

    @classmethod
    def from_model(cls, model: str | None, *, dimension: int | None = None) -> HashingEmbedder:
        """Build from a recorded model name such as feature-hashing-384."""
        if model:
            if not model.startswith(_PREFIX) or not model[len(_PREFIX) :].isdigit():
                raise InvalidInput(f"{model!r} is not a hashing model (expected {_PREFIX}<dims>)")
            return cls(int(model[len(_PREFIX) :]))
        return cls(dimension or DEFAULT_DIMENSION)

    def _bucket(self, token: str) -> tuple[int, float]:
        digest = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dimension, 1.0 if (value >> 63) & 1 else -1.0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return one unit vector per text."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            # Texts without a word still need a direction: give them a fixed bucket.
            tokens = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
            for token in tokens or ["\x01empty"]:
                index, sign = self._bucket(token)
                out[row, index] += sign
            # Sublinear term frequency keeps one repeated word from dominating.
            out[row] = np.sign(out[row]) * np.log1p(np.abs(out[row]))
            if not out[row].any():
                # Every bucket cancelled out (rare collisions): fall back to the empty bucket.
                index, sign = self._bucket("\x01empty")
                out[row, index] = sign
            out[row] /= np.linalg.norm(out[row])
        return out
