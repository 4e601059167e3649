"""Ingest files into collections: read, clean, chunk, embed, and write in atomic batches.

`kb.ingest(db, paths, collection=...)` reads .txt, .md, .html/.htm, .pdf, .csv/.tsv and
.jsonl files and folders of them; `kb.ingest_documents(db, docs, collection=...)` takes text
already in memory. Both take a `kb.Database` (not a session): each batch commits in its own
transaction, and embedding overlaps with writing on a second connection.
"""

from kb.ingest.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, chunk_text
from kb.ingest.discover import SUPPORTED_TYPES, discover
from kb.ingest.documents import FileWarning, Section, SkippedFile, SourceDocument
from kb.ingest.pipeline import DEFAULT_BATCH_SIZE, ingest, ingest_documents
from kb.ingest.readers import read_entry
from kb.ingest.report import IngestError, IngestProgress, IngestReport, ProgressHolder

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CHUNK_OVERLAP",
    "DEFAULT_CHUNK_SIZE",
    "SUPPORTED_TYPES",
    "FileWarning",
    "IngestError",
    "IngestProgress",
    "IngestReport",
    "ProgressHolder",
    "Section",
    "SkippedFile",
    "SourceDocument",
    "chunk_text",
    "discover",
    "ingest",
    "ingest_documents",
    "read_entry",
]
