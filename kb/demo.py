"""The demo knowledge base: Python's own documentation, from the interpreter that runs kb.

Two collections built with pydoc from text that ships with every Python install:
`python-stdlib` (a tour of standard-library modules: each module's overview and the docs of
its public functions and classes) and `python-builtins` (built-in functions, types with their
methods, and exceptions). Every chunk carries metadata to filter on: module, package, kind,
name, and the Python version.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import platform
import pydoc
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from kb.database import Database
from kb.embedders import Embedder
from kb.ingest import IngestProgress, IngestReport, Section, SourceDocument, ingest_documents
from kb.models import Collection

STDLIB = "python-stdlib"
BUILTINS = "python-builtins"
DEMO_CHUNK_SIZE = 800
DEMO_CHUNK_OVERLAP = 100

# A tour of modules most Python programmers meet; all import on every platform.
MODULES: tuple[str, ...] = (
    "abc",
    "argparse",
    "base64",
    "bisect",
    "collections",
    "concurrent.futures",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "enum",
    "fnmatch",
    "fractions",
    "functools",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "html",
    "itertools",
    "json",
    "logging",
    "math",
    "os.path",
    "pathlib",
    "pprint",
    "queue",
    "random",
    "re",
    "shutil",
    "sqlite3",
    "string",
    "subprocess",
    "tempfile",
    "textwrap",
    "threading",
    "urllib.parse",
    "uuid",
    "zipfile",
)

# bytearray's methods repeat bytes' docs word for word.
_SKIP_BUILTINS = frozenset({"bytearray"})

DESCRIPTIONS = {
    STDLIB: "Python standard library documentation (pydoc): module overviews, functions and "
    "classes of 42 modules.",
    BUILTINS: "Python built-ins (pydoc): built-in functions, types with their methods, and "
    "exceptions.",
}


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What building the demo did: one ingest report per collection, and the time it took."""

    reports: tuple[IngestReport, ...]
    seconds: float

    @property
    def chunks_added(self) -> int:
        """Return the chunks added across the demo collections."""
        return sum(r.chunks_added for r in self.reports)


def _python() -> str:
    return ".".join(platform.python_version_tuple()[:2])


def _doc(obj: Any, limit: int = 400) -> str:
    """Return the docstring's leading paragraphs, up to about `limit` characters.

    The demo keeps the summary of each object, which is what one searches for, and stays
    small enough to embed in well under a minute on two cores.
    """
    try:
        text = pydoc.getdoc(obj).strip()
    except Exception:
        return ""
    kept: list[str] = []
    size = 0
    for paragraph in re.split(r"\n\s*\n", text):
        if kept and size + len(paragraph) > limit:
            break
        kept.append(paragraph)
        size += len(paragraph) + 2
    return "\n\n".join(kept)


class _Opaque:
    """Stands for a default whose repr holds a memory address (it changes every run)."""

    def __repr__(self) -> str:
        return "..."


def _signature(name: str, obj: Any) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    # The demo text must be the same on every run, or a rebuild would re-embed it.
    params = [
        p.replace(default=_Opaque())
        if p.default is not p.empty and " at 0x" in repr(p.default)
        else p
        for p in sig.parameters.values()
    ]
    try:
        return f"{name}{sig.replace(parameters=params)}"
    except ValueError:
        return name


def _public_members(module: Any) -> list[tuple[str, Any]]:
    declared = getattr(module, "__all__", None)
    names = declared if isinstance(declared, list | tuple) else dir(module)
    home = module.__name__.split(".")[-1]
    out = []
    for name in sorted(set(names)):
        obj = getattr(module, name, None)
        if name.startswith("_") or not (
            inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)
        ):
            continue
        where = (getattr(obj, "__module__", "") or "").lstrip("_")
        # Without __all__, keep what the module defines (or its C accelerator, like _json).
        if declared is not None or where.split(".")[-1].startswith(home):
            out.append((name, obj))
    return out


def module_document(name: str) -> SourceDocument | None:
    """Return the pydoc text of one standard-library module as a demo source, or None."""
    try:
        module = importlib.import_module(name)
    except Exception:
        return None
    package = name.split(".")[0]
    base = {"module": name, "package": package, "python": _python(), "origin": "pydoc"}
    summary = _doc(module, limit=2000)
    sections = []
    if summary:
        sections.append(Section(f"{name}\n\n{summary}", {"kind": "module", "name": name}))
    for member, obj in _public_members(module):
        doc = _doc(obj)
        if not doc:
            continue
        qualified = f"{name}.{member}"
        kind = "class" if inspect.isclass(obj) else "function"
        header = _signature(qualified, obj)
        if kind == "class":
            header = f"class {header}"
            # Only the class's own methods: libraries may patch others in at run time.
            methods = [
                m
                for m, v in vars(obj).items()
                if not m.startswith("_")
                and callable(v)
                and getattr(v, "__module__", obj.__module__) == obj.__module__
            ]
            if methods:
                doc = f"{doc}\n\nMethods: {', '.join(sorted(methods))}."
        sections.append(Section(f"{header}\n\n{doc}", {"kind": kind, "name": qualified}))
    if not sections:
        return None
    first_line = summary.splitlines()[0].strip() if summary else ""
    title = f"{name}: {first_line}" if first_line else name
    return SourceDocument(
        source=f"pydoc:{name}",
        title=title[:200],
        sections=tuple(sections),
        metadata=base,
        size=sum(len(s.text) for s in sections),
    )


def _builtin_kind(obj: Any) -> str:
    if inspect.isclass(obj):
        if issubclass(obj, Warning):
            return "warning"
        if issubclass(obj, BaseException):
            return "exception"
        return "type"
    return "function"


def builtin_document(name: str) -> SourceDocument | None:
    """Return the pydoc text of one built-in (function, type with methods, exception)."""
    obj = getattr(builtins, name, None)
    if obj is None or name.startswith("_") or not callable(obj):
        return None
    if getattr(obj, "__module__", None) != "builtins" or name in _SKIP_BUILTINS:
        return None  # helpers added by the site module (help, exit, license, ...)
    kind = _builtin_kind(obj)
    doc = _doc(obj, limit=1500)
    if not doc:
        return None
    meta: dict[str, Any] = {"kind": kind, "name": name, "python": _python(), "origin": "pydoc"}
    if kind in ("exception", "warning"):
        meta["base"] = obj.__mro__[1].__name__
    header = _signature(name, obj) if kind == "function" else f"class {name}"
    sections = [Section(f"{header}\n\n{doc}", {"member": name})]
    if kind == "type":
        for member, value in sorted(vars(obj).items()):
            if member.startswith("_") or not callable(value):
                continue
            member_doc = _doc(value)
            if member_doc:
                sections.append(
                    Section(
                        f"{name}.{member}\n\n{member_doc}",
                        {"member": f"{name}.{member}"},
                    )
                )
    return SourceDocument(
        source=f"pydoc:builtins.{name}",
        title=f"{name} ({kind})",
        sections=tuple(sections),
        metadata=meta,
        size=sum(len(s.text) for s in sections),
    )


def default_builtin_names() -> list[str]:
    """Return the names of the built-ins the demo documents."""
    return sorted(n for n in dir(builtins) if builtin_document(n) is not None)


def _documents(
    factory: Callable[[str], SourceDocument | None], names: Iterable[str]
) -> list[SourceDocument]:
    return [doc for doc in (factory(n) for n in names) if doc is not None]


async def build_demo(
    db: Database,
    *,
    embedder: Embedder | str | None = None,
    modules: Sequence[str] | None = None,
    builtin_names: Sequence[str] | None = None,
    progress: Callable[[str, IngestProgress], object] | None = None,
) -> DemoReport:
    """Build (or complete) the demo collections; running it again adds nothing."""
    started = time.perf_counter()
    plans = (
        (STDLIB, _documents(module_document, modules if modules is not None else MODULES)),
        (
            BUILTINS,
            _documents(
                builtin_document,
                builtin_names if builtin_names is not None else default_builtin_names(),
            ),
        ),
    )
    reports = []
    for name, docs in plans:

        def forward(p: IngestProgress, collection: str = name) -> None:
            if progress is not None:
                progress(collection, p)

        reports.append(
            await ingest_documents(
                db,
                docs,
                collection=name,
                embedder=embedder,
                description=DESCRIPTIONS[name],
                chunk_size=DEMO_CHUNK_SIZE,
                chunk_overlap=DEMO_CHUNK_OVERLAP,
                progress=forward,
            )
        )
    return DemoReport(tuple(reports), time.perf_counter() - started)


async def has_collections(db: Database) -> bool:
    """Tell whether the knowledge base has any collection yet."""
    async with db.session() as s:
        return bool(await s.scalar(select(func.count()).select_from(Collection)))


async def seed_demo_if_empty(
    db: Database,
    *,
    embedder: Embedder | str | None = None,
    modules: Sequence[str] | None = None,
    builtin_names: Sequence[str] | None = None,
    progress: Callable[[str, IngestProgress], object] | None = None,
) -> DemoReport | None:
    """Build the demo when the database has no collection at all; else do nothing."""
    if await has_collections(db):
        return None
    return await build_demo(
        db,
        embedder=embedder,
        modules=modules,
        builtin_names=builtin_names,
        progress=progress,
    )
