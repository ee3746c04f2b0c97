"""Payout batches: one row per batch, and the batch that claimed each node payout.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)
WEI = sa.Numeric(78, 0)


def upgrade() -> None:
    # A read model of the ``payout_batch.<id>`` subjects (the billing projection keeps it,
    # so reconciliation reads it in the same snapshot as node_payouts).
    op.create_table(
        "payout_batches",
        sa.Column("batch_id", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("payout_count", sa.Integer),
        sa.Column("total_amount_wei", WEI),
        sa.Column("merkle_root", sa.Text, nullable=False),
        sa.Column("up_to_seq", sa.BigInteger),
        sa.Column("target", sa.Text),
        sa.Column("reference", sa.Text),
        sa.Column("confirmation", sa.Text),
        sa.Column("created_by", sa.Text),
        sa.Column("created_at", TS),
        sa.Column("submitted_at", TS),
        sa.Column("finalized_at", TS),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("last_event_id", sa.Text, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
    )
    op.create_index("payout_batches_state", "payout_batches", ["state", "created_at"])
    op.add_column("node_payouts", sa.Column("batch_id", sa.Text))
    op.create_index(
        "node_payouts_unbatched",
        "node_payouts",
        ["payout_id"],
        postgresql_where=sa.text("batch_id IS NULL"),
    )
    op.create_index("node_payouts_batch", "node_payouts", ["batch_id"])


def downgrade() -> None:
    op.drop_index("node_payouts_batch", "node_payouts")
    op.drop_index("node_payouts_unbatched", "node_payouts")
    op.drop_column("node_payouts", "batch_id")
    op.drop_table("payout_batches")
