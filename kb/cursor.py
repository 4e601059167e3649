"""Opaque, URL-safe browse cursors: a keyset position (created_at, id) in one collection."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from kb.errors import InvalidInput

ORDERS = ("newest", "oldest")
MAX_CURSOR_CHARS = 400
_VERSION = 1


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page starts or ends: a row's (created_at, id) in one collection and order."""

    collection_id: int
    order: str
    created_at: datetime
    id: uuid.UUID


def encode_cursor(position: Position) -> str:
    """Return the position as a short base64url string (no padding), safe in a URL."""
    payload = {
        "v": _VERSION,
        "c": position.collection_id,
        "o": position.order[0],
        "t": position.created_at.isoformat(),
        "i": position.id.hex,
    }
    raw = json.dumps(payload, separators=(",", ":")).encode("ascii")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _malformed(reason: str) -> InvalidInput:
    return InvalidInput(f"Malformed cursor ({reason}); start again from the first page.")


def decode_cursor(token: str) -> Position:
    """Return the position in `token`, or raise InvalidInput for anything malformed."""
    if not isinstance(token, str):
        raise _malformed(f"a cursor is text, not {type(token).__name__}")
    token = token.strip()
    if not token or len(token) > MAX_CURSOR_CHARS:
        raise _malformed("empty" if not token else "too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw.decode("ascii"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _malformed("not a kb cursor") from None
    if not isinstance(payload, dict) or payload.get("v") != _VERSION:
        raise _malformed("unknown version")
    collection_id, order, stamp, ident = (payload.get(k) for k in ("c", "o", "t", "i"))
    if not isinstance(collection_id, int) or isinstance(collection_id, bool) or collection_id < 1:
        raise _malformed("bad collection")
    orders = {o[0]: o for o in ORDERS}
    if order not in orders:
        raise _malformed("bad order")
    if not isinstance(stamp, str) or not isinstance(ident, str):
        raise _malformed("bad position")
    try:
        created_at = datetime.fromisoformat(stamp)
        doc_id = uuid.UUID(hex=ident)
    except ValueError:
        raise _malformed("bad position") from None
    if created_at.tzinfo is None:
        raise _malformed("time without zone")
    return Position(
        collection_id=collection_id, order=orders[order], created_at=created_at, id=doc_id
    )
