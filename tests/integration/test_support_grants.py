"""Support grants: shown once, hashed, expiring, revocable, one node, diagnostics only."""

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.subject_history import subject_history
from domain.envelope import decode_body, split_wire
from domain.events import decode_payload
from domain.streams import Topology
from tests.conftest import Servers
from tests.integration.test_commands import enrolled, poll
from tests.integration.test_managed import Harness, _harness


@pytest.fixture
async def cp(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Harness]:
    async for harness in _harness(servers, database_url, topology, tmp_path):
        yield harness


async def grant(cp: Harness, node_id: str, **body: object) -> dict[str, str]:
    response = await cp.client.post(
        f"/v1/nodes/{node_id}/support-grants",
        json={"reason": "ticket 42", **body},
        headers=cp.as_admin(),
    )
    assert response.status_code == 201, response.text
    issued: dict[str, str] = response.json()
    return issued


def holder(secret: str) -> dict[str, str]:
    return {"x-b3iq-support-grant": secret}


async def grant_events(cp: Harness, grant_id: str) -> list[tuple[str, bool | None, str]]:
    found = []
    for stored in await subject_history(
        cp.plane.store, cp.plane.topology.subject("grant", grant_id)
    ):
        body = decode_body(split_wire(stored.data).body)
        event = decode_payload(body.type, body.schema_version, body.payload)
        found.append((body.type, getattr(event, "allowed", None), getattr(event, "refusal", "")))
    return found


async def test_a_grant_reads_one_node_and_asks_for_its_bundle(cp: Harness) -> None:
    node = await enrolled(cp, "node-s")
    await enrolled(cp, "node-other")
    await cp.project()
    issued = await grant(cp, "node-s")
    secret = issued["grant"]
    assert secret.startswith("b3iq_support_")

    async with cp.plane.pool.acquire() as conn:
        stored = await conn.fetchval("SELECT token_hash FROM support_grants")
    assert secret not in stored
    listed = await cp.client.get("/v1/nodes/node-s/support-grants", headers=cp.as_admin())
    assert secret not in listed.text
    assert [g["grant_id"] for g in listed.json()["data"]] == [issued["grant_id"]]

    readiness = await cp.client.get("/v1/support/nodes/node-s/readiness", headers=holder(secret))
    assert readiness.status_code == 200, readiness.text
    assert readiness.json()["node_id"] == "node-s"
    bundle = await cp.client.post("/v1/support/nodes/node-s/support-bundle", headers=holder(secret))
    assert bundle.status_code == 201, bundle.text
    await cp.project()
    states = await cp.client.get(
        "/v1/support/nodes/node-s/commands", headers={"authorization": f"Bearer {secret}"}
    )
    assert states.status_code == 200, states.text
    [command] = states.json()["data"]
    assert (command["kind"], command["state"]) == ("support_bundle", "queued")
    assert (await poll(node)).json()["commands"][0]["spec"] == {"kind": "support_bundle"}

    other = await cp.client.get("/v1/support/nodes/node-other/readiness", headers=holder(secret))
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "support_grant_scope_denied"
    # Nothing but diagnostics: operator endpoints do not know the grant.
    for method, path, body in (
        ("GET", "/v1/nodes/node-s", None),
        ("GET", "/v1/commands", None),
        ("POST", "/v1/commands", {"node_id": "node-s", "command": {"kind": "runtime_probe"}}),
        ("POST", "/v1/nodes/node-s/revoke", {"reason": "x"}),
    ):
        response = await cp.client.request(
            method, path, json=body, headers={"authorization": f"Bearer {secret}"}
        )
        assert response.status_code == 401, (path, response.text)

    assert await grant_events(cp, issued["grant_id"]) == [
        ("SupportGrantIssued", None, ""),
        ("SupportGrantUsed", True, ""),
        ("SupportGrantUsed", True, ""),
        ("SupportGrantUsed", True, ""),
        ("SupportGrantUsed", False, "support_grant_scope_denied"),
    ]


async def test_expired_and_revoked_grants_are_refused(cp: Harness) -> None:
    await enrolled(cp, "node-e")
    await cp.project()
    short = await grant(cp, "node-e", ttl_s=60)
    revoked = await grant(cp, "node-e")
    default = await grant(cp, "node-e")
    assert default["expires_at"] > short["expires_at"]  # an hour by default

    response = await cp.client.post(
        f"/v1/support-grants/{revoked['grant_id']}/revoke", headers=cp.as_admin()
    )
    assert response.status_code == 201, response.text
    refused = await cp.client.get(
        "/v1/support/nodes/node-e/commands", headers=holder(revoked["grant"])
    )
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "support_grant_revoked"

    cp.clock.now += timedelta(seconds=61)
    expired = await cp.client.get(
        "/v1/support/nodes/node-e/readiness", headers=holder(short["grant"])
    )
    assert expired.status_code == 401
    assert expired.json()["error"]["code"] == "support_grant_expired"
    fine = await cp.client.get(
        "/v1/support/nodes/node-e/readiness", headers=holder(default["grant"])
    )
    assert fine.status_code == 200
    made_up = await cp.client.get(
        "/v1/support/nodes/node-e/readiness", headers=holder("b3iq_support_nope")
    )
    assert made_up.status_code == 401
    assert made_up.json()["error"]["code"] == "unauthorized"

    viewer = await cp.token("viewer")
    denied = await cp.client.post(
        "/v1/nodes/node-e/support-grants", json={"reason": "x"}, headers=cp.as_admin(viewer)
    )
    assert denied.status_code == 403
    assert [e[2] for e in await grant_events(cp, revoked["grant_id"])] == [
        "",
        "",
        "support_grant_revoked",
    ]
