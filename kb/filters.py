"""The filter model shared by browse, search and export; every value reaches SQL as a parameter.

Metadata filters use JSONB containment (`metadata @> :json`), which the GIN index on
`metadata` serves; text filters use ILIKE with the wildcards of the value escaped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from kb.errors import InvalidInput
from kb.models import check_json, check_text

MAX_FILTER_TEXT = 1000


def _as_utc(value: datetime | date | None, name: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        # A naive time is taken as UTC, the zone created_at is shown in.
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time.min, tzinfo=UTC)
    raise InvalidInput(f"{name} must be a date or datetime, not {type(value).__name__}")


def _contains_text(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    checked = check_text(value, name)
    assert checked is not None
    if len(checked) > MAX_FILTER_TEXT:
        raise InvalidInput(f"{name} is longer than {MAX_FILTER_TEXT} characters")
    return checked or None


def like_pattern(value: str) -> str:
    """Return an ILIKE pattern matching `value` anywhere, its own % and _ taken literally."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def text_value_candidates(key: str, value: str) -> list[dict[str, Any]]:
    """Return the containment objects a person's `key=value` means: the text, or the JSON scalar
    it spells (2020, true, null), as the value or as one element of a list."""
    values: list[Any] = [value]
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    if not isinstance(parsed, str | dict | list) and not (
        isinstance(parsed, float) and not math.isfinite(parsed)
    ):
        values.append(parsed)
    out: list[dict[str, Any]] = []
    for item in values:
        out.append({key: item})
        out.append({key: [item]})
    return out


@dataclass(frozen=True, slots=True)
class Filters:
    """Conditions on documents, combined with AND; an empty Filters matches everything.

    - `metadata`: a JSON object the document's metadata must contain (`metadata @> this`):
      `{"lang": "en"}` is equality on a key, `{"tags": ["a"]}` means the list holds "a".
    - `metadata_text`: key/value pairs as a person types them: `{"year": "2020"}` matches the
      string "2020" or the number 2020, as the value or inside a list.
    - `created_from` <= created_at < `created_to` (naive datetimes and dates are UTC).
    - `title_contains`, `source_contains`, `content_contains`: case-insensitive substrings.
    """

    metadata: Mapping[str, Any] = field(default_factory=dict)
    metadata_text: Mapping[str, str] = field(default_factory=dict)
    created_from: datetime | date | None = None
    created_to: datetime | date | None = None
    title_contains: str | None = None
    source_contains: str | None = None
    content_contains: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.metadata, Mapping):
            raise InvalidInput("the metadata filter must be a JSON object (a dict)")
        # A private copy: the filter must not change when the caller's dict does.
        meta = json.loads(json.dumps(check_json(dict(self.metadata), "metadata filter")))
        object.__setattr__(self, "metadata", meta)
        if not isinstance(self.metadata_text, Mapping):
            raise InvalidInput("metadata_text must map keys to text values")
        pairs: dict[str, str] = {}
        for key, value in self.metadata_text.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidInput("metadata_text must map text keys to text values")
            check_text(key, "metadata filter key")
            check_text(value, f"metadata filter value for {key!r}")
            if not key:
                raise InvalidInput("a metadata filter needs a key")
            pairs[key] = value
        object.__setattr__(self, "metadata_text", pairs)
        object.__setattr__(self, "created_from", _as_utc(self.created_from, "created_from"))
        object.__setattr__(self, "created_to", _as_utc(self.created_to, "created_to"))
        for name in ("title_contains", "source_contains", "content_contains"):
            object.__setattr__(self, name, _contains_text(getattr(self, name), name))

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @property
    def is_empty(self) -> bool:
        """Tell whether this matches every document."""
        return not self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """Return the conditions that are set, as JSON-ready values."""
        out: dict[str, Any] = {}
        if self.metadata:
            out["metadata"] = self.metadata
        if self.metadata_text:
            out["metadata_text"] = dict(self.metadata_text)
        for name in ("created_from", "created_to"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.isoformat()
        for name in ("title_contains", "source_contains", "content_contains"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        return out

    def sql(self, alias: str = "d", prefix: str = "f_") -> tuple[list[str], dict[str, Any]]:
        """Return SQL conditions over table `alias` and their bound parameters."""
        clauses: list[str] = []
        params: dict[str, Any] = {}
        col = f"{alias}."
        if self.metadata:
            params[f"{prefix}meta"] = json.dumps(self.metadata, ensure_ascii=False)
            clauses.append(f"{col}metadata @> CAST(:{prefix}meta AS jsonb)")
        for i, (key, value) in enumerate(self.metadata_text.items()):
            alternatives = []
            for j, candidate in enumerate(text_value_candidates(key, value)):
                name = f"{prefix}mt{i}_{j}"
                params[name] = json.dumps(candidate, ensure_ascii=False)
                alternatives.append(f"{col}metadata @> CAST(:{name} AS jsonb)")
            clauses.append("(" + " OR ".join(alternatives) + ")")
        if self.created_from is not None:
            params[f"{prefix}from"] = self.created_from
            clauses.append(f"{col}created_at >= :{prefix}from")
        if self.created_to is not None:
            params[f"{prefix}to"] = self.created_to
            clauses.append(f"{col}created_at < :{prefix}to")
        for name, column in (
            ("title_contains", "title"),
            ("source_contains", "source"),
            ("content_contains", "content"),
        ):
            value = getattr(self, name)
            if value:
                params[f"{prefix}{column}"] = like_pattern(value)
                clauses.append(f"{col}{column} ILIKE :{prefix}{column} ESCAPE '\\'")
        return clauses, params


def parse_filter_args(items: Iterable[str]) -> Filters:
    """Parse `key=value` (text or the JSON scalar it spells) and `key:=JSON` (containment)."""
    text_pairs: dict[str, str] = {}
    contained: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise InvalidInput(f"a filter is key=value or key:=JSON, not {item!r}")
        key, _, value = item.partition("=")
        if key.endswith(":"):
            key = key[:-1]
            try:
                contained[key] = json.loads(value)
            except ValueError:
                raise InvalidInput(f"the filter {item!r} has a value that is not JSON") from None
        else:
            text_pairs[key] = value
        if not key:
            raise InvalidInput(f"the filter {item!r} has no key")
    return Filters(metadata=contained, metadata_text=text_pairs)


NO_FILTERS = Filters()


def coerce_filters(value: Filters | Mapping[str, Any] | None) -> Filters:
    """Accept a Filters, a plain dict of its fields, or None."""
    if value is None:
        return NO_FILTERS
    if isinstance(value, Filters):
        return value
    if isinstance(value, Mapping):
        try:
            return Filters(**dict(value))
        except TypeError as exc:
            raise InvalidInput(f"unknown filter field: {exc}") from None
    raise InvalidInput(f"filters must be a kb.Filters or a dict, not {type(value).__name__}")
