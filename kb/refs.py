"""What kb remembers of collections between searches, and the check that keeps it honest.

A search needs a collection's id, dimension and metric before it can write its SQL (the id is
a literal so the partial HNSW index applies). Looking them up costs a round trip per search.
kb remembers them per database, and every search that uses remembered ones carries a guard in
the same statement: its rows come back only if each id still has that name and default
ef_search. A collection deleted, re-created, renamed or re-calibrated since is noticed by that
very search, which then looks the collection up again and re-runs; no result is ever built on
a stale id. (An id never changes its dimension, metric or embedder, and ids are never reused.)
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession

from kb.db import engine_of

if TYPE_CHECKING:
    from kb.browse import CollectionRef

MAX_REMEMBERED = 1024
VALID = "kb_valid"

# Per engine (so per database); dropped with the engine.
_known: weakref.WeakKeyDictionary[Engine, OrderedDict[str, CollectionRef]] = (
    weakref.WeakKeyDictionary()
)


def _names(
    session: AsyncSession, *, create: bool = False
) -> OrderedDict[str, CollectionRef] | None:
    engine = engine_of(session)
    if engine is None:
        return None
    known = _known.get(engine)
    if known is None and create:
        known = _known[engine] = OrderedDict()
    return known


def recall(session: AsyncSession, names: Sequence[str]) -> list[CollectionRef] | None:
    """Return the remembered collections named, in order, or None if any is not remembered."""
    known = _names(session)
    if known is None:
        return None
    out = []
    for name in names:
        ref = known.get(name)
        if ref is None:
            return None
        out.append(ref)
    return out


def remember(session: AsyncSession, refs: Sequence[CollectionRef]) -> None:
    """Remember collections just read from the database."""
    known = _names(session, create=True)
    if known is None:
        return
    for ref in refs:
        known[ref.name] = ref
        known.move_to_end(ref.name)
    while len(known) > MAX_REMEMBERED:
        known.popitem(last=False)


def forget(session: AsyncSession, names: Sequence[str]) -> None:
    """Forget collections (a guard found them changed)."""
    known = _names(session)
    for name in names:
        if known is not None:
            known.pop(name, None)


def guarded(sql: str, refs: Sequence[CollectionRef], order_by: str) -> tuple[str, dict[str, Any]]:
    """Wrap a statement so it returns rows only while every ref's id still has its name (and
    its default ef_search).

    The result always has at least one row; its `kb_valid` column says whether the refs held,
    and a valid result with no hits is one row of NULLs. `order_by` orders the inner rows
    (over the alias `r`).
    """
    params: dict[str, Any] = {}
    pairs = []
    # A collection named twice is one row of `collections`.
    refs = list({ref.id: ref for ref in refs}.values())
    from kb.browse import EF_SEARCH_SQL

    for i, ref in enumerate(refs):
        params[f"kb_name{i}"] = ref.name
        ef = "IS NULL" if ref.ef_search is None else f"= {int(ref.ef_search)}"
        pairs.append(
            f"(c.id = {int(ref.id)} AND c.name = CAST(:kb_name{i} AS text) "
            f"AND ({EF_SEARCH_SQL}) {ef})"
        )
    where = " OR ".join(pairs)  # ids are ints, names bound parameters
    check = f"(SELECT count(*) FROM collections c WHERE {where}) = {len(refs)}"  # noqa: S608
    wrapped = (
        f"SELECT g.{VALID}, r.* FROM (SELECT {check} AS {VALID}) AS g "  # noqa: S608
        f"LEFT JOIN LATERAL ({sql}) AS r ON g.{VALID} ORDER BY {order_by}"
    )
    return wrapped, params
