"""`kb serve`: migrate, build the demo when the database is empty, and run the Streamlit app."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
from typing import Any

from kb import demo
from kb.cli.demo import progress_printer
from kb.config import get_settings
from kb.database import Database, connect
from kb.errors import DatabaseUnavailable, KBError
from kb.migrate import ROOT
from kb.status import database_status


def register(sub: Any) -> None:
    """Add the `serve` command."""
    p = sub.add_parser(
        "serve",
        help="migrate the database and run the Streamlit app",
        description="Start (or reuse) the database, apply migrations, build the demo "
        "knowledge base when the database has no collection yet (see `kb demo`; --no-demo "
        "skips it), and serve app.py with Streamlit. Extra arguments after -- go to "
        "`streamlit run`.",
    )
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    p.add_argument("--host", default="localhost", help="address to bind (default localhost)")
    p.add_argument(
        "--no-demo",
        action="store_true",
        help="do not build the demo knowledge base when the database has no collection",
    )
    p.add_argument("streamlit_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(handler=_serve)


async def _seed_demo(db: Database) -> None:
    """Give a new user something to explore: build the demo when there is no collection."""
    if await demo.has_collections(db):
        return
    print(
        "kb: the database has no collection yet: building the demo knowledge base from "
        "Python's documentation (about a minute; --no-demo skips this)",
        flush=True,
    )
    try:
        result = await demo.build_demo(db, progress=progress_printer(sys.stdout))
    except KBError as exc:
        print(f"kb: the demo could not be built ({exc}); starting without it", flush=True)
        return
    print(f"kb: demo ready ({result.chunks_added} chunks in {result.seconds:.0f}s)", flush=True)


def _serve(args: argparse.Namespace) -> int:
    async def prepare() -> str:
        db = await connect(upgrade=True)
        try:
            status = await database_status(db)
            if not args.no_demo and not db.settings.read_only:
                await _seed_demo(db)
        finally:
            await db.close()
        return f"{status.url} (revision {status.current_revision})"

    try:
        print(f"kb: database ready: {asyncio.run(prepare())}", flush=True)
    except DatabaseUnavailable as exc:
        # Serve anyway: every page says what is wrong and recovers once the database is back.
        print(f"kb: warning: {exc}\nkb: starting the app; it will connect when it can.", flush=True)
    settings = get_settings()
    extra = [a for a in args.streamlit_args if a != "--"]
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "app.py"),
        "--server.port",
        str(args.port),
        "--server.address",
        args.host,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        # The server refuses bigger uploads before holding them in memory.
        "--server.maxUploadSize",
        str(max(1, math.ceil(settings.max_upload_mb))),
        *extra,
    ]
    print(f"kb: serving on http://{args.host}:{args.port}", flush=True)
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover - execv does not return
