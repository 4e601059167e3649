"""KB Explorer: the Streamlit entry point."""

from __future__ import annotations

import streamlit as st

import kb

st.set_page_config(page_title="KB Explorer", page_icon=":material/database:", layout="wide")


@st.cache_resource(on_release=lambda bridge: bridge.close())
def get_bridge() -> kb.SyncDatabase:
    """Return the process-wide bridge that owns the async engine."""
    return kb.SyncDatabase()


st.title("KB Explorer")
bridge = get_bridge()
try:
    status = bridge.with_db(kb.database_status)
    collections = bridge.call(kb.list_collections)
except kb.KBError as exc:
    st.error(f"Database unavailable: {exc}")
    st.stop()

st.subheader("Collections")
if collections:
    st.dataframe(
        [
            {
                "name": c.name,
                "documents": c.documents,
                "embedder": c.embedder,
                "model": c.model,
                "dimension": c.dimension,
                "metric": c.metric,
                "oldest": c.oldest,
                "newest": c.newest,
            }
            for c in collections
        ],
        hide_index=True,
    )
else:
    st.info("No collections yet.")

st.subheader("Database")
st.text(
    f"{status.url} ({'embedded' if status.embedded else 'external'})\n"
    f"PostgreSQL {status.server_version}, pgvector {status.pgvector_version}\n"
    f"revision {status.current_revision}"
)
