"""Customers, keys, prices and receipts for billing tests."""

from datetime import datetime

from adapters.billing import Billing, GatewayPrincipal
from adapters.bootstrap import ControlPlane
from domain.billing.state import BILLING_READ, INFERENCE, Policy
from domain.ids import uuid7
from domain.receipts import Receipt, ReceiptBody, Timings, Usage, sign_receipt
from domain.signing import Signer

PROMPT_PRICE, COMPLETION_PRICE = 2, 10


async def customer(
    plane: ControlPlane,
    balance_wei: int,
    policy: Policy | None = None,
    key_policy: Policy | None = None,
    model: str = "tiny",
) -> tuple[str, str]:
    """A customer with credit and a gateway key; returns (customer_id, secret)."""
    admin = plane.managed.billing_admin
    state = await admin.create_customer("Acme", policy or Policy(), "test-admin")
    await admin.grant(state.customer_id, balance_wei, "seed", "test-admin")
    issued = await admin.issue_key(
        state.customer_id, "main", (INFERENCE, BILLING_READ), key_policy or Policy(), None, "t"
    )
    await admin.set_price(model, None, PROMPT_PRICE, COMPLETION_PRICE, "test-admin")
    return state.customer_id, issued.secret


async def principal(billing: Billing, secret: str) -> GatewayPrincipal:
    found = await billing.authenticate(secret)
    assert found is not None
    return found


def receipt(
    node: Signer,
    node_id: str,
    prompt_tokens: int,
    completion_tokens: int,
    at: datetime,
    model: str = "tiny",
    *,
    dispatch_id: str,
) -> Receipt:
    return sign_receipt(
        node,
        ReceiptBody(
            receipt_id=uuid7(),
            node_id=node_id,
            key_id=node.key_id,
            model=model,
            runtime_kind="llama_cpp",
            created_at_ms=int(at.timestamp() * 1000),
            stream=False,
            finish_reason="stop",
            usage=Usage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens),
            timings=Timings(queue_us=10, ttft_us=2000, latency_us=9000),
            request_digest="1" * 64,
            response_digest="2" * 64,
            dispatch_id=dispatch_id,
        ),
    )
