"""The `kb` command line: each sub-module registers one group of commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from kb.cli import collections as collections_commands
from kb.cli import db as db_commands
from kb.cli import demo as demo_commands
from kb.cli import ingest as ingest_commands
from kb.cli import search as search_commands
from kb.cli import serve as serve_commands
from kb.errors import KBError

Handler = Callable[[argparse.Namespace], int]

DESCRIPTION = """\
KB Explorer: explore a PostgreSQL + pgvector knowledge base.

With DATABASE_URL unset, kb starts an embedded PostgreSQL (data in KB_DATA_DIR,
default ~/.kb-explorer). Set DATABASE_URL=postgresql+asyncpg://user:pass@host/db to
use your own server. Settings are read from the environment and from ./.env.
"""


def build_parser() -> argparse.ArgumentParser:
    """Return the parser with every command group registered."""
    parser = argparse.ArgumentParser(
        prog="kb", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (
        db_commands,
        serve_commands,
        search_commands,
        collections_commands,
        ingest_commands,
        demo_commands,
    ):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `kb` command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KBError as exc:
        print(f"kb: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kb: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
