"""The kb code that reproduces a page's view, for the "Use in a notebook" panels."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

HEADER = "import kb\n\ndb = await kb.connect()  # DATABASE_URL, or the embedded server\n"


def literal(value: Any) -> str:
    """Return Python source that evaluates to `value` (for values the pages pass to kb)."""
    if isinstance(value, dt.datetime):
        return f"datetime.datetime.fromisoformat({value.isoformat()!r})"
    if isinstance(value, dt.date):
        return f"datetime.date.fromisoformat({value.isoformat()!r})"
    if isinstance(value, uuid.UUID):
        return repr(str(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        inner = ", ".join(literal(v) for v in value)
        return (
            f"({inner},)"
            if isinstance(value, tuple) and len(value) == 1
            else (f"({inner})" if isinstance(value, tuple) else f"[{inner}]")
        )
    return repr(value)


def call(fn: str, *args: Any, **kwargs: Any) -> str:
    """Return `kb.fn(arg, ..., key=value, ...)` as source, skipping keyword options set to None."""
    parts = [a if isinstance(a, _Raw) else literal(a) for a in args]
    parts += [
        f"{k}={v if isinstance(v, _Raw) else literal(v)}"
        for k, v in kwargs.items()
        if v is not None
    ]
    one_line = f"kb.{fn}({', '.join(parts)})"
    if len(one_line) <= 88:
        return one_line
    body = "".join(f"    {p},\n" for p in parts)
    return f"kb.{fn}(\n{body})"


class _Raw(str):
    """Source text to paste as it is (a variable name), not as a string literal."""

    __slots__ = ()


def raw(source: str) -> _Raw:
    """Mark `source` as code (e.g. the name `session`) rather than a value."""
    return _Raw(source)


SESSION = raw("session")


def comment(text: str) -> str:
    """Return `text` commented out line by line (code the reader may choose to run)."""
    return "\n".join(f"# {line}" if line else "#" for line in text.splitlines())


def in_session(*statements: str) -> str:
    """Return a notebook cell that runs `statements` inside a kb session."""
    needs_datetime = any("datetime." in s for s in statements)
    lines = [("import datetime\n" if needs_datetime else "") + HEADER]
    lines.append("async with db.session() as session:")
    for statement in statements:
        for line in statement.splitlines():
            lines.append(f"    {line}")
    return "\n".join(lines) + "\n"
