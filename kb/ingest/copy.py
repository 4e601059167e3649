"""PostgreSQL binary COPY streams of ingest rows, for `documents` or the staging table.

asyncpg encodes a float4[] element by element (~100 us per 384-dim row), which made the
encoding, not the database, the slowest part of a batch. Building the binary COPY stream
here instead writes each vector in pgvector's own binary format (int16 dim, int16 zero,
big-endian float4s) straight from numpy, so no type codec is ever registered on a pooled
connection, and a row costs a few microseconds.

COPY cannot apply `coalesce(created_at, now())`, so rows that carry a created_at and rows that
do not go into separate streams: the second leaves the column out, and its default (now(), the
transaction's timestamp) fills it, or leaves NULL in the staging table for the upsert to fill.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_TRAILER = struct.pack("!h", -1)
_INT4 = struct.Struct("!ii").pack  # a 4-byte field: its length, then the value
_LENGTH = struct.Struct("!i").pack
_TIMESTAMP = struct.Struct("!iq").pack
_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
# jsonb's binary input: a version byte, then the JSON text; jsonb normalizes the spacing.
_JSONB_VERSION = b"\x01"
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_STRICT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

COLUMNS = (
    "collection_id",
    "source",
    "chunk_index",
    "title",
    "content",
    "metadata",
    "content_hash",
    "embedding",
)
CREATED_AT = "created_at"


class StageRow(Protocol):
    """The fields of a row a COPY stream carries (besides its vector)."""

    @property
    def source(self) -> str: ...
    @property
    def chunk_index(self) -> int: ...
    @property
    def title(self) -> str: ...
    @property
    def content(self) -> str: ...
    @property
    def metadata(self) -> dict[str, Any]: ...
    @property
    def content_hash(self) -> str: ...
    @property
    def created_at(self) -> dt.datetime | None: ...


@dataclass(frozen=True, slots=True)
class Segment:
    """One binary COPY stream and the columns it fills, in order."""

    columns: tuple[str, ...]
    data: bytes
    rows: int


@dataclass(frozen=True, slots=True)
class Encoded:
    """A batch's fields as UTF-8 bytes (metadata as JSON text), row i of each together."""

    sources: Sequence[bytes]
    chunk_indexes: Sequence[int]
    titles: Sequence[bytes]
    contents: Sequence[bytes]
    metadata: Sequence[bytes]
    content_hashes: Sequence[bytes]
    created_at: Sequence[dt.datetime | None]


def json_bytes(value: Any, *, strict: bool = False) -> bytes:
    """Return `value` as the compact UTF-8 JSON text a stream carries.

    `strict` refuses NaN and infinities (ValueError) instead of writing them.
    """
    return (_STRICT_JSON if strict else _JSON).encode(value).encode()


def _timestamp(value: dt.datetime) -> bytes:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    delta = value - _PG_EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return _TIMESTAMP(8, micros)


def _rows(
    collection_id: int,
    fields: Encoded,
    matrix: np.ndarray,
    positions: Sequence[int],
    with_created_at: bool,
) -> bytes:
    """Return the tuples of the rows at `positions`, without the stream's header or trailer."""
    count = len(COLUMNS) + 1 if with_created_at else len(COLUMNS)
    dim = matrix.shape[1] if matrix.ndim == 2 else 0
    width = 4 * dim
    # Every row starts alike: the field count, then the collection id.
    prefix = struct.pack("!h", count) + _INT4(4, collection_id)
    # Each vector field: length, then dim and a zero (int16 each), then the floats.
    vector_prefix = struct.pack("!ihh", 4 + width, dim, 0)
    floats = memoryview(matrix.tobytes())
    sources, indexes, titles = fields.sources, fields.chunk_indexes, fields.titles
    contents, metas, hashes = fields.contents, fields.metadata, fields.content_hashes
    stamps = fields.created_at
    parts: list[bytes | memoryview] = []
    for i in positions:
        source, title, content, meta = sources[i], titles[i], contents[i], metas[i]
        parts += (
            prefix,
            _LENGTH(len(source)),
            source,
            _INT4(4, indexes[i]),
            _LENGTH(len(title)),
            title,
            _LENGTH(len(content)),
            content,
            _LENGTH(len(meta) + 1),
            _JSONB_VERSION,
            meta,
            _LENGTH(len(hashes[i])),
            hashes[i],
            vector_prefix,
            floats[i * width : (i + 1) * width],
        )
        if with_created_at:
            parts.append(_timestamp(stamps[i]))  # type: ignore[arg-type]
    return b"".join(parts)


class Streams:
    """A batch's COPY streams, built part by part (so the work can be spread out).

    Rows that carry a created_at go into one stream (the column included), rows that do not
    into another (the column left to its default); an empty stream is left out.
    """

    def __init__(self, collection_id: int) -> None:
        self.collection_id = collection_id
        self._stamped: list[bytes] = []
        self._plain: list[bytes] = []
        self._counts = [0, 0]

    def add(self, fields: Encoded, vectors: np.ndarray) -> None:
        """Encode a part of the batch: `fields` with their `vectors`, row i of each together."""
        count = len(fields.sources)
        if count != len(vectors):
            raise ValueError(f"{count} rows but {len(vectors)} vectors")
        if not count:
            return
        matrix = np.ascontiguousarray(vectors, dtype=">f4")
        stamped = [i for i, stamp in enumerate(fields.created_at) if stamp is not None]
        if len(stamped) == count:
            plain: Sequence[int] = ()
            stamped_rows: Sequence[int] = range(count)
        elif not stamped:
            plain, stamped_rows = range(count), ()
        else:
            given = set(stamped)
            plain, stamped_rows = [i for i in range(count) if i not in given], stamped
        if stamped_rows:
            self._stamped.append(_rows(self.collection_id, fields, matrix, stamped_rows, True))
            self._counts[0] += len(stamped_rows)
        if plain:
            self._plain.append(_rows(self.collection_id, fields, matrix, plain, False))
            self._counts[1] += len(plain)

    def segments(self) -> tuple[Segment, ...]:
        """Return the streams of every part added so far."""
        out = []
        for columns, bodies, rows in (
            ((*COLUMNS, CREATED_AT), self._stamped, self._counts[0]),
            (COLUMNS, self._plain, self._counts[1]),
        ):
            if rows:
                out.append(Segment(columns, b"".join([_HEADER, *bodies, _TRAILER]), rows))
        return tuple(out)


def encode(collection_id: int, fields: Encoded, vectors: np.ndarray) -> tuple[Segment, ...]:
    """Return the binary COPY streams of a batch's rows into `collection_id` (see Streams)."""
    streams = Streams(collection_id)
    streams.add(fields, vectors)
    return streams.segments()


def as_fields(rows: Sequence[StageRow]) -> Encoded:
    """Return the fields of `rows` as a stream carries them."""
    return Encoded(
        sources=[r.source.encode() for r in rows],
        chunk_indexes=[r.chunk_index for r in rows],
        titles=[r.title.encode() for r in rows],
        contents=[r.content.encode() for r in rows],
        metadata=[json_bytes(r.metadata) for r in rows],
        content_hashes=[r.content_hash.encode() for r in rows],
        created_at=[r.created_at for r in rows],
    )


def segments(
    collection_id: int, rows: Sequence[StageRow], vectors: np.ndarray
) -> tuple[Segment, ...]:
    """Return the binary COPY streams of `rows` with `vectors` (see Streams)."""
    if len(rows) != len(vectors):
        raise ValueError(f"{len(rows)} rows but {len(vectors)} vectors")
    return encode(collection_id, as_fields(rows), vectors)
