"""`kb collections ...`: list, create, calibrate, count words of, reindex, delete collections."""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from kb.calibration import SAMPLE, TARGET_RECALL, Calibration, calibrate
from kb.collections import CollectionInfo, create_collection, delete_collection, list_collections
from kb.config import Settings, get_settings
from kb.database import Database, connect
from kb.embedders import KINDS, make_embedder
from kb.errors import InvalidInput, ReadOnlyError
from kb.hybrid import TEXT_RANK_MAX
from kb.indexes import (
    DEFAULT_EF_CONSTRUCTION,
    DEFAULT_M,
    EF_CONSTRUCTION_RANGE,
    M_RANGE,
    GraphParams,
)
from kb.models import METRICS
from kb.reindex import IndexRebuild, rebuild_index
from kb.terms import SAMPLE as TERMS_SAMPLE
from kb.terms import TermCensus, count_terms

T = TypeVar("T")

LIST_HELP = """\
List every collection with its document count, embedder, model, dimension and metric.
With --json, print one JSON array of objects with the keys name, documents, embedder,
model, dimension, metric, description, created_at, oldest and newest.
"""

CREATE_HELP = """\
Create an empty collection for one embedder:
  local    a sentence-transformers model on this machine (default all-MiniLM-L6-v2,
           384 dims; --model takes another model name or a local model directory)
  openai   an OpenAI-compatible /v1/embeddings API (KB_OPENAI_BASE_URL, KB_OPENAI_API_KEY;
           default model text-embedding-3-small, 1536 dims)
  hashing  feature hashing of words: lexical, no model, deterministic (--dimension, 384)
`kb ingest` creates the collection itself when it is missing; create it first to choose a
metric, a description, or a denser HNSW graph for a collection that will be large (--m 24
--ef-construction 128 for about a million documents: building it once at load time costs
less than building the default and then `kb collections reindex`).
"""

CALIBRATE_HELP = """\
Measure how many of the true 10 nearest neighbours the collection's HNSW index finds at each
ef_search, and keep the smallest ef_search whose recall@10 reaches the target as the
collection's default. The queries are a sample of the collection's documents, each moved by
the distance to its nearest neighbour (queries the index has not seen). Searches that set
neither ef_search nor exact start from it. An ingest does this by itself once a collection
holds 20,000 documents, and again when it has doubled. When even ef_search 1,000 falls
short, rebuild the index as a denser graph (kb collections reindex).
"""

REINDEX_HELP = f"""\
Rebuild the collection's HNSW index, by default with the graph parameters it has, or as a
denser graph: --m links per node, --ef-construction candidates weighed per insert (pgvector's
defaults {DEFAULT_M} and {DEFAULT_EF_CONSTRUCTION}). A denser graph finds more of the true
neighbours at the same ef_search, so searches reach the recall target at a lower one; the
build takes longer (about in proportion to ef_construction) and the index grows with m.
Typical: --m 24 --ef-construction 128 for a collection of a million documents.
The new index is built next to the old one without stopping searches or ingests, then swapped
in; the collection keeps the parameters for every later build, and its ef_search is measured
again (kb collections calibrate) unless it was set by hand.
"""

COUNT_WORDS_HELP = f"""\
Count the collection's words on a random sample of its documents (default {TERMS_SAMPLE}) and keep
those certainly in more than {TEXT_RANK_MAX:,} documents, which hybrid searches do not rank by
text. A hybrid search for one such word then skips collecting its matches, a GIN scan of
every document in the table that holds it. Ingests do this by themselves; run it after
changing documents outside kb, or to see which words are that common.
"""

DELETE_HELP = """\
Delete a collection with all its documents and its search index. Asks for confirmation on a
terminal; without one (a script, a pipe), --yes is required.
"""


def register(sub: Any) -> None:
    """Add the `collections` command group."""
    parser = sub.add_parser(
        "collections",
        help="list, create, calibrate, count words of, reindex or delete collections",
        description=LIST_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print one JSON array")
    parser.set_defaults(handler=_list)
    actions = parser.add_subparsers(dest="collections_command", metavar="ACTION")

    p = actions.add_parser(
        "create",
        help="create an empty collection",
        description=CREATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="collection name (unique)")
    p.add_argument(
        "--embedder",
        choices=KINDS,
        default=None,
        help="embedding provider (default KB_EMBEDDER, else local)",
    )
    p.add_argument("--model", help="model name (or a local model directory for local)")
    p.add_argument("--dimension", type=int, help="vector length (hashing; unknown API models)")
    p.add_argument(
        "--metric", choices=METRICS, default=None, help="distance metric (default cosine)"
    )
    p.add_argument("--description", default="", help="a line saying what the collection holds")
    _graph_arguments(p, DEFAULT_M, DEFAULT_EF_CONSTRUCTION)
    p.add_argument("--json", action="store_true", help="print the new collection as JSON")
    p.set_defaults(handler=_create)

    p = actions.add_parser(
        "calibrate",
        help="measure recall by ef_search and keep the collection's default ef_search",
        description=CALIBRATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="collection to calibrate")
    p.add_argument(
        "--target", type=float, default=TARGET_RECALL, help="recall@10 to reach (default 0.95)"
    )
    p.add_argument(
        "--sample", type=int, default=SAMPLE, help="documents used as queries (default 32)"
    )
    p.add_argument("--json", action="store_true", help="print the measurement as JSON")
    p.set_defaults(handler=_calibrate)

    p = actions.add_parser(
        "count-words",
        help="count which words are too common for hybrid searches to rank by text",
        description=COUNT_WORDS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="collection whose words to count")
    p.add_argument(
        "--sample",
        type=int,
        default=TERMS_SAMPLE,
        help=f"documents read (default {TERMS_SAMPLE}; more finds rarer words, slower)",
    )
    p.add_argument("--json", action="store_true", help="print the census as JSON")
    p.set_defaults(handler=_count_words)

    p = actions.add_parser(
        "reindex",
        help="rebuild the collection's HNSW index, optionally as a denser graph",
        description=REINDEX_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="collection whose index to rebuild")
    _graph_arguments(p, "as now", "as now")
    p.add_argument(
        "--no-calibrate",
        action="store_true",
        help="do not measure ef_search on the new index (the next large ingest will)",
    )
    p.add_argument("--json", action="store_true", help="print what was done as JSON")
    p.set_defaults(handler=_reindex)

    p = actions.add_parser(
        "delete",
        help="delete a collection and its documents",
        description=DELETE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="collection to delete")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.set_defaults(handler=_delete)


def _graph_arguments(p: argparse.ArgumentParser, m: object, ef_construction: object) -> None:
    low, high = M_RANGE
    p.add_argument("--m", type=int, help=f"HNSW links per node ({low}-{high}; default {m})")
    low, high = EF_CONSTRUCTION_RANGE
    p.add_argument(
        "--ef-construction",
        type=int,
        help=f"HNSW candidates per insert ({low}-{high}, at least 2 x m; "
        f"default {ef_construction})",
    )


def _row(c: CollectionInfo) -> dict[str, Any]:
    return {
        "name": c.name,
        "documents": c.documents,
        "embedder": c.embedder,
        "model": c.model,
        "dimension": c.dimension,
        "metric": c.metric,
        "description": c.description,
        "created_at": c.created_at.isoformat(),
        "oldest": c.oldest.isoformat() if c.oldest else None,
        "newest": c.newest.isoformat() if c.newest else None,
    }


def _writable(action: str) -> Settings:
    """Return the settings, refusing in read-only mode what would write."""
    settings = get_settings()
    if settings.read_only:
        raise ReadOnlyError(f"kb is in read-only mode (KB_READ_ONLY); {action} would write.")
    return settings


def _with_db(work: Callable[[Database], Awaitable[T]], settings: Settings | None = None) -> T:
    """Connect, run `work` on the database, and close it."""

    async def run() -> T:
        db = await connect(settings)
        try:
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(run())


async def _collections(db: Database) -> list[CollectionInfo]:
    async with db.session() as s:
        return await list_collections(s)


def _list(args: argparse.Namespace) -> int:
    collections = _with_db(_collections)
    if args.json:
        print(json.dumps([_row(c) for c in collections]))
        return 0
    if not collections:
        print("No collections yet. Create one with `kb collections create NAME` or `kb ingest`.")
        return 0
    headers = ("name", "documents", "embedder", "model", "dim", "metric")
    rows = [
        (c.name, str(c.documents), c.embedder, c.model, str(c.dimension), c.metric)
        for c in collections
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for line in (headers, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return 0


def _create(args: argparse.Namespace) -> int:
    settings = _writable("creating")
    embedder = make_embedder(args.embedder, args.model, dimension=args.dimension)
    if args.dimension is not None and args.dimension != embedder.dimension:
        raise InvalidInput(
            f"{embedder.model} makes {embedder.dimension}-dimensional vectors, "
            f"not {args.dimension}; leave out --dimension"
        )
    graph = None
    if args.m is not None or args.ef_construction is not None:
        graph = GraphParams().changed(m=args.m, ef_construction=args.ef_construction)

    async def run(db: Database) -> dict[str, Any]:
        async with db.session() as s:
            await create_collection(
                s,
                args.name,
                embedder=embedder.kind,
                model=embedder.model,
                dimension=embedder.dimension,
                metric=args.metric or embedder.metric,
                description=args.description,
                settings={"index": graph.as_settings()} if graph else None,
            )
        info = next(c for c in await _collections(db) if c.name == args.name.strip())
        return _row(info)

    row = _with_db(run, settings)
    if args.json:
        print(json.dumps(row))
    else:
        print(
            f"Created collection {row['name']!r}: {row['embedder']} {row['model']} "
            f"({row['dimension']} dims, {row['metric']})."
        )
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    settings = _writable("calibrating")

    async def run(db: Database) -> Calibration:
        async with db.session() as s:
            return await calibrate(s, args.name, target=args.target, sample=args.sample)

    result = _with_db(run, settings)
    if args.json:
        print(json.dumps({"collection": result.collection, **_calibration_json(result)}))
        return 0
    print(_calibration_line(result))
    return 0


def _count_words(args: argparse.Namespace) -> int:
    settings = _writable("counting words")

    async def run(db: Database) -> TermCensus:
        async with db.session() as s:
            return await count_terms(s, args.name, sample=args.sample)

    census = _with_db(run, settings)
    words = sorted(census.common.items(), key=lambda item: (-item[1], item[0]))
    if args.json:
        record = {"collection": census.collection, **census.as_settings(), "words": dict(words)}
        print(json.dumps(record))
        return 0
    print(
        f"{census.collection}: {len(words)} words in more than {TEXT_RANK_MAX:,} of its "
        f"{census.rows:,} documents (sample of {census.sample:,}, {census.seconds:.2f} s)."
    )
    for word, documents in words[:20]:
        print(f"  {word}  >= {documents:,}")
    if len(words) > 20:
        print(f"  ... and {len(words) - 20} more (--json lists them all)")
    return 0


def _calibration_json(result: Calibration) -> dict[str, Any]:
    return {"ef_search": result.ef_search, **result.as_settings()}


def _calibration_line(result: Calibration) -> str:
    tried = ", ".join(f"{ef}: {r:.3f}" for ef, r in result.recall_by_ef.items())
    line = (
        f"{result.collection}: ef_search {result.ef_search} (recall@10 {result.recall:.3f} "
        f"{'reaches' if result.recall >= result.target else 'falls short of'} {result.target}) "
        f"on {result.sample} of {result.rows:,} documents in {result.seconds:.1f} s. "
        f"Recall by ef_search: {tried}."
    )
    if result.recall < result.target:
        line += (
            f"\nThe graph is too sparse for the target: rebuild it denser, e.g. "
            f"kb collections reindex {shlex.quote(result.collection)} --m 24 --ef-construction 128"
        )
    return line


def _reindex(args: argparse.Namespace) -> int:
    settings = _writable("rebuilding an index")

    async def run(db: Database) -> IndexRebuild:
        return await rebuild_index(
            db,
            args.name,
            m=args.m,
            ef_construction=args.ef_construction,
            recalibrate=not args.no_calibrate,
        )

    done = _with_db(run, settings)
    cal = done.calibration
    if args.json:
        print(
            json.dumps(
                {
                    "collection": done.collection,
                    "documents": done.documents,
                    "before": done.before.as_settings(),
                    "after": done.after.as_settings(),
                    "build_seconds": round(done.build_seconds, 2),
                    "index_bytes": done.index_bytes,
                    "calibration": None if cal is None else _calibration_json(cal),
                }
            )
        )
        return 0
    print(
        f"{done.collection}: index rebuilt with {_graph(done.after)} (was {_graph(done.before)}) "
        f"over {done.documents:,} documents in {done.build_seconds:.1f} s; "
        f"{done.index_bytes / 2**20:,.1f} MiB."
    )
    if cal is not None:
        print(_calibration_line(cal))
    return 0


def _graph(params: GraphParams) -> str:
    return f"m {params.m}, ef_construction {params.ef_construction}"


def _confirm(question: str) -> bool:
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _delete(args: argparse.Namespace) -> int:
    settings = _writable("deleting")
    if not args.yes and not sys.stdin.isatty():
        print(
            f"kb: error: not deleting {args.name!r} without confirmation: stdin is not a "
            "terminal; add --yes to delete it.",
            file=sys.stderr,
        )
        return 2

    async def run(db: Database) -> int | None:
        if not args.yes:
            info = next((c for c in await _collections(db) if c.name == args.name), None)
            if info is not None:
                question = f"Delete collection {info.name!r} and its {info.documents} document(s)?"
                # input() blocks; keep it off the event loop.
                if not await asyncio.to_thread(_confirm, question):
                    return None
        async with db.session() as s:
            return await delete_collection(s, args.name)

    removed = _with_db(run, settings)
    if removed is None:
        print("Nothing deleted.")
        return 1
    print(f"Deleted collection {args.name!r} and {removed} document(s).")
    return 0
