"""State shared by the scenarios of one run: tier, data, databases, and a log line printer."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.engine import URL

import kb
from bench import data
from bench.data import Dataset
from bench.pg import Databases
from bench.tiers import SELECTIVITIES, Tier


@dataclass
class Context:
    """Everything a scenario needs; datasets are generated once per run."""

    tier: Tier
    dbs: Databases
    competitors: list[str] | None
    quiet: bool = False
    started: float = field(default_factory=time.perf_counter)
    words: list[str] = field(default_factory=list)
    centers: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    main: Dataset | None = None
    by_collection: dict[float, Dataset] = field(default_factory=dict)
    queries: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    url: URL | None = None
    db: kb.Database | None = None
    notes: list[str] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict)

    def log(self, message: str) -> None:
        """Print a progress line with the time since the run started."""
        if not self.quiet:
            elapsed = time.perf_counter() - self.started
            print(f"[{elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)

    def generate(self) -> None:
        """Generate the synthetic collections and queries (deterministic)."""
        t = self.tier
        self.words = data.vocabulary()
        self.centers = data.cluster_centers(t.clusters, t.dim)
        self.main = data.make_dataset(
            "main", t.rows, centers=self.centers, seed=1, words=self.words
        )
        for i, share in enumerate(SELECTIVITIES):
            name = f"coll_{data.BAND_FOR[share]}"
            self.by_collection[share] = data.make_dataset(
                name,
                max(1, round(share * t.rows)),
                centers=self.centers,
                seed=10 + i,
                words=self.words,
            )
        self.queries = data.make_queries(t.queries, self.centers, seed=2)

    @property
    def kb_db(self) -> kb.Database:
        """Return the kb handle on the main database."""
        assert self.db is not None, "the main database is not loaded"
        return self.db

    @property
    def main_ds(self) -> Dataset:
        """Return the main synthetic collection."""
        assert self.main is not None
        return self.main
