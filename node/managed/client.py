"""The node's side of Managed Mode over HTTP: enroll, and send signed requests."""

import secrets
import time

import httpx
import msgspec

from domain.canonical import b64encode
from domain.enrollment import IssuedChallenge, answer_challenge
from domain.node_requests import sign_request
from node.identity import NodeIdentity


class EnrollmentFailed(Exception):
    pass


class Enrollment(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    key_id: str
    status: str
    seq: int
    heartbeat_interval_s: float


class ControlPlaneClient:
    def __init__(
        self,
        base_url: str,
        identity: NodeIdentity,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.identity = identity
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def enroll(self, agent_version: str) -> Enrollment:
        signer = self.identity.signer
        response = await self.http.post(
            "/v1/enrollment/challenges",
            json={"node_id": self.identity.node_id, "public_key": b64encode(signer.public_key)},
        )
        _check(response)
        body = response.json()
        issued = IssuedChallenge(body["challenge"], body["signature"])
        response = await self.http.post(
            "/v1/enrollments",
            json={
                "challenge": issued.challenge,
                "signature": issued.signature,
                "answer": answer_challenge(signer, issued),
                "agent_version": agent_version,
            },
        )
        _check(response)
        return msgspec.convert(response.json(), Enrollment)

    def signed_headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        return sign_request(
            self.identity.signer,
            self.identity.node_id,
            method=method,
            path=path,
            body=body,
            timestamp=int(time.time()),
            nonce=secrets.token_urlsafe(18),
        )

    async def post_signed(self, path: str, body: bytes) -> httpx.Response:
        headers = self.signed_headers("POST", path, body)
        return await self.http.post(
            path, content=body, headers={"content-type": "application/json", **headers}
        )

    async def get_signed(self, path: str, timeout: float | None = None) -> httpx.Response:
        """``path`` includes its query: the signature covers it."""
        headers = self.signed_headers("GET", path, b"")
        if timeout is None:
            return await self.http.get(path, headers=headers)
        return await self.http.get(path, headers=headers, timeout=timeout)


def _check(response: httpx.Response) -> None:
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            detail = f"{error['code']}: {error['detail']}"
        except (ValueError, KeyError, TypeError):
            detail = response.text[:200]
        raise EnrollmentFailed(f"control plane answered {response.status_code} ({detail})")
