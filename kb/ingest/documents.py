"""What a reader hands to the ingest pipeline: a source with its text sections and metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Section:
    """A part of a source chunked on its own: a PDF page, a CSV row, or the whole text."""

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    title: str | None = None


@dataclass(frozen=True, slots=True)
class SourceDocument:
    """One source (a file, a page of text): its title, sections and source-level metadata."""

    source: str
    title: str
    sections: tuple[Section, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    nul_bytes: int = 0
    warnings: tuple[str, ...] = ()
    size: int = 0

    @classmethod
    def from_text(
        cls,
        source: str,
        text: str,
        *,
        title: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> SourceDocument:
        """Wrap one text as a source with a single section."""
        return cls(
            source=source,
            title=title,
            sections=(Section(text),),
            metadata=dict(metadata or {}),
            size=len(text),
        )


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file that was not ingested, and why."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class FileWarning:
    """Something a person should know about a file that was ingested anyway."""

    path: str
    message: str
