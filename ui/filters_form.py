"""The filter form shared by Browse and Search, its URL form, and its kb.Filters."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import streamlit as st

import kb
from kb.filters import parse_filter_args
from ui import notebook
from ui.params import Reader

# URL parameter names of each filter field.
META, FROM, TO, TITLE, SOURCE, TEXT = "meta", "from", "to", "title", "source", "contains"


@dataclass(frozen=True)
class FilterState:
    """The filters as a person set them (the `to` day is inclusive)."""

    meta: tuple[str, ...] = field(default_factory=tuple)
    created_from: dt.date | None = None
    created_to: dt.date | None = None
    title: str = ""
    source: str = ""
    contains: str = ""

    @property
    def active(self) -> int:
        """Return how many filter fields are set."""
        return sum(
            bool(v)
            for v in (
                self.meta,
                self.created_from,
                self.created_to,
                self.title,
                self.source,
                self.contains,
            )
        )

    def url(self) -> dict[str, str | list[str] | None]:
        """Return the query parameters that encode these filters."""
        return {
            META: list(self.meta),
            FROM: self.created_from.isoformat() if self.created_from else None,
            TO: self.created_to.isoformat() if self.created_to else None,
            TITLE: self.title or None,
            SOURCE: self.source or None,
            TEXT: self.contains or None,
        }

    def to_kb(self) -> kb.Filters:
        """Return the kb.Filters these mean (raises kb.InvalidInput for a malformed line)."""
        base = parse_filter_args(self.meta)
        return replace(
            base,
            created_from=self.created_from,
            created_to=(self.created_to + dt.timedelta(days=1)) if self.created_to else None,
            title_contains=self.title or None,
            source_contains=self.source or None,
            content_contains=self.contains or None,
        )

    def code(self) -> notebook._Raw | None:
        """Return the kb.Filters(...) expression for a notebook, or None when empty."""
        filters = self.to_kb()
        if filters.is_empty:
            return None
        args = {
            "metadata": dict(filters.metadata) or None,
            "metadata_text": dict(filters.metadata_text) or None,
            "created_from": self.created_from,
            "created_to": (self.created_to + dt.timedelta(days=1)) if self.created_to else None,
            "title_contains": filters.title_contains,
            "source_contains": filters.source_contains,
            "content_contains": filters.content_contains,
        }
        return notebook.raw(notebook.call("Filters", **args))


def from_url(reader: Reader) -> FilterState:
    """Read the filters from query parameters (bad values are noted on the reader)."""
    return FilterState(
        meta=tuple(line for line in reader.many(META) if line.strip()),
        created_from=reader.day(FROM),
        created_to=reader.day(TO),
        title=reader.text(TITLE),
        source=reader.text(SOURCE),
        contains=reader.text(TEXT),
    )


def seed(prefix: str, state: FilterState) -> None:
    """Put the filters into the form's widget state (before the widgets are drawn)."""
    st.session_state[f"{prefix}_meta"] = "\n".join(state.meta)
    st.session_state[f"{prefix}_from"] = state.created_from
    st.session_state[f"{prefix}_to"] = state.created_to
    st.session_state[f"{prefix}_title"] = state.title
    st.session_state[f"{prefix}_source"] = state.source
    st.session_state[f"{prefix}_contains"] = state.contains


def form(prefix: str, *, on_change: Callable[[], None] | None = None) -> FilterState:
    """Draw the filter widgets and return what they hold."""
    for name, empty in (
        ("meta", ""),
        ("from", None),
        ("to", None),
        ("title", ""),
        ("source", ""),
        ("contains", ""),
    ):
        st.session_state.setdefault(f"{prefix}_{name}", empty)
    kwargs: dict[str, Any] = {"on_change": on_change} if on_change is not None else {}
    active = sum(
        bool(st.session_state[f"{prefix}_{name}"])
        for name in ("meta", "from", "to", "title", "source", "contains")
    )
    label = f"Filters ({active} set)" if active else "Filters"
    with st.expander(label, icon=":material/filter_alt:", expanded=bool(active)):
        st.text_area(
            "Metadata, one per line: key=value (text, or the number it spells) or key:=JSON",
            key=f"{prefix}_meta",
            height=80,
            placeholder='lang=en\nyear=2020\ntags:=["draft"]',
            **kwargs,
        )
        left, right = st.columns(2)
        left.date_input("Created from (UTC)", key=f"{prefix}_from", format="YYYY-MM-DD", **kwargs)
        right.date_input(
            "Created until (UTC, inclusive)", key=f"{prefix}_to", format="YYYY-MM-DD", **kwargs
        )
        a, b, c = st.columns(3)
        a.text_input("Title contains", key=f"{prefix}_title", **kwargs)
        b.text_input("Source contains", key=f"{prefix}_source", **kwargs)
        c.text_input("Text contains", key=f"{prefix}_contains", **kwargs)
    meta = st.session_state[f"{prefix}_meta"] or ""
    return FilterState(
        meta=tuple(line.strip() for line in meta.splitlines() if line.strip()),
        created_from=st.session_state[f"{prefix}_from"],
        created_to=st.session_state[f"{prefix}_to"],
        title=st.session_state[f"{prefix}_title"] or "",
        source=st.session_state[f"{prefix}_source"] or "",
        contains=st.session_state[f"{prefix}_contains"] or "",
    )
