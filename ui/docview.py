"""One document on screen: its content as plain text, metadata, and neighbouring chunks.

Document text reaches the screen only through st.text, st.code, st.json and st.dataframe
(none renders Markdown or HTML), or as fully escaped Markdown (ui.safe) for highlighting.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import streamlit as st

import kb
from ui.safe import escape_markdown, highlight_markdown, snippet

SNIPPET_CHARS = 200


def when(value: Any) -> str:
    """Return a timestamp as 'YYYY-MM-DD HH:MM:SS UTC'."""
    return value.strftime("%Y-%m-%d %H:%M:%S %Z") if value is not None else ""


def table(items: Sequence[Any], *, terms: Sequence[str] = (), scores: bool = False) -> pd.DataFrame:
    """Return documents (or search hits) as the table the pages show."""
    rows = []
    for item in items:
        row: dict[str, Any] = {}
        if scores:
            row["rank"] = item.rank
            row["score"] = item.score
            row["distance"] = item.distance
        row.update(
            title=item.title,
            source=item.source or "",
            chunk=item.chunk_index,
            created_at=item.created_at,
            snippet=snippet(item.content, terms, width=SNIPPET_CHARS),
            metadata=json.dumps(item.metadata, ensure_ascii=False, sort_keys=True),
        )
        if scores:
            row["collection"] = item.collection
        row["id"] = str(item.id)
        rows.append(row)
    columns = (["rank", "score", "distance"] if scores else []) + [
        "title",
        "source",
        "chunk",
        "created_at",
        "snippet",
        "metadata",
    ]
    if scores:
        columns.append("collection")
    columns.append("id")
    return pd.DataFrame(rows, columns=columns)


def heading(title: str, fallback: str = "(untitled)") -> None:
    """Show a document title as a subheader that renders literally."""
    st.subheader(escape_markdown(title or fallback, single_line=True), anchor=False)


def document(
    found: kb.Neighbours,
    *,
    terms: Sequence[str] = (),
    open_chunk: Callable[[str], None] | None = None,
    key: str = "doc",
) -> None:
    """Show a document with its metadata and the chunks around it in the same source."""
    doc = found.document
    heading(doc.title)
    st.caption(
        escape_markdown(
            f"{doc.collection} · {doc.source or 'no source'} · chunk {doc.chunk_index} · "
            f"created {when(doc.created_at)} · id {doc.id}",
            single_line=True,
        )
    )
    if terms:
        st.markdown(
            "**Matches:** " + highlight_markdown(snippet(doc.content, terms, width=400), terms)
        )
    content, meta, around = st.tabs(["Content", "Metadata", "Neighbouring chunks"])
    with content:
        st.text(doc.content)
    with meta:
        st.json(doc.metadata, expanded=True)
    with around:
        if not found.before and not found.after:
            st.caption("No other chunks of this source.")
        for chunk in (*found.before, doc, *found.after):
            label = f"chunk {chunk.chunk_index}" + (" (this one)" if chunk.id == doc.id else "")
            with st.container(border=True):
                st.caption(label)
                st.text(chunk.content)
                if open_chunk is not None and chunk.id != doc.id:
                    st.button(
                        f"Open chunk {chunk.chunk_index}",
                        key=f"{key}_open_{chunk.id}",
                        on_click=open_chunk,
                        args=(str(chunk.id),),
                    )
