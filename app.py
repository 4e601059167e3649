"""KB Explorer: the Streamlit entry point (`streamlit run app.py`, or `make app`)."""

from __future__ import annotations

from ui.app import main

main()
