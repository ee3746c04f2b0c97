"""Broker routes (sessions, policy, latest probe) and benchmark evidence per node and model.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "node_routes",
        sa.Column("node_id", sa.Text, primary_key=True),
        sa.Column("connected", sa.Boolean, nullable=False),
        sa.Column("session_id", sa.Text),
        sa.Column("process_id", sa.Text),
        sa.Column("public_inference_allowed", sa.Boolean, nullable=False),
        sa.Column("connected_at", TS),
        sa.Column("disconnected_at", TS),
        sa.Column("disconnect_reason", sa.Text),
        sa.Column("connect_rtt_ms", sa.Float),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "node_route_probes",
        sa.Column("node_id", sa.Text, primary_key=True),
        sa.Column("session_id", sa.Text, nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("rtt_ms", sa.Float),
        sa.Column("probed_at", TS, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("stream_seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "node_benchmarks",
        sa.Column("node_id", sa.Text, primary_key=True),
        sa.Column("model", sa.Text, primary_key=True),
        # observed: the control plane ran it through the route; self_reported: the
        # node's own benchmark_smoke result, which never counts for paid routing.
        sa.Column("source", sa.Text, primary_key=True),
        sa.Column("observed_at", TS, nullable=False),
        sa.Column("runtime_kind", sa.Text),
        sa.Column("ttft_ms", sa.Float, nullable=False),
        sa.Column("tokens_per_s", sa.Float, nullable=False),
        sa.Column("output_sha256", sa.Text, nullable=False),
        sa.Column("set_id", sa.Text),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.create_index("node_benchmarks_model", "node_benchmarks", ["model", "source", "observed_at"])


def downgrade() -> None:
    op.drop_table("node_benchmarks")
    op.drop_table("node_route_probes")
    op.drop_table("node_routes")
