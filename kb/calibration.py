"""A collection's own default ef_search: the smallest that keeps recall@10 at the target.

An HNSW search at a fixed ef_search finds fewer of the true neighbours as a collection grows,
and how many depends on how the vectors are spread: on clustered synthetic vectors, ef_search
64 found 0.96 of the exact top 10 at 100k rows and 0.69 at 1M. kb measures instead of
guessing. `calibrate` makes query vectors the index has never seen: a sample of the
collection's documents, each moved in a random direction by its distance to its nearest
neighbour (a document itself as the query flatters the index, whose graph links it to its
neighbours: 0.99 at ef_search 40 where fresh queries from the same data found 0.94; these
moved ones found 0.89, erring on the side of recall). It finds each query's exact top 10,
then its approximate top 10 at growing ef_search, and keeps the smallest ef_search whose
recall@10 reaches the target (pgvector's ceiling of 1,000 otherwise). That is stored in the
collection's settings (`ef_search`, with the measurement under `calibration`), and searches
that set neither `ef_search` nor `exact` start from it (kb.search). An ingest calibrates a
collection once it holds CALIBRATE_MIN_ROWS documents and again whenever it has doubled since.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from kb import refs
from kb.browse import resolve_collection
from kb.collections import collection_size
from kb.errors import InvalidInput
from kb.indexes import is_indexable
from kb.statements import fetch_all, pinned

if TYPE_CHECKING:
    from kb.database import Database

TARGET_RECALL = 0.95
SAMPLE = 32
K = 10
# ef_search values tried, in order; pgvector accepts up to 1,000.
STEPS = (40, 64, 100, 160, 250, 400, 640, 1000)
# Below this many documents a graph search at the default finds practically everything.
CALIBRATE_MIN_ROWS = 20_000


@dataclass(frozen=True, slots=True)
class Calibration:
    """What `calibrate` measured: recall@10 at each ef_search tried, and the one kept."""

    collection: str
    ef_search: int
    recall: float
    target: float
    sample: int
    rows: int
    recall_by_ef: dict[int, float]
    seconds: float
    measured_at: datetime

    def as_settings(self) -> dict[str, Any]:
        """Return the record kept in the collection's settings."""
        return {
            "recall_at_10": round(self.recall, 4),
            "target": self.target,
            "sample": self.sample,
            "rows": self.rows,
            "recall_by_ef": {str(ef): round(r, 4) for ef, r in self.recall_by_ef.items()},
            "seconds": round(self.seconds, 2),
            "measured_at": self.measured_at.isoformat(),
        }


async def calibrate(
    session: AsyncSession,
    collection: str,
    *,
    target: float = TARGET_RECALL,
    sample: int = SAMPLE,
    store: bool = True,
) -> Calibration:
    """Measure the collection's recall@10 by ef_search and keep the smallest reaching target."""
    from kb.search import make_request, run_search

    if not 0.0 < target <= 1.0:
        raise InvalidInput("the target recall must be above 0 and at most 1")
    if not 1 <= sample <= 1000:
        raise InvalidInput("the sample must be from 1 to 1,000 documents")
    start = time.perf_counter()
    async with pinned(session):
        coll = await resolve_collection(session, collection)
        if not is_indexable(coll.dimension):
            raise InvalidInput(
                f"Collection {coll.name!r} has {coll.dimension}-dimensional vectors, which no "
                "HNSW index covers: its searches are exact already."
            )
        rows = await fetch_all(
            session,
            "SELECT count(*) AS n FROM documents WHERE collection_id = :c",
            {"c": coll.id},
        )
        total = int(rows[0]["n"])
        if total <= K:
            raise InvalidInput(
                f"Collection {coll.name!r} holds {total} documents; "
                f"calibrating needs more than {K}."
            )
        # Documents spread over the collection, not its newest or oldest end.
        picked = await fetch_all(
            session,
            "SELECT d.id, CAST(d.embedding AS real[]) AS vec FROM documents d "
            "WHERE d.collection_id = :c ORDER BY md5(d.id::text || :salt) LIMIT :n",
            {"c": coll.id, "salt": str(total), "n": sample},
        )
        rng = np.random.default_rng(coll.id * 1_000_003 + total)
        queries = []
        for row in picked:
            vec = np.asarray(row["vec"], dtype=np.float64)
            doc = uuid.UUID(int=row["id"].int)
            near = await run_search(session, make_request(collection=coll.name, document=doc, k=1))
            if not near.items:
                continue
            other = await fetch_all(
                session,
                "SELECT CAST(embedding AS real[]) AS vec FROM documents WHERE id = :d",
                {"d": near.items[0].id},
            )
            gap = float(np.linalg.norm(vec - np.asarray(other[0]["vec"], dtype=np.float64)))
            step = rng.standard_normal(vec.shape)
            queries.append(vec + gap * step / np.linalg.norm(step))
        exact = [
            set((await run_search(session, _request(make_request, coll.name, q, exact=True))).ids)
            for q in queries
        ]
        by_ef: dict[int, float] = {}
        chosen = STEPS[-1]
        for ef in STEPS:
            found = 0
            for query, truth in zip(queries, exact, strict=True):
                req = _request(make_request, coll.name, query, ef_search=ef)
                found += len(truth & set((await run_search(session, req)).ids))
            by_ef[ef] = found / max(1, sum(len(t) for t in exact))
            if by_ef[ef] >= target:
                chosen = ef
                break
    result = Calibration(
        collection=coll.name,
        ef_search=chosen,
        recall=by_ef[chosen],
        target=target,
        sample=len(queries),
        rows=total,
        recall_by_ef=by_ef,
        seconds=time.perf_counter() - start,
        measured_at=datetime.now(UTC),
    )
    if store:
        await fetch_all(
            session,
            "UPDATE collections SET settings = coalesce(settings, '{}'::jsonb) "
            "|| jsonb_build_object('ef_search', CAST(:ef AS int), "
            "'calibration', CAST(:record AS jsonb)) WHERE id = :c RETURNING id",
            {"ef": chosen, "record": json.dumps(result.as_settings()), "c": coll.id},
        )
        refs.forget(session, [coll.name])
    return result


def _request(make_request: Any, name: str, query: np.ndarray, **options: Any) -> Any:
    return make_request(collection=name, vector=query, k=K, **options)


def needs_calibration(settings: dict[str, Any] | None, rows: int) -> bool:
    """Tell whether an ingest should (re)calibrate a collection of `rows` documents."""
    settings = settings or {}
    if rows < CALIBRATE_MIN_ROWS:
        return False
    record = settings.get("calibration")
    if not isinstance(record, dict):
        # An ef_search set by hand, without a measurement, is the user's choice: keep it.
        return "ef_search" not in settings
    measured = record.get("rows")
    return not isinstance(measured, int) or rows >= 2 * measured


async def calibrate_if_due(db: Database, collection_id: int) -> Calibration | None:
    """Calibrate a collection after an ingest when it is due (see `needs_calibration`)."""
    async with db.session() as s:
        found = await collection_size(s, collection_id)
        if (
            found is None
            or not is_indexable(found.dimension)
            or not needs_calibration(found.settings, found.documents)
        ):
            return None
        return await calibrate(s, found.name)
