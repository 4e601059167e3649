"""The benchmark harness, S tier: it runs end to end and its numbers are well formed and correct.

Times are recorded but not judged here (the machine is shared); rows returned, recall and
agreement between kb and the baselines are.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from bench.embedding import PROPOSED
from helpers import url_text
from kb.embedders.local import native_bf16

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def s_tier(server_url: URL, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run `python -m bench --tier S` once against the test server and load its JSON."""
    out = tmp_path_factory.mktemp("bench") / "S.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--tier",
            "S",
            "--out",
            str(out),
            "--quiet",
            "--database-url",
            url_text(server_url),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| target | measured | bound | met |" in proc.stdout
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _no_errors(section: Any, path: str = "") -> list[str]:
    """Return the paths of every `error` recorded below `section`, except missing libraries."""
    found: list[str] = []
    if isinstance(section, dict):
        err = section.get("error")
        if isinstance(err, str) and "not installed" not in err:
            found.append(f"{path}: {err}")
        for key, value in section.items():
            if key != "error":
                found += _no_errors(value, f"{path}/{key}")
    return found


def test_records_environment(s_tier: dict[str, Any]) -> None:
    assert s_tier["tier"] == "S"
    assert s_tier["machine"]["cpus"] >= 1
    assert s_tier["versions"]["python"].startswith("3.")
    assert s_tier["versions"]["asyncpg"]
    pg = s_tier["postgres"]
    assert pg["version"] and pg["pgvector"]
    for name in ("shared_buffers", "work_mem", "maintenance_work_mem", "max_parallel_workers"):
        assert pg["settings"][name], name


def test_records_what_the_server_wrote_during_each_scenario(s_tier: dict[str, Any]) -> None:
    for name in ("unfiltered", "filtered", "hybrid"):
        background = s_tier["timings"][name]["server_background"]
        assert background["checkpoint_buffers"] >= 0 and background["checkpoints"] >= 0, name


def test_every_scenario_ran_without_error(s_tier: dict[str, Any]) -> None:
    scenarios = s_tier["scenarios"]
    for name in (
        "ingest",
        "load",
        "unfiltered",
        "filtered",
        "exact",
        "browse",
        "hybrid",
        "pending",
        "realtext",
        "embedding",
    ):
        assert name in scenarios, name
    assert _no_errors(scenarios) == []


def test_ingest_rates(s_tier: dict[str, Any]) -> None:
    for dim in ("d384", "d1536"):
        section = s_tier["scenarios"]["ingest"][dim]
        for name in ("kb", "raw COPY BINARY", "SQLAlchemy ORM"):
            entry = section[name]
            assert entry["rows_per_s"] > 0
            assert entry["searchable_s"] >= entry["load_s"] > 0


def test_unfiltered_results_are_complete_and_recall_is_a_share(s_tier: dict[str, Any]) -> None:
    unf = s_tier["scenarios"]["unfiltered"]
    assert unf["by_ef"]
    for entries in unf["by_ef"].values():
        for name, entry in entries.items():
            assert entry["rows_min"] == 10, name
            assert 0.0 <= entry["recall_at_10"] <= 1.0, name
            assert 0 < entry["p50_ms"] <= entry["p99_ms"], name
        # kb and its own SQL on raw asyncpg return the same rows.
        assert entries["kb"]["same_results_as_raw"] >= 0.9
    assert unf["fixed_ef_engines"]["numpy exact"]["recall_at_10"] == 1.0
    for row in unf["qps"].values():
        assert row["kb"] > 0


def test_filtered_returns_every_matching_row(s_tier: dict[str, Any]) -> None:
    for label, entry in s_tier["scenarios"]["filtered"].items():
        kb = entry["kb"]
        assert kb["expected_rows"] == min(10, entry["matching_rows"]), label
        assert kb["short_queries"] == 0, label
        assert kb["rows_min"] == kb["expected_rows"], label
        assert 0.0 <= kb["recall_at_10"] <= 1.0, label


def test_exact_search_is_exact(s_tier: dict[str, Any]) -> None:
    for name, entry in s_tier["scenarios"]["exact"].items():
        assert entry["recall_at_10"] == 1.0, name


def test_browse_pages_match_offset(s_tier: dict[str, Any]) -> None:
    browse = s_tier["scenarios"]["browse"]
    assert browse["depths"]
    for depth, entry in browse["depths"].items():
        assert entry["same_rows"], depth
        assert entry["kb keyset"]["rows"] == browse["page_size"]


def test_hybrid_and_real_text(s_tier: dict[str, Any]) -> None:
    hybrid = s_tier["scenarios"]["hybrid"]
    for bucket in ("rare", "medium", "common"):
        for mode in ("vector", "text", "hybrid"):
            assert hybrid[bucket][mode]["rows_min"] >= 1, (bucket, mode)
    real = s_tier["scenarios"]["realtext"]
    for entry in real["recall_at_10"].values():
        assert 0.0 <= entry["kb"] <= 1.0


def test_pending_entries_were_measured_then_merged(s_tier: dict[str, Any]) -> None:
    pending = s_tier["scenarios"]["pending"]
    # The write past kb left entries to merge, and kb merged them.
    assert pending["pages_merged"] > 0
    for state in ("before", "pending", "merged"):
        for mode in ("text", "hybrid"):
            assert pending[state][mode]["rows_min"] >= 1, (state, mode)


def test_embedding_configurations(s_tier: dict[str, Any]) -> None:
    configs = s_tier["scenarios"]["embedding"]["configs"]
    default = configs["sentence-transformers fp32 (reference)"]
    assert default["chunks_per_s"] > 0
    assert default["cosine_to_default_min"] == pytest.approx(1.0, abs=1e-4)
    for name, entry in configs.items():
        if "chunks_per_s" in entry:
            assert -1.0 <= entry["cosine_to_default_min"] <= 1.0001, name
    # kb's bfloat16 path is measured where the CPU has the instructions, and said to be
    # missing where it has not (kb runs float32 there).
    proposed = configs[PROPOSED]
    if native_bf16():
        assert proposed["chunks_per_s"] > 0 and proposed["cosine_to_default_min"] >= 0.99
    else:
        assert "no bfloat16 instructions" in proposed["unavailable"]


def test_targets_are_all_evaluated(s_tier: dict[str, Any]) -> None:
    targets = s_tier["targets"]
    assert len(targets) >= 10
    for t in targets:
        assert t["met"] in (True, False), t


def test_readme_block_renders_every_scenario(s_tier: dict[str, Any]) -> None:
    from bench.report import readme

    block = readme(s_tier)
    for heading in (
        "| kb (`write_rows`) |",
        "no filter (ef_search",
        "| filtered top-10, kb |",
        "Exact top-10 of",
        "| kb keyset p50 ms |",
        "| rare terms (in ",
        "| rare words after a write of ",
        "| local model, ",
        "| target (S tier) |",
    ):
        assert heading in block, heading
    # A run of some scenarios only renders those.
    partial = {**s_tier, "scenarios": {"browse": s_tier["scenarios"]["browse"]}}
    block = readme(partial)
    assert "| kb keyset p50 ms |" in block and "| filtered top-10" not in block
