"""Keep a page's view in its URL, so a copied link opens the same view.

Each run a page asks `arrived()`: True when the URL holds something the page did not write
itself (a pasted link, the first load, back/forward), so the page loads its widgets from the
URL; otherwise the widgets are the truth. After drawing, `commit()` writes the view back.
Switching pages clears the URL; coming back restores the view the page last had.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import streamlit as st

from ui import params


class UrlState:
    """The URL side of one page's view."""

    def __init__(self, page: str) -> None:
        self._written = f"{page}__url_written"
        self._remembered = f"{page}__url_remembered"

    def arrived(self) -> bool:
        """Tell whether the widgets must be loaded from the URL this run."""
        url = params.snapshot()
        remembered = st.session_state.get(self._remembered)
        if not url and remembered:
            # Back on this page after visiting another (page links drop the URL's
            # parameters): show the view it had.
            params.write(remembered)
            return True
        return url != st.session_state.get(self._written)

    def commit(self, state: Mapping[str, str | Sequence[str] | None]) -> None:
        """Write the view into the URL and remember it."""
        params.write(state)
        normalized = params.normalized(state)
        st.session_state[self._written] = normalized
        st.session_state[self._remembered] = normalized
