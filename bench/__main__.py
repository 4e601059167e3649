"""python -m bench --tier S|M|L --out FILE.json: run the benchmarks and print a Markdown summary."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from bench.run import SCENARIOS, run, write
from bench.tiers import TIERS


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the tier, write the JSON and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--tier", choices=sorted(TIERS), default="S")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("TEST_DATABASE_URL"),
        help="a PostgreSQL server to create the benchmark databases on (default: "
        "TEST_DATABASE_URL, else an embedded server in a temporary directory)",
    )
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, help="run only these scenarios")
    parser.add_argument(
        "--competitors",
        nargs="*",
        default=None,
        help="in-process engines to compare (hnswlib chromadb lancedb qdrant); default: all "
        "installed; none: give the flag alone",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="FILE.json",
        help="print the README results block of an earlier run instead of running",
    )
    args = parser.parse_args(argv)
    if args.render:
        import json

        from bench.report import readme

        print(readme(json.loads(args.render.read_text(encoding="utf-8"))))
        return 0
    out = args.out or Path("bench/results") / f"{args.tier}.json"
    # A run stopped with SIGTERM (kill, a CI timeout) unwinds like Ctrl-C, so the embedded
    # server and the databases it made are removed rather than left running.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    result = asyncio.run(
        run(
            args.tier,
            database_url=args.database_url,
            only=args.only,
            competitors=args.competitors,
            quiet=args.quiet,
        )
    )
    write(result, out)
    from bench.report import markdown

    print(markdown(result))
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
