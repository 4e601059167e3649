"""Page state in the URL: read query parameters defensively, write them back minimally.

Anything can arrive in a URL. Every reader here validates and falls back to a default, noting
what it ignored, so a hostile or stale link shows a message instead of a traceback.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence

import streamlit as st

# Longer values are refused: nothing the pages put in a URL comes close.
MAX_VALUE_LENGTH = 2000
MAX_REPEATS = 50

State = dict[str, str | list[str]]


def snapshot() -> dict[str, list[str]]:
    """Return the current query parameters, every key with all its values."""
    qp = st.query_params
    return {key: list(qp.get_all(key)) for key in qp}


class Reader:
    """Typed, validated access to query parameters; problems are collected, never raised."""

    def __init__(self, raw: Mapping[str, Sequence[str]]) -> None:
        self._raw = raw
        self.problems: list[str] = []

    def _note(self, key: str, value: str, why: str) -> None:
        shown = value if len(value) <= 60 else value[:57] + "..."
        self.problems.append(f"URL parameter {key}={shown!r} ignored: {why}.")

    def _one(self, key: str) -> str | None:
        values = self._raw.get(key) or []
        if not values:
            return None
        value = values[-1]
        if len(value) > MAX_VALUE_LENGTH:
            self._note(key, value, f"longer than {MAX_VALUE_LENGTH} characters")
            return None
        if "\x00" in value:
            self._note(key, value.replace("\x00", "\\x00"), "it contains a NUL byte")
            return None
        return value

    def text(self, key: str, default: str = "") -> str:
        """Return a text value, or `default`."""
        value = self._one(key)
        return default if value is None else value

    def many(self, key: str) -> list[str]:
        """Return every value of a repeated parameter (up to a sane number)."""
        out = []
        for value in list(self._raw.get(key) or [])[:MAX_REPEATS]:
            if len(value) > MAX_VALUE_LENGTH or "\x00" in value:
                self._note(key, value.replace("\x00", "\\x00"), "too long or has a NUL byte")
                continue
            out.append(value)
        return out

    def choice(self, key: str, choices: Iterable[str], default: str) -> str:
        """Return one of `choices`, or `default`."""
        options = list(choices)
        value = self._one(key)
        if value is None:
            return default
        if value not in options:
            self._note(key, value, f"expected one of {', '.join(options)}")
            return default
        return value

    def integer(self, key: str, *, low: int, high: int, default: int) -> int:
        """Return an integer within [low, high], or `default`."""
        value = self._one(key)
        if value is None:
            return default
        try:
            number = int(value.strip())
        except ValueError:
            self._note(key, value, "not a whole number")
            return default
        if not low <= number <= high:
            self._note(key, value, f"must be from {low} to {high}")
            return default
        return number

    def number(self, key: str, *, low: float, high: float) -> float | None:
        """Return a finite number within [low, high], or None."""
        value = self._one(key)
        if value is None or value == "":
            return None
        try:
            number = float(value.strip())
        except ValueError:
            self._note(key, value, "not a number")
            return None
        if not math.isfinite(number) or not low <= number <= high:
            self._note(key, value, f"must be a number from {low:g} to {high:g}")
            return None
        return number

    def flag(self, key: str) -> bool:
        """Return True for 1/true/yes/on, False when absent or 0/false/no/off."""
        value = self._one(key)
        if value is None:
            return False
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered not in ("0", "false", "no", "off", ""):
            self._note(key, value, "expected 1 or 0")
        return False

    def day(self, key: str) -> dt.date | None:
        """Return an ISO date (YYYY-MM-DD), or None."""
        value = self._one(key)
        if not value:
            return None
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            self._note(key, value, "not a date (YYYY-MM-DD)")
            return None

    def uuid(self, key: str) -> str | None:
        """Return a document id (a UUID) in canonical form, or None."""
        value = self._one(key)
        if not value:
            return None
        try:
            return str(uuid.UUID(value.strip()))
        except ValueError:
            self._note(key, value, "not a document id")
            return None


def write(state: Mapping[str, str | Sequence[str] | None]) -> None:
    """Make the URL's query parameters exactly `state` (empty values dropped), if it differs."""
    wanted = normalized(state)
    if wanted == snapshot():
        return
    st.query_params.from_dict({k: v if len(v) > 1 else v[0] for k, v in wanted.items()})


def normalized(state: Mapping[str, str | Sequence[str] | None]) -> dict[str, list[str]]:
    """Return `state` in the shape `snapshot()` returns, for comparisons."""
    out: dict[str, list[str]] = {}
    for key, value in state.items():
        if value is None or value == "" or value == []:
            continue
        out[key] = [value] if isinstance(value, str) else [str(v) for v in value]
    return out
