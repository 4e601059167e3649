"""Find the files to ingest: given paths, folders walked recursively, include/exclude globs."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from kb.ingest.documents import SkippedFile

SUPPORTED_TYPES = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A file to read: its source (the path as the user gave it), where it is, size and mtime."""

    source: str
    path: Path
    size: int
    mtime: float

    @property
    def kind(self) -> str | None:
        """Return the reader for this file's extension, or None when unsupported."""
        return SUPPORTED_TYPES.get(self.path.suffix.lower())


def _normalize(source: str) -> str:
    # normpath keeps a relative path relative and turns "./docs//a.md" into "docs/a.md", so
    # the same file given two ways is one source.
    return os.path.normpath(source)


def matches(path: str, pattern: str) -> bool:
    """Tell whether a relative path matches a glob (on the whole path, its name, or a folder)."""
    pattern = pattern.strip()
    if pattern.startswith("./"):
        pattern = pattern[2:]
    name = path.rsplit("/", 1)[-1]
    candidates = [pattern]
    if pattern.startswith("**/"):
        candidates.append(pattern[3:])
    if pattern.endswith("/"):
        candidates = [c.rstrip("/") + "/*" for c in candidates]
    return any(
        fnmatchcase(path, c) or fnmatchcase(name, c) or fnmatchcase(path, c.rstrip("/") + "/*")
        for c in candidates
    )


def _wanted(rel: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    if include and not any(matches(rel, p) for p in include):
        return False
    return not any(matches(rel, p) for p in exclude)


def discover(
    paths: Iterable[str | os.PathLike[str]],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    max_bytes: int | None = None,
) -> tuple[list[FileEntry], list[SkippedFile]]:
    """Return the files under `paths` to read, and those skipped with a reason.

    Folders are walked recursively in name order; hidden files and folders (names starting
    with a dot) are left out. Globs apply to the path relative to the folder given (and to the
    file name), and to files given directly. The same file reached twice is read once.
    """
    files: list[FileEntry] = []
    skipped: list[SkippedFile] = []
    seen: set[str] = set()

    def add(source: str, path: Path) -> None:
        try:
            st = path.stat()
        except FileNotFoundError:
            skipped.append(SkippedFile(source, "broken link or file vanished"))
            return
        except OSError as exc:
            skipped.append(SkippedFile(source, f"cannot read: {exc.strerror or exc}"))
            return
        if not stat.S_ISREG(st.st_mode):
            skipped.append(SkippedFile(source, "not a regular file"))
            return
        real = os.path.realpath(path)
        if real in seen:
            return
        seen.add(real)
        entry = FileEntry(source=source, path=path, size=st.st_size, mtime=st.st_mtime)
        if entry.kind is None:
            suffix = path.suffix or "(no extension)"
            known = ", ".join(sorted(SUPPORTED_TYPES))
            skipped.append(
                SkippedFile(source, f"unsupported file type {suffix} (kb reads {known})")
            )
        elif max_bytes is not None and st.st_size > max_bytes:
            skipped.append(
                SkippedFile(
                    source,
                    f"too large: {st.st_size / 1e6:.1f} MB is over the "
                    f"{max_bytes / 1e6:g} MB limit per file",
                )
            )
        else:
            files.append(entry)

    for given in paths:
        raw = os.fspath(given)
        if not raw:
            continue
        source = _normalize(raw)
        path = Path(raw).expanduser()
        if path.is_dir():

            def unreadable(exc: OSError, top: str = raw) -> None:
                where = _normalize(str(exc.filename or top))
                skipped.append(SkippedFile(where, f"cannot read folder: {exc.strerror or exc}"))

            for root, dirs, names in os.walk(path, onerror=unreadable, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    if name.startswith("."):
                        continue
                    full = Path(root) / name
                    rel = full.relative_to(path).as_posix()
                    if _wanted(rel, include, exclude):
                        add(_normalize(os.path.join(raw, rel)), full)
        elif path.exists() or path.is_symlink():
            if _wanted(source.replace(os.sep, "/"), include, exclude):
                add(source, path)
        else:
            skipped.append(SkippedFile(source, "no such file or directory"))
    return files, skipped
