#!/usr/bin/env bash
# Create .venv and install KB Explorer with everything the app, the tests and the notebooks need.
# Safe to run again: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.kb-installed

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: KB Explorer needs Python 3.11 or newer ($("$PYTHON" --version 2>&1) found)" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing dependencies (first run takes a few minutes)"
    pip_install() { "$VENV/bin/python" -m pip install --quiet "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }; }
    pip_install --upgrade pip
    # The CPU build of torch first: sentence-transformers would otherwise pull a multi-GB CUDA build.
    pip_install "torch==2.13.0"
    pip_install -e ".[dev,notebooks,bench]"
    echo "$want" > "$STAMP"
fi
