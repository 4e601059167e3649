"""The app's frame: page config, the registered pages, the sidebar; app.py runs `main()`."""

from __future__ import annotations

import streamlit as st

from ui import sidebar
from ui.icon import favicon


def pages() -> list[st.Page]:
    """Return the pages of the app, in sidebar order (paths relative to app.py)."""
    return [
        st.Page(
            "pages/home.py",
            title="Collections",
            icon=":material/folder_open:",
            default=True,
        ),
        st.Page("pages/browse.py", title="Browse", icon=":material/view_list:", url_path="browse"),
        st.Page("pages/search.py", title="Search", icon=":material/search:", url_path="search"),
        st.Page(
            "pages/ingest.py", title="Ingest", icon=":material/upload_file:", url_path="ingest"
        ),
    ]


def main() -> None:
    """Set up the page, register the pages, and run the one the URL asks for."""
    st.set_page_config(page_title="KB Explorer", page_icon=favicon(), layout="wide")
    current = st.navigation(pages())
    # The Ingest page shows its own progress.
    sidebar.render(show_jobs=current.url_path != "ingest")
    current.run()
