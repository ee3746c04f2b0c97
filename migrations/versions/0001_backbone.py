"""Checkpoints and the first read models: signer keys, nodes, latest heartbeats.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "projection_checkpoints",
        sa.Column("projection", sa.Text, primary_key=True),
        sa.Column("stream", sa.Text, primary_key=True),
        sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "signer_keys",
        sa.Column("key_id", sa.Text, primary_key=True),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("published_at", TS, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "nodes",
        sa.Column("node_id", sa.Text, primary_key=True),
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("agent_version", sa.Text, nullable=False),
        sa.Column("enrolled_at", TS, nullable=False),
        sa.Column("enrolled_seq", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "node_heartbeats",
        sa.Column("node_id", sa.Text, primary_key=True),
        sa.Column("heartbeat_seq", sa.BigInteger, nullable=False),
        sa.Column("sent_at", TS, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("agent_version", sa.Text, nullable=False),
        sa.Column("heartbeat_count", sa.BigInteger, nullable=False),
        sa.Column("stream_seq", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("node_heartbeats", "nodes", "signer_keys", "projection_checkpoints"):
        op.drop_table(table)
