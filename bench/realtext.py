"""The real-embedding tier: recall on MiniLM vectors of real text, beside the synthetic recall."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np

from bench import corpus, engines, kbpaths, timing
from bench.context import Context
from bench.data import EPOCH, Dataset
from bench.load import load_dataset
from bench.tiers import K

NAME = "stdlib_docs"


def as_dataset(c: corpus.Corpus) -> Dataset:
    """Return the corpus in the shape the loaders take."""
    n = len(c.texts)
    return Dataset(
        name=NAME,
        vectors=c.vectors,
        titles=c.titles,
        contents=c.texts,
        metas=[{"seq": i, "module": c.titles[i].split(" ")[0]} for i in range(n)],
        created_at=[EPOCH + timedelta(minutes=i) for i in range(n)],
        word_ids=[np.zeros(0, dtype=np.int64)] * n,
        bands=np.full(n, "rest", dtype=object),
    )


async def run(ctx: Context) -> dict[str, Any]:
    """Load the embedded corpus into kb and compare kb's and hnswlib's recall with exact."""
    t = ctx.tier
    c = corpus.load(t.corpus_chunks, t.corpus_queries)
    ds = as_dataset(c)
    out: dict[str, Any] = {
        "chunks": len(ds),
        "queries": len(c.query_texts),
        "embedded_this_run_s": c.seconds_to_embed,
        "load": await load_dataset(ctx, ds, NAME, embedder="local", via="ingest_documents"),
    }
    from bench.pg import raw_connect

    conn = await raw_connect(ctx.url)  # type: ignore[arg-type]
    try:
        await conn.execute("ANALYZE documents")
        ctx.shared["seq"][NAME] = await kbpaths.seq_map(conn, NAME)
    finally:
        await conn.close()
    queries = c.query_vectors
    truth = timing.exact_top_k(c.vectors, queries, K)
    hnsw = engines.Hnswlib() if engines.available("hnswlib") else None
    if hnsw is not None:
        hnsw.load(ds)
    seq = ctx.shared["seq"][NAME]
    out["recall_at_10"] = {}
    for ef in t.ef_search:
        search = kbpaths.Search(ctx.kb_db, NAME, k=K, ef_search=ef)
        found = []
        for q in queries:
            found.append([seq[item.id] for item in await search.run(q)])
        entry = {"kb": timing.recall_at_k(found, truth, K)}
        if hnsw is not None:
            hnsw.set_ef(ef)
            entry["hnswlib"] = timing.recall_at_k([hnsw.query(q, K) for q in queries], truth, K)
        out["recall_at_10"][str(ef)] = entry
    # How near the top neighbours are, real vs synthetic: close ties make ANN recall harder.
    sims = np.sort(queries @ c.vectors.T, axis=1)[:, ::-1]
    out["top1_minus_top10_similarity"] = round(float(np.median(sims[:, 0] - sims[:, K - 1])), 4)
    main = ctx.main_ds.vectors
    msims = np.sort(ctx.queries[:50] @ main.T, axis=1)[:, ::-1]
    out["synthetic_top1_minus_top10_similarity"] = round(
        float(np.median(msims[:, 0] - msims[:, K - 1])), 4
    )
    ctx.log(f"real text: recall {out['recall_at_10']}")
    return out
