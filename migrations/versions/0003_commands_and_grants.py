"""Commands (a read model of the command log) and support grants.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "commands",
        sa.Column("command_id", sa.Text, primary_key=True),
        sa.Column("node_id", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("spec", JSONB, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("lease_id", sa.Text),
        sa.Column("lease_expires_at", TS),
        sa.Column("issued_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        # Only the issue event names these; a batch may begin after it.
        sa.Column("issued_by", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("outcome_code", sa.Text),
        sa.Column("result", sa.Text),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("last_event_id", sa.Text, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
    )
    op.create_index("commands_node_state", "commands", ["node_id", "state", "issued_at"])
    op.create_index("commands_state", "commands", ["state", "issued_at"])
    # Operational configuration, not a read model: grant hashes are secret, never on the log.
    op.create_table(
        "support_grants",
        sa.Column("grant_id", sa.Text, primary_key=True),
        sa.Column("node_id", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("token_hash", sa.Text, nullable=False, unique=True),
        sa.Column("issued_by", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("revoked_at", TS),
    )
    op.create_index("support_grants_node", "support_grants", ["node_id", "created_at"])


def downgrade() -> None:
    op.drop_table("support_grants")
    op.drop_table("commands")
