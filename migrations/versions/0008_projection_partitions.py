"""Projection partitions: one checkpoint per (projection, stream, partition).

A checkpoint row also records how many partitions its projection is split into, so
processes started with another count, or a runner whose read models were swapped for a
rebuild with another count, see it and stop instead of applying events to the wrong rows.
Existing checkpoints become partition 0 of 1: nothing to replay.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "projection_checkpoints",
        sa.Column("partition", sa.Integer, nullable=False, server_default="0"),
    )
    op.add_column(
        "projection_checkpoints",
        sa.Column("partitions", sa.Integer, nullable=False, server_default="1"),
    )
    op.drop_constraint("projection_checkpoints_pkey", "projection_checkpoints")
    op.create_primary_key(
        "projection_checkpoints_pkey",
        "projection_checkpoints",
        ["projection", "stream", "partition"],
    )
    op.create_check_constraint(
        "projection_checkpoints_partition_in_range",
        "projection_checkpoints",
        "partition >= 0 AND partition < partitions",
    )


def downgrade() -> None:
    # One checkpoint cannot stand for several: their read models need a rebuild at 1 first.
    split = op.get_bind().execute(
        sa.text("SELECT count(*) FROM projection_checkpoints WHERE partitions > 1")
    )
    if split.scalar():
        raise RuntimeError("rebuild with `b3iq audit replay --swap --partitions 1` first")
    op.drop_constraint("projection_checkpoints_partition_in_range", "projection_checkpoints")
    op.drop_constraint("projection_checkpoints_pkey", "projection_checkpoints")
    op.create_primary_key(
        "projection_checkpoints_pkey", "projection_checkpoints", ["projection", "stream"]
    )
    op.drop_column("projection_checkpoints", "partitions")
    op.drop_column("projection_checkpoints", "partition")
