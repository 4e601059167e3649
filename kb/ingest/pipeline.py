"""The ingest pipeline: read and chunk, skip what is stored, embed, write atomic batches.

Three stages overlap: a reader task reads and chunks files in a worker thread ahead of the
rest; the main loop plans each batch (which chunks are new, which embeddings can be reused)
and embeds it in a worker thread; a writer task commits the previous batch meanwhile. Each
batch is one transaction, so an interrupted ingest leaves whole batches only, and running it
again writes just what is missing.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy.exc import DBAPIError

from kb.collections import ensure_collection, get_collection
from kb.config import Settings
from kb.database import Database
from kb.db import translating
from kb.embedders import Embedder, aembed_texts, check_compatible, embedder_for, make_embedder
from kb.errors import CollectionNotFound, InvalidInput, KBError, ReadOnlyError
from kb.ingest import indexing, upkeep, writer
from kb.ingest.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, check_options, chunk_text
from kb.ingest.cleaning import clean_json, clean_text
from kb.ingest.discover import FileEntry, discover
from kb.ingest.documents import FileWarning, SkippedFile, SourceDocument
from kb.ingest.readers import read_entry
from kb.ingest.report import IngestError, IngestProgress, IngestReport
from kb.models import Collection, content_hash

DEFAULT_BATCH_SIZE = 256
MAX_BATCH_SIZE = 10_000
# Documents read ahead of the embedder: enough to keep it busy, bounded to cap memory.
_READ_AHEAD = 64
# Small documents are read and chunked several to a worker-thread hop: a hop per document
# cost more than chunking a short one.
_GROUP_ITEMS = 32
_GROUP_BYTES = 256_000

ProgressCallback = Callable[[IngestProgress], object]
PathLike = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class _Collection:
    id: int
    name: str
    dimension: int
    metric: str


@dataclass(slots=True)
class _Item:
    """A unit of work for the reader: a file to read, or a document already in memory."""

    size: int
    entry: FileEntry | None = None
    document: SourceDocument | None = None


@dataclass(slots=True)
class _Prepared:
    document: SourceDocument
    rows: list[writer.ChunkRow]


@dataclass(slots=True)
class _Batch:
    rows: list[writer.ChunkRow] = field(default_factory=list)
    ends: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Planned:
    batch: _Batch
    rows: list[writer.ChunkRow]
    old_hashes: list[str | None]
    vectors: np.ndarray
    duplicates: int
    stored_hashes: frozenset[str]


@dataclass(slots=True)
class _ReaderFailed:
    error: BaseException


def _groups(items: Sequence[_Item]) -> Iterator[list[_Item]]:
    """Yield consecutive items in groups of at most _GROUP_ITEMS and about _GROUP_BYTES."""
    group: list[_Item] = []
    size = 0
    for item in items:
        if group and (len(group) >= _GROUP_ITEMS or size + item.size > _GROUP_BYTES):
            yield group
            group, size = [], 0
        group.append(item)
        size += item.size
    if group:
        yield group


def _as_list(value: Sequence[str] | str | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [v for v in value if v]


def _as_paths(paths: PathLike | Iterable[PathLike]) -> list[PathLike]:
    if isinstance(paths, str | os.PathLike):
        return [paths]
    return list(paths)


def chunk_rows(
    document: SourceDocument, *, chunk_size: int, chunk_overlap: int
) -> list[writer.ChunkRow]:
    """Chunk every section of a document into rows numbered from 0 across the document."""
    rows: list[writer.ChunkRow] = []
    source = clean_text(document.source)[0]
    doc_title = clean_text(document.title)[0].strip() or source
    for section in document.sections:
        meta = clean_json({**document.metadata, **section.metadata})
        title = clean_text(section.title)[0].strip() if section.title else doc_title
        for chunk in chunk_text(section.text, size=chunk_size, overlap=chunk_overlap):
            content = clean_text(chunk)[0]
            rows.append(
                writer.ChunkRow(
                    source=source,
                    chunk_index=len(rows),
                    title=title,
                    content=content,
                    metadata=meta,
                    content_hash=content_hash(content),
                )
            )
    return rows


class _Run:
    """One ingest: its settings, counters, and the three overlapping stages."""

    def __init__(
        self,
        db: Database,
        collection: _Collection,
        embedder: Embedder,
        *,
        chunk_size: int,
        chunk_overlap: int,
        text_field: str | None,
        batch_size: int,
        progress: ProgressCallback | None,
        skipped: list[SkippedFile],
        files_total: int,
        bytes_total: int,
        index_deferred: bool,
    ) -> None:
        self.db = db
        self.collection = collection
        self.embedder = embedder
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.text_field = text_field
        self.batch_size = batch_size
        self.progress = progress
        self.skipped = skipped
        self.warnings: list[FileWarning] = []
        self.files_total = files_total
        self.bytes_total = bytes_total
        self.index_deferred = index_deferred
        self.started = time.perf_counter()
        self.stage = "reading"
        self.files_read = 0
        self.files_done = len(skipped)
        self.files_unchanged = 0
        self.bytes_read = 0
        self.rows_read = 0
        self.reading_done = False
        self.chunks_done = 0
        self.added = 0
        self.replaced = 0
        self.removed = 0
        self.meta_updated = 0
        self.duplicates = 0
        self.embedded = 0
        self.reused = 0
        self.nul_bytes = 0
        self.batches = 0
        self.embed_seconds = 0.0
        self.write_seconds = 0.0
        self.index_seconds = 0.0
        self._changed: set[str] = set()
        self._seen_sources: set[str] = set()
        self._queue: asyncio.Queue[_Prepared | SkippedFile | _ReaderFailed | None] = asyncio.Queue(
            maxsize=_READ_AHEAD
        )

    # -- progress and report ---------------------------------------------------------------

    def snapshot(self) -> IngestProgress:
        elapsed = time.perf_counter() - self.started
        rate = self.chunks_done / elapsed if elapsed > 0 else 0.0
        total: int | None = self.rows_read if self.reading_done else None
        eta: float | None = None
        if rate > 0:
            estimate: float | None = total
            if estimate is None and self.bytes_read:
                estimate = self.rows_read * max(self.bytes_total, 1) / self.bytes_read
            if estimate is not None:
                eta = max(0.0, (estimate - self.chunks_done) / rate)
        if self.stage == "done":
            eta = 0.0
        return IngestProgress(
            stage=self.stage,
            files_done=self.files_done,
            files_total=self.files_total,
            files_skipped=len(self.skipped),
            chunks_done=self.chunks_done,
            chunks_total=total,
            chunks_per_s=rate,
            eta_s=eta,
            elapsed_s=elapsed,
        )

    def emit(self, stage: str | None = None) -> None:
        if stage is not None:
            self.stage = stage
        if self.progress is not None:
            self.progress(self.snapshot())

    def report(self) -> IngestReport:
        return IngestReport(
            collection=self.collection.name,
            files_read=self.files_read,
            files_unchanged=self.files_unchanged,
            files_skipped=tuple(self.skipped),
            warnings=tuple(self.warnings),
            chunks_added=self.added,
            chunks_replaced=self.replaced,
            chunks_removed=self.removed,
            metadata_updated=self.meta_updated,
            duplicates_skipped=self.duplicates,
            chunks_embedded=self.embedded,
            embeddings_reused=self.reused,
            nul_bytes_removed=self.nul_bytes,
            batches=self.batches,
            seconds=time.perf_counter() - self.started,
            embed_seconds=self.embed_seconds,
            write_seconds=self.write_seconds,
            index_seconds=self.index_seconds,
            index_deferred=self.index_deferred,
        )

    # -- stage 1: read and chunk -----------------------------------------------------------

    def _prepare(self, item: _Item) -> _Prepared | SkippedFile:
        """Read (if needed) and chunk one item; runs in a worker thread."""
        if item.entry is not None:
            result = read_entry(item.entry, text_field=self.text_field)
            if isinstance(result, SkippedFile):
                return result
            document = result
        else:
            assert item.document is not None
            document = item.document
            if not isinstance(document.source, str) or not document.source.strip():
                return SkippedFile(str(document.source), "a document needs a non-empty source")
        rows = chunk_rows(document, chunk_size=self.chunk_size, chunk_overlap=self.chunk_overlap)
        if not rows:
            return SkippedFile(document.source, "no text")
        return _Prepared(document, rows)

    def _prepare_group(
        self, group: Sequence[_Item]
    ) -> tuple[list[_Prepared | SkippedFile], BaseException | None]:
        """Prepare items in order until one fails; runs in a worker thread."""
        done: list[_Prepared | SkippedFile] = []
        try:
            for item in group:
                done.append(self._prepare(item))
        except Exception as exc:
            return done, exc
        return done, None

    async def read_all(self, items: Sequence[_Item]) -> None:
        try:
            for group in _groups(items):
                prepared, failed = await asyncio.to_thread(self._prepare_group, group)
                for item, result in zip(group, prepared, strict=False):
                    self.bytes_read += item.size
                    if isinstance(result, _Prepared):
                        self.rows_read += len(result.rows)
                    await self._queue.put(result)
                if failed is not None:
                    raise failed
            self.reading_done = True
            await self._queue.put(None)
        except Exception as exc:  # surfaces in the main loop, which is waiting on the queue
            await self._queue.put(_ReaderFailed(exc))

    async def batch_stream(self) -> AsyncIterator[_Batch]:
        batch = _Batch()
        while True:
            item = await self._queue.get()
            if item is None:
                break
            if isinstance(item, _ReaderFailed):
                raise item.error
            if isinstance(item, SkippedFile):
                self.skipped.append(item)
                self.files_done += 1
                self.emit()
                continue
            document, rows = item.document, item.rows
            source = rows[0].source
            if source in self._seen_sources:
                self.skipped.append(SkippedFile(source, "the same source was given twice"))
                self.rows_read -= len(rows)
                self.files_done += 1
                continue
            self._seen_sources.add(source)
            self.files_read += 1
            self.nul_bytes += document.nul_bytes
            self.warnings.extend(FileWarning(source, w) for w in document.warnings)
            start = 0
            while start < len(rows):
                take = self.batch_size - len(batch.rows)
                batch.rows.extend(rows[start : start + take])
                start += take
                if start >= len(rows):
                    batch.ends[source] = len(rows)
                if len(batch.rows) >= self.batch_size:
                    yield batch
                    batch = _Batch()
        if batch.rows or batch.ends:
            yield batch

    # -- stage 2: plan and embed -----------------------------------------------------------

    async def plan(self, batch: _Batch) -> _Planned:
        cid = self.collection.id
        async with self.db.session() as s:
            stored = await writer.existing_chunks(
                s, cid, [(r.source, r.chunk_index) for r in batch.rows]
            )
            rows: list[writer.ChunkRow] = []
            old_hashes: list[str | None] = []
            duplicates = 0
            for r in batch.rows:
                old = stored.get((r.source, r.chunk_index))
                if old == writer.StoredChunk(r.content_hash, r.title, r.metadata):
                    duplicates += 1
                    continue
                rows.append(r)
                old_hashes.append(old.content_hash if old else None)
            wanted = sorted({r.content_hash for r in rows})
            known = await writer.stored_embeddings(s, cid, wanted)
        stored_hashes = frozenset(known)
        # Each distinct new text is embedded once, even when it repeats in the batch.
        missing = {r.content_hash: r.content for r in rows if r.content_hash not in known}
        if missing:
            started = time.perf_counter()
            vectors = await aembed_texts(self.embedder, list(missing.values()))
            self.embed_seconds += time.perf_counter() - started
            self.embedded += len(missing)
            known.update(zip(missing, vectors, strict=True))
        matrix = (
            np.stack([known[r.content_hash] for r in rows])
            if rows
            else np.zeros((0, self.collection.dimension), np.float32)
        )
        return _Planned(batch, rows, old_hashes, matrix, duplicates, stored_hashes)

    # -- stage 3: write ----------------------------------------------------------------------

    async def write(self, planned: _Planned) -> None:
        started = time.perf_counter()
        async with self.db.session() as s:
            result = await writer.write_batch(
                s, self.collection.id, planned.rows, planned.vectors, planned.batch.ends
            )
        self.write_seconds += time.perf_counter() - started
        self.batches += 1
        self.duplicates += planned.duplicates
        for row, old_hash in zip(planned.rows, planned.old_hashes, strict=True):
            key = (row.source, row.chunk_index)
            if key in result.updated and old_hash == row.content_hash:
                # The text was stored already; only its title or metadata were refreshed.
                self.duplicates += 1
                self.meta_updated += 1
                continue
            if key not in result.inserted and key not in result.updated:
                # Another ingest stored the same chunk between our plan and our write.
                self.duplicates += 1
                continue
            self.added += 1
            if key in result.updated:
                self.replaced += 1
            self._changed.add(row.source)
            if row.content_hash in planned.stored_hashes:
                self.reused += 1
        for source, count in result.removed.items():
            self.removed += count
            self._changed.add(source)
        for source in planned.batch.ends:
            self.files_done += 1
            if source not in self._changed:
                self.files_unchanged += 1
        self.chunks_done += len(planned.batch.rows)
        self.emit("embedding")

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, items: Sequence[_Item]) -> IngestReport:
        self.emit("reading")
        reader = asyncio.create_task(self.read_all(items))
        pending: asyncio.Task[None] | None = None
        try:
            async for batch in self.batch_stream():
                self.stage = "embedding"
                planned = await self.plan(batch)
                if pending is not None:
                    await pending
                pending = asyncio.create_task(self.write(planned))
            if pending is not None:
                await pending
                pending = None
        except asyncio.CancelledError:
            if pending is not None:
                pending.cancel()
                with suppress(BaseException):
                    await pending
            raise
        except Exception as exc:
            if pending is not None:
                # The batch in flight is whole: let it commit, then report the failure.
                with suppress(Exception):
                    await pending
            if self.index_deferred:
                # Searches on what was committed should not stay exact until the next ingest.
                with suppress(Exception):
                    await self.finish_index()
            raise self._failed(exc) from exc
        finally:
            reader.cancel()
            with suppress(BaseException):
                await reader
        await self.finish_index()
        self.emit("done")
        return self.report()

    def _failed(self, exc: BaseException) -> IngestError:
        report = self.report()
        cause = _describe(exc)
        return IngestError(
            f"Ingest into {self.collection.name!r} stopped: {cause} "
            f"({report.batches} batch(es) committed, {report.chunks_added} chunk(s) added). "
            "Committed batches are kept; run the same ingest again to finish it without "
            "duplicates.",
            report,
        )

    async def finish_index(self) -> None:
        self.emit("indexing")
        started = time.perf_counter()
        try:
            with translating(self.db.url):
                await indexing.ensure_index(
                    self.db, self.collection.id, self.collection.dimension, self.collection.metric
                )
        except Exception as exc:
            self.warnings.append(
                FileWarning(
                    f"collection {self.collection.name}",
                    f"the search index could not be built ({exc}); searches are exact (slower) "
                    "until the next ingest builds it",
                )
            )
            indexed = False
        else:
            indexed = True
        # `added` counts replaced chunks too: those rows were there before.
        new_rows = self.added - self.replaced
        problems = await upkeep.after_write(
            self.db, self.collection.id, indexed=indexed, added=new_rows
        )
        for problem in problems:
            self.warnings.append(FileWarning(f"collection {self.collection.name}", problem))
        self.index_seconds = time.perf_counter() - started


def _describe(exc: BaseException) -> str:
    """Say what went wrong in one line: a database error without its SQL, a kb error as is."""
    if isinstance(exc, KBError):
        return str(exc)
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        driver = orig.__cause__ if orig is not None and orig.__cause__ is not None else orig
        first = str(driver).strip().splitlines()[0] if str(driver).strip() else ""
        return f"the database refused a batch ({type(driver).__name__}: {first})"
    return f"{type(exc).__name__}: {exc}"


def _empty_report(collection: str, skipped: list[SkippedFile]) -> IngestReport:
    return IngestReport(
        collection=collection,
        files_read=0,
        files_unchanged=0,
        files_skipped=tuple(skipped),
        warnings=(),
        chunks_added=0,
        chunks_replaced=0,
        chunks_removed=0,
        metadata_updated=0,
        duplicates_skipped=0,
        chunks_embedded=0,
        embeddings_reused=0,
        nul_bytes_removed=0,
        batches=0,
        seconds=0.0,
        embed_seconds=0.0,
        write_seconds=0.0,
        index_seconds=0.0,
        index_deferred=False,
    )


def _pick_embedder(
    found: Collection | None,
    embedder: Embedder | str | None,
    model: str | None,
    dimension: int | None,
    settings: Settings,
) -> Embedder:
    """Return the embedder to use: the collection's own unless one is given (then checked)."""
    if found is None:
        if isinstance(embedder, str) or embedder is None:
            return make_embedder(embedder, model, dimension=dimension, settings=settings)
        return embedder
    if embedder is None:
        return embedder_for(found, settings=settings)
    if isinstance(embedder, str):
        same_kind = embedder.strip().lower() == found.embedder
        emb = make_embedder(
            embedder,
            model or (found.model if same_kind else None),
            dimension=dimension or (found.dimension if same_kind else None),
            settings=settings,
        )
    else:
        emb = embedder
    check_compatible(emb, name=found.name, model=found.model, dimension=found.dimension)
    return emb


async def _ingest_items(
    db: Database,
    items: list[_Item],
    skipped: list[SkippedFile],
    *,
    collection: str,
    embedder: Embedder | str | None,
    model: str | None,
    dimension: int | None,
    metric: str | None,
    description: str,
    create: bool,
    chunk_size: int,
    chunk_overlap: int,
    text_field: str | None,
    batch_size: int,
    defer_index: bool | None,
    progress: ProgressCallback | None,
) -> IngestReport:
    if db.settings.read_only:
        raise ReadOnlyError("kb is in read-only mode (KB_READ_ONLY); ingest would write.")
    check_options(chunk_size, chunk_overlap)
    if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise InvalidInput(f"batch size must be from 1 to {MAX_BATCH_SIZE}")
    if not isinstance(collection, str) or not collection.strip():
        raise InvalidInput("ingest needs a collection name")
    bytes_total = sum(i.size for i in items)
    estimated_chunks = bytes_total / max(chunk_size - chunk_overlap, 1)
    with translating(db.url):
        async with db.session() as s:
            try:
                found: Collection | None = await get_collection(s, collection.strip())
            except CollectionNotFound:
                if not create:
                    raise
                found = None
            if found is None and not items:
                # Nothing to read: leave no empty collection behind.
                return _empty_report(collection.strip(), skipped)
            emb = _pick_embedder(found, embedder, model, dimension, db.settings)
            defer = defer_index
            if defer is None:
                # With a model on this CPU the incremental index inserts hide behind the
                # embedding; a bulk load without that bottleneck is faster indexed at the end.
                defer = estimated_chunks >= indexing.DEFER_MIN_CHUNKS and emb.kind != "local"
            if found is None:
                found = await ensure_collection(
                    s,
                    collection.strip(),
                    embedder=emb.kind,
                    model=emb.model,
                    dimension=emb.dimension,
                    metric=metric or emb.metric,
                    description=description,
                    index=not defer,
                )
            coll = _Collection(found.id, found.name, found.dimension, found.metric)
        await indexing.drop_leftover(db, coll.id)
        deferred = False
        if defer and await indexing.collection_is_empty(db, coll.id):
            deferred = await indexing.index_state(db, coll.id) is None or (
                await indexing.drop_for_load(db, coll.id)
            )
    run = _Run(
        db,
        coll,
        emb,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        text_field=text_field,
        batch_size=batch_size,
        progress=progress,
        skipped=skipped,
        files_total=len(items) + len(skipped),
        bytes_total=bytes_total,
        index_deferred=deferred,
    )
    return await run.run(items)


async def ingest(
    db: Database,
    paths: PathLike | Iterable[PathLike],
    *,
    collection: str,
    embedder: Embedder | str | None = None,
    model: str | None = None,
    dimension: int | None = None,
    metric: str | None = None,
    description: str = "",
    create: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    include: Sequence[str] | str = (),
    exclude: Sequence[str] | str = (),
    text_field: str | None = None,
    max_file_mb: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    defer_index: bool | None = None,
    progress: ProgressCallback | None = None,
) -> IngestReport:
    """Ingest files and folders into a collection, creating it if missing; return the report."""
    limit_mb = db.settings.max_upload_mb if max_file_mb is None else max_file_mb
    if limit_mb <= 0:
        raise InvalidInput("max_file_mb must be positive")
    files, skipped = await asyncio.to_thread(
        discover,
        _as_paths(paths),
        include=_as_list(include),
        exclude=_as_list(exclude),
        max_bytes=int(limit_mb * 1_000_000),
    )
    return await _ingest_items(
        db,
        [_Item(size=f.size, entry=f) for f in files],
        skipped,
        collection=collection,
        embedder=embedder,
        model=model,
        dimension=dimension,
        metric=metric,
        description=description,
        create=create,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        text_field=text_field,
        batch_size=batch_size,
        defer_index=defer_index,
        progress=progress,
    )


async def ingest_documents(
    db: Database,
    documents: Iterable[SourceDocument],
    *,
    collection: str,
    embedder: Embedder | str | None = None,
    model: str | None = None,
    dimension: int | None = None,
    metric: str | None = None,
    description: str = "",
    create: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    batch_size: int = DEFAULT_BATCH_SIZE,
    defer_index: bool | None = None,
    progress: ProgressCallback | None = None,
) -> IngestReport:
    """Ingest documents already in memory (see SourceDocument.from_text) into a collection."""
    items = []
    for doc in documents:
        if not isinstance(doc, SourceDocument):
            raise InvalidInput(f"ingest_documents takes SourceDocument objects, not {doc!r:.80}")
        items.append(_Item(size=doc.size or sum(len(s.text) for s in doc.sections), document=doc))
    return await _ingest_items(
        db,
        items,
        [],
        collection=collection,
        embedder=embedder,
        model=model,
        dimension=dimension,
        metric=metric,
        description=description,
        create=create,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        text_field=None,
        batch_size=batch_size,
        defer_index=defer_index,
        progress=progress,
    )
