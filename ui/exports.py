"""Export buttons: CSV, JSON Lines and Parquet of a whole browse filter or a search result.

The file is made only when the button is clicked (a deferred download), on Streamlit's
download thread; the bridge object is captured at render time, so that thread never touches
Streamlit's caches or session.
"""

from __future__ import annotations

import io
import re
from functools import partial

import streamlit as st

import kb
from ui import bridge

FORMATS = (
    ("csv", "CSV", "text/csv"),
    ("jsonl", "JSONL", "application/jsonl"),
    ("parquet", "Parquet", "application/vnd.apache.parquet"),
)


def documents_bytes(
    db: kb.SyncDatabase, collection: str, filters: kb.Filters, order: str, fmt: str
) -> bytes:
    """Return every document of `collection` matching `filters` in format `fmt`, checked."""
    out = io.BytesIO()
    db.call(kb.export_documents, collection, out, format=fmt, filters=filters, order=order)
    return out.getvalue()


def results_bytes(db: kb.SyncDatabase, results: kb.SearchResults, fmt: str) -> bytes:
    """Return search results (rank, score, distance and documents) in format `fmt`, checked."""
    out = io.BytesIO()
    db.run(kb.export_results(results, out, format=fmt))
    return out.getvalue()


def file_stem(name: str) -> str:
    """Return a file name stem made of a collection name."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "export"


def documents_buttons(collection: str, filters: kb.Filters, order: str, total: int) -> None:
    """Show one download button per format for every document the filter matches."""
    db = bridge.bridge()
    st.caption(f"Export all {total:,} matching documents (every page, not just this one):")
    cols = st.columns(len(FORMATS) + 2)
    for col, (fmt, label, mime) in zip(cols, FORMATS, strict=False):
        col.download_button(
            label,
            data=partial(documents_bytes, db, collection, filters, order, fmt),
            file_name=f"{file_stem(collection)}.{fmt}",
            mime=mime,
            icon=":material/download:",
            on_click="ignore",
            key=f"export_docs_{fmt}",
            disabled=total == 0,
        )


def results_buttons(results: kb.SearchResults, stem: str) -> None:
    """Show one download button per format for the search results on screen."""
    db = bridge.bridge()
    st.caption(f"Export these {len(results):,} results:")
    cols = st.columns(len(FORMATS) + 2)
    for col, (fmt, label, mime) in zip(cols, FORMATS, strict=False):
        col.download_button(
            label,
            data=partial(results_bytes, db, results, fmt),
            file_name=f"{file_stem(stem)}-results.{fmt}",
            mime=mime,
            icon=":material/download:",
            on_click="ignore",
            key=f"export_results_{fmt}",
            disabled=len(results) == 0,
        )
