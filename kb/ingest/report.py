"""What an ingest tells its caller: progress while it runs, a report when it ends."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from kb.errors import KBError
from kb.ingest.documents import FileWarning, SkippedFile


@dataclass(frozen=True, slots=True)
class IngestProgress:
    """A snapshot of a running ingest; immutable, so it can be handed to another thread.

    `chunks_total` is None until every file has been read; `eta_s` is then estimated from the
    bytes read so far, and is None before the first batch is written.
    """

    stage: str  # "reading", "embedding", "indexing" or "done"
    files_done: int
    files_total: int
    files_skipped: int
    chunks_done: int
    chunks_total: int | None
    chunks_per_s: float
    eta_s: float | None
    elapsed_s: float

    @property
    def fraction(self) -> float:
        """Return how much is done, from 0 to 1 (by chunks when known, else by files)."""
        if self.stage == "done":
            return 1.0
        if self.chunks_total:
            return min(1.0, self.chunks_done / self.chunks_total)
        return self.files_done / self.files_total if self.files_total else 0.0


@dataclass(frozen=True, slots=True)
class IngestReport:
    """The outcome of an ingest.

    `chunks_added` counts rows written with new text (new chunks, and chunks whose text
    changed: `chunks_replaced` of them overwrote an older version at the same place);
    `duplicates_skipped` counts chunks whose text was stored already, nothing added or
    embedded for them (`metadata_updated` of them had their title or metadata refreshed, e.g.
    the file's modified time); `files_unchanged` counts files none of whose text changed.
    """

    collection: str
    files_read: int
    files_unchanged: int
    files_skipped: tuple[SkippedFile, ...]
    warnings: tuple[FileWarning, ...]
    chunks_added: int
    chunks_replaced: int
    chunks_removed: int
    metadata_updated: int
    duplicates_skipped: int
    chunks_embedded: int
    embeddings_reused: int
    nul_bytes_removed: int
    batches: int
    seconds: float
    embed_seconds: float
    write_seconds: float
    index_seconds: float
    index_deferred: bool

    @property
    def chunks_total(self) -> int:
        """Return every chunk the files produced (written or already there)."""
        return self.chunks_added + self.duplicates_skipped

    @property
    def chunks_per_s(self) -> float:
        """Return chunks handled per second over the whole ingest."""
        return self.chunks_total / self.seconds if self.seconds > 0 else 0.0

    @property
    def write_chunks_per_s(self) -> float:
        """Return rows written per second of database write time (COPY + upsert + commit)."""
        written = self.chunks_added + self.metadata_updated
        return written / self.write_seconds if self.write_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the report as plain JSON-ready values."""
        return {
            "collection": self.collection,
            "files_read": self.files_read,
            "files_unchanged": self.files_unchanged,
            "files_skipped": [{"path": s.path, "reason": s.reason} for s in self.files_skipped],
            "warnings": [{"path": w.path, "message": w.message} for w in self.warnings],
            "chunks_added": self.chunks_added,
            "chunks_replaced": self.chunks_replaced,
            "chunks_removed": self.chunks_removed,
            "metadata_updated": self.metadata_updated,
            "duplicates_skipped": self.duplicates_skipped,
            "chunks_embedded": self.chunks_embedded,
            "embeddings_reused": self.embeddings_reused,
            "nul_bytes_removed": self.nul_bytes_removed,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "embed_seconds": round(self.embed_seconds, 3),
            "write_seconds": round(self.write_seconds, 3),
            "index_seconds": round(self.index_seconds, 3),
            "index_deferred": self.index_deferred,
            "chunks_per_s": round(self.chunks_per_s, 1),
            "write_chunks_per_s": round(self.write_chunks_per_s, 1),
        }


class IngestError(KBError):
    """An ingest stopped partway; the batches committed before the failure are kept.

    `report` says what was written; running the same ingest again finishes the job without
    duplicating anything.
    """

    def __init__(self, message: str, report: IngestReport) -> None:
        super().__init__(message)
        self.report = report


class ProgressHolder:
    """A progress callback that keeps the latest snapshot for another thread to poll."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: IngestProgress | None = None

    def __call__(self, progress: IngestProgress) -> None:
        with self._lock:
            self._latest = progress

    @property
    def latest(self) -> IngestProgress | None:
        """Return the most recent snapshot, or None before the ingest reported anything."""
        with self._lock:
            return self._latest
