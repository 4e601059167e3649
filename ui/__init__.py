"""Helpers for the Streamlit pages of KB Explorer (kb itself never imports Streamlit)."""
