"""Export a browse filter or search results to CSV, JSON Lines or Parquet, streamed and checked.

Documents are read in keyset batches (one short query each) and written as they come. The
rows written are compared with a count of the same filter taken in the same snapshot; a
mismatch raises ExportIncomplete instead of leaving a silently short file. Files are written
next to the target under a temporary name and renamed only once complete.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from kb.browse import (
    MAX_PAGE_SIZE,
    CollectionArg,
    count_documents,
    iter_documents,
    resolve_collection,
)
from kb.errors import InvalidInput, KBError
from kb.filters import Filters
from kb.results import DocumentRecord, SearchResult, SearchResults, column_names

FORMATS = ("csv", "jsonl", "parquet")


class ExportIncomplete(KBError):
    """An export wrote a different number of rows than the filter matches."""


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What an export wrote: where, in which format, how many rows, how long it took."""

    path: str
    format: str
    rows: int
    expected: int
    seconds: float


class _Writer(Protocol):
    def write(self, rows: list[dict[str, Any]]) -> None: ...
    def close(self) -> None: ...


def _plain(row: Any) -> dict[str, Any]:
    return row.to_dict()  # type: ignore[no-any-return]


class _CsvWriter:
    def __init__(self, out: IO[bytes], columns: list[str]) -> None:
        self._text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
        self._csv = csv.DictWriter(self._text, fieldnames=columns, extrasaction="ignore")
        self._csv.writeheader()

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            cells = {k: "" if v is None else v for k, v in row.items()}
            cells["metadata"] = json.dumps(row["metadata"], ensure_ascii=False)
            self._csv.writerow(cells)

    def close(self) -> None:
        self._text.flush()
        self._text.detach()


class _JsonlWriter:
    def __init__(self, out: IO[bytes], columns: list[str]) -> None:
        self._out = out
        self._columns = columns

    def write(self, rows: list[dict[str, Any]]) -> None:
        lines = [
            json.dumps({c: row[c] for c in self._columns}, ensure_ascii=False) + "\n"
            for row in rows
        ]
        self._out.write("".join(lines).encode("utf-8"))

    def close(self) -> None:
        self._out.flush()


class _ParquetWriter:
    def __init__(self, out: IO[bytes], columns: list[str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {
            "id": pa.string(),
            "collection": pa.string(),
            "title": pa.string(),
            "source": pa.string(),
            "chunk_index": pa.int32(),
            "created_at": pa.timestamp("us", tz="UTC"),
            "metadata": pa.string(),
            "content": pa.string(),
            "rank": pa.int32(),
            "score": pa.float64(),
            "distance": pa.float64(),
            "mode": pa.string(),
            "metric": pa.string(),
            "operator": pa.string(),
            "vector_rank": pa.int32(),
            "text_rank": pa.int32(),
        }
        self._pa = pa
        self._columns = columns
        self._schema = pa.schema([(c, types[c]) for c in columns])
        self._writer = pq.ParquetWriter(out, self._schema)

    def write(self, rows: list[dict[str, Any]]) -> None:
        from datetime import datetime

        data: dict[str, list[Any]] = {c: [] for c in self._columns}
        for row in rows:
            for c in self._columns:
                value = row[c]
                if c == "metadata":
                    value = json.dumps(value, ensure_ascii=False)
                elif c == "created_at" and isinstance(value, str):
                    value = datetime.fromisoformat(value)
                data[c].append(value)
        self._writer.write_table(self._pa.table(data, schema=self._schema))

    def close(self) -> None:
        self._writer.close()


def _writer(fmt: str, out: IO[bytes], columns: list[str]) -> _Writer:
    if fmt == "csv":
        return _CsvWriter(out, columns)
    if fmt == "jsonl":
        return _JsonlWriter(out, columns)
    return _ParquetWriter(out, columns)


def _check_format(fmt: str, target: str | os.PathLike[str] | IO[bytes]) -> str:
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if isinstance(target, str | os.PathLike):
        path = Path(target)
        if path.is_dir():
            raise InvalidInput(f"{path} is a folder; give a file name to export to")
        if not path.parent.exists():
            raise InvalidInput(f"the folder {path.parent} does not exist")
    return fmt


async def _write(
    target: str | os.PathLike[str] | IO[bytes],
    fmt: str,
    columns: list[str],
    batches: AsyncIterator[list[dict[str, Any]]],
) -> tuple[str, int]:
    """Write every batch to `target`; return (where, rows written)."""
    if not isinstance(target, str | os.PathLike):
        writer = _writer(fmt, target, columns)
        written = 0
        async for batch in batches:
            writer.write(batch)
            written += len(batch)
        writer.close()
        return getattr(target, "name", "<stream>"), written
    path = Path(target)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("wb") as fh:
            writer = _writer(fmt, fh, columns)
            written = 0
            async for batch in batches:
                writer.write(batch)
                written += len(batch)
            writer.close()
    except BaseException:
        with suppress(OSError):
            partial.unlink()
        raise
    return str(partial), written


def _finish(partial: str, target: str | os.PathLike[str] | IO[bytes], ok: bool) -> str:
    if not isinstance(target, str | os.PathLike):
        return partial
    if not ok:
        with suppress(OSError):
            os.unlink(partial)
        return str(target)
    os.replace(partial, target)
    return str(target)


async def export_documents(
    session: AsyncSession,
    collection: CollectionArg,
    target: str | os.PathLike[str] | IO[bytes],
    *,
    format: str = "csv",
    filters: Filters | Mapping[str, Any] | None = None,
    order: str = "newest",
) -> ExportReport:
    """Write every document matching `filters` to a file (or binary stream), checked complete."""
    fmt = _check_format(format, target)
    start = time.perf_counter()
    if not session.in_transaction():
        # One snapshot for the count and every batch, so rows arriving meanwhile cannot
        # make the two disagree.
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    coll = await resolve_collection(session, collection)
    expected = await count_documents(session, coll, filters=filters)

    async def batches() -> AsyncIterator[list[dict[str, Any]]]:
        async for batch in iter_documents(
            session, coll, order=order, filters=filters, batch_size=MAX_PAGE_SIZE
        ):
            yield [_plain(item) for item in batch]

    columns = column_names(DocumentRecord)
    partial, written = await _write(target, fmt, columns, batches())
    where = _finish(partial, target, written == expected)
    if written != expected:
        raise ExportIncomplete(
            f"The export wrote {written} rows but the filter matches {expected}; nothing was "
            "kept. The collection changed during the export: run it again."
        )
    return ExportReport(where, fmt, written, expected, time.perf_counter() - start)


async def export_results(
    results: SearchResults | Iterable[SearchResult],
    target: str | os.PathLike[str] | IO[bytes],
    *,
    format: str = "csv",
) -> ExportReport:
    """Write search results (rank, score, distance and the documents) to a file or stream."""
    fmt = _check_format(format, target)
    start = time.perf_counter()
    items = list(results)
    rows = [_plain(item) for item in items]

    async def batches() -> AsyncIterator[list[dict[str, Any]]]:
        for i in range(0, len(rows), MAX_PAGE_SIZE):
            yield rows[i : i + MAX_PAGE_SIZE]

    partial, written = await _write(target, fmt, column_names(SearchResult), batches())
    where = _finish(partial, target, written == len(items))
    if written != len(items):
        raise ExportIncomplete(f"The export wrote {written} of {len(items)} results.")
    return ExportReport(where, fmt, written, len(items), time.perf_counter() - start)
