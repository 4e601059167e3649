"""Search: semantic, full-text or hybrid search with honest scores, explain and recall."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import streamlit as st

import kb
from ui import bridge, charts, docview, exports, filters_form, notebook, page, params
from ui.flash import show_flash
from ui.params import Reader
from ui.safe import escape_markdown, highlight_markdown, query_terms, snippet
from ui.urlstate import UrlState

page.start("Search", "Find documents by meaning, by words, or both; every score says what it is.")

URL = UrlState("search")
MODES = ("vector", "text", "hybrid")
MODE_LABELS = {"vector": "Semantic", "text": "Full text", "hybrid": "Hybrid"}
DEFAULT_K = 10
MAX_K = 1000
CARDS_STEP = 20
SCORE_LABELS = {
    "cosine": "cosine similarity",
    "l2": "−L2 distance",
    "ip": "inner product",
    "text": "full-text rank",
    "hybrid": "RRF score",
}


def _load_from_url(names: list[str]) -> list[str]:
    reader = Reader(params.snapshot())
    problems: list[str] = []
    wanted = reader.text("collection")
    if wanted and wanted not in names:
        fallback = bridge.default_collection()
        problems.append(f"There is no collection named {wanted!r}; showing {fallback!r} instead.")
        wanted = ""
    ss = st.session_state
    ss.s_collection = wanted or bridge.default_collection() or names[0]
    ss.s_q = reader.text("q")
    ss.s_mode = reader.choice("mode", MODES, "vector")
    ss.s_k = reader.integer("k", low=1, high=MAX_K, default=DEFAULT_K)
    ss.s_exact = reader.flag("exact")
    ss.s_min = reader.number("min", low=-1e9, high=1e9)
    ss.s_mmr = reader.flag("mmr")
    ss.s_lambda = reader.number("lambda", low=0.0, high=1.0)
    ss.s_lambda = 0.5 if ss.s_lambda is None else ss.s_lambda
    ef = reader.integer("ef", low=0, high=1000, default=0)
    ss.s_ef = ef or None
    ss.s_wv = reader.number("wv", low=0.0, high=100.0)
    ss.s_wv = 1.0 if ss.s_wv is None else ss.s_wv
    ss.s_wt = reader.number("wt", low=0.0, high=100.0)
    ss.s_wt = 1.0 if ss.s_wt is None else ss.s_wt
    filters_form.seed("s", filters_form.from_url(reader))
    ss.s_like = reader.uuid("like")
    ss.s_doc = reader.uuid("doc")
    ss.s_shown = CARDS_STEP
    return problems + reader.problems


def _reset_view() -> None:
    st.session_state.s_doc = None
    st.session_state.s_shown = CARDS_STEP


def _open(doc_id: str | None) -> None:
    st.session_state.s_doc = doc_id


def _like(doc_id: str | None, collection: str | None = None) -> None:
    st.session_state.s_like = doc_id
    if collection:
        st.session_state.s_collection = collection
    _reset_view()


def _show_more() -> None:
    st.session_state.s_shown += CARDS_STEP


def _selected(table_key: str, ids: list[str]) -> None:
    rows = st.session_state[table_key].selection.rows
    if rows and rows[0] < len(ids):
        st.session_state.s_doc = ids[rows[0]]


def _controls(names: list[str]) -> filters_form.FilterState:
    ss = st.session_state
    if ss.s_like:
        like_box = st.container(border=True)
        with like_box:
            try:
                doc: kb.DocumentRecord = bridge.read("get_document", ss.s_like)
                title = doc.title or "(untitled)"
            except kb.NotFound:
                title = f"a document that is not in the database any more ({ss.s_like})"
            st.markdown("**More like this:** " + escape_markdown(title, single_line=True))
            st.button(
                "Back to the text query",
                icon=":material/arrow_back:",
                on_click=_like,
                args=(None,),
                key="s_unlike",
            )
    query, collection = st.columns([3, 1], vertical_alignment="bottom")
    query.text_input(
        "Query",
        key="s_q",
        placeholder="What are you looking for?",
        on_change=_reset_view,
        disabled=bool(ss.s_like),
        max_chars=10_000,
    )
    collection.selectbox("Collection", names, key="s_collection", on_change=_reset_view)
    mode, k, exact, mmr = st.columns([2, 1, 1, 1], vertical_alignment="bottom")
    mode.radio(
        "Mode",
        MODES,
        key="s_mode",
        format_func=MODE_LABELS.get,
        horizontal=True,
        on_change=_reset_view,
        disabled=bool(ss.s_like),
    )
    k.number_input("k (results)", min_value=1, max_value=MAX_K, step=1, key="s_k")
    exact.toggle(
        "Exact search",
        key="s_exact",
        help="Scan every vector instead of the HNSW index: slower, and the reference for recall.",
    )
    mmr.toggle("Diversify (MMR)", key="s_mmr", help="Maximal marginal relevance.")
    with st.expander("More options", icon=":material/tune:"):
        a, b, c = st.columns(3)
        a.number_input(
            "Minimum score (empty: none)",
            key="s_min",
            step=0.05,
            format="%.4f",
        )
        b.number_input(
            "HNSW ef_search (empty: automatic)",
            min_value=1,
            max_value=1000,
            step=10,
            key="s_ef",
        )
        c.slider("MMR λ (1 = relevance only)", 0.0, 1.0, step=0.05, key="s_lambda")
        d, e, _ = st.columns(3)
        d.number_input("Hybrid: vector weight", min_value=0.0, max_value=100.0, key="s_wv")
        e.number_input("Hybrid: full-text weight", min_value=0.0, max_value=100.0, key="s_wt")
    return filters_form.form("s", on_change=_reset_view)


def _options(filters: kb.Filters) -> dict[str, Any]:
    ss = st.session_state
    options: dict[str, Any] = {"k": int(ss.s_k), "filters": filters}
    if ss.s_exact:
        options["exact"] = True
    if ss.s_ef:
        options["ef_search"] = int(ss.s_ef)
    if ss.s_min is not None:
        options["min_score"] = float(ss.s_min)
    if ss.s_mmr:
        options["mmr"] = True
        options["mmr_lambda"] = float(ss.s_lambda)
    if ss.s_mode == "hybrid" and not ss.s_like:
        options["vector_weight"] = float(ss.s_wv)
        options["text_weight"] = float(ss.s_wt)
    return options


def _run(collection: str, filters: kb.Filters) -> kb.SearchResults | None:
    ss = st.session_state
    options = _options(filters)
    with st.spinner("Searching…"):
        if ss.s_like:
            return bridge.read("similar", ss.s_like, collection=collection, **options)  # type: ignore[no-any-return]
        if not (ss.s_q or "").strip():
            return None
        return bridge.read(  # type: ignore[no-any-return]
            "search", ss.s_q, collection=collection, mode=ss.s_mode, **options
        )


def _score_label(results: kb.SearchResults) -> str:
    request = results.request
    metric = results.items[0].metric if results.items else None
    if request.mode == "vector" and metric:
        return SCORE_LABELS[metric]
    return SCORE_LABELS.get(request.mode, "score")


def _summary(results: kb.SearchResults, metric: str | None) -> None:
    request = results.request
    key = metric if request.mode == "vector" and metric else request.mode
    definition = kb.SCORE_DEFINITIONS.get(key, "")
    how = "exact scan" if request.exact or results.exact_fallback else "HNSW index"
    if request.mode == "text":
        how = "full-text index"
    st.caption(
        escape_markdown(f"{len(results)} results · {how} · score = {definition}", single_line=True)
    )
    for note in results.notes:
        st.info(escape_markdown(note), icon=":material/info:")
    if len(results) < request.k:
        st.warning(
            f"Only {len(results)} of k={request.k} results came back. "
            "Open Explain below to see why.",
            icon=":material/warning:",
        )


def _cards(results: kb.SearchResults, terms: list[str], label: str) -> None:
    shown = st.session_state.get("s_shown", CARDS_STEP)
    for item in results.items[:shown]:
        with st.container(border=True):
            head, actions = st.columns([5, 2], vertical_alignment="top")
            with head:
                st.markdown(
                    f"**#{item.rank}** · {label} **{item.score:.4f}**"
                    + (
                        f" · distance {item.distance:.4f} " + escape_markdown(f"({item.operator})")
                        if item.distance is not None
                        else ""
                    )
                    + " · "
                    + escape_markdown(item.title or "(untitled)", single_line=True)
                )
                st.caption(
                    escape_markdown(
                        f"{item.source or 'no source'} · chunk {item.chunk_index} · "
                        f"{docview.when(item.created_at)} · {item.collection}",
                        single_line=True,
                    )
                )
            with actions:
                left, right = st.columns(2)
                left.button(
                    "Open",
                    key=f"s_open_{item.id}",
                    on_click=_open,
                    args=(str(item.id),),
                    icon=":material/open_in_full:",
                )
                right.button(
                    "Like this",
                    key=f"s_like_{item.id}",
                    on_click=_like,
                    args=(str(item.id), item.collection),
                    icon=":material/travel_explore:",
                    help="More like this",
                )
            st.markdown(highlight_markdown(snippet(item.content, terms), terms))
            if item.metadata:
                st.caption(
                    escape_markdown(
                        json.dumps(item.metadata, ensure_ascii=False, sort_keys=True),
                        single_line=True,
                    )
                )
    if len(results) > shown:
        st.button(
            f"Show {min(CARDS_STEP, len(results) - shown)} more",
            on_click=_show_more,
            key="s_more",
        )


def _table(results: kb.SearchResults, terms: list[str], label: str) -> None:
    ids = [str(item.id) for item in results.items]
    digest = hashlib.sha1("|".join(ids).encode()).hexdigest()[:12]
    key = f"s_table_{digest}"
    st.dataframe(
        docview.table(results.items, terms=terms, scores=True),
        hide_index=True,
        key=key,
        on_select=lambda: _selected(key, ids),
        selection_mode="single-row",
        column_config={
            "score": st.column_config.NumberColumn(f"score ({label})", format="%.4f"),
            "distance": st.column_config.NumberColumn("distance", format="%.4f"),
            "created_at": st.column_config.DatetimeColumn(
                "created_at", format="YYYY-MM-DD HH:mm:ss"
            ),
            "snippet": st.column_config.TextColumn("snippet", width="large"),
        },
    )


def _document(doc_id: str, terms: list[str]) -> None:
    try:
        found: kb.Neighbours = bridge.read("neighbours", doc_id, window=2)
    except kb.NotFound:
        st.warning(f"The document {doc_id} is not in the database any more.")
        st.session_state.s_doc = None
        return
    with st.container(border=True):
        docview.document(found, terms=terms, open_chunk=_open, key="s")
        left, right, _ = st.columns([1, 1, 3])
        left.button(
            "More like this",
            icon=":material/travel_explore:",
            on_click=_like,
            args=(doc_id, found.document.collection),
            key="s_doc_like",
        )
        right.button("Close", icon=":material/close:", on_click=_open, args=(None,), key="s_close")


def _explain(results: kb.SearchResults) -> None:
    request = results.request
    with st.expander("Explain", icon=":material/troubleshoot:"):
        analyze = st.checkbox("Run EXPLAIN ANALYZE (executes the query again)", key="s_analyze")
        if st.button("Explain this search", key="s_explain"):
            st.session_state.s_explained = (request, analyze)
        shown = st.session_state.get("s_explained")
        if shown and shown[0] == request:
            explanation: kb.Explanation = bridge.read("explain", request, analyze=shown[1])
            if explanation.warning:
                st.warning(escape_markdown(explanation.warning), icon=":material/warning:")
            for note in explanation.notes:
                st.info(escape_markdown(note))
            if explanation.indexes:
                st.markdown("**Index used:** " + escape_markdown(", ".join(explanation.indexes)))
            else:
                st.markdown("**Index used:** none (a sequential scan, or an exact search)")
            st.caption(
                f"{explanation.rows} of k={explanation.k} rows · "
                + ("exact" if explanation.exact else "approximate")
                + (
                    " · re-run exactly after a short index scan"
                    if explanation.exact_fallback
                    else ""
                )
            )
            if explanation.settings:
                st.text("Settings for this transaction:")
                st.code(
                    "\n".join(f"{k} = {v}" for k, v in explanation.settings.items()),
                    language=None,
                )
            st.text("SQL:")
            st.code(explanation.sql, language="sql", wrap_lines=True)
            st.text("Parameters:")
            st.json(explanation.params, expanded=False)
            st.text("Plan" + (" (ANALYZE)" if explanation.analyzed else "") + ":")
            st.code(explanation.plan, language=None)
        if request.mode != "text":
            if st.button("Measure recall@k against an exact search", key="s_recall"):
                st.session_state.s_recalled = request
            if st.session_state.get("s_recalled") == request:
                report: kb.RecallReport = bridge.read("recall_at_k", request)
                st.metric(
                    f"recall@{report.k}",
                    f"{report.recall:.3f}",
                    help=f"ef_search={report.ef_search}",
                )
                st.caption(
                    f"approximate {report.approximate_ms:.1f} ms · exact {report.exact_ms:.1f} ms"
                    f" · ef_search {report.ef_search} · {len(report.missing)} of the exact "
                    "top-k missing from the approximate top-k"
                )


def _code(collection: str, state: filters_form.FilterState) -> str:
    ss = st.session_state
    options = _options(state.to_kb())
    options["filters"] = state.code()
    if ss.s_like:
        call = notebook.call(
            "similar", notebook.SESSION, ss.s_like, collection=collection, **options
        )
    else:
        call = notebook.call(
            "search",
            notebook.SESSION,
            ss.s_q or "your query",
            collection=collection,
            mode=ss.s_mode,
            **options,
        )
    return (
        notebook.in_session(
            f"results = await {call}",
            "# why it ran as it did, and recall against an exact search:",
            "explanation = await kb.explain(session, results.request)",
            "recall = await kb.recall_at_k(session, results.request)",
        )
        + "results.to_dataframe()\n"
    )


def render() -> None:
    show_flash()
    names = bridge.collection_names()
    if not names:
        page.no_collections()
        return
    if URL.arrived():
        st.session_state.s_problems = _load_from_url(names)
    elif st.session_state.get("s_collection") not in names:
        st.session_state.s_collection = bridge.default_collection() or names[0]
    for problem in st.session_state.pop("s_problems", []):
        st.warning(escape_markdown(problem), icon=":material/link_off:")
    ss = st.session_state
    state = _controls(names)
    collection = ss.s_collection
    URL.commit(
        {
            "collection": collection,
            "q": None if ss.s_like else ss.s_q,
            "mode": None if ss.s_mode == "vector" or ss.s_like else ss.s_mode,
            "k": None if int(ss.s_k) == DEFAULT_K else str(int(ss.s_k)),
            "exact": "1" if ss.s_exact else None,
            "min": None if ss.s_min is None else f"{float(ss.s_min):g}",
            "mmr": "1" if ss.s_mmr else None,
            "lambda": f"{float(ss.s_lambda):g}" if ss.s_mmr and ss.s_lambda != 0.5 else None,
            "ef": str(int(ss.s_ef)) if ss.s_ef else None,
            "wv": f"{float(ss.s_wv):g}" if ss.s_mode == "hybrid" and ss.s_wv != 1.0 else None,
            "wt": f"{float(ss.s_wt):g}" if ss.s_mode == "hybrid" and ss.s_wt != 1.0 else None,
            **state.url(),
            "like": ss.s_like,
            "doc": ss.s_doc,
        }
    )
    try:
        filters = state.to_kb()
        results = _run(collection, filters)
    except kb.DatabaseUnavailable:
        raise
    except kb.KBError as exc:
        st.error(escape_markdown(exc), icon=":material/error:")
        page.notebook(_code(collection, filters_form.FilterState()))
        return
    if results is None:
        st.info("Type a query and press Enter, or pick “More like this” on any document.")
        page.notebook(_code(collection, state))
        return
    metric = results.items[0].metric if results.items else None
    label = _score_label(results)
    terms = [] if ss.s_like else query_terms(ss.s_q)
    _summary(results, metric)
    if ss.s_doc:
        _document(ss.s_doc, terms)
    if results.items:
        cards, table, chart = st.tabs(["Results", "Table", "Score distribution"])
        with cards:
            _cards(results, terms, label)
        with table:
            _table(results, terms, label)
        with chart:
            charts.score_distribution([item.score for item in results.items], label)
    _explain(results)
    exports.results_buttons(results, collection)
    page.notebook(_code(collection, state))


page.run(render)
