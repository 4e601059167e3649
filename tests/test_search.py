"""Search on a real database: HNSW use, filtered top-k, metrics, recall, MMR, text and hybrid."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

import kb
from helpers import settings_for
from kb.indexes import index_name
from kb.models import Document
from kb.search import compile_request

DIM = 32
N = 4000
BASE = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass
class Data:
    db: kb.Database
    ids: dict[str, list[uuid.UUID]]
    vectors: dict[str, np.ndarray]
    colls: dict[str, kb.Collection]


def _docs(coll: kb.Collection, vectors: np.ndarray, *, texts: list[str] | None = None) -> list[Any]:
    out = []
    for i, vec in enumerate(vectors):
        out.append(
            Document(
                id=uuid.uuid4(),
                collection_id=coll.id,
                title=f"{coll.name} {i}" + (" rare" if i % 100 == 42 else ""),
                source=f"{coll.name}/{i // 20}",
                chunk_index=i % 20,
                content=texts[i] if texts else f"document {i} of {coll.name}",
                meta={"bucket": i % 100, "i": i},
                embedding=vec,
                created_at=BASE + timedelta(minutes=i),
            )
        )
    return out


@pytest.fixture(scope="module")
async def data(new_database: Callable[[], Awaitable[URL]]) -> AsyncIterator[Data]:
    url = await new_database()
    db = await kb.connect(settings_for(url), url=url, upgrade=False)
    rng = np.random.default_rng(2024)
    sizes = {"vec": N, "vec2": 500, "l2": 300, "ip": 300}
    vectors = {name: rng.standard_normal((n, DIM)).astype(np.float32) for name, n in sizes.items()}
    # MMR: five tight clusters of eight near-duplicates each.
    centers = rng.standard_normal((5, DIM))
    vectors["mmr"] = np.concatenate(
        [c + 0.02 * rng.standard_normal((8, DIM)) for c in centers]
    ).astype(np.float32)
    metrics = {"l2": "l2", "ip": "ip"}
    colls: dict[str, kb.Collection] = {}
    ids: dict[str, list[uuid.UUID]] = {}
    async with db.session() as s:
        for name, vecs in vectors.items():
            colls[name] = await kb.create_collection(
                s,
                name,
                embedder="hashing",
                model=f"feature-hashing-{DIM}",
                dimension=DIM,
                metric=metrics.get(name, "cosine"),
            )
            await kb.indexes.drop_index(s, colls[name].id)  # built once after the load
            docs = _docs(colls[name], vecs)
            s.add_all(docs)
            await s.flush()
            ids[name] = [d.id for d in docs]
            await kb.indexes.create_index(s, colls[name].id, DIM, colls[name].metric)
        await s.execute(text("ANALYZE documents"))
    try:
        yield Data(db, ids, vectors, colls)
    finally:
        await db.close()


def exact_cosine(vectors: np.ndarray, q: np.ndarray) -> np.ndarray:
    v = vectors.astype(np.float64)
    return (v @ q) / (np.linalg.norm(v, axis=1) * np.linalg.norm(q))


async def test_top_k_is_the_nearest_and_scores_are_one_minus_distance(data: Data) -> None:
    rng = np.random.default_rng(1)
    q = rng.standard_normal(DIM)
    sims = exact_cosine(data.vectors["vec"], q)
    order = np.argsort(-sims)
    async with data.db.session() as s:
        results = await kb.search_by_vector(s, q, collection="vec", k=20)
    assert [r.rank for r in results] == list(range(1, 21))
    assert all(r.operator == "<=>" and r.metric == "cosine" and r.mode == "vector" for r in results)
    assert "1 - cosine distance" in results[0].score_definition
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    for r in results:
        i = data.ids["vec"].index(r.id)
        assert r.distance is not None
        assert r.score == pytest.approx(1 - r.distance, abs=1e-9)
        assert r.score == pytest.approx(sims[i], abs=1e-5)
    truth = {data.ids["vec"][i] for i in order[:20]}
    assert len(truth & set(results.ids)) >= 18


@pytest.mark.parametrize("metric", ["l2", "ip"])
async def test_l2_and_inner_product_scores_point_the_right_way(data: Data, metric: str) -> None:
    vecs = data.vectors[metric].astype(np.float64)
    q = np.random.default_rng(5).standard_normal(DIM)
    async with data.db.session() as s:
        results = await kb.search_by_vector(s, q, collection=metric, k=10, exact=True)
    if metric == "l2":
        truth = np.linalg.norm(vecs - q, axis=1)
        best = np.argsort(truth)[:10]
        assert all(r.operator == "<->" for r in results)
        for r, i in zip(results, best, strict=True):
            assert r.id == data.ids[metric][i]
            assert r.distance == pytest.approx(truth[i], rel=1e-5)
            assert r.score == pytest.approx(-truth[i], rel=1e-5)
    else:
        dots = vecs @ q
        best = np.argsort(-dots)[:10]
        assert all(r.operator == "<#>" for r in results)
        for r, i in zip(results, best, strict=True):
            assert r.id == data.ids[metric][i]
            # pgvector's <#> is the negative inner product; the score is the product itself.
            assert r.distance == pytest.approx(-dots[i], rel=1e-5)
            assert r.score == pytest.approx(dots[i], rel=1e-5)
    async with data.db.session() as s:
        approx = await kb.search_by_vector(s, q, collection=metric, k=10)
    assert len(set(approx.ids) & set(results.ids)) >= 9


async def test_the_hnsw_index_serves_the_query_every_time(data: Data) -> None:
    hnsw = index_name(data.colls["vec"].id)
    rng = np.random.default_rng(3)
    runs = 8  # past the 5 custom plans after which PostgreSQL may switch to a generic one
    async with data.db.session() as s:
        count = text("SELECT pg_stat_get_xact_numscans(CAST(:ix AS regclass))")
        for _ in range(runs):
            before = await s.scalar(count, {"ix": hnsw})
            results = await kb.search_by_vector(
                s,
                rng.standard_normal(DIM),
                collection="vec",
                k=10,
                filters={"title_contains": "vec 1"},
                ef_search=64,  # held to the index: kb may pick exact for a filter it deems rare
            )
            assert len(results) == 10
            # Each run scans the HNSW index (an iterative scan may count more than once).
            assert await s.scalar(count, {"ix": hnsw}) > before
        plans = (
            await s.execute(
                text(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                    "WHERE statement LIKE '%ORDER BY (d.embedding::vector(32)) <=>%'"
                )
            )
        ).all()
        assert sum(p.custom_plans for p in plans) >= runs
        explained = await kb.explain(s, results.request)
        assert explained.indexes == (hnsw,) and explained.uses_index
        assert (
            "ORDER BY (d.embedding::vector(32)) <=> CAST(CAST(:q AS real[]) AS vector(32))"
            in explained.sql
        )
        assert explained.settings["hnsw.iterative_scan"] == "strict_order"

        # Even a generic plan (no parameter values) proves the partial index applies, since
        # the collection id is a literal.
        plain = kb.make_request(collection="vec", vector=rng.standard_normal(DIM), k=10)
        unfiltered = compile_request(plain, [data.colls["vec"]]).sql.replace(":q", "$1")
        raw = (await (await s.connection()).get_raw_connection()).driver_connection
        await raw.execute(f"PREPARE kb_generic(text) AS {unfiltered}")
        await raw.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        vec = "{" + ",".join(["0.5"] * DIM) + "}"
        plan = "\n".join(r[0] for r in await raw.fetch(f"EXPLAIN EXECUTE kb_generic('{vec}')"))
        await raw.execute("DEALLOCATE kb_generic")
        assert f"Index Scan using {hnsw}" in plan and "$1" in plan


async def test_exact_scans_are_planned_for_their_query_vector(data: Data) -> None:
    # A generic plan would cast the query vector from real[] again for every row it scans.
    rng = np.random.default_rng(11)
    async with data.db.session() as s:
        # An unfiltered search leaves the connection on PostgreSQL's automatic plan choice.
        await kb.search_by_vector(s, rng.standard_normal(DIM), collection="vec", k=5)
        for _ in range(8):
            exact = await kb.search_by_vector(
                s, rng.standard_normal(DIM), collection="vec", k=5, exact=True
            )
            assert len(exact) == 5
        plans = (
            await s.execute(
                text(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                    "WHERE statement LIKE '%ORDER BY d.embedding <=> CAST(CAST($_ AS real[])%' "
                    "AND statement NOT LIKE '%pg_prepared_statements%'"
                )
            )
        ).all()
        assert plans and sum(p.generic_plans for p in plans) == 0
        assert sum(p.custom_plans for p in plans) >= 8
        explained = await kb.explain(s, exact.request)
        assert explained.settings == {"plan_cache_mode": "force_custom_plan"}


async def test_a_one_percent_filter_still_returns_k_rows(data: Data) -> None:
    q = np.random.default_rng(7).standard_normal(DIM)
    in_bucket = [i for i in range(N) if i % 100 == 7]
    sims = exact_cosine(data.vectors["vec"][in_bucket], q)
    truth = [data.ids["vec"][in_bucket[j]] for j in np.argsort(-sims)]
    one_percent = {"metadata": {"bucket": 7}}
    async with data.db.session() as s:
        for k in (10, 40):
            results = await kb.search_by_vector(s, q, collection="vec", k=k, filters=one_percent)
            assert results.ids == truth[:k]
            assert all(r.metadata["bucket"] == 7 for r in results)
        more = await kb.search_by_vector(s, q, collection="vec", k=50, filters=one_percent)
        assert more.ids == truth  # all 40 that match, no more
        explained = await kb.explain(s, more.request)
        assert explained.warning is not None and "Only 40 of k=50" in explained.warning
        assert "matches 40 documents" in explained.warning


async def test_a_filtered_search_picks_its_path_from_the_filters_selectivity(data: Data) -> None:
    """Rare filter: exact (kb says so); broad filter: HNSW with ef_search scaled up."""
    hnsw = index_name(data.colls["vec"].id)
    q = np.random.default_rng(11).standard_normal(DIM)
    vectors = data.vectors["vec"]
    async with data.db.session() as s:
        rare = await kb.search_by_vector(
            s, q, collection="vec", k=10, filters={"metadata": {"bucket": 7}}
        )
        assert rare.request.exact and "exactly" in rare.notes[0]
        explained = await kb.explain(
            s,
            kb.make_request(collection="vec", vector=q, k=10, filters={"metadata": {"bucket": 7}}),
        )
        assert hnsw not in explained.indexes
        # Selective in the whole table too: its own index alone, the collection checked per row.
        assert "d.collection_id + 0 =" in explained.sql
        # created_at is minutes from BASE: the first 1,200 of 4,000 rows are 30 %.
        until = BASE + timedelta(minutes=1200)
        broad = await kb.search_by_vector(
            s, q, collection="vec", k=10, filters={"created_to": until}
        )
        ran = broad.request
        assert not ran.exact and ran.ef_search is not None
        assert 64 < ran.ef_search < 1000 and "ef_search" in broad.notes[0]
        # Asked for explicitly, ef_search and exact are left as they are.
        fixed = await kb.search_by_vector(
            s, q, collection="vec", k=10, filters={"created_to": until}, ef_search=40
        )
        assert fixed.request.ef_search == 40 and not fixed.notes
    sims = exact_cosine(vectors[:1200], q)
    assert broad.ids == [data.ids["vec"][j] for j in np.argsort(-sims)[:10]]
    in_bucket = [i for i in range(N) if i % 100 == 7]
    sims = exact_cosine(vectors[in_bucket], q)
    assert rare.ids == [data.ids["vec"][in_bucket[j]] for j in np.argsort(-sims)[:10]]


async def test_iterative_index_scans_keep_a_filtered_hnsw_scan_full(data: Data) -> None:
    """With the planner held to the HNSW index, a 1% filter still yields k rows."""
    hnsw = index_name(data.colls["vec"].id)
    q = np.random.default_rng(8).standard_normal(DIM)
    rare = {"title_contains": "rare"}  # 40 of 4000 titles
    async with data.db.session() as s:
        await s.execute(text("SET LOCAL enable_seqscan = off"))
        await s.execute(text("SET LOCAL enable_bitmapscan = off"))
        # An explicit ef_search keeps kb from choosing the exact path for so rare a filter.
        results = await kb.search_by_vector(
            s, q, collection="vec", k=10, filters=rare, ef_search=64
        )
        assert len(results) == 10 and not results.exact_fallback
        assert not results.request.exact and results.request.ef_search == 64
        assert all("rare" in r.title for r in results)
        explained = await kb.explain(s, results.request)
        assert explained.indexes == (hnsw,)
        # The same statement without iterative scans: HNSW hands back ef_search candidates
        # and the filter keeps about 1% of them.
        compiled = compile_request(results.request, [data.colls["vec"]])
        await s.execute(text("SELECT set_config('hnsw.iterative_scan', 'off', true)"))
        plain = (await s.execute(text(compiled.sql), compiled.params)).all()
        assert len(plain) < 10

        # If the scan budget runs out first, kb re-runs the search exactly.
        await s.execute(text("SET LOCAL hnsw.max_scan_tuples = 20"))
        short = await kb.search_by_vector(s, q, collection="vec", k=10, filters=rare, ef_search=10)
    rare_rows = [i for i in range(N) if i % 100 == 42]
    sims = exact_cosine(data.vectors["vec"][rare_rows], q)
    assert short.exact_fallback and "exactly" in short.notes[0]
    assert short.ids == [data.ids["vec"][rare_rows[j]] for j in np.argsort(-sims)[:10]]


async def test_exact_matches_numpy_and_recall_at_k_is_reported(data: Data) -> None:
    rng = np.random.default_rng(9)
    recalls = []
    async with data.db.session() as s:
        for _ in range(10):
            q = rng.standard_normal(DIM)
            exact = await kb.search_by_vector(s, q, collection="vec", k=10, exact=True)
            truth = np.argsort(-exact_cosine(data.vectors["vec"], q))[:10]
            assert exact.ids == [data.ids["vec"][i] for i in truth]
            report = await kb.recall_at_k(s, exact.request)
            assert report.exact == tuple(exact.ids)
            assert report.recall == len(set(report.approximate) & set(report.exact)) / 10
            assert set(report.missing) == set(report.exact) - set(report.approximate)
            recalls.append(report.recall)
        low = await kb.recall_at_k(s, kb.make_request(collection="vec", vector=q, ef_search=1))
    assert np.mean(recalls) >= 0.9
    assert low.ef_search == 1 and 0.0 <= low.recall <= 1.0


async def test_score_threshold_drops_weaker_hits(data: Data) -> None:
    q = data.vectors["vec"][10] + 0.1
    async with data.db.session() as s:
        everything = await kb.search_by_vector(s, q, collection="vec", k=50, exact=True)
        cut = everything[5].score
        kept = await kb.search_by_vector(s, q, collection="vec", k=50, exact=True, min_score=cut)
    assert kept.ids == everything.ids[:6]
    assert all(r.score >= cut for r in kept)


async def test_mmr_picks_from_several_clusters(data: Data) -> None:
    centers = data.vectors["mmr"].reshape(5, 8, DIM).mean(axis=1)
    q = centers[0] + 0.3 * centers[1] + 0.3 * centers[2]
    cluster = {doc_id: i // 8 for i, doc_id in enumerate(data.ids["mmr"])}
    async with data.db.session() as s:
        plain = await kb.search_by_vector(s, q, collection="mmr", k=5)
        diverse = await kb.search_by_vector(s, q, collection="mmr", k=5, mmr=True, fetch_k=40)
        relevant = await kb.search_by_vector(
            s, q, collection="mmr", k=5, mmr=True, mmr_lambda=1.0, fetch_k=40
        )
    assert {cluster[i] for i in plain.ids} == {0}
    assert len({cluster[i] for i in diverse.ids}) >= 3
    assert diverse.ids[0] == plain.ids[0]
    assert [r.rank for r in diverse] == [1, 2, 3, 4, 5]
    assert relevant.ids == plain.ids  # lambda 1 is plain relevance


async def test_more_like_this_uses_the_stored_vector_and_leaves_the_document_out(
    data: Data,
) -> None:
    doc_id = data.ids["vec"][123]
    async with data.db.session() as s:
        like = await kb.similar(s, str(doc_id), k=10, exact=True)
        direct = await kb.search_by_vector(
            s, data.vectors["vec"][123], collection="vec", k=11, exact=True
        )
        approx = await kb.similar(s, doc_id, k=10)
    assert doc_id not in like.ids and doc_id not in approx.ids
    assert direct.ids[0] == doc_id
    assert like.ids == direct.ids[1:]
    assert len(set(approx.ids) & set(like.ids)) >= 9
    assert like.request.document_id == doc_id


async def test_search_across_collections_sharing_an_embedder(data: Data) -> None:
    q = np.random.default_rng(12).standard_normal(DIM)
    both = np.concatenate([data.vectors["vec"], data.vectors["vec2"]])
    names = ["vec"] * N + ["vec2"] * 500
    all_ids = data.ids["vec"] + data.ids["vec2"]
    truth = np.argsort(-exact_cosine(both, q))[:30]
    async with data.db.session() as s:
        results = await kb.search_by_vector(s, q, collection=["vec", "vec2"], k=30, exact=True)
        approx = await kb.search_by_vector(s, q, collection=["vec", "vec2"], k=30)
        with pytest.raises(kb.EmbedderMismatch, match="do not share an embedder"):
            await kb.search_by_vector(s, q, collection=["vec", "l2"], k=5)
    assert results.ids == [all_ids[i] for i in truth]
    assert [r.collection for r in results] == [names[i] for i in truth]
    assert len(set(approx.ids) & set(results.ids)) >= 27
    explained_indexes = {index_name(data.colls[n].id) for n in ("vec", "vec2")}
    async with data.db.session() as s:
        assert set((await kb.explain(s, approx.request)).indexes) == explained_indexes


async def test_results_as_dataframe(data: Data) -> None:
    async with data.db.session() as s:
        results = await kb.search_by_vector(s, data.vectors["vec"][0], collection="vec", k=5)
    frame = results.to_dataframe()
    assert len(frame) == 5
    assert frame["rank"].tolist() == [1, 2, 3, 4, 5]
    assert frame["id"].tolist() == [str(i) for i in results.ids]
    assert {"score", "distance", "metric", "operator", "metadata", "created_at"} <= set(frame)
    assert kb.to_dataframe(results).equals(frame)


TEXTS = [
    "The cat sat on the warm mat by the door.",
    "Running a marathon needs months of training.",
    "She runs every morning before work.",
    "PostgreSQL stores the vectors and the full text index.",
    "A recipe for bread: flour, water, salt and yeast.",
    "The runner crossed the finish line first.",
]


async def test_full_text_search_ranks_stemmed_matches(own_db: kb.Database) -> None:
    async with own_db.session() as s:
        coll = await kb.create_collection(
            s, "words", embedder="hashing", model="feature-hashing-64", dimension=64
        )
        vectors = kb.embedders.embed_texts(
            kb.embedders.make_embedder("hashing", dimension=64), TEXTS
        )
        s.add_all(_docs(coll, vectors, texts=TEXTS))
    async with own_db.session() as s:
        runs = await kb.search(s, "run", collection="words", mode="text", k=10)
        # "run" finds "runs" and "Running" through the English stemmer.
        assert {r.content for r in runs} == {TEXTS[1], TEXTS[2]}
        assert all(r.distance is None and r.operator is None and r.score > 0 for r in runs)
        assert "ts_rank_cd" in runs[0].score_definition
        phrase = await kb.search(s, '"full text" postgresql', collection="words", mode="text")
        assert [r.content for r in phrase] == [TEXTS[3]]
        assert len(await kb.search(s, "the", collection="words", mode="text")) == 0  # stop word
        # By text, embedded with the collection's own (hashing) embedder.
        same = await kb.search(s, TEXTS[4], collection="words", k=3)
        assert same[0].content == TEXTS[4] and same[0].score == pytest.approx(1.0, abs=1e-5)
        hybrid = await kb.search(s, "bread recipe", collection="words", mode="hybrid", k=3)
        assert hybrid[0].content == TEXTS[4]
        assert hybrid[0].vector_rank is not None and hybrid[0].text_rank == 1
        assert hybrid[0].score == pytest.approx(1 / 61 + 1 / (60 + hybrid[0].vector_rank))
        texts_only = await kb.search(
            s, "bread recipe", collection="words", mode="hybrid", k=3, vector_weight=0.0
        )
        assert texts_only[0].score == pytest.approx(1 / 61)

    async with own_db.session() as s:
        more = await kb.create_collection(
            s, "more", embedder="hashing", model="feature-hashing-64", dimension=64
        )
        extra = ["He runs the corner shop.", "Bread and salt for the new neighbours."]
        model = kb.embedders.make_embedder("hashing", dimension=64)
        s.add_all(_docs(more, kb.embedders.embed_texts(model, extra), texts=extra))
    async with own_db.session() as s:
        both = await kb.search(s, "run", collection=["words", "more"], mode="text")
        assert {(r.collection, r.content) for r in both} == {
            ("words", TEXTS[1]),
            ("words", TEXTS[2]),
            ("more", extra[0]),
        }
        mixed = await kb.search(s, "bread", collection=["words", "more"], mode="hybrid", k=4)
        assert {r.collection for r in mixed[:2]} == {"words", "more"}
        assert all(r.text_rank in (1, 2) for r in mixed[:2])


# A labelled set where each half fails where the other succeeds: paraphrases share no words
# with their answer (full text, which ANDs its terms, finds nothing), while error codes are
# near-identical sentences the model cannot tell apart but full text pins exactly.
LABELLED_DOCS = {
    "pw": "How to reset a forgotten account password: open settings, choose security and "
    "request a reset link by email.",
    "hol": "Our office is closed on public holidays; the support line answers again the next "
    "working day.",
    "cancel": "To cancel a subscription, go to billing and press the cancel plan button before "
    "the renewal date.",
    "refund": "Refunds are paid back to the original card within five to seven business days.",
    "offline": "The mobile app works offline and syncs your notes when the connection returns.",
}
for _i, _subject in enumerate(
    [
        "workspace disk quota is exceeded",
        "project disk quota is exceeded",
        "upload size limit is exceeded",
        "workspace storage quota is full",
        "project storage limit is reached",
        "upload quota for the day is exceeded",
        "disk quota of the team is exceeded",
        "storage limit of the account is reached",
        "daily upload limit is reached",
        "team storage quota is exceeded",
    ]
):
    LABELLED_DOCS[f"E{4021 + _i}"] = (
        f"Error E{4021 + _i}: the {_subject}. Free some space or ask an administrator."
    )
LABELLED_QUERIES = [
    ("I can't remember my login credentials", "pw"),
    ("when do I get my money back", "refund"),
    ("stop paying for my membership", "cancel"),
    ("does it work without internet", "offline"),
    ("are you open during vacations", "hol"),
    ("E4023 error", "E4023"),
    ("E4027 error", "E4027"),
    ("E4030 error", "E4030"),
    ("E4025 error", "E4025"),
    ("E4022 error", "E4022"),
]


@pytest.mark.model
async def test_hybrid_beats_either_half_on_a_labelled_set(own_db: kb.Database) -> None:
    model = kb.embedders.make_embedder("local")
    keys = list(LABELLED_DOCS)
    vectors = kb.embedders.embed_texts(model, [LABELLED_DOCS[k] for k in keys])
    async with own_db.session() as s:
        coll = await kb.create_collection(
            s, "help", embedder="local", model=model.model, dimension=model.dimension
        )
        s.add_all(
            Document(
                collection_id=coll.id,
                title="",
                source=key,
                content=LABELLED_DOCS[key],
                embedding=vec,
            )
            for key, vec in zip(keys, vectors, strict=True)
        )
    mrr: dict[str, float] = {}
    async with own_db.session() as s:
        for mode in ("vector", "text", "hybrid"):
            runs = await kb.search_many(
                s, [q for q, _ in LABELLED_QUERIES], collection="help", mode=mode, k=10
            )
            total = 0.0
            for results, (_, answer) in zip(runs, LABELLED_QUERIES, strict=True):
                sources = [r.source for r in results]
                total += 1 / (sources.index(answer) + 1) if answer in sources else 0.0
            mrr[mode] = total / len(LABELLED_QUERIES)
    assert mrr["hybrid"] > mrr["vector"] and mrr["hybrid"] > mrr["text"], mrr
    assert mrr["hybrid"] >= 0.95, mrr


async def test_k_up_to_1000_comes_back_whole_and_ordered(data: Data) -> None:
    q = np.random.default_rng(13).standard_normal(DIM)
    async with data.db.session() as s:
        results = await kb.search_by_vector(s, q, collection="vec", k=1000)
        filtered = await kb.search_by_vector(
            s, q, collection="vec", k=1000, filters={"title_contains": "vec 1"}
        )
    assert len(results) == 1000 and len(set(results.ids)) == 1000
    distances = [r.distance for r in results]
    assert distances == sorted(distances)  # strict order across iterative scan batches
    assert results.request.effective_ef_search == 1000
    # Titles "vec 1", "vec 10".."vec 19", "vec 100".."vec 199", "vec 1000".."vec 1999".
    assert len(filtered) == 1000 and all("vec 1" in r.title for r in filtered)


@pytest.mark.parametrize(("dim", "expected"), [(2001, "halfvec"), (4001, None)])
async def test_wide_vectors_use_halfvec_indexes_or_exact_scans(
    session: AsyncSession, dim: int, expected: str | None
) -> None:
    coll = await kb.create_collection(
        session, f"wide{dim}", embedder="hashing", model=f"feature-hashing-{dim}", dimension=dim
    )
    vectors = np.random.default_rng(dim).standard_normal((40, dim)).astype(np.float32)
    docs = _docs(coll, vectors)
    session.add_all(docs)
    await session.flush()
    q = vectors[3] + 0.05
    results = await kb.search_by_vector(session, q, collection=coll.name, k=5)
    truth = np.argsort(-exact_cosine(vectors, q))[:5]
    assert results.ids[0] == docs[truth[0]].id
    assert len(set(results.ids) & {docs[i].id for i in truth}) >= 4
    compiled = compile_request(results.request, [coll])
    if expected:
        assert (
            f"(d.embedding::halfvec({dim})) <=> CAST(CAST(:q AS real[]) AS halfvec({dim}))"
            in compiled.sql
        )
        assert not compiled.exact
        # Held off a sequential scan (40 rows would not need the index), the planner can
        # serve the query from the halfvec index: the expressions match.
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        explained = await kb.explain(session, results.request)
        assert explained.indexes == (index_name(coll.id),)
    else:
        assert (
            compiled.exact and "d.embedding <=> CAST(CAST(:q AS real[]) AS vector)" in compiled.sql
        )
