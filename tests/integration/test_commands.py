"""The command queue end to end, in-loop, against real NATS and PostgreSQL."""

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from adapters.bootstrap import bootstrap
from adapters.http.app import create_app
from domain.canonical import canonical_bytes
from domain.command_messages import CommandResult
from domain.envelope import decode_body, split_wire
from domain.node_requests import sign_request
from domain.streams import Topology
from tests.conftest import Servers
from tests.integration.test_managed import Harness, _harness
from tests.managed_support import SimulatedNode


@pytest.fixture
async def cp(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Harness]:
    settings = {"command_lease_s": 60.0, "command_max_attempts": 2}
    async for harness in _harness(servers, database_url, topology, tmp_path, **settings):
        yield harness


async def poll(node: SimulatedNode, wait: float = 0.0) -> httpx.Response:
    path = f"/v1/nodes/{node.node_id}/commands?wait={wait:g}"
    headers = sign_request(
        node.signer,
        node.node_id,
        method="GET",
        path=path,
        body=b"",
        timestamp=int(node.clock().timestamp()),
        nonce=secrets.token_urlsafe(16),
    )
    return await node.client.get(path, headers=headers, timeout=30)


def result_body(command_id: str, lease_id: str, outcome: str = "succeeded", **kw: Any) -> bytes:
    return canonical_bytes(
        CommandResult(command_id=command_id, lease_id=lease_id, outcome=outcome, **kw)
    )


async def report(node: SimulatedNode, command_id: str, body: bytes) -> httpx.Response:
    path = f"/v1/nodes/{node.node_id}/commands/{command_id}/result"
    return await node.client.post(
        path,
        content=body,
        headers={"content-type": "application/json", **node.headers(body, path=path)},
    )


async def issue(cp: Harness, node_id: str, command: dict[str, Any], **kw: Any) -> str:
    response = await cp.client.post(
        "/v1/commands",
        json={"node_id": node_id, "command": command, "reason": "test", **kw},
        headers=cp.as_admin(),
    )
    assert response.status_code == 201, response.text
    command_id: str = response.json()["command_id"]
    return command_id


async def show(cp: Harness, command_id: str) -> dict[str, Any]:
    await cp.project()
    response = await cp.client.get(f"/v1/commands/{command_id}", headers=cp.as_admin())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def audit_types(cp: Harness, command_id: str) -> list[str]:
    response = await cp.client.get(f"/v1/commands/{command_id}/audit", headers=cp.as_admin())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    types = []
    for line in response.text.splitlines():
        envelope = msgspec.json.encode(msgspec.json.decode(line)["envelope"])
        wire = split_wire(envelope)
        assert cp.plane.keyring.verify(cp.plane.signer.key_id, bytes(wire.body), wire.sig)
        types.append(decode_body(wire.body).type)
    return types


async def enrolled(cp: Harness, node_id: str) -> SimulatedNode:
    node = cp.node(node_id)
    assert (await node.enroll()).status_code == 201
    return node


async def test_issue_lease_report_and_an_idempotent_retried_upload(cp: Harness) -> None:
    node = await enrolled(cp, "node-c")
    command_id = await issue(cp, "node-c", {"kind": "runtime_probe"})
    await cp.project()
    assert (await show(cp, command_id))["state"] == "queued"

    polled = await poll(node)
    assert polled.status_code == 200, polled.text
    [leased] = polled.json()["commands"]
    assert leased["spec"] == {"kind": "runtime_probe", "model": None}
    assert leased["attempt"] == 1
    assert (await show(cp, command_id))["state"] == "leased"
    assert (await poll(node)).json()["commands"] == []  # leased once, not twice

    body = result_body(command_id, leased["lease_id"], output={"runtimes": 1})
    accepted = await report(node, command_id, body)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["state"] == "succeeded"
    assert accepted.json()["duplicate"] is False
    subject = cp.plane.topology.subject("command", command_id)
    assert subject not in cp.plane.recorder._tails  # finished: nothing follows, none kept
    again = await report(node, command_id, body)  # a retried upload: new nonce, same result
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True
    other = await report(node, command_id, result_body(command_id, leased["lease_id"], "failed"))
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "result_already_reported"

    shown = await show(cp, command_id)
    assert shown["state"] == "succeeded"
    assert shown["result"]["output"] == {"runtimes": 1}
    assert await audit_types(cp, command_id) == [
        "CommandIssued",
        "CommandLeased",
        "CommandResultReported",
    ]


async def test_a_long_poll_returns_as_soon_as_a_command_is_queued(cp: Harness) -> None:
    node = await enrolled(cp, "node-w")
    started = time.perf_counter()
    waiting = asyncio.create_task(poll(node, wait=20))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    command_id = await issue(cp, "node-w", {"kind": "support_bundle"})
    response = await asyncio.wait_for(waiting, 5)
    assert response.status_code == 200, response.text
    assert [c["command_id"] for c in response.json()["commands"]] == [command_id]
    assert time.perf_counter() - started < 5

    empty = await poll(node, wait=0.2)
    assert empty.json()["commands"] == []


async def test_a_lapsed_lease_requeues_then_expires_and_its_result_is_refused(
    cp: Harness,
) -> None:
    node = await enrolled(cp, "node-x")
    command_id = await issue(cp, "node-x", {"kind": "benchmark_smoke", "model": "tiny"})
    await cp.project()
    [first] = (await poll(node)).json()["commands"]

    cp.clock.now += timedelta(seconds=61)  # the node "crashed" mid-command
    assert (await show(cp, command_id))["state"] == "queued"  # judged at query time
    late = await report(node, command_id, result_body(command_id, first["lease_id"]))
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "stale_lease"

    [second] = (await poll(node)).json()["commands"]
    assert second["attempt"] == 2
    assert second["lease_id"] != first["lease_id"]
    stale = await report(node, command_id, result_body(command_id, first["lease_id"]))
    assert stale.json()["error"]["code"] == "stale_lease"

    cp.clock.now += timedelta(seconds=61)
    shown = await show(cp, command_id)
    assert shown["state"] == "expired"  # two attempts allowed, both lapsed
    assert shown["recorded_state"] == "leased"
    assert (await poll(node)).json()["commands"] == []
    listed = await cp.client.get("/v1/commands", params={"state": "expired"}, headers=cp.as_admin())
    assert [c["command_id"] for c in listed.json()["data"]] == [command_id]

    retried = await cp.client.post(
        f"/v1/commands/{command_id}/retry", json={"reason": "host back"}, headers=cp.as_admin()
    )
    assert retried.status_code == 201, retried.text
    assert retried.json()["state"] == "queued"
    await cp.project()
    [third] = (await poll(node)).json()["commands"]
    assert third["attempt"] == 1
    assert await audit_types(cp, command_id) == [
        "CommandIssued",
        "CommandLeased",
        "CommandExpired",
        "CommandLeased",
        "CommandExpired",
        "CommandRetried",
        "CommandLeased",
    ]


async def test_cancel_refuses_the_result_and_a_signed_refusal_is_recorded(cp: Harness) -> None:
    node = await enrolled(cp, "node-k")
    command_id = await issue(
        cp, "node-k", {"kind": "model_remove", "name": "tiny"}, command_id="cmd-fixed-1"
    )
    assert command_id == "cmd-fixed-1"
    repeated = await issue(
        cp, "node-k", {"kind": "model_remove", "name": "tiny"}, command_id="cmd-fixed-1"
    )
    assert repeated == command_id
    await cp.project()
    [leased] = (await poll(node)).json()["commands"]
    cancelled = await cp.client.post(
        f"/v1/commands/{command_id}/cancel", json={"reason": "wrong node"}, headers=cp.as_admin()
    )
    assert cancelled.status_code == 201, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    late = await report(node, command_id, result_body(command_id, leased["lease_id"]))
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "command_cancelled"

    again = await cp.client.post(
        f"/v1/commands/{command_id}/retry", json={"reason": "after all"}, headers=cp.as_admin()
    )
    assert again.status_code == 201, again.text
    await cp.project()
    [leased] = (await poll(node)).json()["commands"]
    body = result_body(command_id, leased["lease_id"], "refused", code="command_not_allowed")
    refused = await report(node, command_id, body)
    assert refused.json()["state"] == "refused"
    shown = await show(cp, command_id)
    assert shown["outcome_code"] == "command_not_allowed"
    done = await cp.client.post(
        f"/v1/commands/{command_id}/cancel", json={"reason": "late"}, headers=cp.as_admin()
    )
    assert done.status_code == 409
    assert done.json()["error"]["code"] == "invalid_state"


async def test_who_may_issue_and_poll(cp: Harness) -> None:
    node = await enrolled(cp, "node-a")
    viewer = await cp.token("viewer")
    denied = await cp.client.post(
        "/v1/commands",
        json={"node_id": "node-a", "command": {"kind": "runtime_probe"}, "reason": "x"},
        headers=cp.as_admin(viewer),
    )
    assert denied.status_code == 403
    shell = await cp.client.post(
        "/v1/commands",
        json={"node_id": "node-a", "command": {"kind": "shell", "cmd": "id"}, "reason": "x"},
        headers=cp.as_admin(),
    )
    assert shell.status_code == 400
    assert shell.json()["error"]["code"] == "invalid_request"
    unknown = await cp.client.post(
        "/v1/commands",
        json={"node_id": "nobody", "command": {"kind": "runtime_probe"}, "reason": "x"},
        headers=cp.as_admin(),
    )
    assert unknown.status_code == 404
    unsigned = await cp.client.get("/v1/nodes/node-a/commands")
    assert unsigned.status_code == 401
    stranger = cp.node("node-a")  # same id, another key
    assert (await poll(stranger)).json()["error"]["code"] == "invalid_signature"
    assert (await poll(node)).status_code == 200
    missing = await cp.client.get("/v1/commands/nope", headers=cp.as_admin(viewer))
    assert missing.status_code == 404


async def test_a_poll_held_by_another_api_process_wakes_on_a_command_issued_here(
    cp: Harness,
) -> None:
    node = await enrolled(cp, "node-2p")
    other = await bootstrap(cp.plane.settings, clock=cp.clock)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(create_app(other)), base_url="http://cp2"
        ) as client:
            far = SimulatedNode("node-2p", client, cp.clock)
            far.signer = node.signer
            waiting = asyncio.create_task(poll(far, wait=20))
            await asyncio.sleep(0.3)
            started = time.perf_counter()
            command_id = await issue(cp, "node-2p", {"kind": "route_health_check"})
            response = await asyncio.wait_for(waiting, 5)
            assert time.perf_counter() - started < 2
            assert [c["command_id"] for c in response.json()["commands"]] == [command_id]
    finally:
        await other.close()
