"""The app's frame: page config, the registered pages, the sidebar; app.py runs `main()`."""

from __future__ import annotations

import threading

import streamlit as st

import kb
from ui import sidebar
from ui.icon import favicon

# Set while main() runs the current page, on the session's script thread.
_state = threading.local()


def running_a_page() -> bool:
    """Tell whether a page script runs under main() (False: Streamlit started it directly)."""
    return bool(getattr(_state, "running", False))


def _read_only() -> bool:
    try:
        return kb.get_settings().read_only
    except kb.KBError:
        return False  # the page itself says which setting cannot be read


def pages() -> list[st.Page]:
    """Return the pages of the app, in sidebar order (paths relative to app.py).

    In read-only mode the Ingest page leaves the sidebar; its URL still explains why.
    """
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
            "pages/ingest.py",
            title="Ingest",
            icon=":material/upload_file:",
            url_path="ingest",
            visibility="hidden" if _read_only() else "visible",
        ),
    ]


def main() -> None:
    """Set up the page, register the pages, and run the one the URL asks for."""
    st.set_page_config(page_title="KB Explorer", page_icon=favicon(), layout="wide")
    current = st.navigation(pages())
    # The Ingest page shows its own progress.
    sidebar.render(show_jobs=current.url_path != "ingest")
    _state.running = True
    try:
        current.run()
    finally:
        _state.running = False
