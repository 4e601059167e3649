"""The hybrid search statement: vector and full-text lists fused by reciprocal rank, in SQL.

One statement runs both halves, fuses their ranks, keeps the best `fetch` ids and only then
reads those documents (and, for full-text-only hits, their exact distance), so the cost is
the two halves plus a handful of rows.

Ranking full-text matches means reading every match's tsvector, so a query whose words
appear in tens of thousands of documents would cost hundreds of milliseconds. Such words say
little about which document is meant. The statement first collects up to TEXT_RANK_MAX + 1
matches from the GIN index (their tsvectors stay in TOAST until ranked); when there are more,
the full-text half ranks the vector half's candidates instead of every match (the results'
notes say so). Collecting them reads the word's whole GIN entry, every collection's documents
with it (~25 ms for a word in 136k documents), so for a query of one word that kb.terms
counted as too common in a searched collection, the statement skips the collecting and goes
straight to the candidates: same results, without the scan.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    counted: Sequence[int] = (),
) -> str:
    """Return the hybrid statement.

    `vector_sql` selects `d.id` and `distance` in the vector half's order; `text_conditions`
    are the WHERE conditions of the full-text half over `documents d` (the match itself,
    against `tq.query`, included); `exact_distance` is the distance expression over `d` for
    hits the vector half did not return. `counted` are the collections whose word counts
    (kb.terms) may stand in for the matches collected: give them only when the full-text half
    has no condition but the collections, since the counts are of whole collections.
    Parameters: `:text`, `:w_vector`, `:w_text`, `:rrf_k`, plus those of the halves.
    """
    limit = TEXT_RANK_MAX
    if counted:
        # One lexeme, no operator: a query of one word (websearch_to_tsquery and to_tsvector
        # parse and stem alike). The exclusion of one document (`similar`) can take the
        # count from limit + 2 down to limit + 1, still too many.
        known = (
            "SELECT EXISTS (SELECT 1 FROM collection_terms ct WHERE ct.collection_id IN "  # noqa: S608
            f"({', '.join(str(int(c)) for c in counted)}) AND ct.documents > {limit + 1} "
            "AND ct.lexeme = (SELECT (tsvector_to_array(to_tsvector("
            f"'{TEXT_SEARCH_CONFIG}', CAST(:text AS text))))[1] FROM tq "
            "WHERE numnode(tq.query) = 1))"
        )
    else:
        known = "SELECT false"
    return (
        "WITH tq AS MATERIALIZED ("  # noqa: S608 (fixed text, ints and bound parameters)
        f"SELECT websearch_to_tsquery('{TEXT_SEARCH_CONFIG}', CAST(:text AS text)) AS query), "
        f"known AS MATERIALIZED ({known} AS common), "
        "vec AS MATERIALIZED (SELECT v.id, v.distance, "
        f"row_number() OVER (ORDER BY v.distance, v.id) AS rnk FROM ({vector_sql}) AS v), "
        "m AS MATERIALIZED (SELECT d.id, d.tsv FROM documents d, tq "
        f"WHERE NOT (SELECT common FROM known) AND {' AND '.join(text_conditions)} "
        f"LIMIT {limit + 1}), "
        "many AS MATERIALIZED (SELECT (SELECT common FROM known) "
        f"OR (SELECT count(*) FROM m) > {limit} AS too), "
        "t AS (SELECT m.id, ts_rank_cd(m.tsv, tq.query) AS score FROM m, tq "
        "WHERE NOT (SELECT too FROM many) "
        "UNION ALL SELECT d.id, ts_rank_cd(d.tsv, tq.query) AS score "
        "FROM vec JOIN documents d ON d.id = vec.id, tq "
        "WHERE (SELECT too FROM many) AND d.tsv @@ tq.query), "
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
        "(SELECT too FROM many) AS text_too_common "
        "FROM top AS f JOIN documents AS d ON d.id = f.id "
        "ORDER BY f.fused_score DESC, d.id"
    )
