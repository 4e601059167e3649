"""Deterministic synthetic documents: clustered unit vectors, Zipf text, JSON metadata, dates."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import numpy as np

SEED = 20_261_125
VOCABULARY = 30_000
ZIPF_EXPONENT = 1.07
WORDS_PER_DOC = (150, 215)  # ~1 KB of text per document
BANDS = {"b30": 0.30, "b05": 0.05, "b01": 0.01, "b001": 0.001}
BAND_FOR = {0.30: "b30", 0.05: "b05", 0.01: "b01", 0.001: "b001"}
EPOCH = datetime(2022, 1, 1, tzinfo=UTC)
SPAN_SECONDS = 3 * 365 * 24 * 3600

_CONSONANTS = "bdfgklmnprtvz"
# Only a/o/u end a syllable: the English stemmer leaves such words alone, so a word of the
# generator is one lexeme of to_tsvector('english') and document frequencies can be counted here.
_VOWELS = "aou"
_AUTHORS = [
    f"{a} {b}"
    for a in ("Ada", "Alan", "Grace", "Linus", "Barbara", "Edsger")
    for b in ("Lovelace", "Turing", "Hopper", "Torvalds", "Liskov", "Dijkstra")
]
_LANGS = ("en", "en", "en", "de", "fr", "es", "ja")
_SECTIONS = ("guide", "reference", "howto", "faq", "changelog", "tutorial", "api", "blog")


def vocabulary(size: int = VOCABULARY, seed: int = SEED) -> list[str]:
    """Return `size` distinct pseudo-words, shortest (most frequent under Zipf) first."""
    rng = np.random.default_rng(seed)
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    words: set[str] = set()
    out: list[str] = []
    while len(out) < size:
        n = int(rng.choice([2, 3, 3, 4]))
        word = "".join(syllables[i] for i in rng.integers(0, len(syllables), n))
        if word not in words:
            words.add(word)
            out.append(word)
    out.sort(key=len)
    return out


def cluster_centers(clusters: int, dim: int, seed: int = SEED) -> np.ndarray:
    """Return unit-length cluster centres."""
    rng = np.random.default_rng([seed, dim, clusters])
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    return centers


def clustered_vectors(
    n: int, centers: np.ndarray, seed: int, *, spread: tuple[float, float] = (0.6, 1.2)
) -> tuple[np.ndarray, np.ndarray]:
    """Return (unit vectors, cluster ids): each a centre plus noise of a per-cluster spread."""
    rng = np.random.default_rng(seed)
    clusters, dim = centers.shape
    # Cluster sizes vary: a Zipf-like weight per cluster, as topics do in real collections.
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.5
    weights /= weights.sum()
    assign = rng.choice(clusters, size=n, p=weights)
    sigma = np.random.default_rng([SEED, clusters]).uniform(*spread, clusters).astype(np.float32)
    noise = rng.standard_normal((n, dim), dtype=np.float32)
    vectors = centers[assign] + noise * (sigma[assign, None] / np.sqrt(dim, dtype=np.float32))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), assign


@dataclass
class Dataset:
    """One synthetic collection, columnar; row i of every field belongs together."""

    name: str
    vectors: np.ndarray
    titles: list[str]
    contents: list[str]
    metas: list[dict[str, Any]]
    created_at: list[datetime]
    word_ids: list[np.ndarray] = field(repr=False)
    bands: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.titles)

    @property
    def dim(self) -> int:
        """Return the vector dimension."""
        return int(self.vectors.shape[1])

    def source(self, i: int) -> str:
        """Return the source of row i (ten chunks per source)."""
        return f"synthetic/{self.name}/{i // 10:07d}.txt"

    def chunk_index(self, i: int) -> int:
        """Return the chunk index of row i within its source."""
        return i % 10

    @cached_property
    def meta_json(self) -> list[str]:
        """Return each row's metadata as compact JSON text."""
        return [json.dumps(m, separators=(",", ":")) for m in self.metas]

    @cached_property
    def hashes(self) -> list[str]:
        """Return each row's content SHA-256 (hex)."""
        return [hashlib.sha256(c.encode()).hexdigest() for c in self.contents]

    def slice(self, n: int, name: str | None = None) -> Dataset:
        """Return the first n rows as a dataset of their own."""
        return Dataset(
            name=name or self.name,
            vectors=self.vectors[:n],
            titles=self.titles[:n],
            contents=self.contents[:n],
            metas=self.metas[:n],
            created_at=self.created_at[:n],
            word_ids=self.word_ids[:n],
            bands=self.bands[:n],
        )

    def band_mask(self, band: str) -> np.ndarray:
        """Return the rows whose metadata `band` equals `band`."""
        return np.asarray(self.bands == band)

    def document_frequency(self, vocab_size: int = VOCABULARY) -> np.ndarray:
        """Return, per word id, how many documents contain it."""
        df = np.zeros(vocab_size, dtype=np.int64)
        for ids in self.word_ids:
            df[np.unique(ids)] += 1
        return df


def make_dataset(
    name: str,
    n: int,
    *,
    centers: np.ndarray,
    seed: int,
    words: list[str] | None = None,
) -> Dataset:
    """Generate n deterministic documents for collection `name`."""
    words = words or vocabulary()
    rng = np.random.default_rng([SEED, seed])
    vectors, assign = clustered_vectors(n, centers, seed=seed)
    ranks = np.arange(1, len(words) + 1, dtype=np.float64)
    probs = ranks**-ZIPF_EXPONENT
    probs /= probs.sum()
    lengths = rng.integers(WORDS_PER_DOC[0], WORDS_PER_DOC[1], size=n)
    flat = rng.choice(len(words), size=int(lengths.sum()), p=probs)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    word_arr = np.asarray(words, dtype=object)
    word_ids = [flat[bounds[i] : bounds[i + 1]] for i in range(n)]
    contents = []
    for i in range(n):
        ws = word_arr[word_ids[i]]
        # Sentences of ~12 words, so the text reads like prose to a tokenizer.
        sentences = [" ".join(ws[j : j + 12]).capitalize() + "." for j in range(0, len(ws), 12)]
        contents.append(" ".join(sentences))
    # Exact band sizes, spread at random: a filter of selectivity s matches round(s * n) rows.
    bands = np.full(n, "rest", dtype=object)
    order = rng.permutation(n)
    start = 0
    for band, share in BANDS.items():
        count = max(1, round(share * n))
        bands[order[start : start + count]] = band
        start += count
    offsets = np.sort(rng.integers(0, SPAN_SECONDS, size=n))
    # About 2 % of rows share their timestamp with a neighbour: keyset paging must break ties.
    ties = rng.random(n) < 0.02
    offsets[1:][ties[1:]] = offsets[:-1][ties[1:]]
    order_in_time = rng.permutation(n)  # rows arrive out of time order
    created = [EPOCH + timedelta(seconds=int(offsets[j])) for j in order_in_time]
    authors = rng.integers(0, len(_AUTHORS), n)
    langs = rng.integers(0, len(_LANGS), n)
    sections = rng.integers(0, len(_SECTIONS), n)
    revs = rng.integers(1, 50, n)
    tag_ids = rng.choice(len(words) // 10, size=(n, 2), p=None)
    metas: list[dict[str, Any]] = []
    titles: list[str] = []
    for i in range(n):
        slug = f"{words[int(tag_ids[i, 0]) + 50]}-{words[int(tag_ids[i, 1]) + 80]}"
        metas.append(
            {
                "seq": i,
                "band": str(bands[i]),
                "author": _AUTHORS[int(authors[i])],
                "lang": _LANGS[int(langs[i])],
                "year": created[i].year,
                "cluster": int(assign[i]),
                "rev": int(revs[i]),
                "tags": [words[int(tag_ids[i, 0])], words[int(tag_ids[i, 1])]],
                "url": f"https://docs.example.org/{_SECTIONS[int(sections[i])]}/{slug}",
            }
        )
        titles.append(f"{name} {i}: " + " ".join(word_arr[word_ids[i][:4]]).capitalize())
    return Dataset(
        name=name,
        vectors=vectors,
        titles=titles,
        contents=contents,
        metas=metas,
        created_at=created,
        word_ids=word_ids,
        bands=bands,
    )


def make_queries(n: int, centers: np.ndarray, seed: int) -> np.ndarray:
    """Return n query vectors from the same mixture as the data, but not in it."""
    vectors, _ = clustered_vectors(n, centers, seed=seed + 7_919)
    return vectors


def pick_terms(
    df: np.ndarray, words: list[str], rows: int, per_bucket: int
) -> dict[str, list[tuple[str, int]]]:
    """Return query terms bucketed by document frequency: rare, medium and common."""
    frac = df / max(rows, 1)
    buckets = {
        "rare": (frac > 0) & (df >= 2) & (frac <= 0.002),
        "medium": (frac >= 0.005) & (frac <= 0.03),
        "common": frac >= 0.2,
    }
    out: dict[str, list[tuple[str, int]]] = {}
    for name, mask in buckets.items():
        ids = np.flatnonzero(mask)
        if len(ids) > per_bucket:
            # Evenly spaced over the bucket, so it spans its range of frequencies.
            ids = ids[np.linspace(0, len(ids) - 1, per_bucket).astype(int)]
        out[name] = [(words[int(i)], int(df[int(i)])) for i in ids]
    return out
