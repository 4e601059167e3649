"""In-process engines a user could pick instead: numpy, hnswlib, chromadb, lancedb, qdrant-client.

Each loads a synthetic dataset (text and metadata too, where the engine stores them) and answers
top-k queries with row numbers, so recall is checked against the same exact top-k as kb.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import tempfile
import time
from typing import Any

import numpy as np

from bench.data import Dataset
from bench.tiers import HNSW_EF_CONSTRUCTION, HNSW_M


def available(module: str) -> bool:
    """Tell whether a library is installed (the `bench` extra brings the competitors)."""
    return importlib.util.find_spec(module) is not None


class Engine:
    """One engine's load and query; subclasses fill in the three methods."""

    name = "engine"
    supports_ef = False
    exhaustive = False  # scans every row per query (no index)
    stores_text = True
    note = ""

    def load(self, ds: Dataset) -> dict[str, float]:
        """Load the dataset and build whatever makes it searchable; return the timings."""
        raise NotImplementedError

    def set_ef(self, ef: int) -> None:
        """Set the HNSW search breadth for the following queries."""

    def query(self, vec: np.ndarray, k: int) -> list[int]:
        """Return the row numbers of the top-k most similar rows."""
        raise NotImplementedError

    def close(self) -> None:
        """Release files and memory."""


class NumpyExact(Engine):
    """Brute force: one matrix-vector product and a partial sort (exact, the recall reference)."""

    name = "numpy exact"
    stores_text = False
    exhaustive = True

    def load(self, ds: Dataset) -> dict[str, float]:
        start = time.perf_counter()
        self.data = np.ascontiguousarray(ds.vectors, dtype=np.float32)
        elapsed = time.perf_counter() - start
        return {"load_s": elapsed, "index_s": 0.0, "searchable_s": elapsed}

    def query(self, vec: np.ndarray, k: int) -> list[int]:
        scores = self.data @ vec
        kk = min(k, len(scores))
        part = np.argpartition(-scores, kk - 1)[:kk]
        return [int(i) for i in part[np.argsort(-scores[part], kind="stable")]]


class Hnswlib(Engine):
    """hnswlib in process: the ceiling for HNSW latency (vectors only, no text or metadata)."""

    name = "hnswlib"
    supports_ef = True
    stores_text = False

    def __init__(self, threads: int = 2) -> None:
        self.threads = threads

    def load(self, ds: Dataset) -> dict[str, float]:
        import hnswlib

        start = time.perf_counter()
        self.index = hnswlib.Index(space="cosine", dim=ds.dim)
        self.index.init_index(
            max_elements=len(ds), M=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION, random_seed=100
        )
        self.index.add_items(ds.vectors, np.arange(len(ds)), num_threads=self.threads)
        elapsed = time.perf_counter() - start
        return {"load_s": elapsed, "index_s": 0.0, "searchable_s": elapsed}

    def set_ef(self, ef: int) -> None:
        self.index.set_ef(ef)

    def query(self, vec: np.ndarray, k: int) -> list[int]:
        labels, _ = self.index.knn_query(vec, k=k, num_threads=1)
        return [int(i) for i in labels[0]]


class Chroma(Engine):
    """chromadb's local persistent client (HNSW built while adding)."""

    name = "chromadb"
    # ef_search is set at creation: collection.modify() stores a new value but, in chromadb
    # 1.5, the index already loaded in the process keeps searching with the old one.
    supports_ef = False
    note = "ef_search fixed at creation (64, kb's default)"
    EF = 64

    def load(self, ds: Dataset) -> dict[str, float]:
        import chromadb
        from chromadb.config import Settings

        self.dir = tempfile.mkdtemp(prefix="kbb-chroma")
        self.client = chromadb.PersistentClient(
            path=self.dir, settings=Settings(anonymized_telemetry=False, allow_reset=True)
        )
        start = time.perf_counter()
        self.coll = self.client.create_collection(
            "bench",
            embedding_function=None,
            configuration={
                "hnsw": {
                    "space": "cosine",
                    "max_neighbors": HNSW_M,
                    "ef_construction": HNSW_EF_CONSTRUCTION,
                    "ef_search": self.EF,
                }
            },
        )
        batch = min(5_000, self.client.get_max_batch_size())
        for s in range(0, len(ds), batch):
            e = min(s + batch, len(ds))
            metas = []
            for m in ds.metas[s:e]:
                # Chroma metadata values are scalars: the tag list travels as one string.
                flat = {k: v for k, v in m.items() if k != "tags"}
                flat["tags"] = ",".join(m["tags"])
                metas.append(flat)
            self.coll.add(
                ids=[str(i) for i in range(s, e)],
                embeddings=ds.vectors[s:e],
                documents=ds.contents[s:e],
                metadatas=metas,
            )
        elapsed = time.perf_counter() - start
        return {"load_s": elapsed, "index_s": 0.0, "searchable_s": elapsed}

    def query(self, vec: np.ndarray, k: int) -> list[int]:
        res = self.coll.query(query_embeddings=[vec], n_results=k, include=[])
        return [int(i) for i in res["ids"][0]]

    def close(self) -> None:
        # Best effort: the files are removed next anyway.
        with contextlib.suppress(Exception):
            self.client.reset()
        shutil.rmtree(self.dir, ignore_errors=True)


class Lance(Engine):
    """lancedb on local files: one table, then an HNSW index (IVF_HNSW_FLAT with one partition)."""

    name = "lancedb"
    supports_ef = True
    note = "IVF_HNSW_FLAT, 1 partition"

    def load(self, ds: Dataset) -> dict[str, float]:
        import lancedb
        import pyarrow as pa

        self.dir = tempfile.mkdtemp(prefix="kbb-lance")
        self.db = lancedb.connect(self.dir)
        start = time.perf_counter()
        flat = pa.array(ds.vectors.reshape(-1), type=pa.float32())
        table = pa.table(
            {
                "seq": pa.array(np.arange(len(ds)), type=pa.int64()),
                "title": ds.titles,
                "content": ds.contents,
                "metadata": ds.meta_json,
                "created_at": pa.array(ds.created_at, type=pa.timestamp("us", tz="UTC")),
                "vector": pa.FixedSizeListArray.from_arrays(flat, ds.dim),
            }
        )
        self.table = self.db.create_table("bench", data=table)
        loaded = time.perf_counter()
        self.table.create_index(
            metric="cosine",
            vector_column_name="vector",
            index_type="IVF_HNSW_FLAT",
            num_partitions=1,
            m=HNSW_M,
            ef_construction=HNSW_EF_CONSTRUCTION,
        )
        done = time.perf_counter()
        self.ef = 40
        return {"load_s": loaded - start, "index_s": done - loaded, "searchable_s": done - start}

    def set_ef(self, ef: int) -> None:
        self.ef = ef

    def query(self, vec: np.ndarray, k: int) -> list[int]:
        res = (
            self.table.search(vec, vector_column_name="vector")
            .distance_type("cosine")
            .ef(self.ef)
            .limit(k)
            .select(["seq", "_distance"])
            .to_arrow()
        )
        return [int(i) for i in res.column("seq").to_pylist()]

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class Qdrant(Engine):
    """qdrant-client's local mode (in memory, brute force: it has no HNSW without a server)."""

    name = "qdrant local"
    note = "local mode is exact (no HNSW)"
    exhaustive = True

    def load(self, ds: Dataset) -> dict[str, float]:
        from qdrant_client import QdrantClient, models

        self.client = QdrantClient(":memory:")
        start = time.perf_counter()
        self.client.create_collection(
            "bench",
            vectors_config=models.VectorParams(size=ds.dim, distance=models.Distance.COSINE),
            hnsw_config=models.HnswConfigDiff(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCTION),
        )
        batch = 2_000
        for s in range(0, len(ds), batch):
            e = min(s + batch, len(ds))
            self.client.upsert(
                "bench",
                points=models.Batch(
                    ids=list(range(s, e)),
                    vectors=ds.vectors[s:e].tolist(),
                    payloads=[
                        {"title": ds.titles[i], "content": ds.contents[i], **ds.metas[i]}
                        for i in range(s, e)
                    ],
                ),
                wait=True,
            )
        elapsed = time.perf_counter() - start
        return {"load_s": elapsed, "index_s": 0.0, "searchable_s": elapsed}

    def query(self, vec: np.ndarray, k: int) -> list[int]:
        res = self.client.query_points("bench", query=vec.tolist(), limit=k, with_payload=False)
        return [int(p.id) for p in res.points]

    def close(self) -> None:
        self.client.close()


COMPETITORS: dict[str, tuple[str, type[Engine]]] = {
    "hnswlib": ("hnswlib", Hnswlib),
    "chromadb": ("chromadb", Chroma),
    "lancedb": ("lancedb", Lance),
    "qdrant": ("qdrant_client", Qdrant),
}


def competitors(names: list[str] | None = None) -> tuple[list[Engine], dict[str, str]]:
    """Return the installed competitor engines, and why each missing one is missing."""
    engines: list[Engine] = []
    missing: dict[str, str] = {}
    for key, (module, cls) in COMPETITORS.items():
        if names is not None and key not in names:
            continue
        if available(module):
            engines.append(cls())
        else:
            missing[key] = f"not installed (pip install -e '.[bench]' brings {module})"
    return engines, missing


def describe(engine: Engine) -> dict[str, Any]:
    """Return what the report says about an engine besides its numbers."""
    return {"stores_text": engine.stores_text, "ef_search": engine.supports_ef, "note": engine.note}
