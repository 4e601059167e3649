"""Collections and documents, with the vector extension and the browse/search indexes.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

"""

from collections.abc import Sequence

import pgvector.sqlalchemy
import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Autogenerate never emits this; everything below needs it.
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.create_table(
        "collections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("embedder", sa.String(length=50), nullable=False),
        sa.Column("model", sa.String(length=500), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=10), server_default="cosine", nullable=False),
        sa.Column(
            "settings",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("metric IN ('cosine', 'l2', 'ip')", name=op.f("ck_collections_metric")),
        sa.CheckConstraint("dimension BETWEEN 1 AND 16000", name=op.f("ck_collections_dimension")),
        sa.CheckConstraint(
            "length(name) BETWEEN 1 AND 200", name=op.f("ck_collections_name_length")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collections")),
        sa.UniqueConstraint("name", name=op.f("uq_collections_name")),
    )
    op.create_table(
        "documents",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), server_default="", nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("chunk_index", sa.Integer(), server_default="0", nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column(
            "metadata",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("embedding", pgvector.sqlalchemy.Vector(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "tsv",
            postgresql.TSVECTOR(),
            sa.Computed(
                "to_tsvector('english'::regconfig, coalesce(title, '') || ' ' || content)",
                persisted=True,
            ),
            nullable=True,
        ),
        sa.CheckConstraint("chunk_index >= 0", name=op.f("ck_documents_chunk_index")),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["collections.id"],
            name=op.f("fk_documents_collection_id_collections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
        sa.UniqueConstraint(
            "collection_id",
            "source",
            "chunk_index",
            name=op.f("uq_documents_collection_id_source_chunk_index"),
        ),
    )
    op.create_index(
        "ix_documents_collection_created",
        "documents",
        ["collection_id", sa.literal_column("created_at DESC"), sa.literal_column("id DESC")],
    )
    op.create_index("ix_documents_collection_hash", "documents", ["collection_id", "content_hash"])
    op.create_index(
        "ix_documents_metadata",
        "documents",
        ["metadata"],
        postgresql_using="gin",
        postgresql_ops={"metadata": "jsonb_path_ops"},
    )
    op.create_index("ix_documents_tsv", "documents", ["tsv"], postgresql_using="gin")


def downgrade() -> None:
    # Dropping the tables drops every document: say so and stop unless asked explicitly.
    documents = op.get_bind().execute(sa.text("SELECT count(*) FROM documents")).scalar_one()
    if documents and context.get_x_argument(as_dictionary=True).get("drop_data") != "yes":
        raise RuntimeError(
            f"Downgrading below 0001 drops the collections and documents tables with "
            f"{documents} documents. Export what you need first, then run "
            "`alembic -x drop_data=yes downgrade ...` to proceed."
        )
    op.drop_index("ix_documents_tsv", table_name="documents", postgresql_using="gin")
    op.drop_index(
        "ix_documents_metadata",
        table_name="documents",
        postgresql_using="gin",
        postgresql_ops={"metadata": "jsonb_path_ops"},
    )
    op.drop_index("ix_documents_collection_hash", table_name="documents")
    op.drop_index("ix_documents_collection_created", table_name="documents")
    op.drop_table("documents")
    op.drop_table("collections")
    # The extension stays: other schemas in this database may use it.
