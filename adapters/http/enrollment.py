"""Node-facing endpoints: enrollment challenges, enrollments, signed heartbeats, key rotation."""

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from msgspec import Meta

from adapters.bootstrap import ControlPlane
from adapters.enrollment import Enrolled, check_node_id
from adapters.heartbeat_intake import HeartbeatAccepted
from adapters.http.problems import problems
from adapters.key_rotation import KeyRotated
from domain.enrollment import IssuedChallenge

Short = Annotated[str, Meta(max_length=512)]
NO_HTTP_METRICS = "no_http_metrics"
"""Route option: the HTTP metrics middleware skips it (the handler counts for itself)."""


class ChallengeRequest(msgspec.Struct, frozen=True):
    node_id: Short
    public_key: Short
    """URL-safe base64 (no padding) of the node's raw 32-byte Ed25519 public key."""


class ChallengeOut(msgspec.Struct, frozen=True, kw_only=True):
    challenge: str
    """Canonical JSON text; the node signs exactly these bytes."""
    signature: str
    """The control plane's signature of the challenge text; send it back unchanged."""
    expires_at: datetime


class EnrollmentRequest(msgspec.Struct, frozen=True, kw_only=True):
    challenge: Annotated[str, Meta(max_length=4096)]
    signature: Short
    """The control plane's signature, as issued."""
    answer: Short
    """The node's Ed25519 signature of the challenge text."""
    agent_version: Short = "unknown"


_challenge_fields = msgspec.json.Decoder(dict[str, Any])


class NodeFacingController(Controller):
    tags = ["managed"]

    @post(
        "/v1/enrollment/challenges",
        summary="A single-use challenge bound to a node key",
        responses=problems(400),
    )
    async def challenge(
        self, plane: NamedDependency[ControlPlane], data: JSONBody[ChallengeRequest]
    ) -> ChallengeOut:
        issued = plane.managed.enrollment.challenge(data.node_id, data.public_key)
        expires = _challenge_fields.decode(issued.challenge)["expires_at"]
        return ChallengeOut(
            challenge=issued.challenge,
            signature=issued.signature,
            expires_at=datetime.fromisoformat(expires),
        )

    @post(
        "/v1/enrollments",
        summary="Enroll with a signed answer to a challenge",
        responses=problems(400, 401, 409),
    )
    async def enroll(
        self, plane: NamedDependency[ControlPlane], data: JSONBody[EnrollmentRequest]
    ) -> Enrolled:
        issued = IssuedChallenge(data.challenge, data.signature)
        return await plane.managed.enrollment.enroll(issued, data.answer, data.agent_version)

    @post(
        "/v1/nodes/{node_id:str}/heartbeats",
        summary="A signed heartbeat report",
        opt={NO_HTTP_METRICS: True},
        responses=problems(400, 401, 409),
    )
    async def heartbeat(
        self,
        plane: NamedDependency[ControlPlane],
        request: Request[Any, Any, Any],
        node_id: FromPath[str],
    ) -> HeartbeatAccepted:
        # Well-formed node ids never get here: adapters/http/heartbeat_route.py answers
        # them ahead of the framework, with the same intake. This defines the route for
        # the schema and refuses malformed ids.
        check_node_id(node_id)
        body = await request.body()
        return await plane.managed.heartbeats.accept(
            node_id, signed_path(request), request.headers, body
        )

    @post(
        "/v1/nodes/{node_id:str}/keys",
        summary="Rotate the node's key: signed with the current key, the new key's proof inside",
        responses=problems(400, 401, 409),
    )
    async def rotate_key(
        self,
        plane: NamedDependency[ControlPlane],
        request: Request[Any, Any, Any],
        node_id: FromPath[str],
    ) -> KeyRotated:
        check_node_id(node_id)
        body = await request.body()
        return await plane.managed.key_rotation.rotate(
            node_id, signed_path(request), request.headers, body
        )


def signed_path(request: Request[Any, Any, Any]) -> str:
    """The path as the node signed it: path, then ``?query`` if there is one."""
    query = request.scope.get("query_string", b"")
    path: str = request.scope["path"]
    return f"{path}?{query.decode('latin-1')}" if query else path
