"""Billing over HTTP: admin setup, customer views, public receipts, treasury, bad input."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from domain.signing import Keyring, Signer
from domain.streams import Topology
from tests.billing_support import principal, receipt
from tests.conftest import Servers
from tests.integration.test_managed import Harness, _harness


@pytest.fixture
async def cp(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Harness]:
    async for harness in _harness(servers, database_url, topology, tmp_path):
        yield harness


async def admin(cp: Harness, method: str, path: str, **body: object) -> dict:  # type: ignore[type-arg]
    response = await cp.client.request(
        method, f"/v1/admin/billing{path}", json=body or None, headers=cp.as_admin()
    )
    assert response.status_code in (200, 201), response.text
    return response.json()  # type: ignore[no-any-return]


async def test_admin_setup_customer_views_receipt_and_treasury(cp: Harness) -> None:
    created = await admin(cp, "POST", "/customers", name="Acme", customer_id="acme")
    assert created["balance_wei"] == "0" and created["policy"]["spend_window_s"] == 86400
    credited = await admin(cp, "POST", "/customers/acme/credits", amount_wei="5000", reason="promo")
    assert (credited["balance_wei"], credited["available_wei"]) == ("5000", "5000")
    await admin(cp, "PUT", "/prices", model="tiny", prompt_price_wei="2", completion_price_wei="10")
    issued = await admin(
        cp,
        "POST",
        "/customers/acme/gateway-keys",
        name="ci",
        policy={"spend_cap_wei": "100000", "allowed_models": ["tiny"]},
    )
    secret = issued["key"]
    assert secret.startswith("b3iq_gateway_") and issued["policy"]["spend_cap_wei"] == "100000"

    billing = cp.plane.managed.billing
    who = await principal(billing, secret)
    quoted = await billing.quote(who, "tiny", 10, 10)
    held = await billing.reserve(
        who, model="tiny", route_tier="network_beta", quote=quoted, job_id="job-7"
    )
    node = Signer.generate()
    signed = receipt(node, "node-a", 4, 6, cp.clock(), dispatch_id=held.reservation_id)
    await billing.settle(held, signed, Keyring([node.public_key]))
    await cp.project()

    bearer = {"authorization": f"Bearer {secret}"}
    account = (await cp.client.get("/v1/billing/account", headers=bearer)).json()
    assert (account["balance_wei"], account["reserved_wei"], account["available_wei"]) == (
        "4932",
        "0",
        "4932",
    )
    assert account["key_policy"]["allowed_models"] == ["tiny"]
    usage = (await cp.client.get("/v1/billing/usage?window_days=7", headers=bearer)).json()
    totals = {t["kind"]: t["amount_wei"] for t in usage["totals"]}
    assert totals == {"credit": "5000", "debit": "68", "release": "52", "reserve": "120"}
    assert usage["entries"][0]["kind"] == "release"
    debit = next(e for e in usage["entries"] if e["kind"] == "debit")
    assert debit["receipt_hash"] == signed.receipt_hash
    assert (debit["balance_after_wei"], debit["reserved_after_wei"]) == ("4932", "52")
    job = (await cp.client.get("/v1/billing/jobs/job-7", headers=bearer)).json()
    assert job["reservations"][0]["state"] == "settled"
    assert job["reservations"][0]["debited_wei"] == "68"

    public = await cp.client.get(f"/v1/receipts/{signed.receipt_hash}")
    assert public.status_code == 200
    body = public.json()
    assert body["model"] == "tiny" and body["completion_tokens"] == 6
    assert "acme" not in public.text and "customer" not in public.text
    assert "request_digest" not in body

    report = await admin(cp, "GET", "/treasury-report?window_days=1")
    assert (report["customer_debits_wei"], report["node_payouts_wei"]) == ("68", "65")
    assert report["protocol_fees_wei"] == "3"

    keys = await admin(cp, "GET", "/customers/acme/gateway-keys")
    assert secret not in str(keys) and "hash" not in str(keys)
    await admin(cp, "POST", f"/gateway-keys/{issued['key_id']}/revoke", reason="leaked")
    assert (await cp.client.get("/v1/billing/account", headers=bearer)).status_code == 401


async def test_bad_input_is_a_stable_400_never_a_500(cp: Harness) -> None:
    await admin(cp, "POST", "/customers", name="Acme", customer_id="acme")
    for path, body in [
        ("/customers/acme/credits", {"amount_wei": 5, "reason": "x"}),
        ("/customers/acme/credits", {"amount_wei": "-5", "reason": "x"}),
        ("/customers/acme/credits", {"amount_wei": "5"}),
        ("/customers/acme/adjustments", {"amount_wei": "abc", "reason": "x"}),
        ("/customers", {"name": "x", "customer_id": "a.b"}),
        ("/customers", {"name": "x", "unknown": 1}),
    ]:
        response = await cp.client.post(
            f"/v1/admin/billing{path}", json=body, headers=cp.as_admin()
        )
        assert response.status_code == 400, (path, body, response.text)
        assert response.json()["error"]["code"] == "invalid_request"
    refused = await cp.client.post(
        "/v1/admin/billing/customers/acme/adjustments",
        json={"amount_wei": "-1", "reason": "x"},
        headers=cp.as_admin(),
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "invalid_adjustment")
    missing = await cp.client.post(
        "/v1/admin/billing/customers/nobody/credits",
        json={"amount_wei": "1", "reason": "x"},
        headers=cp.as_admin(),
    )
    assert missing.status_code == 404
    assert (await cp.client.get("/v1/billing/account")).status_code == 401
    assert (await cp.client.get("/v1/receipts/nothex")).status_code == 404
    unauth = await cp.client.post("/v1/admin/billing/customers", json={"name": "x"})
    assert unauth.status_code == 401
