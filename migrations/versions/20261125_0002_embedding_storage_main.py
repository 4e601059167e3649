"""Keep embeddings inside the table row (storage MAIN) instead of in TOAST.

pgvector declares its types with storage EXTERNAL, so every 384-dimension vector (1.5 KB)
went out of line and each row read for a distance cost three extra page reads (the TOAST
index and chunk). With MAIN, PostgreSQL moves the text and the tsvector out of line first and
keeps the vector in the row when it fits, which made an exact search over 1,000 filtered rows
~2.5x faster. Only rows written from now on are stored this way; a row keeps its layout until
it is rewritten (re-ingested, or `VACUUM FULL documents`). Vectors too wide for a row (above
~1,900 dimensions) still go to TOAST.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Catalog-only: no row is rewritten, so this is instant at any size.
    op.execute("ALTER TABLE documents ALTER COLUMN embedding SET STORAGE MAIN")


def downgrade() -> None:
    op.execute("ALTER TABLE documents ALTER COLUMN embedding SET STORAGE EXTERNAL")
