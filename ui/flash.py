"""One-shot messages that survive the rerun after an action (created, deleted, ...)."""

from __future__ import annotations

import streamlit as st

from ui.safe import escape_markdown

_KEY = "kb_flash"


def flash(kind: str, text: str) -> None:
    """Queue a message (success, info, warning or error) for the next run of the page."""
    st.session_state[_KEY] = (kind, text)


def show_flash() -> None:
    """Show and forget the queued message, if any."""
    queued = st.session_state.pop(_KEY, None)
    if not queued:
        return
    kind, text = queued
    show = {"success": st.success, "warning": st.warning, "error": st.error}.get(kind, st.info)
    show(escape_markdown(text))
