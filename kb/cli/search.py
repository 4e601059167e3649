"""`kb browse`, `kb search`, `kb similar`, `kb export`: the query layer from the shell."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from kb.browse import MAX_PAGE_SIZE, browse
from kb.browse import resolve_collection as _resolve
from kb.database import connect
from kb.embedders import embedder_for
from kb.errors import InvalidInput, KBError
from kb.explain import explain, recall_at_k
from kb.export import FORMATS, export_documents, export_results
from kb.filters import Filters, parse_filter_args
from kb.results import DocumentRecord, SearchResult
from kb.search import MAX_K, MODES, SearchOptions, make_request, run_search, search_many, similar

T = TypeVar("T")
BATCH = 256


def register(sub: Any) -> None:
    """Add the browse, search, similar and export commands."""
    p = sub.add_parser(
        "browse",
        help="list a collection's documents, newest first, page by page",
        description="List documents newest first (or oldest first), one page at a time. Each "
        "page prints the cursor of the next and previous pages; pass it back with --after or "
        "--before. With --json, stdout is one JSON array and the cursors go to stderr.",
    )
    p.add_argument("--collection", "-c", required=True, help="collection name")
    p.add_argument("--limit", "-n", type=int, default=20, help=f"page size, 1-{MAX_PAGE_SIZE}")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--after", metavar="CURSOR", help="the page after this cursor")
    where.add_argument("--before", metavar="CURSOR", help="the page before this cursor")
    p.add_argument("--oldest-first", action="store_true", help="oldest documents first")
    _filter_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON array of documents")
    p.set_defaults(handler=_browse)

    p = sub.add_parser(
        "search",
        help="search a collection by meaning, by words, or both",
        description="Search one or more collections (which must share an embedder). Vector "
        "mode embeds the query with the collection's own model; text mode is PostgreSQL "
        "full-text search; hybrid fuses both by reciprocal rank. Scores: higher is better "
        "(cosine similarity = 1 - distance; L2: -distance; inner product as is). With --json, "
        "stdout is one JSON array of results; with --queries FILE, one array per line of FILE "
        "(JSON Lines, in order, blank lines skipped), the model loaded once.",
    )
    p.add_argument("query", nargs="?", help="what to search for")
    p.add_argument(
        "--collection", "-c", required=True, action="append", help="collection (repeatable)"
    )
    p.add_argument("-k", type=int, default=10, help=f"how many results, 1-{MAX_K}")
    p.add_argument("--mode", choices=MODES, default="vector")
    p.add_argument("--queries", metavar="FILE", type=Path, help="one query per line")
    _search_arguments(p)
    _filter_arguments(p)
    p.add_argument("--explain", action="store_true", help="show SQL, plan and indexes instead")
    p.add_argument("--analyze", action="store_true", help="with --explain: EXPLAIN ANALYZE")
    p.add_argument("--recall", action="store_true", help="report recall@k of the index vs exact")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_search)

    p = sub.add_parser(
        "similar",
        help="documents like an existing one (more like this)",
        description="Find documents whose embeddings are closest to a document's own; no "
        "model is loaded. Searches the document's collection unless --collection is given.",
    )
    p.add_argument("document", metavar="DOC_ID", help="the document's id (a UUID)")
    p.add_argument("--collection", "-c", action="append", help="collection (repeatable)")
    p.add_argument("-k", type=int, default=10, help=f"how many results, 1-{MAX_K}")
    _search_arguments(p)
    _filter_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON array of results")
    p.set_defaults(handler=_similar)

    p = sub.add_parser(
        "export",
        help="export a browse filter or a search result to CSV, JSONL or Parquet",
        description="Export every document of a collection that matches the filters, or "
        "with --query the results of a search. The rows written are checked against a count "
        "of the same filter; a file is only left in place when complete.",
    )
    p.add_argument("--collection", "-c", required=True, action="append", help="collection")
    p.add_argument("--format", "-f", choices=FORMATS, required=True)
    p.add_argument(
        "--output", "-o", type=Path, help="file to write (default: stdout; required for parquet)"
    )
    p.add_argument("--oldest-first", action="store_true", help="oldest documents first")
    p.add_argument("--query", "-q", help="export the results of this search instead")
    p.add_argument("-k", type=int, default=10, help=f"with --query: results, 1-{MAX_K}")
    p.add_argument("--mode", choices=MODES, default="vector", help="with --query: search mode")
    _search_arguments(p)
    _filter_arguments(p)
    p.set_defaults(handler=_export)


def _filter_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("filters (combined with AND)")
    g.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="metadata KEY equals VALUE (text, or the number/boolean it spells; also matches "
        "lists holding it); KEY:=JSON for JSON containment, e.g. 'tags:=[\"a\"]'",
    )
    g.add_argument("--since", metavar="DATE", help="created at or after (ISO date/time, UTC)")
    g.add_argument("--until", metavar="DATE", help="created before (ISO date/time, UTC)")
    g.add_argument("--title-contains", metavar="TEXT", help="title contains (any case)")
    g.add_argument("--source-contains", metavar="TEXT", help="source contains (any case)")
    g.add_argument("--contains", metavar="TEXT", help="content contains (any case)")


def _search_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search options")
    g.add_argument("--exact", action="store_true", help="exact scan instead of the HNSW index")
    g.add_argument("--ef-search", type=int, help="HNSW ef_search for this query (1-1000)")
    g.add_argument("--min-score", type=float, help="drop results scoring below this")
    g.add_argument("--mmr", action="store_true", help="diversify by maximal marginal relevance")
    g.add_argument("--mmr-lambda", type=float, default=0.5, help="1 = relevance, 0 = diversity")
    g.add_argument("--vector-weight", type=float, default=1.0, help="hybrid: vector list weight")
    g.add_argument("--text-weight", type=float, default=1.0, help="hybrid: full-text weight")
    g.add_argument("--rrf-k", type=int, default=60, help="hybrid: reciprocal rank fusion k")


def _when(value: str | None, name: str) -> datetime | date | None:
    if value is None:
        return None
    try:
        return (
            datetime.fromisoformat(value)
            if "T" in value or " " in value
            else (date.fromisoformat(value))
        )
    except ValueError:
        raise InvalidInput(f"{name} {value!r} is not an ISO date (2024-05-01) or time") from None


def _filters(args: argparse.Namespace) -> Filters:
    parsed = parse_filter_args(args.filter)
    return Filters(
        metadata=parsed.metadata,
        metadata_text=parsed.metadata_text,
        created_from=_when(args.since, "--since"),
        created_to=_when(args.until, "--until"),
        title_contains=args.title_contains,
        source_contains=args.source_contains,
        content_contains=args.contains,
    )


def _options(args: argparse.Namespace) -> SearchOptions:
    return SearchOptions(
        k=args.k,
        filters=_filters(args),
        exact=args.exact,
        ef_search=args.ef_search,
        min_score=args.min_score,
        mmr=args.mmr,
        mmr_lambda=args.mmr_lambda,
        vector_weight=args.vector_weight,
        text_weight=args.text_weight,
        rrf_k=args.rrf_k,
    )


def _run(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def main() -> T:
        db = await connect()
        try:
            async with db.session() as session:
                return await work(session)
        except SQLAlchemyError as exc:
            # Known driver errors are already kb errors; anything else still gets one line.
            raise KBError(f"The database refused the request: {getattr(exc, 'orig', exc)}") from exc
        finally:
            await db.close()

    return asyncio.run(main())


def _clean(value: object, width: int) -> str:
    # Document text may hold terminal control sequences: print it inert, on one line.
    flat = "".join(ch if ch.isprintable() else " " for ch in str(value or ""))
    flat = " ".join(flat.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _print_documents(items: Iterable[DocumentRecord]) -> None:
    for item in items:
        print(
            f"{item.created_at:%Y-%m-%d %H:%M}  {item.id}  {_clean(item.title, 40):<40}  "
            f"{_clean(item.source, 30)}#{item.chunk_index}"
        )


def _print_results(items: Sequence[SearchResult]) -> None:
    if not items:
        print("No results.")
        return
    print(f"score: {items[0].score_definition}")
    for r in items:
        distance = "" if r.distance is None else f" d={r.distance:.4f}"
        print(
            f"{r.rank:>4}  {r.score:>9.4f}{distance}  {_clean(r.title, 40):<40}  "
            f"{_clean(r.source, 30)}#{r.chunk_index}  {r.id}"
        )
        print(f"      {_clean(r.content, 100)}")


def _json_line(value: Any) -> str:
    # Explain output carries datetimes and ids among its parameters: print them as text.
    return json.dumps(value, ensure_ascii=False, default=str)


def _browse(args: argparse.Namespace) -> int:
    order = "oldest" if args.oldest_first else "newest"
    page = _run(
        lambda s: browse(
            s,
            args.collection,
            limit=args.limit,
            order=order,
            after=args.after,
            before=args.before,
            filters=_filters(args),
        )
    )
    hints = []
    if page.prev_cursor:
        hints.append(f"previous page: --before {page.prev_cursor}")
    if page.next_cursor:
        hints.append(f"next page: --after {page.next_cursor}")
    if args.json:
        print(_json_line([item.to_dict() for item in page]))
        for hint in hints:
            print(hint, file=sys.stderr)
    else:
        _print_documents(page)
        if not page.items:
            print("No documents.")
        for hint in hints:
            print(hint)
    return 0


def _read_queries(path: Path) -> list[str]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text") from None
    return [line.strip() for line in content.splitlines() if line.strip()]


def _search(args: argparse.Namespace) -> int:
    if (args.query is None) == (args.queries is None):
        raise InvalidInput("give a query, or --queries FILE (not both)")
    options = _options(args)
    if args.queries is not None:
        return _search_batch(args, _read_queries(args.queries), options)
    request = make_request(args.query, collection=args.collection, mode=args.mode, **options)

    async def work(s: AsyncSession) -> Any:
        if args.explain:
            return await explain(s, request, analyze=args.analyze)
        if args.recall:
            return await recall_at_k(s, request)
        return await run_search(s, request)

    out = _run(work)
    if args.explain:
        if args.json:
            print(_json_line(asdict(out)))
        else:
            print(out.sql)
            print(f"\nparameters: {out.params}\nsettings: {out.settings}\n")
            print(out.plan)
            print(f"\nindexes used: {', '.join(out.indexes) or 'none'}")
            if out.warning:
                print(f"warning: {out.warning}")
    elif args.recall:
        report = {
            "k": out.k,
            "recall": out.recall,
            "ef_search": out.ef_search,
            "approximate_ms": out.approximate_ms,
            "exact_ms": out.exact_ms,
            "missing": [str(i) for i in out.missing],
        }
        if args.json:
            print(_json_line(report))
        else:
            print(
                f"recall@{out.k} = {out.recall:.3f} (ef_search {out.ef_search}; approximate "
                f"{out.approximate_ms:.1f} ms, exact {out.exact_ms:.1f} ms)"
            )
    elif args.json:
        print(_json_line([r.to_dict() for r in out]))
    else:
        _print_results(out.items)
        for note in out.notes:
            print(f"note: {note}")
    return 0


def _search_batch(args: argparse.Namespace, queries: list[str], options: SearchOptions) -> int:
    async def work(s: AsyncSession) -> None:
        embedder = None
        if args.mode != "text":
            # One model for every query: loaded once, each batch embedded in one call.
            embedder = embedder_for(await _resolve(s, args.collection[0]))
        for i in range(0, len(queries), BATCH):
            batch = await search_many(
                s,
                queries[i : i + BATCH],
                collection=args.collection,
                mode=args.mode,
                embedder=embedder,
                **options,
            )
            for results in batch:
                if args.json:
                    print(_json_line([r.to_dict() for r in results]), flush=True)
                else:
                    print(f"# {results.request.query}")
                    _print_results(results.items)

    _run(work)
    return 0


def _similar(args: argparse.Namespace) -> int:
    options = _options(args)
    out = _run(lambda s: similar(s, args.document, collection=args.collection, **options))
    if args.json:
        print(_json_line([r.to_dict() for r in out]))
    else:
        _print_results(out.items)
    return 0


def _export(args: argparse.Namespace) -> int:
    if args.format == "parquet" and args.output is None:
        raise InvalidInput("Parquet is binary: give --output FILE")
    target: Any = args.output if args.output is not None else sys.stdout.buffer

    async def work(s: AsyncSession) -> Any:
        if args.query is not None:
            options = _options(args)
            request = make_request(
                args.query, collection=args.collection, mode=args.mode, **options
            )
            return await export_results(await run_search(s, request), target, format=args.format)
        if len(args.collection) != 1:
            raise InvalidInput("a browse export reads one collection; give --collection once")
        return await export_documents(
            s,
            args.collection[0],
            target,
            format=args.format,
            filters=_filters(args),
            order="oldest" if args.oldest_first else "newest",
        )

    report = _run(work)
    print(f"exported {report.rows} rows to {report.path} ({report.format})", file=sys.stderr)
    return 0
