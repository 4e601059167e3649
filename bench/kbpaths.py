"""kb's own paths as the benchmark drives them, and the same SQL replayed on raw asyncpg.

Everything the harness calls in kb goes through here, so a change of kb's API is one edit.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np

import kb
from bench.data import Dataset
from bench.tiers import LOCAL_MODEL
from kb.browse import browse
from kb.filters import Filters
from kb.search import execute_request, make_request, run_search
from kb.statements import positional


class Precomputed:
    """An Embedder that returns vectors given in advance, looked up by text.

    It lets the benchmark drive kb's whole ingest pipeline (chunking, planning, the COPY batch
    writer, the index) with no model time in the way.
    """

    def __init__(self, ds: Dataset, *, kind: str = "hashing") -> None:
        self.kind = kind
        self.metric = "cosine"
        self.dimension = ds.dim
        self.model = f"feature-hashing-{ds.dim}" if kind == "hashing" else LOCAL_MODEL
        # Keyed by the words alone: kb's cleaning may change whitespace.
        self._by_text = {_key(text): ds.vectors[i] for i, text in enumerate(ds.contents)}

    def embed(self, texts: Any) -> np.ndarray:
        """Return the stored vector of each text."""
        return np.stack([self._by_text[_key(t)] for t in texts])


def _key(text: str) -> str:
    return " ".join(text.split())


def ingest_api() -> Any:
    """Return kb's bulk writer of rows with vectors (kb.ingest.writer) if this kb has one."""
    try:
        from kb.ingest import writer
    except ImportError:
        return None
    return writer if hasattr(writer, "write_rows") else None


class _IndexClock:
    """Time kb's index build and its ef_search measurement inside a kb call, so load, index
    and calibration times are reported apart (a collection reaching 20,000 documents is
    calibrated at the end of the ingest that got it there, see kb.calibration). The count of
    the collection's common words (kb.terms), the merge of its GIN indexes' pending entries and
    the refresh of the planner's statistics (kb.ingest.upkeep), like the index, ready the
    collection for fast searches after the load: they count as index time."""

    def __enter__(self) -> _IndexClock:
        from kb import calibration, terms
        from kb.ingest import indexing, upkeep

        self.seconds = 0.0
        self.calibrate_seconds = 0.0
        self.patched = [
            (indexing, "ensure_index", indexing.ensure_index, "seconds"),
            (calibration, "calibrate_if_due", calibration.calibrate_if_due, "calibrate_seconds"),
            (terms, "count_terms_if_due", terms.count_terms_if_due, "seconds"),
            (upkeep, "merge_pending", upkeep.merge_pending, "seconds"),
            (upkeep, "refresh_statistics", upkeep.refresh_statistics, "seconds"),
        ]
        for module, name, original, counter in self.patched:
            setattr(module, name, self._timed(original, counter))
        return self

    def _timed(self, original: Any, counter: str) -> Any:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                setattr(self, counter, getattr(self, counter) + time.perf_counter() - start)

        return timed

    def __exit__(self, *exc: object) -> None:
        for module, name, original, _ in self.patched:
            setattr(module, name, original)


async def kb_write_rows(
    db: kb.Database, ds: Dataset, name: str, *, embedder: str = "hashing"
) -> dict[str, float]:
    """Store rows with their vectors through kb's batch writer (write_rows); return timings.

    kb's defaults throughout: batch size, and the index dropped for a bulk load into an empty
    collection and built at the end (inside the call).
    """
    writer = ingest_api()
    if writer is None:
        raise NotImplementedError("kb has no kb.ingest.writer.write_rows")
    start = time.perf_counter()
    await create_collection(db, name, ds.dim, embedder)
    rows = [
        writer.Row(
            source=ds.source(i),
            chunk_index=ds.chunk_index(i),
            title=ds.titles[i],
            content=ds.contents[i],
            metadata=ds.metas[i],
            embedding=ds.vectors[i],
            created_at=ds.created_at[i],
        )
        for i in range(len(ds))
    ]
    with _IndexClock() as clock:
        written = await writer.write_rows(db, name, rows)
    elapsed = time.perf_counter() - start - clock.calibrate_seconds
    if written != len(ds):
        raise RuntimeError(f"kb wrote {written} of {len(ds)} rows")
    return {
        "rows": len(ds),
        "load_s": elapsed - clock.seconds,
        "index_s": clock.seconds,
        "searchable_s": elapsed,
        "calibrate_s": clock.calibrate_seconds,
    }


async def kb_ingest_documents(
    db: kb.Database, ds: Dataset, name: str, *, embedder: str = "hashing"
) -> dict[str, float]:
    """Ingest the rows as documents through kb's text pipeline (read, chunk, plan, embed,
    write), the embedder returning the precomputed vectors; return the timings.

    One document per row, kept whole, with kb's default batch size and index policy; the
    index is built inside the call.
    """
    from kb.ingest import SourceDocument, ingest_documents

    docs = [
        SourceDocument.from_text(
            f"{ds.source(i)}#{ds.chunk_index(i)}",
            ds.contents[i],
            title=ds.titles[i],
            metadata=ds.metas[i],
        )
        for i in range(len(ds))
    ]
    start = time.perf_counter()
    with _IndexClock() as clock:
        report = await ingest_documents(
            db,
            docs,
            collection=name,
            embedder=Precomputed(ds, kind=embedder),
            # kb's chunker may split a text near its size limit: twice the longest text keeps
            # every row whole.
            chunk_size=2 * max(len(c) for c in ds.contents) + 2,
            chunk_overlap=0,
        )
    elapsed = time.perf_counter() - start - clock.calibrate_seconds
    if report.chunks_added != len(ds):
        raise RuntimeError(f"kb ingested {report.chunks_added} of {len(ds)} rows")
    # The report's index time includes the ef_search measurement and the word count.
    index = float(report.index_seconds) - clock.calibrate_seconds
    return {
        "rows": len(ds),
        "load_s": elapsed - index,
        "index_s": index,
        "searchable_s": elapsed,
        "calibrate_s": clock.calibrate_seconds,
        "write_s": float(report.write_seconds),
        "batches": float(report.batches),
        "index_deferred": float(report.index_deferred),
    }


async def create_collection(db: kb.Database, name: str, dim: int, embedder: str) -> int:
    """Create a collection (and its empty HNSW index) through kb; return its id.

    `embedder` is "hashing" for synthetic vectors (any query vector fits) or "local" for the
    real-text tier embedded with the default model.
    """
    kind = "hashing" if embedder == "hashing" else "local"
    model = f"feature-hashing-{dim}" if kind == "hashing" else LOCAL_MODEL
    async with db.session() as s:
        coll = await kb.create_collection(s, name, embedder=kind, model=model, dimension=dim)
        return int(coll.id)


async def seq_map(conn: asyncpg.Connection, collection: str) -> dict[uuid.UUID, int]:
    """Return document id -> the row number the generator gave it (metadata.seq)."""
    rows = await conn.fetch(
        "SELECT d.id, (d.metadata->>'seq')::int AS seq FROM documents d "
        "JOIN collections c ON c.id = d.collection_id WHERE c.name = $1",
        collection,
    )
    return {uuid.UUID(int=r["id"].int): int(r["seq"]) for r in rows}


@dataclass
class Search:
    """One kind of kb search with fixed options, run on many query vectors."""

    db: kb.Database
    collection: str
    k: int = 10
    ef_search: int | None = None
    filters: Filters | None = None
    exact: bool = False
    mode: str = "vector"

    def request(self, vector: np.ndarray | None, text: str | None = None) -> Any:
        """Return kb's SearchRequest for one query."""
        opts: dict[str, Any] = {"k": self.k, "exact": self.exact}
        if self.ef_search is not None:
            opts["ef_search"] = self.ef_search
        if self.filters is not None:
            opts["filters"] = self.filters
        return make_request(text, collection=self.collection, mode=self.mode, vector=vector, **opts)

    async def run(self, vector: np.ndarray | None, text: str | None = None) -> Any:
        """Run one search through kb (a session of its own, as an app request would)."""
        async with self.db.session() as s:
            return await run_search(s, self.request(vector, text))

    async def compiled(self, vector: np.ndarray | None, text: str | None = None) -> Any:
        """Return the SQL, parameters and settings kb runs for this search, as kb plans it
        (a filtered search's path depends on the filter, not on the query vector)."""
        async with self.db.session() as s:
            executed = await execute_request(s, self.request(vector, text), fallback=False)
            return executed.query


async def default_ef_search(db: kb.Database, collection: str) -> tuple[int, dict[str, Any]]:
    """Return the ef_search kb's searches of a collection start from, and its measurement."""
    from kb.browse import collection_ef
    from kb.search import DEFAULT_EF_SEARCH

    async with db.session() as s:
        settings = dict((await kb.get_collection(s, collection)).settings or {})
    return collection_ef(settings) or DEFAULT_EF_SEARCH, settings.get("calibration") or {}


async def kb_page(db: kb.Database, collection: str, limit: int, after: str | None) -> Any:
    """Return one browse page through kb."""
    async with db.session() as s:
        return await browse(s, collection, limit=limit, after=after)


def cursor_at(collection_id: int, created_at: Any, doc_id: uuid.UUID) -> str:
    """Return kb's cursor for the position just after a row (newest-first order)."""
    from kb.cursor import Position, encode_cursor

    return encode_cursor(
        Position(collection_id=collection_id, order="newest", created_at=created_at, id=doc_id)
    )


class RawSQL:
    """kb's compiled statement replayed on a raw asyncpg connection, vector sent binary."""

    def __init__(self, compiled: Any) -> None:
        # The same numbering kb applies when it runs the statement itself.
        self.sql, self.names = positional(compiled.sql)
        self.params = dict(compiled.params)
        # SET LOCAL of the same settings kb applies with set_config(..., true).
        self.setup = "; ".join(
            f"SET LOCAL {name} = '{value}'" for name, value in compiled.settings.items()
        )

    async def run(
        self, conn: asyncpg.Connection, vector: np.ndarray | None, text: str | None = None
    ) -> list[asyncpg.Record]:
        """Run the statement for one query vector (and query text) in its own transaction."""
        args = []
        for name in self.names:
            if name == "q":
                args.append(np.ascontiguousarray(vector, dtype=np.float32))
            elif name == "text":
                args.append(text)
            else:
                args.append(self.params[name])
        async with conn.transaction():
            if self.setup:
                await conn.execute(self.setup)
            return await conn.fetch(self.sql, *args)
