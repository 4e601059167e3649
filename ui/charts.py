"""Charts built from kb's plain results (numbers and dates only, never document text)."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd
import streamlit as st

import kb
from ui import bridge


def histogram_unit(oldest: object, newest: object) -> str:
    """Pick day, week or month bins so a span of dates gives a readable number of bars."""
    if oldest is None or newest is None:
        return "day"
    days = (newest - oldest).days  # type: ignore[operator]
    if days > 3 * 365:
        return "month"
    if days > 120:
        return "week"
    return "day"


def documents_over_time(collections: Sequence[kb.CollectionInfo]) -> None:
    """Chart how many documents each collection gained per day, week or month."""
    with_docs = [c for c in collections if c.documents]
    if not with_docs:
        st.caption("No documents to chart.")
        return
    oldest = min(c.oldest for c in with_docs if c.oldest)
    newest = max(c.newest for c in with_docs if c.newest)
    unit = histogram_unit(oldest, newest)
    rows = []
    for c in with_docs:
        bins: list[kb.HistogramBin] = bridge.read("created_histogram", c.name, unit=unit)
        rows += [{"collection": c.name, "start": b.start, "documents": b.count} for b in bins]
    frame = pd.DataFrame(rows, columns=["collection", "start", "documents"])
    chart = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("start:T", title=f"created ({unit}, UTC)"),
            y=alt.Y("sum(documents):Q", title="documents added"),
            color=alt.Color("collection:N", title="collection"),
            tooltip=["collection:N", "start:T", "documents:Q"],
        )
    )
    st.altair_chart(chart, width="stretch")


def score_distribution(scores: Sequence[float], label: str) -> None:
    """Show a histogram of result scores."""
    frame = pd.DataFrame({"score": list(scores)})
    chart = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("score:Q", bin=alt.Bin(maxbins=30), title=label),
            y=alt.Y("count():Q", title="results"),
        )
    )
    st.altair_chart(chart, width="stretch")
