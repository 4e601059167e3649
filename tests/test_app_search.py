"""The Search page (AppTest on the real database): modes, options, explain, deep links."""

from __future__ import annotations

import io
import json
import re

import pandas as pd
import pytest

import kb
from app_helpers import (
    NOTES,
    Open,
    frame,
    texts,
)
from helpers import settings_for
from ui import exports

# The AppTest fixtures: open_app, seeded, release_bridges.
pytest_plugins = ["app_fixtures"]


def results(at) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """Return the results table (the Table tab)."""
    return frame(at)


def test_semantic_search_ranks_with_labelled_scores(open_app: Open) -> None:
    at = open_app("search", collection=NOTES, q="gardening")
    assert at.title[0].value == "Search"
    table = results(at)
    assert len(table) == 10
    assert list(table["rank"]) == list(range(1, 11))
    assert table["score"].is_monotonic_decreasing
    assert (abs(table["score"] - (1 - table["distance"])) < 1e-6).all()
    assert table["title"].head(5).str.contains("gardening").all()
    shown = texts(at)
    assert "cosine similarity = 1 - cosine distance (<=>)" in shown
    assert "HNSW index" in shown
    cards = [m.value for m in at.markdown if m.value.startswith("**#")]
    assert cards[0].startswith("**#1** · cosine similarity **")
    highlighted = [m.value for m in at.markdown if ":orange-background[gardening]" in m.value]
    assert len(highlighted) >= 5  # every top card's snippet marks the query word


def test_full_text_and_hybrid_modes(open_app: Open) -> None:
    at = open_app("search", collection=NOTES, q="astronomy")
    at.radio(key="s_mode").set_value("text").run()
    table = results(at)
    assert len(table) == 10 and table["title"].str.contains("astronomy").all()
    assert table["distance"].isna().all()
    assert at.query_params["mode"] == "text"
    assert "ts_rank_cd" in texts(at)
    at.radio(key="s_mode").set_value("hybrid").run()
    assert "reciprocal rank fusion" in texts(at)
    assert results(at)["title"].head(10).str.contains("astronomy").all()


def test_k_filters_and_threshold_from_the_url(open_app: Open) -> None:
    at = open_app("search", collection=NOTES, q="cooking", k="3", meta="topic=cooking")
    table = results(at)
    assert len(table) == 3
    assert all(json.loads(m)["topic"] == "cooking" for m in table["metadata"])
    assert at.number_input(key="s_k").value == 3

    at = open_app("search", collection=NOTES, q="cooking", k="30", min="0.15")
    table = results(at)
    assert 0 < len(table) < 30 and (table["score"] >= 0.15).all()
    assert "Only" in texts(at) and "of k=30" in texts(at)


def test_exact_and_mmr_options(open_app: Open) -> None:
    at = open_app("search", collection=NOTES, q="music notes", exact="1")
    assert "exact scan" in texts(at)
    plain = list(results(at)["title"])
    assert all(title.endswith("about music") for title in plain[:5])
    # The music notes differ by their number alone: nearly the same vector, so a diversity-
    # weighted MMR must reach past them to other topics.
    at = open_app("search", collection=NOTES, q="music notes", mmr="1", k="5", **{"lambda": "0.1"})
    diverse = list(results(at)["title"])
    assert len(diverse) == 5
    assert len({title.split(" about ")[1] for title in diverse}) > 1
    assert at.toggle(key="s_mmr").value is True
    assert at.slider(key="s_lambda").value == pytest.approx(0.1)


def test_explain_and_recall_on_demand(open_app: Open) -> None:
    at = open_app("search", collection=NOTES, q="vectors", k="5")
    at.button(key="s_explain").click().run()
    shown = texts(at)
    # Sixty rows are few enough that the planner may prefer a plain scan: either is shown.
    assert re.search(r"Index used:\*\* (ix_documents_\w+|none)", shown)
    plan = [c.value for c in at.code if c.language == "plaintext"]
    assert any("Limit" in p for p in plan)
    sql = next(c.value for c in at.code if c.language == "sql")
    assert "ORDER BY" in sql and "<=>" in sql
    assert "hnsw.iterative_scan = strict_order" in shown
    at.button(key="s_recall").click().run()
    recall = next(m for m in at.metric if m.label.startswith("recall@"))
    assert recall.label == "recall@5" and 0.0 <= float(recall.value) <= 1.0


def test_only_n_of_k_warning(open_app: Open) -> None:
    at = open_app("search", collection=NOTES, q="harvest", mode="text", k="50")
    assert len(results(at)) == 1
    assert "Only 1 of k=50 results came back" in texts(at)
    at.button(key="s_explain").click().run()
    assert "the full-text query matches fewer documents" in texts(at)


def test_more_like_this_from_a_result_and_back(open_app: Open, seeded) -> None:  # type: ignore[no-untyped-def]
    _, data = seeded
    at = open_app("search", collection=NOTES, q="gardening")
    first_id = results(at)["id"].iloc[0]
    at.button(key=f"s_like_{first_id}").click().run()
    assert at.query_params["like"] == first_id and "q" not in at.query_params
    similar = results(at)
    assert first_id not in set(similar["id"])
    assert "More like this:" in texts(at)
    at.button(key="s_unlike").click().run()
    assert "like" not in at.query_params and at.query_params["q"] == "gardening"
    assert data is not None


def test_deep_link_restores_query_options_and_selected_result(open_app: Open, seeded) -> None:  # type: ignore[no-untyped-def]
    _, data = seeded
    link = {
        "collection": NOTES,
        "q": "gardening tips",
        "mode": "hybrid",
        "k": "7",
        "wv": "2",
        "meta": "topic=hostile",
        "doc": data.hostile_id,
    }
    at = open_app("search", **link)
    assert at.text_input(key="s_q").value == "gardening tips"
    assert at.radio(key="s_mode").value == "hybrid"
    assert at.number_input(key="s_wv").value == 2.0
    assert len(results(at)) == 1
    assert at.query_params == link
    # The selected document is shown as plain text, its highlights escaped.
    assert any("window.__kb_pwned = 2" in t.value for t in at.text)
    for m in at.markdown:
        assert not re.search(r"(?<!\\)[<\[]", m.value.replace(":orange-background[", "")), m.value


def test_bad_url_values_are_messages(open_app: Open) -> None:
    at = open_app(
        "search", collection=NOTES, q="x", mode="DROP TABLE", k="0", min="nan", like="nope"
    )
    shown = texts(at)
    for part in ("mode='DROP TABLE' ignored", "k='0' ignored", "min='nan' ignored"):
        assert part in shown
    assert "like='nope' ignored" in shown
    assert len(results(at)) >= 1


def test_empty_query_and_unknown_like_document(open_app: Open) -> None:
    at = open_app("search", collection=NOTES)
    assert "Type a query" in texts(at)
    at = open_app("search", collection=NOTES, like="00000000-0000-0000-0000-000000000000")
    assert "No document with id" in texts(at)


def test_search_results_export(open_app: Open, seeded) -> None:  # type: ignore[no-untyped-def]
    url, _ = seeded
    at = open_app("search", collection=NOTES, q="postgres", k="4")
    assert [b.proto.label for b in at.get("download_button")] == ["CSV", "JSONL", "Parquet"]
    assert "kb.search(" in texts(at) and "k=4" in texts(at)
    with kb.SyncDatabase(settings_for(url)) as db:
        found = db.call(kb.search, "postgres", collection=NOTES, k=4)
        csv = exports.results_bytes(db, found, "csv")
    frame_ = pd.read_csv(io.BytesIO(csv))
    assert list(frame_["rank"]) == [1, 2, 3, 4] and "score" in frame_.columns
