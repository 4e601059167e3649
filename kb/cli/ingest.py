"""`kb ingest PATH... --collection NAME`: read files into a collection, with a progress bar."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from kb.database import connect
from kb.embedders import KINDS
from kb.ingest import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_SIZE,
    SUPPORTED_TYPES,
    IngestError,
    IngestProgress,
    IngestReport,
    ingest,
)

DESCRIPTION = f"""\
Read files and folders into a collection (created if missing).
File types: {", ".join(sorted(SUPPORTED_TYPES))}.
Folders are read recursively (hidden files and folders left out); --include/--exclude filter
them by glob, on the path relative to the folder or on the file name. CSV/TSV and JSON Lines
give one record per row: a text column (text, content, body, ... or --text-field) and the
other columns as metadata. Each chunk's source is the file path as given.

Running the same ingest again adds nothing and embeds nothing; changed files replace their
old chunks. Batches commit one by one, each all or nothing: after an interruption, run the
same command again to finish. A progress bar goes to stderr, the report to stdout (--json:
one JSON object with files_read, chunks_added, duplicates_skipped, files_skipped [{{path,
reason}}], seconds and more).

Exit status: 0 when the ingest ran (even with skipped files); 1 on an error, or when no file
at all could be read.
"""


def register(sub: Any) -> None:
    """Add the `ingest` command."""
    p = sub.add_parser(
        "ingest",
        help="read files and folders into a collection",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to read")
    p.add_argument("--collection", "-c", required=True, help="collection to ingest into")
    p.add_argument(
        "--embedder",
        choices=KINDS,
        help="embedder for a new collection (default KB_EMBEDDER, else local); an existing "
        "collection keeps its own and refuses another",
    )
    p.add_argument("--model", help="model for a new collection (see `kb collections create`)")
    p.add_argument("--dimension", type=int, help="vector length for a new hashing collection")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        metavar="N",
        help=f"largest chunk in characters (default {DEFAULT_CHUNK_SIZE})",
    )
    p.add_argument(
        "--chunk-overlap",
        type=int,
        default=DEFAULT_CHUNK_OVERLAP,
        metavar="N",
        help=f"characters repeated between chunks (default {DEFAULT_CHUNK_OVERLAP})",
    )
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="read only matching files (repeatable), e.g. '*.md' or 'docs/**/*.html'",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="leave out matching files or folders (repeatable), e.g. 'drafts/'",
    )
    p.add_argument("--text-field", help="the CSV column / JSON field holding the text")
    p.add_argument(
        "--max-file-mb",
        type=float,
        help="skip files larger than this (default KB_MAX_UPLOAD_MB, 50)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"chunks per committed batch (default {DEFAULT_BATCH_SIZE})",
    )
    p.add_argument("--description", default="", help="description for a new collection")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(handler=_ingest)


class _Bar:
    """A tqdm bar over files, with chunks, chunks/s and ETA from kb's progress."""

    def __init__(self, enabled: bool) -> None:
        self._bar: Any = None
        self._enabled = enabled

    def __call__(self, p: IngestProgress) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=p.files_total, unit="file", file=sys.stderr, dynamic_ncols=True, leave=False
            )
        self._bar.total = p.files_total
        self._bar.n = p.files_done
        eta = "?" if p.eta_s is None else f"{p.eta_s:.0f}s"
        total = "" if p.chunks_total is None else f"/{p.chunks_total}"
        self._bar.set_postfix_str(
            f"{p.stage}, {p.chunks_done}{total} chunks, {p.chunks_per_s:.1f} chunks/s, ETA {eta}",
            refresh=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _print_report(report: IngestReport) -> None:
    print(
        f"Ingested into {report.collection!r} in {report.seconds:.1f}s: "
        f"{report.files_read} file(s) read ({report.files_unchanged} unchanged), "
        f"{len(report.files_skipped)} skipped."
    )
    print(
        f"  chunks: {report.chunks_added} added ({report.chunks_replaced} replacing older "
        f"versions), {report.duplicates_skipped} already stored ({report.metadata_updated} "
        f"with refreshed metadata), {report.chunks_removed} removed"
    )
    print(
        f"  embedded {report.chunks_embedded} (reused {report.embeddings_reused} stored "
        f"embeddings); {report.chunks_per_s:.1f} chunks/s overall, database writes "
        f"{report.write_chunks_per_s:.0f} chunks/s"
        + (f"; index built in {report.index_seconds:.1f}s" if report.index_deferred else "")
    )
    if report.nul_bytes_removed:
        print(f"  removed {report.nul_bytes_removed} NUL byte(s)")
    for skipped in report.files_skipped:
        print(f"  skipped {skipped.path}: {skipped.reason}")
    for warning in report.warnings:
        print(f"  note: {warning.path}: {warning.message}")


def _ingest(args: argparse.Namespace) -> int:
    bar = _Bar(enabled=not args.no_progress and sys.stderr.isatty())

    async def run() -> IngestReport:
        db = await connect()
        try:
            return await ingest(
                db,
                args.paths,
                collection=args.collection,
                embedder=args.embedder,
                model=args.model,
                dimension=args.dimension,
                description=args.description,
                chunk_size=args.chunk_size,
                chunk_overlap=args.chunk_overlap,
                include=args.include,
                exclude=args.exclude,
                text_field=args.text_field,
                max_file_mb=args.max_file_mb,
                batch_size=args.batch_size,
                progress=bar,
            )
        finally:
            await db.close()

    try:
        report = asyncio.run(run())
    except IngestError as exc:
        bar.close()
        if args.json:
            print(json.dumps({**exc.report.to_dict(), "error": str(exc)}))
        raise
    finally:
        bar.close()
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        _print_report(report)
    return 1 if report.files_read == 0 else 0
