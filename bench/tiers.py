"""Benchmark tiers: how much data each scenario uses and how often it repeats."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Tier:
    """Sizes and repetition counts of one benchmark tier."""

    name: str
    rows: int  # documents in the main synthetic collection
    dim: int
    wide_dim: int
    clusters: int
    ingest_rows: int  # rows per timed ingest round (384 dims)
    ingest_rows_wide: int  # rows per timed ingest round (1536 dims)
    orm_rows: int  # rows the ORM ingests (the same as the others: table size changes the rate)
    ingest_rounds: int
    queries: int  # distinct query vectors per latency measurement
    repeats: int  # timed passes over the queries; the median pass is reported
    ef_search: tuple[int, ...]
    page_size: int
    browse_depths: tuple[int, ...]
    qps_queries: int  # queries per client in the throughput measurement
    corpus_chunks: int  # real-text chunks embedded with the local model (cached)
    corpus_queries: int
    embed_chunks: int  # chunks per embedding-throughput measurement
    competitors: bool
    embed_all: bool = True  # every embedding set-up, or only the default and the candidate


TIERS: dict[str, Tier] = {
    "S": Tier(
        name="S",
        rows=3_000,
        dim=384,
        wide_dim=1536,
        clusters=30,
        ingest_rows=2_000,
        ingest_rows_wide=500,
        orm_rows=500,
        ingest_rounds=1,
        queries=30,
        repeats=2,
        ef_search=(40,),
        page_size=50,
        browse_depths=(0, 1_000),
        qps_queries=20,
        corpus_chunks=40,
        corpus_queries=10,
        embed_chunks=16,
        competitors=True,
        embed_all=False,
    ),
    "M": Tier(
        name="M",
        rows=100_000,
        dim=384,
        wide_dim=1536,
        clusters=300,
        ingest_rows=20_000,
        ingest_rows_wide=5_000,
        orm_rows=20_000,
        ingest_rounds=3,
        queries=200,
        repeats=3,
        ef_search=(40, 64, 100, 200),
        page_size=50,
        browse_depths=(0, 1_000, 10_000, 100_000),
        qps_queries=100,
        corpus_chunks=2_000,
        corpus_queries=100,
        # 160 chunks: 3 passes of 11 set-ups took 5.3 min at 256, a quarter of the tier, and
        # the slowest set-up still runs ~10 s a pass at 160.
        embed_chunks=160,
        competitors=True,
    ),
    "L": Tier(
        name="L",
        rows=1_000_000,
        dim=384,
        wide_dim=1536,
        clusters=1_000,
        ingest_rows=100_000,
        ingest_rows_wide=20_000,
        orm_rows=100_000,
        ingest_rounds=3,
        queries=300,
        repeats=3,
        ef_search=(40, 64, 100, 200),
        page_size=50,
        browse_depths=(0, 1_000, 10_000, 100_000, 1_000_000),
        qps_queries=300,
        corpus_chunks=4_000,
        corpus_queries=200,
        embed_chunks=512,
        competitors=True,
    ),
}

# The same graph parameters for every HNSW engine (kb's defaults).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
K = 10
# Selectivities of the filtered scenario, as fractions of the main collection.
SELECTIVITIES = (0.30, 0.05, 0.01, 0.001)
# kb's default local model: the real-text tier's collection records it.
LOCAL_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
