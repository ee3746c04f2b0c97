"""A node speaking Managed Mode to a control plane under test."""

import secrets
from datetime import datetime
from typing import Any

import httpx
import msgspec

from domain.canonical import b64encode, canonical_bytes
from domain.enrollment import IssuedChallenge, answer_challenge
from domain.heartbeat_report import HeartbeatReport, InventoryReport, ProfileReport
from domain.node_requests import sign_request
from domain.signing import Signer


class MutableClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def profile(model: str = "tiny", **overrides: Any) -> ProfileReport:
    values: dict[str, Any] = {
        "profile_id": f"p-{model}",
        "model": model,
        "status": "installed",
        "runtime_kind": "llama_cpp",
        "route_tier": "network_beta",
        "network_eligible": True,
        "benchmark_verified": True,
        "paid_route_eligible": True,
        "queue_health": "healthy",
    }
    values.update(overrides)
    return ProfileReport(**values)


class SimulatedNode:
    def __init__(self, node_id: str, client: httpx.AsyncClient, clock: MutableClock) -> None:
        self.node_id = node_id
        self.signer = Signer.generate()
        self.client = client
        self.clock = clock
        self.seq = 0

    async def challenge(self) -> IssuedChallenge:
        response = await self.client.post(
            "/v1/enrollment/challenges",
            json={"node_id": self.node_id, "public_key": b64encode(self.signer.public_key)},
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return IssuedChallenge(body["challenge"], body["signature"])

    async def enroll(self, issued: IssuedChallenge | None = None) -> httpx.Response:
        issued = issued or await self.challenge()
        return await self.client.post(
            "/v1/enrollments",
            json={
                "challenge": issued.challenge,
                "signature": issued.signature,
                "answer": answer_challenge(self.signer, issued),
                "agent_version": "0.1.0",
            },
        )

    def report(self, seq: int | None = None, **overrides: Any) -> bytes:
        if seq is None:
            self.seq += 1
            seq = self.seq
        values: dict[str, Any] = {
            "node_id": self.node_id,
            "heartbeat_seq": seq,
            "sent_at": self.clock(),
            "agent_version": "0.1.0",
            "inventory": InventoryReport(os="Linux", cpu_count=2),
            "profiles": [profile()],
        }
        values.update(overrides)
        return canonical_bytes(HeartbeatReport(**values))

    def headers(
        self,
        body: bytes,
        *,
        path: str | None = None,
        signer: Signer | None = None,
        nonce: str | None = None,
        timestamp: int | None = None,
    ) -> dict[str, str]:
        return sign_request(
            signer or self.signer,
            self.node_id,
            method="POST",
            path=path or f"/v1/nodes/{self.node_id}/heartbeats",
            body=body,
            timestamp=int(self.clock().timestamp()) if timestamp is None else timestamp,
            nonce=nonce or secrets.token_urlsafe(16),
        )

    async def heartbeat(
        self, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        body = self.report() if body is None else body
        return await self.client.post(
            f"/v1/nodes/{self.node_id}/heartbeats",
            content=body,
            headers={"content-type": "application/json", **(headers or self.headers(body))},
        )


def decode(response: httpx.Response) -> Any:
    return msgspec.json.decode(response.content)
