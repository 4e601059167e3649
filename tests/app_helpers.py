"""Shared by the app tests (AppTest) and the browser tests: a seeded knowledge base."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import socket
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL
from streamlit.testing.v1 import AppTest

import kb
from helpers import ROOT, settings_for
from kb.embedders.hashing import HashingEmbedder

# The app's helper package `ui` sits next to app.py; Streamlit puts that folder on the path.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NOTES = "notes"
EMPTY = "empty shelf"
TOPICS = ("postgres", "vectors", "gardening", "cooking", "astronomy", "music")
NOTE_COUNT = 60
HOSTILE_TITLE = "<script>window.__kb_pwned = 1</script> Hostile"
# Raw HTML, a remote image in HTML and in Markdown, a link, Streamlit directives, LaTeX: all
# of it must reach the screen as literal text, and nothing may load from evil.example.
HOSTILE_CONTENT = (
    "<script>window.__kb_pwned = 2</script> gardening tips "
    '<img src="http://evil.example/pixel.png" onerror="window.__kb_pwned = 3"> '
    "![tracker](http://evil.example/tracker.png) [click me](http://evil.example/) "
    ":red[red text] :material/home: $x^2$ **bold** <b>html bold</b> "
    "http://evil.example/bare www.evil.example"
)
BASE_TIME = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Seeded:
    """What `seed` put in the database."""

    note_ids: list[str]  # newest first
    hostile_id: str
    guide_ids: list[str]  # chunk 0, 1, 2 of guide.md


def note_text(i: int) -> tuple[str, str]:
    """Return the title and content of note `i`."""
    topic = TOPICS[i % len(TOPICS)]
    title = f"Note {i:02d} about {topic}"
    content = (
        f"This is note number {i} and it talks about {topic}. "
        f"More words on {topic} so that searches for {topic} find it."
    )
    return title, content


async def seed(url: URL) -> Seeded:
    """Create the collections and documents the app tests look at."""
    embedder = HashingEmbedder(384)
    db = await kb.connect(settings_for(url), url=url, upgrade=False)
    try:
        async with db.session() as session:
            notes = await kb.create_collection(
                session,
                NOTES,
                embedder=embedder.kind,
                model=embedder.model,
                dimension=embedder.dimension,
                description="Short notes on six topics",
            )
            await kb.create_collection(
                session,
                EMPTY,
                embedder=embedder.kind,
                model=embedder.model,
                dimension=embedder.dimension,
            )
            rows: list[tuple[str, str, str, int, dict[str, object], dt.datetime]] = []
            for i in range(NOTE_COUNT):
                title, content = note_text(i)
                meta = {"topic": TOPICS[i % len(TOPICS)], "year": 2020 + i % 3, "n": i}
                rows.append((title, content, f"notes/{i:02d}.txt", 0, meta, _at(i)))
            rows.append(
                (HOSTILE_TITLE, HOSTILE_CONTENT, "hostile.html", 0, {"topic": "hostile"}, _at(60))
            )
            guide = [
                "Chapter one: the guide begins with planting seeds.",
                "Chapter two: the guide continues with watering gardening beds.",
                "Chapter three: the guide ends with the harvest.",
            ]
            for j, text in enumerate(guide):
                rows.append(("Guide", text, "guide.md", j, {"topic": "guide"}, _at(61 + j)))
            vectors = embedder.embed([f"{t} {c}" for t, c, *_ in rows])
            docs = []
            for (title, content, source, chunk, meta, created), vector in zip(
                rows, vectors, strict=True
            ):
                doc = kb.Document(
                    id=uuid.uuid4(),
                    title=title,
                    content=content,
                    source=source,
                    chunk_index=chunk,
                    meta=meta,
                    embedding=vector,
                    created_at=created,
                )
                doc.collection = notes
                docs.append(doc)
            session.add_all(docs)
            await session.flush()
            ids = [str(d.id) for d in docs]
    finally:
        await db.close()
    note_ids = ids[:NOTE_COUNT]
    return Seeded(
        note_ids=list(reversed(note_ids)),
        hostile_id=ids[NOTE_COUNT],
        guide_ids=ids[NOTE_COUNT + 1 :],
    )


def _at(i: int) -> dt.datetime:
    return BASE_TIME + dt.timedelta(days=i)


# --- AppTest fixtures ---------------------------------------------------------------

# A cold database (connect, migrate check) can take a while on a busy machine.
TIMEOUT = 90

Open = Callable[..., AppTest]
_UNESCAPE = re.compile(r"\\(.)")


def texts(at: AppTest) -> str:
    """Return every text-like value on the page, Markdown escapes removed, joined."""
    parts: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "text", "code"):
        parts += [str(e.value) for e in at.get(kind)]
    for kind in ("error", "warning", "info", "success"):
        parts += [str(e.value) for e in at.get(kind)]
    return _UNESCAPE.sub(r"\1", "\n".join(parts)).replace("\u2060", "")


def frame(at: AppTest, index: int = 0) -> Any:
    """Return the DataFrame shown by the index-th st.dataframe."""
    return at.dataframe[index].value


class Forwarder:
    """A TCP port that forwards to the test database while open: a database that comes and goes."""

    def __init__(self, port: int, target: URL) -> None:
        self.port = port
        host = target.query.get("host")
        if isinstance(host, tuple):
            host = host[0]
        self._unix = os.path.join(host, f".s.PGSQL.{target.port or 5432}") if host else None
        self._tcp = (target.host or "127.0.0.1", target.port or 5432)
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def _upstream(self) -> socket.socket:
        if self._unix:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self._unix)
        else:
            s = socket.create_connection(self._tcp)
        return s

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = self._upstream()
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def __enter__(self) -> Forwarder:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._listener is not None
        self._listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
