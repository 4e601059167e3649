"""Turn raw bytes into clean text: binary detection, encodings with a fallback, NUL bytes."""

from __future__ import annotations

import codecs
import datetime as dt
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# Files whose first bytes say what they are: never text, whatever their extension.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"PK\x03\x04", "ZIP archive or Office document"),
    (b"\x1f\x8b", "gzip archive"),
    (b"\xfd7zXZ\x00", "xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"Rar!\x1a\x07", "RAR archive"),
    (b"\x7fELF", "executable"),
    (b"\xca\xfe\xba\xbe", "compiled program"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "old Office document"),
    (b"SQLite format 3\x00", "SQLite database"),
    (b"%PDF-", "PDF document"),
    (b"OggS", "Ogg media"),
    (b"fLaC", "FLAC audio"),
    (b"ID3", "MP3 audio"),
    (b"\x00asm", "WebAssembly module"),
)
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Bytes that occur in text: tab, newlines, form feed, escape, and everything from space up
# (bytes >= 0x80 are parts of multi-byte characters).
_TEXT_BYTES = bytes([7, 8, 9, 10, 11, 12, 13, 27, *range(0x20, 0x7F), *range(0x80, 0x100)])
_SNIFF = 8192
_MAX_CONTROL_SHARE = 0.10
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_NEWLINES = re.compile(r"\r\n?")


@dataclass(frozen=True, slots=True)
class DecodedText:
    """Text decoded from bytes, with what it took to get there."""

    text: str
    encoding: str
    nul_bytes: int


def binary_reason(data: bytes) -> str | None:
    """Return why `data` is not text (a known signature, too many control bytes), or None."""
    for signature, what in _SIGNATURES:
        if data.startswith(signature):
            return f"binary file ({what})"
    if any(data.startswith(bom) for bom, _ in _BOMS):
        return None
    sample = data[:_SNIFF]
    if not sample:
        return None
    if _utf16_without_bom(sample) is not None:
        return None
    control = len(sample.translate(None, _TEXT_BYTES))
    if control / len(sample) > _MAX_CONTROL_SHARE:
        return f"binary file ({control / len(sample):.0%} of its first bytes are control bytes)"
    return None


def _utf16_without_bom(sample: bytes) -> str | None:
    """Return 'utf-16-le'/'utf-16-be' when `sample` looks like BOM-less UTF-16 text."""
    if len(sample) < 8:
        return None
    even, odd = sample[0::2], sample[1::2]
    for zeros, codec in ((odd, "utf-16-le"), (even, "utf-16-be")):
        # ASCII-range text in UTF-16 has a zero in every other byte and none in the rest.
        other = even if zeros is odd else odd
        if zeros.count(0) / len(zeros) > 0.9 and other.count(0) / len(other) < 0.05:
            return codec
    return None


def decode(data: bytes) -> DecodedText:
    """Decode bytes as UTF-8 (BOMs honoured), falling back to cp1252 then latin-1; drop NULs."""
    encoding: str | None = None
    for bom, codec in _BOMS:
        if data.startswith(bom):
            encoding = codec
            break
    if encoding is None:
        encoding = _utf16_without_bom(data[:_SNIFF])
    text: str | None = None
    if encoding is not None:
        text = data.decode(encoding, errors="replace")
    else:
        for codec in ("utf-8", "cp1252"):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError:
                continue
            encoding = codec
            break
    if text is None or encoding is None:
        # latin-1 maps every byte to a character: the last resort never fails.
        encoding = "latin-1"
        text = data.decode("latin-1")
    nul = text.count("\x00")
    if nul:
        text = text.replace("\x00", "")
    text = _NEWLINES.sub("\n", text)
    return DecodedText(text=text, encoding=encoding.removesuffix("-sig"), nul_bytes=nul)


def clean_text(value: str) -> tuple[str, int]:
    """Return `value` without NUL bytes and lone surrogates, and how many NULs were removed."""
    nul = value.count("\x00")
    if nul:
        value = value.replace("\x00", "")
    if _SURROGATE.search(value):
        value = _SURROGATE.sub("\ufffd", value)
    return value, nul


def clean_json(value: Any, _depth: int = 0) -> Any:
    """Return `value` as JSON that jsonb stores: no NULs, no NaN, string keys, lists for tuples."""
    if _depth > 50:
        return str(value)[:1000]
    if isinstance(value, dict):
        return {clean_text(str(k))[0]: clean_json(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [clean_json(v, _depth + 1) for v in value]
    if isinstance(value, str):
        return clean_text(value)[0]
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return clean_text(str(value))[0]
