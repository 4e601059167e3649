"""`kb serve`: migrate, seed the demo when empty, and run the Streamlit app."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from kb.database import connect
from kb.migrate import ROOT
from kb.status import database_status


def register(sub: Any) -> None:
    """Add the `serve` command."""
    p = sub.add_parser(
        "serve",
        help="migrate the database and run the Streamlit app",
        description="Start (or reuse) the database, apply migrations, and serve app.py with "
        "Streamlit. Extra arguments after -- go to `streamlit run`.",
    )
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    p.add_argument("--host", default="localhost", help="address to bind (default localhost)")
    p.add_argument("streamlit_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    async def prepare() -> str:
        db = await connect(upgrade=True)
        try:
            status = await database_status(db)
        finally:
            await db.close()
        return f"{status.url} (revision {status.current_revision})"

    print(f"kb: database ready: {asyncio.run(prepare())}", flush=True)
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
        *extra,
    ]
    print(f"kb: serving on http://{args.host}:{args.port}", flush=True)
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover - execv does not return
