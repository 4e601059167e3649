"""The hybrid search statement: vector and full-text lists fused by reciprocal rank, in SQL.

One statement runs both halves, fuses their ranks, keeps the best `fetch` ids and only then
reads those documents (and, for full-text-only hits, their exact distance), so the cost is
the two halves plus a handful of rows.

Ranking full-text matches means reading every match's tsvector, so a query whose words
appear in tens of thousands of documents would cost hundreds of milliseconds. Such words say
little about which document is meant. The statement first collects up to TEXT_RANK_MAX + 1
matches from the GIN index (their tsvectors stay in TOAST until ranked); when there are more,
the full-text half ranks the vector half's candidates instead of every match (the results'
notes say so).
"""

from __future__ import annotations

from kb.models import TEXT_SEARCH_CONFIG

TEXT_RANK_MAX = 2000

TOO_COMMON_NOTE = (
    f"The query's words appear in more than {TEXT_RANK_MAX:,} documents, too many to rank by "
    "text; the full-text side ranked the vector search's candidates."
)


def hybrid_sql(
    *,
    columns: str,
    vector_sql: str,
    text_conditions: list[str],
    depth: int,
    fetch: int,
    exact_distance: str,
) -> str:
    """Return the hybrid statement.

    `vector_sql` selects `d.id` and `distance` in the vector half's order; `text_conditions`
    are the WHERE conditions of the full-text half over `documents d` (the match itself,
    against `tq.query`, included); `exact_distance` is the distance expression over `d` for
    hits the vector half did not return. Parameters: `:text`, `:w_vector`, `:w_text`,
    `:rrf_k`, plus those of the halves.
    """
    limit = TEXT_RANK_MAX
    return (
        "WITH tq AS MATERIALIZED ("  # noqa: S608 (fixed text, ints and bound parameters)
        f"SELECT websearch_to_tsquery('{TEXT_SEARCH_CONFIG}', CAST(:text AS text)) AS query), "
        "vec AS MATERIALIZED (SELECT v.id, v.distance, "
        f"row_number() OVER (ORDER BY v.distance, v.id) AS rnk FROM ({vector_sql}) AS v), "
        "m AS MATERIALIZED (SELECT d.id, d.tsv FROM documents d, tq "
        f"WHERE {' AND '.join(text_conditions)} LIMIT {limit + 1}), "
        "t AS (SELECT m.id, ts_rank_cd(m.tsv, tq.query) AS score FROM m, tq "
        f"WHERE (SELECT count(*) FROM m) <= {limit} "
        "UNION ALL SELECT d.id, ts_rank_cd(d.tsv, tq.query) AS score "
        "FROM vec JOIN documents d ON d.id = vec.id, tq "
        f"WHERE (SELECT count(*) FROM m) > {limit} AND d.tsv @@ tq.query), "
        "txt AS (SELECT r.id, r.rnk FROM (SELECT t.id, "
        "row_number() OVER (ORDER BY t.score DESC, t.id) AS rnk FROM t) AS r "
        f"WHERE r.rnk <= {int(depth)}), "
        "fused AS (SELECT coalesce(vec.id, txt.id) AS id, vec.rnk AS vector_rank, "
        "txt.rnk AS text_rank, vec.distance AS distance, "
        "coalesce(CAST(:w_vector AS float8) / (CAST(:rrf_k AS float8) + vec.rnk), 0) "
        "+ coalesce(CAST(:w_text AS float8) / (CAST(:rrf_k AS float8) + txt.rnk), 0) "
        "AS fused_score FROM vec FULL JOIN txt ON vec.id = txt.id), "
        "top AS (SELECT * FROM fused ORDER BY fused_score DESC, id "
        f"LIMIT {int(fetch)}) "
        f"SELECT {columns}, f.fused_score, f.vector_rank, f.text_rank, "
        f"coalesce(f.distance, {exact_distance}) AS distance, "
        "(SELECT count(*) FROM vec) AS vector_hits, "
        "(SELECT count(*) FROM m) AS text_matches "
        "FROM top AS f JOIN documents AS d ON d.id = f.id "
        "ORDER BY f.fused_score DESC, d.id"
    )
