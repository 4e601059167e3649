"""Ingest jobs for the Ingest page: uploads and server-side folders, run off the script thread.

Nothing here calls Streamlit: the work runs on a job's worker thread and talks to kb through
the bridge object handed to it; progress goes to the job, which the page polls.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kb
from kb.ingest import (
    SUPPORTED_TYPES,
    IngestError,
    IngestProgress,
    IngestReport,
    SkippedFile,
    read_entry,
)
from kb.ingest.discover import FileEntry, discover
from ui.jobs import Job


@dataclass(frozen=True)
class IngestOutcome:
    """What an ingest job ended with: kb's report, uploads refused before it, or an error."""

    collection: str
    report: IngestReport | None
    skipped: tuple[SkippedFile, ...] = ()
    error: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def all_skipped(self) -> list[SkippedFile]:
        """Return every file skipped, with its reason (refused uploads first)."""
        return [*self.skipped, *(self.report.files_skipped if self.report else ())]


def allowed_roots(settings: kb.Settings) -> list[Path]:
    """Return the server folders the UI may ingest from (KB_INGEST_ROOTS)."""
    roots = [part.strip() for part in settings.ingest_roots.split(os.pathsep)]
    return [Path(r).expanduser().resolve() for r in roots if r]


def check_folder(raw: str, settings: kb.Settings) -> Path:
    """Return the real path of a server-side folder or file, if it lies inside an allowed root."""
    roots = allowed_roots(settings)
    if not roots:
        raise kb.InvalidInput(
            "Ingesting from server folders is off: set KB_INGEST_ROOTS to the folders the app "
            "may read (separated by ':'), then restart the app."
        )
    text = raw.strip()
    if not text or "\x00" in text:
        raise kb.InvalidInput("Give the path of a folder (or file) on the server.")
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = roots[0] / path
    real = path.resolve()
    if not _inside(real, roots):
        allowed = ", ".join(str(r) for r in roots)
        raise kb.InvalidInput(f"{text} is outside the folders the app may read ({allowed}).")
    if not real.exists():
        raise kb.InvalidInput(f"{text} does not exist on the server.")
    return real


def _inside(real: Path, roots: Sequence[Path]) -> bool:
    return any(real == root or real.is_relative_to(root) for root in roots)


def check_links(
    path: Path, settings: kb.Settings, *, include: Sequence[str], exclude: Sequence[str]
) -> None:
    """Refuse a folder holding links to files outside the allowed roots (after the globs).

    The walk never enters a linked folder, but a linked file would be read wherever it points.
    """
    if not path.is_dir():
        return  # check_folder already resolved a file given directly
    roots = allowed_roots(settings)
    files, _ = discover([str(path)], include=include, exclude=exclude)
    out = [f.source for f in files if not _inside(Path(os.path.realpath(f.path)), roots)]
    if out:
        shown = ", ".join(out[:5]) + (f" and {len(out) - 5} more" if len(out) > 5 else "")
        raise kb.InvalidInput(
            f"Links to files outside the folders the app may read: {shown}. Nothing was "
            "ingested; remove the links, or leave them out with the exclude globs."
        )


def progress_text(progress: IngestProgress | None) -> tuple[float, str]:
    """Return (fraction done, one line saying chunks done, chunks/s and ETA)."""
    if progress is None:
        return 0.0, "Reading the files…"
    total = f"{progress.chunks_total:,}" if progress.chunks_total is not None else "?"
    if progress.eta_s is None:
        eta = "estimating"
    elif progress.eta_s >= 90:
        eta = f"{progress.eta_s / 60:.1f} min"
    else:
        eta = f"{progress.eta_s:.0f} s"
    return progress.fraction, (
        f"{progress.stage}: {progress.chunks_done:,} of {total} chunks · "
        f"{progress.chunks_per_s:,.1f} chunks/s · ETA {eta} · "
        f"files {progress.files_done:,} of {progress.files_total:,}"
    )


# Never opened: an archive's members would need limits of their own (zip bombs).
ARCHIVE_TYPES = frozenset(
    (".zip", ".gz", ".tgz", ".tar", ".bz2", ".xz", ".zst", ".7z", ".rar", ".jar", ".whl")
)


def _safe_name(name: str) -> str:
    base = re.sub(r"[^\w.\- ]+", "_", os.path.basename(name.replace("\\", "/"))).strip(" .")
    base = base or "upload"
    if len(base) > 150:
        # Keep the extension: it picks the reader.
        suffix = Path(base).suffix[:20]
        base = Path(base).stem[: 150 - len(suffix)] + suffix
    return base


def refused_upload(name: str, size: int, max_bytes: int) -> str | None:
    """Return why an upload is refused before it is stored anywhere, or None."""
    if size > max_bytes:
        return (
            f"too large: {size / 1e6:.2f} MB is over the {max_bytes / 1e6:g} MB upload limit "
            "(KB_MAX_UPLOAD_MB)"
        )
    suffix = Path(_safe_name(name)).suffix.lower()
    if suffix in ARCHIVE_TYPES:
        return f"an archive ({suffix}): archives are not opened; upload the files inside it"
    if suffix not in SUPPORTED_TYPES:
        known = ", ".join(sorted(SUPPORTED_TYPES))
        return f"unsupported file type {suffix or '(no extension)'} (kb reads {known})"
    return None


def run_uploads(
    job: Job,
    db: kb.SyncDatabase,
    files: Sequence[tuple[str, bytes]],
    *,
    collection: str,
    max_bytes: int,
    text_field: str | None,
    options: dict[str, Any],
) -> IngestOutcome:
    """Read uploaded files (their names become the sources) and ingest them into a collection."""
    skipped: list[SkippedFile] = []
    documents = []
    folder = Path(tempfile.mkdtemp(prefix="kb-upload-"))
    try:
        for i, (name, data) in enumerate(files):
            reason = refused_upload(name, len(data), max_bytes)
            if reason is not None:
                skipped.append(SkippedFile(name, reason))
                continue
            # Each upload in a folder of its own keeps its own file name (readers use it).
            path = folder / str(i) / _safe_name(name)
            path.parent.mkdir()
            path.write_bytes(data)
            entry = FileEntry(source=name, path=path, size=len(data), mtime=time.time())
            result = read_entry(entry, text_field=text_field)
            if isinstance(result, SkippedFile):
                skipped.append(result)
            else:
                documents.append(result)
        if not documents:
            return IngestOutcome(collection, None, tuple(skipped), notes=("Nothing to ingest.",))
        try:
            report = db.with_db(
                kb.ingest_documents,
                documents,
                collection=collection,
                progress=job.report,
                **options,
            )
        except IngestError as exc:
            return IngestOutcome(collection, exc.report, tuple(skipped), error=str(exc))
        return IngestOutcome(collection, report, tuple(skipped))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_folder(
    job: Job,
    db: kb.SyncDatabase,
    path: Path,
    *,
    collection: str,
    include: Sequence[str],
    exclude: Sequence[str],
    text_field: str | None,
    options: dict[str, Any],
) -> IngestOutcome:
    """Ingest a server-side folder (or file) into a collection."""
    try:
        report = db.with_db(
            kb.ingest,
            [str(path)],
            collection=collection,
            include=list(include),
            exclude=list(exclude),
            text_field=text_field,
            progress=job.report,
            **options,
        )
    except IngestError as exc:
        return IngestOutcome(collection, exc.report, error=str(exc))
    return IngestOutcome(collection, report)
