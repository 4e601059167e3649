"""Read one file into a SourceDocument: text, Markdown, HTML, PDF, CSV/TSV and JSON Lines.

A reader never stops an ingest: whatever goes wrong with one file becomes a SkippedFile with
a reason a person can act on.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from typing import Any

from kb.ingest.cleaning import binary_reason, clean_json, clean_text, decode
from kb.ingest.discover import FileEntry
from kb.ingest.documents import Section, SkippedFile, SourceDocument

TEXT_FIELDS = ("text", "content", "body", "page_content", "document", "description")
TITLE_FIELDS = ("title", "name", "subject", "heading")
_MD_TITLE = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_FRONT_MATTER_TITLE = re.compile(r"\A---\n(?:.*\n)*?title:[ \t]*[\"']?(.+?)[\"']?[ \t]*\n")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANKS = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")
_MAX_TITLE = 300
# Private-use characters that stand in for whitespace inside <pre> while the text is tidied.
_PRE_SPACE, _PRE_NEWLINE = "\ue000", "\ue001"

csv.field_size_limit(2**31 - 1)


class _Unreadable(Exception):
    """Raised inside a reader with the reason the file is skipped."""


def read_entry(entry: FileEntry, *, text_field: str | None = None) -> SourceDocument | SkippedFile:
    """Read a discovered file; return its document, or why it was skipped."""
    kind = entry.kind
    if kind is None:
        return SkippedFile(entry.source, f"unsupported file type {entry.path.suffix}")
    try:
        data = entry.path.read_bytes()
    except OSError as exc:
        return SkippedFile(entry.source, f"cannot read: {exc.strerror or exc}")
    if not data.strip():
        return SkippedFile(entry.source, "empty file" if not data else "empty file (whitespace)")
    base = {
        "path": entry.source,
        "file_name": entry.path.name,
        "type": kind,
        "size": len(data),
        "modified": dt.datetime.fromtimestamp(entry.mtime, dt.UTC).isoformat(timespec="seconds"),
    }
    try:
        if kind == "pdf":
            doc = _read_pdf(entry, data, base)
        else:
            reason = binary_reason(data)
            if reason is not None:
                return SkippedFile(entry.source, reason)
            doc = _READERS[kind](entry, data, base, text_field)
    except _Unreadable as exc:
        return SkippedFile(entry.source, str(exc))
    except Exception as exc:  # one odd file must not stop the ingest
        return SkippedFile(
            entry.source, f"cannot read this {kind} file: {type(exc).__name__}: {exc}"
        )
    if not any(s.text.strip() for s in doc.sections):
        return SkippedFile(entry.source, "no text in the file")
    return doc


def _decoded(data: bytes, base: dict[str, Any]) -> tuple[str, int, list[str]]:
    decoded = decode(data)
    base["encoding"] = decoded.encoding
    warnings = []
    if decoded.nul_bytes:
        warnings.append(f"removed {decoded.nul_bytes} NUL byte(s)")
    if decoded.encoding in ("cp1252", "latin-1"):
        warnings.append(f"not valid UTF-8; decoded as {decoded.encoding}")
    return decoded.text, decoded.nul_bytes, warnings


def _title(value: str | None, fallback: str) -> str:
    value = _SPACES.sub(" ", (value or "").replace("\n", " ")).strip()
    return (value or fallback)[:_MAX_TITLE]


def _read_text(
    entry: FileEntry, data: bytes, base: dict[str, Any], text_field: str | None
) -> SourceDocument:
    text, nul, warnings = _decoded(data, base)
    title = entry.path.stem
    if entry.kind == "markdown":
        m = _FRONT_MATTER_TITLE.match(text) or _MD_TITLE.search(text)
        title = _title(m.group(1) if m else None, entry.path.stem)
    return SourceDocument(
        source=entry.source,
        title=title,
        sections=(Section(text),),
        metadata=base,
        nul_bytes=nul,
        warnings=tuple(warnings),
        size=len(data),
    )


class _HTMLText(HTMLParser):
    """Collect the visible text of a page; scripts, styles and the like are dropped."""

    SKIP = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "object"})
    BLOCK = frozenset(
        {
            *("address", "article", "aside", "blockquote", "caption", "dd", "details"),
            *("dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer"),
            *("form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main"),
            *("nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "tfoot"),
            *("thead", "tr", "ul"),
        }
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self.h1_parts: list[str] = []
        self._skip = 0
        self._pre = 0
        self._in_title = False
        self._in_h1 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag == "pre":
            self._pre += 1
        if tag == "h1":
            self._in_h1 = True
        if tag in self.BLOCK:
            self.parts.append("\n\n")
        elif tag == "br":
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
        if tag == "h1":
            self._in_h1 = False
        if tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_title:
            self.title_parts.append(data)
            return
        if self._in_h1:
            self.h1_parts.append(data)
        if self._pre:
            # Shield preformatted whitespace from the clean-up in text().
            self.parts.append(data.replace(" ", _PRE_SPACE).replace("\n", _PRE_NEWLINE))
        else:
            self.parts.append(_SPACES.sub(" ", data.replace("\n", " ")))

    def text(self) -> str:
        joined = "".join(self.parts)
        lines = [line.strip(" ") for line in joined.split("\n")]
        text = _BLANKS.sub("\n\n", "\n".join(lines)).strip()
        return text.replace(_PRE_SPACE, " ").replace(_PRE_NEWLINE, "\n")


def _read_html(
    entry: FileEntry, data: bytes, base: dict[str, Any], text_field: str | None
) -> SourceDocument:
    html, nul, warnings = _decoded(data, base)
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    title = _title("".join(parser.title_parts) or "".join(parser.h1_parts), entry.path.stem)
    return SourceDocument(
        source=entry.source,
        title=title,
        sections=(Section(parser.text()),),
        metadata=base,
        nul_bytes=nul,
        warnings=tuple(warnings),
        size=len(data),
    )


def _read_pdf(entry: FileEntry, data: bytes, base: dict[str, Any]) -> SourceDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    # pypdf logs every quirk of a damaged file; the reason we report is enough.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise _Unreadable("encrypted PDF (needs a password)")
        pages = list(reader.pages)
    except _Unreadable:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise _Unreadable(f"not a readable PDF ({exc})") from None
    sections = []
    nul = 0
    warnings: list[str] = []
    failed = 0
    for number, page in enumerate(pages, start=1):
        try:
            raw = page.extract_text() or ""
        except Exception:
            failed += 1
            continue
        text, removed = clean_text(raw)
        nul += removed
        if text.strip():
            sections.append(Section(text, {"page": number}))
    if failed:
        warnings.append(f"could not extract text from {failed} page(s)")
    if nul:
        warnings.append(f"removed {nul} NUL byte(s)")
    if not sections:
        raise _Unreadable("no extractable text in the PDF (scanned images need OCR first)")
    info_title = None
    try:
        info_title = reader.metadata.title if reader.metadata else None
    except Exception:
        info_title = None
    base = {**base, "pages": len(pages)}
    return SourceDocument(
        source=entry.source,
        title=_title(info_title if isinstance(info_title, str) else None, entry.path.stem),
        sections=tuple(sections),
        metadata=base,
        nul_bytes=nul,
        warnings=tuple(warnings),
        size=len(data),
    )


def _pick(names: list[str], wanted: tuple[str, ...]) -> str | None:
    lowered = {n.lower(): n for n in names}
    for w in wanted:
        if w in lowered:
            return lowered[w]
    return None


def _records_document(
    entry: FileEntry,
    base: dict[str, Any],
    records: Iterator[tuple[int, dict[str, Any]]],
    text_field: str | None,
    where: str,
    nul: int,
    warnings: list[str],
    size: int,
) -> SourceDocument:
    """Turn rows (number, fields) into one section per row: a text field, the rest metadata."""
    sections = []
    no_text = 0
    guessed: set[str] = set()
    for number, fields in records:
        field = text_field
        if field is None:
            field = _pick(list(fields), TEXT_FIELDS)
            if field is None:
                strings = [(len(v), k) for k, v in fields.items() if isinstance(v, str)]
                field = max(strings)[1] if strings else None
                if field is not None:
                    guessed.add(field)
        value = fields.get(field) if field is not None else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            no_text += 1
            continue
        text, removed = clean_text(value)
        nul += removed
        meta = clean_json({k: v for k, v in fields.items() if k != field})
        title_key = _pick([k for k in fields if k != field], TITLE_FIELDS)
        title = fields.get(title_key) if title_key else None
        row_title = _title(clean_text(title)[0], "") if isinstance(title, str) else ""
        meta[where] = number
        sections.append(Section(text, meta, row_title or None))
    if text_field is not None and not sections:
        raise _Unreadable(f"no {where} has text in the field {text_field!r}")
    if not sections:
        raise _Unreadable(
            f"no {where} with text (looked for a field named {', '.join(TEXT_FIELDS)}; "
            "name the text field with text_field / --text-field)"
        )
    if guessed:
        warnings.append(
            f"no field named {'/'.join(TEXT_FIELDS[:3])}...; used the longest text field "
            f"({', '.join(sorted(guessed))}); name it with text_field / --text-field"
        )
    if no_text:
        warnings.append(f"skipped {no_text} {where}(s) without text")
    if nul:
        warnings.append(f"removed {nul} NUL byte(s)")
    return SourceDocument(
        source=entry.source,
        title=entry.path.stem,
        sections=tuple(sections),
        metadata=base,
        nul_bytes=nul,
        warnings=tuple(dict.fromkeys(warnings)),
        size=size,
    )


def _read_csv(
    entry: FileEntry, data: bytes, base: dict[str, Any], text_field: str | None
) -> SourceDocument:
    text, nul, warnings = _decoded(data, base)
    warnings = [w for w in warnings if "NUL" not in w]
    sample = text[:65536]
    dialect: type[csv.Dialect] | csv.Dialect
    if entry.path.suffix.lower() == ".tsv":
        dialect = csv.excel_tab
    else:
        try:
            dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel
    rows = csv.reader(io.StringIO(text, newline=""), dialect)
    try:
        header = next(rows)
    except StopIteration:
        raise _Unreadable("empty CSV file") from None
    names: list[str] = []
    for i, raw in enumerate(header):
        name = raw.strip() or f"column_{i + 1}"
        while name in names:
            name = f"{name}_{i + 1}"
        names.append(name)
    if text_field is not None and text_field not in names:
        raise _Unreadable(f"no column {text_field!r} (columns: {', '.join(names)})")

    def records() -> Iterator[tuple[int, dict[str, Any]]]:
        for number, row in enumerate(rows, start=1):
            if not any(cell.strip() for cell in row):
                continue
            fields: dict[str, Any] = dict(zip(names, row, strict=False))
            if len(row) > len(names):
                fields["_extra"] = row[len(names) :]
            yield number, fields

    return _records_document(entry, base, records(), text_field, "row", nul, warnings, len(data))


def _read_jsonl(
    entry: FileEntry, data: bytes, base: dict[str, Any], text_field: str | None
) -> SourceDocument:
    text, nul, warnings = _decoded(data, base)
    warnings = [w for w in warnings if "NUL" not in w]
    bad: list[int] = []

    def records() -> Iterator[tuple[int, dict[str, Any]]]:
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError:
                bad.append(number)
                continue
            if not isinstance(value, dict):
                bad.append(number)
                continue
            yield number, value

    doc = _records_document(entry, base, records(), text_field, "line", nul, warnings, len(data))
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        note = f"skipped {len(bad)} line(s) that are not JSON objects (line {shown})"
        return SourceDocument(
            source=doc.source,
            title=doc.title,
            sections=doc.sections,
            metadata=doc.metadata,
            nul_bytes=doc.nul_bytes,
            warnings=(*doc.warnings, note),
            size=doc.size,
        )
    return doc


_READERS: dict[str, Callable[[FileEntry, bytes, dict[str, Any], str | None], SourceDocument]] = {
    "text": _read_text,
    "markdown": _read_text,
    "html": _read_html,
    "csv": _read_csv,
    "jsonl": _read_jsonl,
}
