"""Managed Mode end to end, in-loop, against real NATS and PostgreSQL."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from adapters.bootstrap import ControlPlane, bootstrap
from adapters.http.app import create_app
from adapters.jetstream.nonces import bucket_name
from adapters.projector import ProjectionRunner
from adapters.settings import Settings
from domain.streams import Topology
from projections.catalog import all_projections
from tests.conftest import Servers
from tests.managed_support import MutableClock, SimulatedNode, profile


class Harness:
    def __init__(self, plane: ControlPlane, client: httpx.AsyncClient, clock: MutableClock):
        self.plane, self.client, self.clock = plane, client, clock
        self.admin = (plane.settings.admin_token_path).read_text().strip()

    def node(self, node_id: str) -> SimulatedNode:
        return SimulatedNode(node_id, self.client, self.clock)

    async def heads(self) -> tuple[int, int]:
        ledger = await self.plane.store.bounds(self.plane.topology.ledger.name)
        beats = await self.plane.store.bounds(self.plane.topology.heartbeats.name)
        return ledger[1], beats[1]

    async def project(self) -> None:
        for projection in all_projections():
            runner = ProjectionRunner(
                self.plane.pool, self.plane.store, self.plane.topology, projection
            )
            _, head = await self.plane.store.bounds(runner.stream)
            await runner.catch_up(head)
            await runner.reset()

    def as_admin(self, token: str | None = None) -> dict[str, str]:
        return {"x-b3iq-admin-token": token or self.admin}

    async def token(self, role: str) -> str:
        response = await self.client.post(
            "/v1/admin/tokens", json={"name": role, "role": role}, headers=self.as_admin()
        )
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token

    async def readiness(self, node_id: str, model: str | None = None) -> dict[str, object]:
        params = {"model": model} if model else {}
        response = await self.client.get(
            f"/v1/nodes/{node_id}/readiness", params=params, headers=self.as_admin()
        )
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body


async def _harness(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path, **settings: object
) -> AsyncIterator[Harness]:
    clock = MutableClock(datetime.now(UTC))
    plane = await bootstrap(
        Settings(
            nats_url=servers.nats_url,
            database_url=database_url,
            stream_prefix=topology.prefix,
            data_dir=tmp_path,
            **settings,  # type: ignore[arg-type]
        ),
        clock=clock,
    )
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(create_app(plane)), base_url="http://cp"
        ) as client:
            yield Harness(plane, client, clock)
    finally:
        js = plane.store.js  # type: ignore[attr-defined]
        for spec in topology.streams:
            await js.delete_stream(spec.name)
        await js.delete_key_value(bucket_name(topology))
        await plane.close()


@pytest.fixture
async def cp(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Harness]:
    async for harness in _harness(servers, database_url, topology, tmp_path):
        yield harness


def gate_codes(readiness: dict[str, object], model: bool = True) -> list[str]:
    chosen = readiness["models"][0] if model else readiness["node"]  # type: ignore[index]
    return [b["code"] for b in chosen["blockers"]]  # type: ignore[index]


async def test_enroll_heartbeat_and_readiness_follow_the_evidence(cp: Harness) -> None:
    node = cp.node("node-a")
    enrolled = await node.enroll()
    assert enrolled.status_code == 201, enrolled.text
    assert enrolled.json()["status"] == "enrolled"
    await cp.project()
    before = await cp.readiness("node-a", "tiny")
    assert gate_codes(before) == ["heartbeat", "route_tier", "protocol_stake", "runtime"]

    beat = await node.heartbeat()
    assert beat.status_code == 201, beat.text
    assert beat.json()["next_interval_s"] == 30
    await cp.project()
    after = await cp.readiness("node-a", "tiny")
    model = after["models"][0]  # type: ignore[index]
    assert gate_codes(after) == ["route_tier", "protocol_stake", "benchmark_proof"]
    assert model["claims"] == ["local-ready", "managed-enrolled"]
    identity = model["gates"][0]
    assert identity["status"] == "pass"
    assert [e["kind"] for e in identity["evidence"]] == ["enrollment", "heartbeat"]

    observed = await cp.client.post(
        "/v1/admin/nodes/node-a/protocol",
        json={"registered": True, "active": True, "stake_wei": "1000", "source": "test-registry"},
        headers=cp.as_admin(),
    )
    assert observed.status_code == 201, observed.text
    assert gate_codes(await cp.readiness("node-a", "tiny")) == ["route_tier", "benchmark_proof"]

    cp.clock.now += timedelta(seconds=91)  # no heartbeat since: it goes stale at query time
    stale = await cp.readiness("node-a", "tiny")
    assert gate_codes(stale)[0] == "heartbeat"
    assert "local-ready" not in stale["models"][0]["claims"]  # type: ignore[index]

    detail = await cp.client.get("/v1/nodes/node-a", headers=cp.as_admin())
    assert detail.status_code == 200
    assert detail.json()["inventory"]["os"] == "Linux"
    assert detail.json()["profiles"][0]["model"] == "tiny"


async def _appended_nothing(cp: Harness, before: tuple[int, int]) -> None:
    assert await cp.heads() == before


async def test_every_bad_request_is_refused_with_its_code_and_appends_nothing(
    cp: Harness,
) -> None:
    node = cp.node("node-b")
    assert (await node.enroll()).status_code == 201
    assert (await node.heartbeat()).status_code == 201
    before = await cp.heads()

    async def refused(response: httpx.Response, status: int, code: str, detail: str) -> None:
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["detail"] == detail
        await _appended_nothing(cp, before)

    body = node.report()
    forged = {**node.headers(body), "x-b3iq-signature": node.signer.sign(b"other")}
    await refused(await node.heartbeat(body, forged), 401, "invalid_signature", "bad_signature")
    other = cp.node("node-b")
    await refused(
        await node.heartbeat(body, node.headers(body, signer=other.signer)),
        401,
        "invalid_signature",
        "wrong_key",
    )
    skewed = node.headers(body, timestamp=int(cp.clock().timestamp()) - 61)
    await refused(
        await node.heartbeat(body, skewed), 401, "invalid_signature", "timestamp_outside_window"
    )
    headers = node.headers(body)
    assert (await node.heartbeat(body, headers)).status_code == 201
    before = await cp.heads()
    await refused(await node.heartbeat(body, headers), 401, "invalid_signature", "replayed_nonce")
    await refused(
        await node.heartbeat(node.report(seq=1)),
        409,
        "stale_sequence",
        f"heartbeat_seq 1 is not after {node.seq}",
    )
    stranger = cp.node("node-unknown")
    await refused(await stranger.heartbeat(), 401, "unauthorized", "unknown_node")
    await refused(
        await cp.client.post("/v1/nodes/node-b/heartbeats", content=body),
        401,
        "unauthorized",
        "missing_signature_headers",
    )

    cp.clock.now += timedelta(seconds=1)
    issued = await node.challenge()
    assert (await node.enroll(issued)).status_code == 201  # re-enrollment, same key
    before = await cp.heads()
    await refused(await node.enroll(issued), 409, "challenge_used", "challenge_used")
    late = await node.challenge()
    cp.clock.now += timedelta(seconds=301)
    await refused(await node.enroll(late), 401, "challenge_expired", "challenge_expired")
    thief = cp.node("node-b")
    cp.clock.now += timedelta(seconds=1)
    await refused(await thief.enroll(), 401, "unauthorized", "key_mismatch")
    fake = await node.challenge()
    wrong_answer = await cp.client.post(
        "/v1/enrollments",
        json={
            "challenge": fake.challenge,
            "signature": fake.signature,
            "answer": thief.signer.sign(fake.challenge.encode()),
        },
    )
    await refused(wrong_answer, 401, "invalid_signature", "bad_answer_signature")


async def test_roles_revocation_and_approval(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path
) -> None:
    async for cp in _harness(servers, database_url, topology, tmp_path, require_approval=True):
        assert (tmp_path / "admin-token").stat().st_mode & 0o777 == 0o600
        viewer, operator = await cp.token("viewer"), await cp.token("operator")
        session = await cp.client.get("/v1/admin/auth/session", headers=cp.as_admin(viewer))
        assert session.json()["role"] == "viewer"
        assert viewer not in session.text
        assert set(session.json()) == {"token_id", "name", "role", "created_at"}
        anonymous = await cp.client.get("/v1/nodes")
        assert anonymous.json()["error"]["code"] == "unauthorized"

        node = cp.node("node-c")
        assert (await node.enroll()).json()["status"] == "pending"
        denied = await cp.client.post("/v1/nodes/node-c/approve", headers=cp.as_admin(viewer))
        assert denied.status_code == 403
        assert denied.json()["error"]["code"] == "forbidden"
        approved = await cp.client.post("/v1/nodes/node-c/approve", headers=cp.as_admin(operator))
        assert approved.json()["status"] == "enrolled"
        for path, body in (
            ("/v1/nodes/node-c/revoke", {"reason": "x"}),
            (
                "/v1/admin/nodes/node-c/protocol",
                {
                    "registered": True,
                    "active": True,
                    "stake_wei": "1",
                    "source": "s",
                },
            ),
            ("/v1/admin/tokens", {"name": "n", "role": "admin"}),
        ):
            response = await cp.client.post(path, json=body, headers=cp.as_admin(operator))
            assert response.status_code == 403, path
        assert (await node.heartbeat()).status_code == 201
        revoked = await cp.client.post(
            "/v1/nodes/node-c/revoke", json={"reason": "lost"}, headers=cp.as_admin()
        )
        assert revoked.json()["status"] == "revoked"
        refused = await node.heartbeat()
        assert refused.status_code == 401
        assert refused.json()["error"]["detail"] == "node_revoked"
        again = await node.enroll()
        assert again.json()["error"]["detail"] == "node_revoked"


async def test_node_list_filters_and_pages(cp: Harness) -> None:
    for n in range(5):
        node = cp.node(f"node-{n}")
        assert (await node.enroll()).status_code == 201
        if n % 2 == 0:
            body = node.report(profiles=[profile("big" if n == 4 else "tiny")])
            assert (await node.heartbeat(body)).status_code == 201
    await cp.project()

    async def ids(**params: object) -> list[str]:
        found, cursor = [], None
        while True:
            page = await cp.client.get(
                "/v1/nodes",
                params={**params, "limit": 2, **({"cursor": cursor} if cursor else {})},
                headers=cp.as_admin(),
            )
            assert page.status_code == 200, page.text
            found += [n["node_id"] for n in page.json()["data"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                return found

    assert await ids() == [f"node-{n}" for n in range(5)]
    assert await ids(claim="local-ready") == ["node-0", "node-2", "node-4"]
    assert await ids(claim="local-ready", model="tiny") == ["node-0", "node-2"]
    assert await ids(blocker="heartbeat") == ["node-1", "node-3"]
    assert await ids(claim="paid-route eligible") == []
    assert await ids(tier="network_beta", model="big") == ["node-4"]
    bad = await cp.client.get("/v1/nodes", params={"claim": "ready"}, headers=cp.as_admin())
    assert bad.json()["error"]["code"] == "invalid_request"


async def test_public_route_readiness_shows_only_public_safe_fields(cp: Harness) -> None:
    node = cp.node("node-p")
    assert (await node.enroll()).status_code == 201
    assert (await node.heartbeat()).status_code == 201
    await cp.project()
    response = await cp.client.get(
        "/v1/public/nodes/node-p/route-readiness", params={"model": "tiny"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "node_id",
        "model",
        "evaluated_at",
        "claims",
        "gates",
        "blockers",
        "heartbeat_fresh",
    }
    assert {k for g in body["gates"] for k in g} == {"gate", "status"}
    assert {k for b in body["blockers"] for k in b} == {"gate", "code", "next_action"}
    assert [b["code"] for b in body["blockers"]] == [
        "route_tier",
        "protocol_stake",
        "benchmark_proof",
    ]
    assert body["heartbeat_fresh"] is True
    missing = await cp.client.get("/v1/public/nodes/nobody/route-readiness")
    assert missing.status_code == 404
