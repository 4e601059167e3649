"""Per-collection counts of words too common to rank by text (kb.terms).

A hybrid search used to find out that its word is in more than 2,000 of a collection's
documents by collecting 2,001 of them from the GIN index, which reads the word's entry for the
whole table: ~25 ms for a word in 136k documents. An ingest now counts the words of a sample
of the collection and keeps here those that are certainly that common, and the search looks
them up instead. The table holds only derived counts: downgrading drops them, and the next
ingest into each collection counts again after an upgrade.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "collection_terms",
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("lexeme", sa.Text(), nullable=False),
        sa.Column("documents", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["collections.id"],
            name=op.f("fk_collection_terms_collection_id_collections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("collection_id", "lexeme", name=op.f("pk_collection_terms")),
    )


def downgrade() -> None:
    op.drop_table("collection_terms")
    # The census marks in collections.settings describe rows that no longer exist.
    op.execute("UPDATE collections SET settings = settings - 'text_census'")
