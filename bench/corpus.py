"""The real-text tier: Python's standard library documentation (pydoc), chunked, embedded once
with kb's default local model and cached under bench/cache/."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import platform
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent / "cache"
CHUNK_CHARS = 1000
SEED = 7
# Modules whose import has side effects (windows, sounds, network, this very harness).
_SKIP = {
    "antigravity",
    "this",
    "idlelib",
    "tkinter",
    "turtle",
    "turtledemo",
    "lib2to3",
    "test",
    "ensurepip",
    "venv",
    "pydoc",
    "webbrowser",
    "bench",
}
_BACKSPACE = re.compile(".\b")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclass
class Corpus:
    """Chunks of real text with their vectors, and query texts with theirs."""

    titles: list[str]
    texts: list[str]
    vectors: np.ndarray
    query_texts: list[str]
    query_vectors: np.ndarray
    query_sources: list[int]
    seconds_to_embed: float | None = None


def _module_text(name: str) -> str | None:
    import pydoc

    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            module = __import__(name)
            text = pydoc.plaintext.document(module)
    except BaseException:
        return None
    # Object addresses differ from run to run; the text (and so the cache key) must not.
    return _ADDRESS.sub("", _BACKSPACE.sub("", text))


def _split(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Split on blank lines into chunks of at most ~size characters."""
    chunks: list[str] = []
    current = ""
    for block in re.split(r"\n\s*\n", text):
        block = block.strip()
        if not block:
            continue
        if len(block) > size and current:
            chunks.append(current)
            current = ""
        while len(block) > size:
            cut = block.rfind(" ", 0, size)
            cut = cut if cut > size // 2 else size
            chunks.append(block[:cut].strip())
            block = block[cut:].strip()
        if len(current) + len(block) + 2 > size and current:
            chunks.append(current)
            current = block
        else:
            current = f"{current}\n\n{block}" if current else block
    if current:
        chunks.append(current)
    return [c for c in chunks if len(c) >= 80]


def stdlib_chunks(limit: int) -> tuple[list[str], list[str]]:
    """Return up to `limit` (title, text) chunks from stdlib modules, in a fixed order."""
    names = sorted(n for n in sys.stdlib_module_names if not n.startswith("_") and n not in _SKIP)
    order = np.random.default_rng(SEED).permutation(len(names))
    titles: list[str] = []
    texts: list[str] = []
    for i in order:
        name = names[int(i)]
        text = _module_text(name)
        if not text:
            continue
        for j, chunk in enumerate(_split(text)):
            titles.append(f"{name} ({j})")
            texts.append(chunk)
            if len(texts) >= limit:
                return titles, texts
    return titles, texts


def _query_text(chunk: str) -> str:
    """Return a line of a chunk that reads like a question someone would type."""
    for line in chunk.splitlines():
        words = re.findall(r"[A-Za-z]{3,}", line)
        if len(words) >= 5:
            return " ".join(words[:12])
    return " ".join(re.findall(r"[A-Za-z]{3,}", chunk)[:12]) or chunk[:80]


@functools.lru_cache(maxsize=2)
def load(chunks: int, queries: int) -> Corpus:
    """Return the corpus, embedding and caching it on first use."""
    import time

    from kb.embedders import embed_texts, make_embedder

    titles, texts = stdlib_chunks(chunks)
    pick = np.random.default_rng(SEED + 1).choice(
        len(texts), size=min(queries, len(texts)), replace=False
    )
    query_texts = [_query_text(texts[int(i)]) for i in pick]
    key = hashlib.sha256(
        json.dumps([platform.python_version(), texts, query_texts]).encode()
    ).hexdigest()[:16]
    path = CACHE / f"corpus-{len(texts)}-{key}.npz"
    if path.exists():
        cached = np.load(path)
        return Corpus(
            titles,
            texts,
            cached["vectors"],
            query_texts,
            cached["query_vectors"],
            [int(i) for i in pick],
        )
    embedder = make_embedder("local")
    start = time.perf_counter()
    vectors = embed_texts(embedder, texts)
    query_vectors = embed_texts(embedder, query_texts)
    seconds = time.perf_counter() - start
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, vectors=vectors, query_vectors=query_vectors)
    tmp.replace(path)
    return Corpus(
        titles,
        texts,
        vectors,
        query_texts,
        query_vectors,
        [int(i) for i in pick],
        seconds_to_embed=seconds,
    )
