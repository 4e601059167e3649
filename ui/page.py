"""What every page shares: its start, the error boundary, and the notebook-code panel."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import streamlit as st

import kb
from ui import bridge
from ui.safe import escape_markdown

log = logging.getLogger("kb.app")

# While the database is down, check again this often and reload the page once it answers.
RECOVERY_CHECK_SECONDS = 5.0


def _leave_legacy_navigation() -> None:
    # With a pages/ folder next to app.py, Streamlit's first run in a process (and every
    # AppTest run) uses the old folder-based navigation: the page file then runs directly,
    # without app.py, and the sidebar lists file names. Run the app's own navigation in this
    # same run instead (a rerun would drop the button click that started it), then stop.
    # Streamlit's process-wide legacy flag cannot tell: sessions whose first runs start
    # together all run in legacy mode, and only the first would see the flag set.
    from ui.app import main, running_a_page

    if not running_a_page():
        main()
        st.stop()


def start(title: str, caption: str | None = None) -> None:
    """Open a page: leave legacy navigation, then show its title and caption."""
    _leave_legacy_navigation()
    st.title(title)
    if caption:
        st.caption(caption)


def run(render: Callable[[], None]) -> None:
    """Run a page body; kb errors become messages a person can act on, never a traceback."""
    try:
        render()
    except kb.DatabaseUnavailable as exc:
        show_unavailable(exc)
    except kb.CollectionNotFound as exc:
        st.error(escape_markdown(exc), icon=":material/search_off:")
        st.page_link("pages/home.py", label="See the collections")
    except kb.ConfigError as exc:
        st.error(
            "The settings cannot be used: "
            + escape_markdown(exc)
            + "  \nFix the environment or `.env` (see `.env.example`) and restart the app.",
            icon=":material/settings:",
        )
    except kb.KBError as exc:
        st.error(escape_markdown(exc), icon=":material/error:")
    except Exception as exc:
        log.exception("unexpected error on a page")
        st.error(
            "Something went wrong that KB Explorer does not know how to explain: "
            + escape_markdown(f"{type(exc).__name__}: {exc}", single_line=True)
            + "  \nThe details are in the server log.",
            icon=":material/bug_report:",
        )


def show_unavailable(exc: BaseException) -> None:
    """Show the 'database unavailable' panel, and reload by itself once the database is back."""
    with st.container(border=True):
        st.error("**Database unavailable**", icon=":material/cloud_off:")
        st.markdown("**Database:**")
        st.code(bridge.database_label(), language=None)
        st.markdown("**What happened:** " + escape_markdown(exc))
        st.markdown(
            "**What to check:**\n"
            "- that the PostgreSQL server is running and accepts connections "
            "(for the embedded server: `kb db status`);\n"
            "- that `DATABASE_URL` (host, port, user, password, database name) is right, "
            "or unset it to use the embedded server;\n"
            "- that the server has the `vector` extension (pgvector 0.8 or newer)."
        )
        st.caption(
            f"This page checks again every {RECOVERY_CHECK_SECONDS:.0f} s and reloads by itself "
            "when the database answers."
        )
        if st.button("Try again now", icon=":material/refresh:", key="_kb_retry"):
            bridge.invalidate()
            st.rerun()
        _watch_recovery()


@st.fragment(run_every=RECOVERY_CHECK_SECONDS)
def _watch_recovery() -> None:
    try:
        bridge.with_db(kb.database_status)
    except kb.KBError:
        st.caption(f"Still unavailable at {time.strftime('%H:%M:%S')}.")
    else:
        bridge.invalidate()
        st.rerun(scope="app")


def notebook(code: str, *, label: str = "Use in a notebook") -> None:
    """Show the kb code that reproduces what is on screen, ready to paste into a notebook."""
    with st.expander(label, icon=":material/code:"):
        st.code(code.strip() + "\n", language="python")


def forget_stale(key: str, options: list[Any]) -> None:
    """Drop a choice widget's remembered value when it is no longer an option (deleted)."""
    if key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]


def no_collections(hint: str = ".") -> None:
    """Say there is no collection yet; link to Ingest unless writes are off (KB_READ_ONLY)."""
    if bridge.settings().read_only:
        st.info("No collections yet.")
        return
    st.info("No collections yet" + hint)
    st.page_link("pages/ingest.py", label="Ingest files", icon=":material/upload_file:")


def refuse_writes_when_read_only() -> bool:
    """Tell whether writes are off (KB_READ_ONLY), after saying so on the page."""
    if bridge.settings().read_only:
        st.info(
            "kb runs in read-only mode (KB_READ_ONLY): creating, deleting and ingesting are off."
        )
        return True
    return False
