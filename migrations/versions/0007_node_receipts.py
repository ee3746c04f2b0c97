"""Node receipts: every receipt nodes submitted in Managed Mode, one row each.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-12
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    # A read model of the ``receipts.<node_id>`` subjects (NodeReceiptsReported).
    op.create_table(
        "node_receipts",
        sa.Column("receipt_hash", sa.Text, primary_key=True),
        sa.Column("node_id", sa.Text, nullable=False),
        sa.Column("receipt_id", sa.Text, nullable=False),
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("runtime_kind", sa.Text, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("total_tokens", sa.BigInteger, nullable=False),
        sa.Column("dispatch_id", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("receipt", JSONB, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.create_index("node_receipts_node", "node_receipts", ["node_id", "seq", "receipt_hash"])


def downgrade() -> None:
    op.drop_index("node_receipts_node", "node_receipts")
    op.drop_table("node_receipts")
