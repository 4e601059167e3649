"""Collections (home): every collection with its numbers, create and delete, and the database."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import kb
from kb.embedders import KIND_LABELS, KINDS, make_embedder
from ui import bridge, charts, labels, notebook, page
from ui.flash import flash, show_flash
from ui.page import forget_stale
from ui.safe import escape_markdown

ALL = "\x00all"  # the "all collections" choice; no collection name can hold a NUL byte

page.start("Collections", "Every collection in the knowledge base, and the database it lives in.")


def _table(collections: list[kb.CollectionInfo]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "collection": c.name,
                "documents": c.documents,
                "embedder": c.embedder,
                "model": c.model,
                "dimension": c.dimension,
                "metric": c.metric,
                "search ef": labels.search_ef(c.settings),
                "index graph": labels.index_graph(c.settings, c.dimension),
                "oldest": c.oldest,
                "newest": c.newest,
                "description": c.description,
            }
            for c in collections
        ],
        columns=[
            "collection",
            "documents",
            "embedder",
            "model",
            "dimension",
            "metric",
            "search ef",
            "index graph",
            "oldest",
            "newest",
            "description",
        ],
    )


def _overview(collections: list[kb.CollectionInfo]) -> None:
    if not collections:
        page.no_collections(": create one below, or ingest files into a new one.")
        return
    total = sum(c.documents for c in collections)
    left, middle, right = st.columns(3)
    left.metric("Collections", f"{len(collections):,}")
    middle.metric("Documents", f"{total:,}")
    newest = max((c.newest for c in collections if c.newest), default=None)
    right.metric("Newest document", newest.strftime("%Y-%m-%d %H:%M") if newest else "none")
    st.dataframe(
        _table(collections),
        hide_index=True,
        column_config={
            "documents": st.column_config.NumberColumn("documents", format="localized"),
            "oldest": st.column_config.DatetimeColumn("oldest", format="YYYY-MM-DD HH:mm"),
            "newest": st.column_config.DatetimeColumn("newest", format="YYYY-MM-DD HH:mm"),
        },
    )
    with st.container(border=True):
        st.subheader("Documents added over time")
        names = [c.name for c in collections if c.documents]
        forget_stale("chart_collection", [ALL, *names])
        shown = st.selectbox(
            "Show",
            [ALL, *names],
            format_func=lambda n: "All collections" if n == ALL else n,
            key="chart_collection",
        )
        charts.documents_over_time(
            collections if shown == ALL else [c for c in collections if c.name == shown]
        )
    names = [c.name for c in collections]
    forget_stale("open_collection", names)
    links = st.columns(2)
    default = bridge.default_collection()
    pick = links[0].selectbox(
        "Open a collection",
        names,
        index=names.index(default) if default in names else 0,
        key="open_collection",
    )
    with links[1]:
        st.page_link(
            "pages/browse.py",
            label="Browse it",
            icon=":material/view_list:",
            query_params={"collection": pick},
        )
        st.page_link(
            "pages/search.py",
            label="Search it",
            icon=":material/search:",
            query_params={"collection": pick},
        )


def _create() -> None:
    with st.expander("Create a collection", icon=":material/add:"):
        with st.form("create_collection", clear_on_submit=False):
            name = st.text_input("Name", max_chars=200, key="new_name")
            description = st.text_input("Description (optional)", key="new_description")
            default_kind = bridge.settings().embedder
            kind = st.selectbox(
                "Embedder",
                KINDS,
                index=KINDS.index(default_kind) if default_kind in KINDS else 0,
                format_func=lambda k: KIND_LABELS.get(k, k),
                key="new_kind",
            )
            model = st.text_input(
                "Model (optional)",
                key="new_model",
                help="Empty: the default for the embedder (local: all-MiniLM-L6-v2; "
                "OpenAI: KB_OPENAI_MODEL; hashing: feature-hashing-<dimension>).",
            )
            dimension = st.number_input(
                "Dimension (hashing, or an API model kb does not know)",
                min_value=8,
                max_value=16000,
                value=384,
                step=1,
                key="new_dimension",
            )
            metric = st.selectbox("Metric", ("cosine", "l2", "ip"), key="new_metric")
            submitted = st.form_submit_button("Create", type="primary")

        if submitted:
            embedder = make_embedder(kind, model.strip() or None, dimension=int(dimension))
            bridge.call(
                kb.create_collection,
                name,
                embedder=embedder.kind,
                model=embedder.model,
                dimension=embedder.dimension,
                metric=metric,
                description=description,
            )
            bridge.invalidate()
            flash(
                "success",
                f"Created the collection {name.strip()!r} ({embedder.model}, "
                f"{embedder.dimension} dims, {metric}).",
            )
            st.rerun()


def _delete(collections: list[kb.CollectionInfo]) -> None:
    if not collections:
        return
    with st.expander("Delete a collection", icon=":material/delete:"):
        names = [c.name for c in collections]
        forget_stale("delete_name", [*names, None])
        name = st.selectbox("Collection to delete", names, index=None, key="delete_name")
        if name is None:
            return
        info = next(c for c in collections if c.name == name)
        st.warning(
            "This deletes the collection "
            + escape_markdown(repr(name))
            + f" and its {info.documents:,} documents. It cannot be undone.",
            icon=":material/warning:",
        )
        typed = st.text_input("Type the collection's name to confirm", key="delete_confirm")
        confirmed = typed == name
        if st.button("Delete for good", type="primary", disabled=not confirmed, key="delete_go"):
            removed = bridge.call(kb.delete_collection, name)
            bridge.invalidate()
            for key in ("delete_name", "delete_confirm"):
                st.session_state.pop(key, None)
            flash("success", f"Deleted the collection {name!r} and its {removed:,} documents.")
            st.rerun()


def _database() -> None:
    st.subheader("Database")
    status = bridge.status()
    rows = {
        "server": "embedded (started by kb)" if status.embedded else "external (DATABASE_URL)",
        "URL": status.url,
        "PostgreSQL": status.server_version,
        "pgvector": status.pgvector_version or "not installed",
        "shared_buffers": status.shared_buffers,
        "migration revision": status.current_revision or "none",
        "latest revision": status.head_revision or "none",
        "read-only": "yes (KB_READ_ONLY)" if status.read_only else "no",
    }
    st.dataframe(
        pd.DataFrame({"property": list(rows), "value": list(rows.values())}),
        hide_index=True,
        key="database_panel",
    )
    if status.pending:
        st.warning(
            "Migrations pending: "
            + escape_markdown(", ".join(status.pending))
            + ". Run `kb db upgrade`.",
        )


def render() -> None:
    show_flash()
    collections = bridge.collections()
    _overview(collections)
    if not bridge.settings().read_only:
        _create()
        _delete(collections)
    else:
        page.refuse_writes_when_read_only()
    _database()
    page.notebook(
        notebook.in_session(
            "collections = await kb.list_collections(session)",
            "for c in collections:",
            "    print(c.name, c.documents, c.model, c.dimension, c.metric)",
        )
        + "print(await kb.database_status(db))\n"
    )


page.run(render)
