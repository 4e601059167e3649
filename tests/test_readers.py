"""Readers and discovery: every file type, bad encodings, NUL bytes, empty/binary/huge files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kb.ingest import SkippedFile, SourceDocument, discover, read_entry
from kb.ingest.cleaning import binary_reason, clean_json, decode
from kb.ingest.discover import FileEntry

DATA = Path(__file__).parent / "data"


def _entry(path: Path, source: str | None = None) -> FileEntry:
    st = path.stat()
    return FileEntry(source=source or str(path), path=path, size=st.st_size, mtime=st.st_mtime)


def _read(path: Path, **kw: object) -> SourceDocument:
    doc = read_entry(_entry(path), **kw)  # type: ignore[arg-type]
    assert isinstance(doc, SourceDocument), doc
    return doc


def _skip_reason(path: Path) -> str:
    result = read_entry(_entry(path))
    assert isinstance(result, SkippedFile), result
    return result.reason


def test_text_and_markdown(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("First paragraph.\n\nSecond one.", encoding="utf-8")
    doc = _read(tmp_path / "a.txt")
    assert doc.title == "a" and doc.sections[0].text == "First paragraph.\n\nSecond one."
    meta = doc.metadata
    assert meta["type"] == "text" and meta["encoding"] == "utf-8" and meta["size"] == 29
    assert meta["file_name"] == "a.txt" and meta["modified"].endswith("+00:00")
    (tmp_path / "b.md").write_text("Intro\n\n# The Title\n\nBody **bold**.", encoding="utf-8")
    md = _read(tmp_path / "b.md")
    assert md.title == "The Title" and md.metadata["type"] == "markdown"
    assert "**bold**" in md.sections[0].text  # Markdown is stored as written
    (tmp_path / "c.md").write_text('---\ntitle: "From front matter"\n---\n# H\n', encoding="utf-8")
    assert _read(tmp_path / "c.md").title == "From front matter"


def test_html_drops_scripts_and_styles_and_uses_the_title(tmp_path: Path) -> None:
    page = tmp_path / "p.html"
    page.write_text(
        "<!doctype html><html><head><title> My  Page </title><style>p{color:red}</style>"
        "<script>alert('x')</script></head><body><h1>Heading</h1><p>One &amp; two</p>"
        "<p>Three<br>four</p><noscript>enable js</noscript><pre>  code\n    kept</pre>"
        "<ul><li>item a</li><li>item b</li></ul></body></html>",
        encoding="utf-8",
    )
    doc = _read(page)
    text = doc.sections[0].text
    assert doc.title == "My Page"
    assert "alert" not in text and "color" not in text and "enable js" not in text
    assert "Heading" in text and "One & two" in text and "Three\nfour" in text
    assert "  code\n    kept" in text and "item a\n\nitem b" in text
    (tmp_path / "q.htm").write_text("<h1>Only a heading</h1><p>x</p>", encoding="utf-8")
    assert _read(tmp_path / "q.htm").title == "Only a heading"


def test_pdf_gives_one_section_per_page_with_its_number() -> None:
    doc = _read(DATA / "sample.pdf")
    assert doc.title == "Sample Report" and doc.metadata["pages"] == 2
    assert [s.metadata["page"] for s in doc.sections] == [1, 2]
    assert "HNSW indexes" in doc.sections[0].text
    assert "keyset paging" in doc.sections[1].text


def test_encrypted_and_broken_pdfs_are_skipped_with_a_reason(tmp_path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(DATA / "sample.pdf").pages:
        writer.add_page(page)
    writer.encrypt(user_password="secret", algorithm="RC4-128")
    with open(tmp_path / "locked.pdf", "wb") as f:
        writer.write(f)
    assert "encrypted" in _skip_reason(tmp_path / "locked.pdf")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf\n")
    assert "PDF" in _skip_reason(tmp_path / "broken.pdf")


def test_csv_rows_with_a_text_column_and_the_rest_as_metadata(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text(
        "id;title;body;tags\n1;First;Hello from row one;a\n2;Second;;b\n3;Third;Row three;c\n",
        encoding="utf-8",
    )
    doc = _read(path)
    assert [s.text for s in doc.sections] == ["Hello from row one", "Row three"]
    first = doc.sections[0]
    assert first.title == "First"
    assert first.metadata == {"id": "1", "title": "First", "tags": "a", "row": 1}
    assert doc.sections[1].metadata["row"] == 3
    assert any("1 row(s) without text" in w for w in doc.warnings)
    named = _read(path, text_field="tags")
    assert [s.text for s in named.sections] == ["a", "b", "c"]
    assert "no column 'nope'" in str(read_entry(_entry(path), text_field="nope"))


def test_csv_without_a_known_text_column_uses_the_longest(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("k\tremark\nx\ta longer remark here\n", encoding="utf-8")
    doc = _read(path)
    assert doc.sections[0].text == "a longer remark here"
    assert any("longest text field" in w for w in doc.warnings)


def test_jsonl_records_bad_lines_and_nested_metadata(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    lines = [
        json.dumps({"text": "first record", "meta": {"a": [1, 2]}, "score": 0.5}),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"content": "second \u0000record", "name": "Two", "n": float("nan")}),
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    doc = _read(path)
    assert [s.text for s in doc.sections] == ["first record", "second record"]
    assert doc.sections[0].metadata == {"meta": {"a": [1, 2]}, "score": 0.5, "line": 1}
    assert doc.sections[1].title == "Two" and doc.sections[1].metadata["n"] is None
    assert doc.nul_bytes == 1
    assert any("2 line(s) that are not JSON objects (line 2, 3)" in w for w in doc.warnings)


def test_nul_bytes_are_removed_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "n.txt"
    path.write_bytes(b"before\x00after and\x00 more text here")
    doc = _read(path)
    assert doc.sections[0].text == "beforeafter and more text here"
    assert doc.nul_bytes == 2 and any("2 NUL" in w for w in doc.warnings)


def test_latin1_and_cp1252_files_decode_with_a_fallback(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_bytes("Café crème, naïve façade.".encode("latin-1"))
    doc = _read(tmp_path / "l.txt")
    assert doc.sections[0].text == "Café crème, naïve façade."
    assert doc.metadata["encoding"] == "cp1252"
    assert any("not valid UTF-8" in w for w in doc.warnings)
    (tmp_path / "w.txt").write_bytes("“Smart quotes” – and €".encode("cp1252"))
    assert _read(tmp_path / "w.txt").sections[0].text == "“Smart quotes” – and €"
    # 0x81 is undefined in cp1252: latin-1 takes every byte.
    assert decode(b"caf\xe9 \x81").encoding == "latin-1"


def test_utf16_and_bom_files(tmp_path: Path) -> None:
    (tmp_path / "u16.txt").write_bytes("Grüße aus UTF-16".encode("utf-16"))
    assert _read(tmp_path / "u16.txt").sections[0].text == "Grüße aus UTF-16"
    (tmp_path / "bom.txt").write_bytes("\ufeffWith a BOM".encode())
    doc = _read(tmp_path / "bom.txt")
    assert doc.sections[0].text == "With a BOM" and doc.metadata["encoding"] == "utf-8"
    assert decode("no bom, little endian".encode("utf-16-le")).text == "no bom, little endian"


def test_empty_and_binary_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    assert _skip_reason(tmp_path / "empty.txt") == "empty file"
    (tmp_path / "blank.md").write_text("  \n\n\t ", encoding="utf-8")
    assert "empty" in _skip_reason(tmp_path / "blank.md")
    (tmp_path / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    assert _skip_reason(tmp_path / "image.txt") == "binary file (PNG image)"
    (tmp_path / "noise.csv").write_bytes(bytes(range(32)) * 40)
    assert "control bytes" in _skip_reason(tmp_path / "noise.csv")
    assert binary_reason(b"plain text\n") is None


def test_clean_json_makes_jsonb_safe_values() -> None:
    value = {"a\x00": "b\x00", "f": float("inf"), "t": (1, 2), 3: {"s": "\ud800"}}
    assert clean_json(value) == {"a": "b", "f": None, "t": [1, 2], "3": {"s": "\ufffd"}}


def _tree(root: Path) -> None:
    (root / "docs" / "drafts").mkdir(parents=True)
    (root / "docs" / ".hidden").mkdir()
    (root / "docs" / "a.md").write_text("a", encoding="utf-8")
    (root / "docs" / "b.txt").write_text("b", encoding="utf-8")
    (root / "docs" / "c.png").write_bytes(b"\x89PNG")
    (root / "docs" / "drafts" / "d.md").write_text("d", encoding="utf-8")
    (root / "docs" / ".hidden" / "e.md").write_text("e", encoding="utf-8")
    (root / "docs" / ".f.md").write_text("f", encoding="utf-8")
    (root / "big.txt").write_text("x" * 3000, encoding="utf-8")


def test_discovery_walks_folders_keeps_relative_sources_and_filters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    files, skipped = discover(["docs", "./docs/a.md", "missing.txt"])
    assert [f.source for f in files] == ["docs/a.md", "docs/b.txt", "docs/drafts/d.md"]
    reasons = {s.path: s.reason for s in skipped}
    assert reasons["missing.txt"] == "no such file or directory"
    assert reasons["docs/c.png"].startswith("unsupported file type .png")
    files, _ = discover(["docs"], include=["*.md"], exclude=["drafts/"])
    assert [f.source for f in files] == ["docs/a.md"]
    files, _ = discover(["docs"], exclude=["drafts/*", "b.*"])
    assert [f.source for f in files] == ["docs/a.md"]
    files, _ = discover([tmp_path / "docs"], include=["**/*.md"])
    assert [f.source for f in files] == [
        os.path.join(str(tmp_path), "docs", "a.md"),
        os.path.join(str(tmp_path), "docs", "drafts", "d.md"),
    ]


def test_files_over_the_size_limit_are_skipped(tmp_path: Path) -> None:
    _tree(tmp_path)
    files, skipped = discover([tmp_path / "big.txt"], max_bytes=1000)
    assert files == []
    assert skipped[0].reason == "too large: 0.0 MB is over the 0.001 MB limit per file"
