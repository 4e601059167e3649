"""Browse: a collection's documents newest (or oldest) first, paged by cursor, filtered."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import streamlit as st

import kb
from ui import bridge, docview, exports, filters_form, notebook, page, params
from ui.flash import show_flash
from ui.params import Reader
from ui.safe import escape_markdown, query_terms
from ui.urlstate import UrlState

page.start("Browse", "A collection's documents by the time they were added, page by page.")

URL = UrlState("browse")
SIZES = (10, 25, 50, 100, 200, 500)
DEFAULT_SIZE = 50
ORDERS = ("newest", "oldest")


def _load_from_url(names: list[str]) -> list[str]:
    reader = Reader(params.snapshot())
    problems: list[str] = []
    wanted = reader.text("collection")
    if wanted and wanted not in names:
        fallback = bridge.default_collection()
        problems.append(f"There is no collection named {wanted!r}; showing {fallback!r} instead.")
        wanted = ""
    st.session_state.b_collection = wanted or bridge.default_collection() or names[0]
    st.session_state.b_oldest = reader.choice("order", ORDERS, "newest") == "oldest"
    size = reader.integer("size", low=1, high=500, default=DEFAULT_SIZE)
    st.session_state.b_size = size if size in SIZES else DEFAULT_SIZE
    if size not in SIZES:
        problems.append(f"Page size {size} is not offered; showing {DEFAULT_SIZE} per page.")
    filters_form.seed("b", filters_form.from_url(reader))
    st.session_state.b_after = reader.text("after") or None
    st.session_state.b_before = None if st.session_state.b_after else reader.text("before") or None
    st.session_state.b_doc = reader.uuid("doc")
    return problems + reader.problems


def _first_page() -> None:
    st.session_state.b_after = None
    st.session_state.b_before = None


def _go(after: str | None = None, before: str | None = None) -> None:
    st.session_state.b_after = after
    st.session_state.b_before = before


def _open(doc_id: str | None) -> None:
    st.session_state.b_doc = doc_id


def _selected(table_key: str, ids: list[str]) -> None:
    rows = st.session_state[table_key].selection.rows
    if rows and rows[0] < len(ids):
        st.session_state.b_doc = ids[rows[0]]


def _controls(names: list[str]) -> filters_form.FilterState:
    left, middle, right = st.columns([3, 1, 1], vertical_alignment="bottom")
    left.selectbox("Collection", names, key="b_collection", on_change=_first_page)
    middle.selectbox("Per page", SIZES, key="b_size", on_change=_first_page)
    right.toggle("Oldest first", key="b_oldest", on_change=_first_page)
    state = filters_form.form("b", on_change=_first_page)
    return state


def _fetch(collection: str, order: str, size: int, filters: kb.Filters) -> kb.Page:
    after, before = st.session_state.b_after, st.session_state.b_before
    try:
        result: kb.Page = bridge.read(
            "browse",
            collection,
            limit=size,
            order=order,
            after=after,
            before=before,
            filters=filters,
        )
        return result
    except kb.InvalidInput as exc:
        if after is None and before is None:
            raise
        # A stale or edited link: say so and start from the first page.
        st.warning(escape_markdown(exc), icon=":material/link_off:")
        _first_page()
        first: kb.Page = bridge.read("browse", collection, limit=size, order=order, filters=filters)
        return first


def _table(result: kb.Page, terms: list[str], key_parts: Any) -> None:
    ids = [str(item.id) for item in result.items]
    digest = hashlib.sha1(json.dumps(key_parts, default=str).encode()).hexdigest()[:12]
    key = f"b_table_{digest}"
    st.dataframe(
        docview.table(result.items, terms=terms),
        hide_index=True,
        key=key,
        on_select=lambda: _selected(key, ids),
        selection_mode="single-row",
        column_config={
            "created_at": st.column_config.DatetimeColumn(
                "created_at", format="YYYY-MM-DD HH:mm:ss"
            ),
            "snippet": st.column_config.TextColumn("snippet", width="large"),
        },
    )


def _pager(result: kb.Page) -> None:
    first, prev, nxt, _ = st.columns([1, 1, 1, 3])
    at_start = st.session_state.b_after is None and st.session_state.b_before is None
    first.button(
        "First page",
        icon=":material/first_page:",
        disabled=at_start,
        on_click=_first_page,
        key="b_first",
    )
    prev.button(
        "Previous",
        icon=":material/chevron_left:",
        disabled=result.prev_cursor is None,
        on_click=_go,
        kwargs={"before": result.prev_cursor},
        key="b_prev",
    )
    nxt.button(
        "Next",
        icon=":material/chevron_right:",
        disabled=result.next_cursor is None,
        on_click=_go,
        kwargs={"after": result.next_cursor},
        key="b_next",
    )


def _document(doc_id: str, terms: list[str]) -> None:
    try:
        found: kb.Neighbours = bridge.read("neighbours", doc_id, window=2)
    except kb.NotFound:
        st.warning(
            f"The document {doc_id} is not in the database any more.", icon=":material/help:"
        )
        st.session_state.b_doc = None
        return
    with st.container(border=True):
        docview.document(found, terms=terms, open_chunk=_open, key="b")
        left, right, _ = st.columns([1, 1, 3])
        if left.button("More like this", icon=":material/travel_explore:", key="b_like"):
            st.switch_page(
                "pages/search.py",
                query_params={"collection": found.document.collection, "like": doc_id},
            )
        right.button("Close", icon=":material/close:", on_click=_open, args=(None,), key="b_close")


def _code(collection: str, order: str, size: int, state: filters_form.FilterState) -> str:
    filters = state.code()
    browse_call = notebook.call(
        "browse",
        notebook.SESSION,
        collection,
        limit=size,
        order=order,
        after=st.session_state.b_after,
        before=st.session_state.b_before,
        filters=filters,
    )
    count_call = notebook.call("count_documents", notebook.SESSION, collection, filters=filters)
    statements = [f"page = await {browse_call}", f"total = await {count_call}"]
    if st.session_state.b_doc:
        statements.append(
            "doc = await " + notebook.call("neighbours", notebook.SESSION, st.session_state.b_doc)
        )
    export = notebook.call(
        "export_documents",
        notebook.SESSION,
        collection,
        f"{collection}.csv",
        format="csv",
        filters=filters,
        order=order,
    )
    statements.append(
        "# every matching document, not just this page:\n" + notebook.comment(f"await {export}")
    )
    return notebook.in_session(*statements) + "page.to_dataframe()\n"


def render() -> None:
    show_flash()
    names = bridge.collection_names()
    if not names:
        page.no_collections()
        return
    if URL.arrived():
        st.session_state.b_problems = _load_from_url(names)
    elif st.session_state.get("b_collection") not in names:
        st.session_state.b_collection = bridge.default_collection() or names[0]
        _first_page()
    for problem in st.session_state.pop("b_problems", []):
        st.warning(escape_markdown(problem), icon=":material/link_off:")
    state = _controls(names)
    collection = st.session_state.b_collection
    order = "oldest" if st.session_state.b_oldest else "newest"
    size = int(st.session_state.b_size)
    try:
        filters = state.to_kb()
    except kb.InvalidInput as exc:
        st.error("Filter not applied: " + escape_markdown(exc), icon=":material/filter_alt_off:")
        URL.commit({"collection": collection, "order": order, "size": str(size), **state.url()})
        return
    result = _fetch(collection, order, size, filters)
    total: int = bridge.read("count_documents", collection, filters=filters)
    URL.commit(
        {
            "collection": collection,
            "order": None if order == "newest" else order,
            "size": None if size == DEFAULT_SIZE else str(size),
            **state.url(),
            "after": st.session_state.b_after,
            "before": st.session_state.b_before,
            "doc": st.session_state.b_doc,
        }
    )
    what = "documents match the filters" if not filters.is_empty else "documents"
    st.caption(f"{total:,} {what} · {len(result)} on this page · {order} first")
    terms = query_terms(state.contains)
    if result.items:
        _table(
            result,
            terms,
            [
                collection,
                order,
                size,
                state.url(),
                st.session_state.b_after,
                st.session_state.b_before,
            ],
        )
    else:
        st.info("No documents on this page." if total else "No documents match.")
    _pager(result)
    if st.session_state.b_doc:
        _document(st.session_state.b_doc, terms)
    exports.documents_buttons(collection, filters, order, total)
    page.notebook(_code(collection, order, size, state))


page.run(render)
