"""How the app words facts about a collection."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kb.browse import collection_ef
from kb.errors import InvalidInput
from kb.indexes import graph_params, is_indexable
from kb.search import DEFAULT_EF_SEARCH


def search_ef(settings: Mapping[str, Any]) -> str:
    """Say which ef_search the collection's searches start from, and how it was chosen."""
    ef = collection_ef(settings)
    record = settings.get("calibration")
    if ef is None:
        return f"{DEFAULT_EF_SEARCH} (default)"
    if isinstance(record, dict) and isinstance(record.get("recall_at_10"), int | float):
        return f"{ef} (recall@10 {record['recall_at_10']:.2f} measured)"
    return f"{ef} (set by hand)"


def index_graph(settings: Mapping[str, Any], dimension: int) -> str:
    """Say how the collection's HNSW graph is built (kb collections reindex changes it)."""
    if not is_indexable(dimension):
        return "no index (exact searches)"
    try:
        params = graph_params(settings)
    except InvalidInput as exc:
        return f"invalid settings: {exc}"
    default = "" if "index" in settings else " (default)"
    return f"m {params.m}, ef_construction {params.ef_construction}{default}"
