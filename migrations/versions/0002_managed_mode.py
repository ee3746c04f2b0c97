"""Managed Mode: node enrollment state, inventory, model profiles, protocol status, admin tokens.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.add_column("nodes", sa.Column("status", sa.Text, nullable=False, server_default="enrolled"))
    op.add_column("nodes", sa.Column("enrollment_event_id", sa.Text))
    op.add_column("nodes", sa.Column("approved_at", TS))
    op.add_column("nodes", sa.Column("revoked_at", TS))
    op.add_column("nodes", sa.Column("revoked_reason", sa.Text))
    op.create_index("nodes_status", "nodes", ["status", "node_id"])
    op.add_column("node_heartbeats", sa.Column("event_id", sa.Text))
    op.add_column("node_heartbeats", sa.Column("inventory", JSONB))
    op.add_column("node_heartbeats", sa.Column("runtimes", JSONB))
    op.create_table(
        "model_profiles",
        sa.Column("node_id", sa.Text, primary_key=True),
        sa.Column("model", sa.Text, primary_key=True),
        sa.Column("profile_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("runtime_kind", sa.Text, nullable=False),
        sa.Column("route_tier", sa.Text, nullable=False),
        sa.Column("network_eligible", sa.Boolean, nullable=False),
        sa.Column("benchmark_verified", sa.Boolean, nullable=False),
        sa.Column("paid_route_eligible", sa.Boolean, nullable=False),
        sa.Column("queue_health", sa.Text, nullable=False),
        sa.Column("queue_depth", sa.Integer, nullable=False),
        sa.Column("context_length", sa.Integer),
        sa.Column("heartbeat_seq", sa.BigInteger, nullable=False),
        sa.Column("reported_at", TS, nullable=False),
    )
    op.create_index("model_profiles_model", "model_profiles", ["model", "node_id"])
    op.create_index("model_profiles_tier", "model_profiles", ["route_tier", "node_id"])
    op.create_table(
        "node_protocol",
        sa.Column("node_id", sa.Text, primary_key=True),
        sa.Column("registered", sa.Boolean, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("stake_wei", sa.Numeric(78, 0), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("observed_at", TS, nullable=False),
        sa.Column("recorded_by", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    # Operational configuration, not a read model: never on the log (token hashes are secret).
    op.create_table(
        "admin_tokens",
        sa.Column("token_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("token_hash", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("revoked_at", TS),
    )


def downgrade() -> None:
    for table in ("admin_tokens", "node_protocol", "model_profiles"):
        op.drop_table(table)
    for column in ("runtimes", "inventory", "event_id"):
        op.drop_column("node_heartbeats", column)
    op.drop_index("nodes_status", "nodes")
    for column in ("revoked_reason", "revoked_at", "approved_at", "enrollment_event_id", "status"):
        op.drop_column("nodes", column)
