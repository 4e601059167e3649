"""Targets of the benchmark issue, checked on one run's numbers, and the Markdown summary."""

from __future__ import annotations

from typing import Any

from bench.tiers import K


def _target(name: str, value: float | None, op: str, bound: float, detail: str) -> dict[str, Any]:
    if value is None:
        met = None
    elif op == ">=":
        met = value >= bound
    else:
        met = value <= bound
    return {
        "target": name,
        "value": None if value is None else round(value, 4),
        "op": op,
        "bound": bound,
        "met": met,
        "detail": detail,
    }


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, int | float) and isinstance(b, int | float) and b:
        return float(a) / float(b)
    return None


def evaluate(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Return every target of the issue with its measured value and whether it was met."""
    s = result.get("scenarios", {})
    out: list[dict[str, Any]] = []
    for dim in ("d384", "d1536"):
        ing = _get(s, "ingest", dim) or {}
        kb_rate = _get(ing, "kb", "rows_per_s")  # kb's bulk writer, write_rows
        out.append(
            _target(
                f"ingest {dim}: kb / raw COPY rows/s",
                _ratio(kb_rate, _get(ing, "raw COPY BINARY", "rows_per_s")),
                ">=",
                0.8,
                f"kb {kb_rate} rows/s, raw {_get(ing, 'raw COPY BINARY', 'rows_per_s')} rows/s",
            )
        )
        out.append(
            _target(
                f"ingest {dim}: kb / SQLAlchemy ORM rows/s",
                _ratio(kb_rate, _get(ing, "SQLAlchemy ORM", "rows_per_s")),
                ">=",
                20.0,
                f"ORM {_get(ing, 'SQLAlchemy ORM', 'rows_per_s')} rows/s",
            )
        )
    unf = _get(s, "unfiltered") or {}
    ef = str(unf.get("kb_default_ef_search"))
    at = _get(unf, "by_ef", ef) or {}
    kb_p50 = _get(at, "kb", "p50_ms")
    out.append(
        _target(
            f"unfiltered: kb recall@10 (default ef_search={ef})",
            _get(at, "kb", "recall_at_10"),
            ">=",
            0.95,
            "against numpy exact top-10",
        )
    )
    out.append(
        _target(
            "unfiltered: kb p50 / raw asyncpg p50 (same SQL)",
            _ratio(kb_p50, _get(at, "raw asyncpg (same SQL)", "p50_ms")),
            "<=",
            1.25,
            f"kb {kb_p50} ms, raw {_get(at, 'raw asyncpg (same SQL)', 'p50_ms')} ms",
        )
    )
    filt = _get(s, "filtered") or {}
    for label, entry in filt.items():
        if not isinstance(entry, dict):
            continue
        kb = entry.get("kb", {})
        out.append(
            _target(
                f"filtered {label}: queries returning fewer rows than match (of k={K})",
                kb.get("short_queries"),
                "<=",
                0,
                f"rows_min {kb.get('rows_min')}",
            )
        )
        out.append(
            _target(
                f"filtered {label}: kb recall@10",
                kb.get("recall_at_10"),
                ">=",
                0.99,
                f"p50 {kb.get('p50_ms')} ms",
            )
        )
    one = _get(filt, "metadata 1.0%", "kb", "p50_ms")
    out.append(
        _target(
            "filtered metadata 1%: kb p50 / unfiltered kb p50",
            _ratio(one, kb_p50),
            "<=",
            2.0,
            f"{one} ms vs {kb_p50} ms",
        )
    )
    br = _get(s, "browse", "depths") or {}
    first = _get(br, "0", "kb keyset", "p50_ms")
    for depth, entry in br.items():
        if depth == "0":
            continue
        label = "last page" if entry.get("last_page") else f"depth {depth}"
        p50 = _get(entry, "kb keyset", "p50_ms")
        out.append(
            _target(
                f"browse {label} ({depth}): kb p50 / first page p50",
                _ratio(p50, first),
                "<=",
                1.5,
                f"{p50} ms vs {first} ms; OFFSET {_get(entry, 'OFFSET', 'p50_ms')} ms; "
                f"same rows as OFFSET: {entry.get('same_rows')}",
            )
        )
        if entry.get("last_page") and result.get("tier") == "L":
            out.append(
                _target(
                    "browse last page: OFFSET p50 / kb p50",
                    _ratio(_get(entry, "OFFSET", "p50_ms"), p50),
                    ">=",
                    100.0,
                    "L tier only",
                )
            )
    hy = _get(s, "hybrid") or {}
    for bucket in ("rare", "medium"):
        e = hy.get(bucket) or {}
        slower = max(_get(e, "vector", "p50_ms") or 0, _get(e, "text", "p50_ms") or 0) or None
        out.append(
            _target(
                f"hybrid {bucket}: hybrid p50 / slower half p50",
                _ratio(_get(e, "hybrid", "p50_ms"), slower),
                "<=",
                1.5,
                f"hybrid {_get(e, 'hybrid', 'p50_ms')} ms, "
                f"vector {_get(e, 'vector', 'p50_ms')} ms, "
                f"text {_get(e, 'text', 'p50_ms')} ms",
            )
        )
    common = _get(hy, "common", "hybrid", "p50_ms")
    out.append(
        _target(
            "hybrid common: hybrid p50 ms",
            common,
            "<=",
            20.0,
            f"vector {_get(hy, 'common', 'vector', 'p50_ms')} ms, "
            f"text {_get(hy, 'common', 'text', 'p50_ms')} ms",
        )
    )
    emb = _get(s, "embedding", "configs") or {}
    default = _get(emb, "sentence-transformers fp32 (reference)", "chunks_per_s")
    good = {
        name: e
        for name, e in emb.items()
        if isinstance(e.get("chunks_per_s"), int | float)
        and e.get("cosine_to_default_min", 0) >= 0.99
        and "kb default" not in name
    }
    best = max(good.items(), key=lambda kv: kv[1]["chunks_per_s"], default=None)
    out.append(
        _target(
            "embedding: fastest set-up with cosine >= 0.99 / default chunks/s",
            _ratio(best[1]["chunks_per_s"], default) if best else None,
            ">=",
            2.0,
            f"{best[0]} {best[1]['chunks_per_s']} chunks/s (cos min "
            f"{best[1]['cosine_to_default_min']}) vs default {default}"
            if best
            else "none qualified",
        )
    )
    return out


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def markdown(result: dict[str, Any]) -> str:
    """Return a short Markdown summary: the key numbers and every target."""
    s = result.get("scenarios", {})
    m = result.get("machine", {})
    pg = result.get("postgres", {})
    lines = [
        f"Tier {result.get('tier')} · {result.get('date')} · {m.get('cpus')} CPUs "
        f"({m.get('cpu_model')}), {m.get('memory_gib')} GiB · PostgreSQL {pg.get('version')} "
        f"+ pgvector {pg.get('pgvector')} · load average {m.get('loadavg')} -> "
        f"{result.get('loadavg_end')} · {result.get('seconds', 0):.0f} s",
        "",
    ]
    ing = _get(s, "ingest", "d384") or {}
    if ing:
        lines += [
            "| ingest (384 dims) | rows/s | load s | index s | searchable s |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, e in ing.items():
            if "error" in e:
                lines.append(f"| {name} | {e['error']} | | | |")
            else:
                lines.append(
                    f"| {name} ({e['rows']} rows) | {_fmt(e['rows_per_s'], 0)} | "
                    f"{_fmt(e['load_s'])} | {_fmt(e['index_s'])} | "
                    f"{_fmt(e['searchable_s'])} |"
                )
        lines.append("")
    unf = _get(s, "unfiltered") or {}
    if unf.get("by_ef"):
        lines += [
            "| top-10, no filter | ef_search | p50 ms | p99 ms | recall@10 |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for ef, entry in unf["by_ef"].items():
            for name, e in entry.items():
                if isinstance(e, dict) and "p50_ms" in e:
                    lines.append(
                        f"| {name} | {ef} | {_fmt(e['p50_ms'])} | {_fmt(e['p99_ms'])} | "
                        f"{_fmt(e.get('recall_at_10'), 3)} |"
                    )
        for name, e in (unf.get("exact_engines") or {}).items():
            if isinstance(e, dict) and "p50_ms" in e:
                lines.append(
                    f"| {name} | exact | {_fmt(e['p50_ms'])} | {_fmt(e['p99_ms'])} | "
                    f"{_fmt(e.get('recall_at_10'), 3)} |"
                )
        lines.append("")
        qps = unf.get("qps") or {}
        if qps:
            names = list(next(iter(qps.values())))
            lines += [
                "| QPS at kb's default ef_search | " + " | ".join(names) + " |",
                "| --- |" + " ---: |" * len(names),
            ]
            for clients, row in qps.items():
                lines.append(
                    f"| {clients} | " + " | ".join(_fmt(row.get(n), 0) for n in names) + " |"
                )
            lines.append("")
    lines += ["| target | measured | bound | met |", "| --- | ---: | ---: | :---: |"]
    for t in result.get("targets", []):
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        lines.append(f"| {t['target']} | {_fmt(t['value'], 3)} | {t['op']} {t['bound']} | {met} |")
    return "\n".join(lines)


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def readme(r: dict[str, Any]) -> str:
    """Return the README's results block for a result document (scenarios it lacks are left out)."""
    s = {k: v for k, v in r["scenarios"].items() if isinstance(v, dict) and "error" not in v}
    m, pg = r["machine"], r["postgres"]
    loads = [t["loadavg_before"][0] for t in r["timings"].values()] + [r["loadavg_end"][0]]
    out = [
        f"Run of {r['date']}: {m['cpus']} vCPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"PostgreSQL {pg['version']} + pgvector {pg['pgvector']} "
        f"({'embedded' if pg.get('embedded') else 'external'}: "
        f"shared_buffers {pg['settings']['shared_buffers']}, work_mem "
        f"{pg['settings']['work_mem']}), Python {r['versions']['python']}, "
        f"{r['seconds'] / 60:.0f} min, 1-minute load average {min(loads):.1f} to "
        f"{max(loads):.1f} on {m['cpus']} cores. Single numbers are noisy; each ratio compares "
        "interleaved passes of the same run.",
    ]
    sections = (
        ("ingest", _readme_ingest),
        ("unfiltered", _readme_unfiltered),
        ("filtered", _readme_filtered),
        ("exact", _readme_exact),
        ("browse", _readme_browse),
        ("hybrid", _readme_hybrid),
        ("pending", _readme_pending),
        ("embedding", _readme_embedding),
    )
    for name, section in sections:
        if name in s:
            out += ["", *section(r, s)]
    out += [
        "",
        _row(f"target ({r['tier']} tier)", "measured", "bound", "met"),
        "| --- | ---: | ---: | :---: |",
    ]
    for t in r["targets"]:
        if t["met"] is None:
            continue  # a scenario this run left out
        met = {True: "yes", False: "**no**"}[t["met"]]
        out.append(_row(t["target"], _fmt(t["value"], 3), f"{t['op']} {t['bound']}", met))
    return "\n".join(out)


def _readme_ingest(r: dict[str, Any], s: dict[str, Any]) -> list[str]:
    c = r["config"]
    out = [
        _row(
            f"ingest, {c['ingest_rows']:,} rows x 384 dims (1536: {c['ingest_rows_wide']:,} rows)",
            "rows/s (384)",
            "until searchable (384)",
            "rows/s (1536)",
        ),
        "| --- | ---: | ---: | ---: |",
    ]
    for name, a in s["ingest"]["d384"].items():
        b = s["ingest"].get("d1536", {}).get(name, {})
        if "error" not in a:
            label = "kb (`write_rows`)" if name == "kb" else name
            out.append(
                _row(
                    label,
                    _fmt(a["rows_per_s"], 0),
                    f"{_fmt(a['searchable_s'], 1)} s",
                    _fmt(b.get("rows_per_s"), 0),
                )
            )
    out += [
        "",
        "rows/s is rows over the load; time until searchable adds the index build, and for kb "
        "the count of the collection's common words that follows it (kb.terms), the merge "
        "of its GIN indexes' pending entries and the refresh of the planner's statistics "
        "(kb.ingest.upkeep).",
    ]
    measured = _get(s, "ingest", "d384", "kb", "calibrate_s")
    if measured:
        out += [
            f"A load of {c['ingest_rows']:,} rows brings kb's collection to the size at which kb "
            f"measures its ef_search (kb.calibration), which took {measured:.1f} s after the "
            "index was built; that is left out of both columns.",
        ]
    return out


def _readme_unfiltered(r: dict[str, Any], s: dict[str, Any]) -> list[str]:
    f = _fmt
    u = s["unfiltered"]
    ef = str(u["kb_default_ef_search"])
    q1, q4 = u["qps"]["1 client"], u["qps"]["4 clients"]
    out = [
        _row(
            f"top-10 of {r['config']['rows']:,}, no filter (ef_search {ef})",
            "p50 ms",
            "p99 ms",
            "recall@10",
            "QPS 1 / 4 clients",
        ),
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    notes = {"chromadb": " (ef fixed at creation: 64)", "qdrant local": " (local mode: exhaustive)"}
    rows = [*u["by_ef"][ef].items(), *u["fixed_ef_engines"].items()]
    for name, e in rows:
        out.append(
            _row(
                name + notes.get(name, ""),
                f(e["p50_ms"]),
                f(e["p99_ms"]),
                f(e["recall_at_10"], 3),
                f"{f(q1.get(name), 0)} / {f(q4.get(name), 0)}",
            )
        )
    out += [
        "",
        _row("kb recall@10 by ef_search", *u["by_ef"]),
        "| --- |" + " ---: |" * len(u["by_ef"]),
        _row(
            f"synthetic, {r['config']['rows']:,} rows",
            *(f(e["kb"]["recall_at_10"], 3) for e in u["by_ef"].values()),
        ),
    ]
    real = s.get("realtext", {})
    if "recall_at_10" in real:
        out.append(
            _row(
                f"real text (stdlib docs, MiniLM, {real['chunks']:,} chunks)",
                *(f(real["recall_at_10"].get(k, {}).get("kb"), 3) for k in u["by_ef"]),
            )
        )
    return out


def _readme_filtered(r: dict[str, Any], s: dict[str, Any]) -> list[str]:
    out = [
        _row("filtered top-10, kb", "p50 ms", "recall@10", "fewest rows"),
        "| --- | ---: | ---: | ---: |",
    ]
    for label, e in s["filtered"].items():
        out.append(
            _row(
                label,
                _fmt(e["kb"]["p50_ms"]),
                _fmt(e["kb"]["recall_at_10"], 3),
                e["kb"]["rows_min"],
            )
        )
    return out


def _readme_exact(r: dict[str, Any], s: dict[str, Any]) -> list[str]:
    exact = ", ".join(f"{n} {_fmt(e['p50_ms'], 1)} ms" for n, e in s["exact"].items())
    return [f"Exact top-10 of {r['config']['rows']:,}, p50: {exact}."]


def _readme_browse(r: dict[str, Any], s: dict[str, Any]) -> list[str]:
    depths = s["browse"]["depths"]
    return [
        _row(
            "browse, page of 50",
            *(("last page" if v["last_page"] else f"depth {d}") for d, v in depths.items()),
        ),
        "| --- |" + " ---: |" * len(depths),
        _row("kb keyset p50 ms", *(_fmt(v["kb keyset"]["p50_ms"]) for v in depths.values())),
        _row("OFFSET p50 ms", *(_fmt(v["OFFSET"]["p50_ms"]) for v in depths.values())),
    ]


def _readme_hybrid(r: dict[str, Any], s: dict[str, Any]) -> list[str]:
    out = [_row("hybrid, p50 ms", "vector", "full text", "hybrid"), "| --- | ---: | ---: | ---: |"]
    for bucket, v in s["hybrid"].items():
        if "error" in v:
            continue
        dfs = v["document_frequency"]
        out.append(
            _row(
                f"{bucket} terms (in {min(dfs):,}-{max(dfs):,} docs)",
                _fmt(v["vector"]["p50_ms"]),
                _fmt(v["text"]["p50_ms"]),
                _fmt(v["hybrid"]["p50_ms"]),
            )
        )
    return out


STATES = ("before", "pending", "merged")


def _readme_pending(r: dict[str, Any], s: dict[str, Any]) -> list[str]:
    p = s["pending"]
    return [
        _row(
            f"rare words after a write of {p['rows_written']:,} rows, p50 ms",
            "before the write",
            f"entries pending ({p['pages_merged']:,} pages)",
            f"merged by kb ({_fmt(p['merge_s'])} s)",
        ),
        "| --- | ---: | ---: | ---: |",
        *(
            _row(label, *(_fmt(p[state][mode]["p50_ms"]) for state in STATES))
            for mode, label in (("text", "full text"), ("hybrid", "hybrid"))
        ),
    ]


def _readme_embedding(r: dict[str, Any], s: dict[str, Any]) -> list[str]:
    em = s["embedding"]
    out = [
        _row(
            f"local model, {em['chunks']} real chunks of ~1 KB",
            "chunks/s",
            "tokens/s",
            "cosine to default (min)",
        ),
        "| --- | ---: | ---: | ---: |",
    ]
    for name, e in em["configs"].items():
        if "chunks_per_s" in e:
            out.append(
                _row(
                    name,
                    _fmt(e["chunks_per_s"], 1),
                    _fmt(e["tokens_per_s"], 0),
                    _fmt(e["cosine_to_default_min"], 4),
                )
            )
    absent = [(name, e) for name, e in em["configs"].items() if "unavailable" in e]
    if absent:
        out.append("")
        out += [f"Not measured: {name}, {e['unavailable']}." for name, e in absent]
    return out
