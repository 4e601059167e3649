"""The sidebar under the page list: where the database is, and ingests still running."""

from __future__ import annotations

import streamlit as st

from ui import bridge, ingesting, jobs
from ui.safe import escape_markdown

SESSION_JOBS = "kb_ingest_jobs"
SESSION_SEEN = "kb_ingest_jobs_seen"
POLL_SECONDS = 1.0


def session_jobs() -> list[jobs.JobView]:
    """Return this session's ingest jobs (newest first) that the registry still holds."""
    registry = jobs.registry()
    found = [registry.get(job_id) for job_id in st.session_state.get(SESSION_JOBS, [])]
    return [j.view() for j in reversed(found) if j is not None]


def remember(job_id: str) -> None:
    """Keep a job id in this session, so the job is found again after switching pages."""
    st.session_state[SESSION_JOBS] = [*st.session_state.get(SESSION_JOBS, []), job_id]


def refresh_after_finished_jobs() -> None:
    """Clear cached reads once per job of this session that has finished since the last run."""
    seen = st.session_state.setdefault(SESSION_SEEN, set())
    for view in session_jobs():
        if not view.running and view.id not in seen:
            seen.add(view.id)
            bridge.invalidate()


def render(*, show_jobs: bool = True) -> None:
    """Show the database location and any running ingest of this session."""
    refresh_after_finished_jobs()
    with st.sidebar:
        st.caption("Database: " + escape_markdown(bridge.database_label(), single_line=True))
        if show_jobs and any(j.running for j in session_jobs()):
            _running_jobs()


@st.fragment(run_every=POLL_SECONDS)
def _running_jobs() -> None:
    views = session_jobs()
    running = [j for j in views if j.running]
    for view in running:
        fraction, _ = ingesting.progress_text(view.progress)
        done = view.progress.chunks_done if view.progress is not None else 0
        st.progress(fraction, text=f"Ingesting: {done:,} chunks")
    if running:
        st.page_link("pages/ingest.py", label="See the ingest", icon=":material/upload_file:")
    if not running:
        # The ingest finished while this page was open: redraw it with fresh numbers.
        st.rerun(scope="app")
