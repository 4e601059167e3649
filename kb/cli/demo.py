"""`kb demo`: build the demo knowledge base from Python's own documentation."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from kb import demo
from kb.database import connect
from kb.embedders import KINDS
from kb.ingest import IngestProgress

DESCRIPTION = f"""\
Build the demo knowledge base from documentation that ships with Python (pydoc), so there is
something to explore: {demo.STDLIB!r} (overviews, functions and classes of {len(demo.MODULES)}
standard-library modules) and {demo.BUILTINS!r} (built-in functions, types with their methods,
exceptions). Chunks carry metadata to filter on: module, package, kind, name, python.

Uses the default local model (about a minute on two cores); running it again adds nothing.
`kb serve` (what `make app` runs) builds it by itself when the database has no collection.
"""


def register(sub: Any) -> None:
    """Add the `demo` command."""
    p = sub.add_parser(
        "demo",
        help="build the demo knowledge base (Python's documentation)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--embedder",
        choices=KINDS,
        default="local",
        help="embedder for the demo collections (default local)",
    )
    p.add_argument(
        "--modules",
        help="comma-separated modules for python-stdlib instead of the built-in tour",
    )
    p.add_argument("--json", action="store_true", help="print the ingest reports as JSON")
    p.set_defaults(handler=_demo)


def progress_printer(stream: Any = sys.stderr) -> Any:
    """Return a progress callback that prints one line per batch (for logs and terminals)."""

    def show(collection: str, p: IngestProgress) -> None:
        if p.stage in ("embedding", "done") and p.chunks_done:
            total = f"/{p.chunks_total}" if p.chunks_total else ""
            eta = "" if not p.eta_s else f", about {p.eta_s:.0f}s left"
            print(
                f"kb demo: {collection}: {p.chunks_done}{total} chunks "
                f"({p.chunks_per_s:.1f}/s{eta})",
                file=stream,
                flush=True,
            )

    return show


def _demo(args: argparse.Namespace) -> int:
    modules = [m.strip() for m in args.modules.split(",") if m.strip()] if args.modules else None

    async def run() -> demo.DemoReport:
        db = await connect()
        try:
            return await demo.build_demo(
                db, embedder=args.embedder, modules=modules, progress=progress_printer()
            )
        finally:
            await db.close()

    result = asyncio.run(run())
    if args.json:
        print(json.dumps([r.to_dict() for r in result.reports]))
        return 0
    for r in result.reports:
        print(
            f"{r.collection}: {r.files_read} sources, {r.chunks_added} chunks added, "
            f"{r.duplicates_skipped} already there ({r.seconds:.1f}s)"
        )
    print(f"Demo ready in {result.seconds:.1f}s. Explore it with `make app` or `kb serve`.")
    return 0
