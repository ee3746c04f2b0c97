"""Billing: customers, entries, reservations, gateway keys, prices, payouts, receipts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.TIMESTAMP(timezone=True)
WEI = sa.Numeric(78, 0)


def upgrade() -> None:
    # Read models of the customers' ledger subjects. Columns that only some events name are
    # nullable: a projection batch may begin after the event that named them.
    op.create_table(
        "billing_customers",
        sa.Column("customer_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text),
        sa.Column("policy", JSONB),
        sa.Column("balance_wei", WEI, nullable=False),
        sa.Column("reserved_wei", WEI, nullable=False),
        sa.Column("created_at", TS),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "billing_entries",
        sa.Column("entry_id", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("amount_wei", WEI, nullable=False),
        sa.Column("balance_after_wei", WEI, nullable=False),
        sa.Column("reserved_after_wei", WEI, nullable=False),
        sa.Column("receipt_hash", sa.Text),
        sa.Column("job_id", sa.Text),
        sa.Column("reservation_id", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.create_index("billing_entries_customer", "billing_entries", ["customer_id", "seq"])
    op.create_index("billing_entries_kind_time", "billing_entries", ["kind", "created_at"])
    op.create_table(
        "billing_reservations",
        sa.Column("reservation_id", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("key_id", sa.Text),
        sa.Column("job_id", sa.Text),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("model", sa.Text),
        sa.Column("profile_id", sa.Text),
        sa.Column("route_tier", sa.Text),
        sa.Column("amount_wei", WEI),
        sa.Column("debited_wei", WEI),
        sa.Column("released_wei", WEI),
        sa.Column("node_id", sa.Text),
        sa.Column("receipt_hash", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", TS),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("billing_reservations_job", "billing_reservations", ["customer_id", "job_id"])
    op.create_index("billing_reservations_state", "billing_reservations", ["state", "updated_at"])
    op.create_table(
        "gateway_keys",
        sa.Column("key_id", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("scopes", JSONB),
        sa.Column("policy", JSONB),
        sa.Column("expires_at", TS),
        sa.Column("created_at", TS),
        sa.Column("revoked_at", TS),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("gateway_keys_customer", "gateway_keys", ["customer_id"])
    op.create_table(
        "model_prices",
        sa.Column("model", sa.Text, primary_key=True),
        sa.Column("profile_id", sa.Text, primary_key=True),
        sa.Column("prompt_price_wei", WEI, nullable=False),
        sa.Column("completion_price_wei", WEI, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "node_payouts",
        sa.Column("payout_id", sa.Text, primary_key=True),
        sa.Column("node_id", sa.Text, nullable=False),
        sa.Column("reservation_id", sa.Text, nullable=False),
        sa.Column("receipt_hash", sa.Text, nullable=False),
        sa.Column("amount_wei", WEI, nullable=False),
        sa.Column("fee_wei", WEI, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("node_payouts_node", "node_payouts", ["node_id", "created_at"])
    op.create_index("node_payouts_time", "node_payouts", ["created_at"])
    # Public: no customer id, no digests of content.
    op.create_table(
        "receipts_accepted",
        sa.Column("receipt_hash", sa.Text, primary_key=True),
        sa.Column("node_id", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("runtime_kind", sa.Text, nullable=False),
        sa.Column("finish_reason", sa.Text, nullable=False),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("total_tokens", sa.BigInteger, nullable=False),
        sa.Column("queue_us", sa.BigInteger, nullable=False),
        sa.Column("ttft_us", sa.BigInteger, nullable=False),
        sa.Column("latency_us", sa.BigInteger, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("accepted_at", TS, nullable=False),
    )
    # Operational configuration, not a read model: key hashes are secret, never on the log.
    op.create_table(
        "gateway_key_secrets",
        sa.Column("key_id", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("token_hash", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", TS),
        sa.Column("revoked_at", TS),
    )


def downgrade() -> None:
    for table in (
        "gateway_key_secrets",
        "receipts_accepted",
        "node_payouts",
        "model_prices",
        "gateway_keys",
        "billing_reservations",
        "billing_entries",
        "billing_customers",
    ):
        op.drop_table(table)
