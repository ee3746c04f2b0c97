"""The operator API: sessions, tokens, the node list, node detail, readiness, actions."""

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from msgspec import Meta

from adapters.admin_tokens import ROLES, AdminSession
from adapters.bootstrap import ControlPlane
from adapters.enrollment import check_node_id
from adapters.http.admin_auth import provide_session, require
from adapters.http.problems import ApiError, problems
from adapters.node_operations import NodeChange, NodeReadiness
from domain.canonical import b64decode, b64encode
from projections.node_queries import (
    BLOCKER_FILTERS,
    CLAIM_FILTERS,
    NodeDetail,
    NodeFilter,
    NodeSummary,
    list_nodes,
)

Short = Annotated[str, Meta(max_length=512)]


class NewToken(msgspec.Struct, frozen=True):
    name: Short
    role: Short


class IssuedToken(msgspec.Struct, frozen=True, kw_only=True):
    token_id: str
    name: str
    role: str
    token: str
    """Shown once; only its hash is kept."""


class Revocation(msgspec.Struct, frozen=True):
    reason: Short


class ProtocolObservation(msgspec.Struct, frozen=True, kw_only=True):
    registered: bool
    active: bool
    stake_wei: Annotated[str, Meta(pattern=r"^[0-9]{1,78}$")]
    source: Short
    observed_at: datetime | None = None


class Recorded(msgspec.Struct, frozen=True, kw_only=True):
    node_id: FromPath[str]
    seq: int | None


class NodePage(msgspec.Struct, frozen=True, kw_only=True):
    data: list[NodeSummary]
    next_cursor: str | None


class OperatorController(Controller):
    tags = ["operator"]
    dependencies = {"session": provide_session}

    @get(
        "/v1/admin/auth/session",
        summary="Who this token is: role and name, never the token",
        responses=problems(401),
    )
    async def session(self, session: NamedDependency[AdminSession]) -> AdminSession:
        return session

    @post(
        "/v1/admin/tokens",
        summary="Create an admin token (admin)",
        responses=problems(400, 401, 403),
    )
    async def create_token(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        data: JSONBody[NewToken],
    ) -> IssuedToken:
        require(session, "admin")
        if data.role not in ROLES:
            raise ApiError(400, "invalid_request", "Bad Request", f"role: one of {ROLES}")
        created, secret = await plane.managed.admin_tokens.create(data.name, data.role)
        return IssuedToken(
            token_id=created.token_id, name=created.name, role=created.role, token=secret
        )

    @get(
        "/v1/nodes",
        summary="Nodes, filtered by claim, blocker, model, tier or status",
        responses=problems(400, 401),
    )
    async def nodes(  # noqa: PLR0917
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        claim: FromQuery[str | None] = None,
        blocker: FromQuery[str | None] = None,
        model: FromQuery[str | None] = None,
        tier: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> NodePage:
        if claim is not None and claim not in CLAIM_FILTERS:
            raise ApiError(
                400, "invalid_request", "Bad Request", f"claim: one of {sorted(CLAIM_FILTERS)}"
            )
        if blocker is not None and blocker not in BLOCKER_FILTERS:
            raise ApiError(
                400, "invalid_request", "Bad Request", f"blocker: one of {sorted(BLOCKER_FILTERS)}"
            )
        after = _decode_cursor(cursor)
        where = NodeFilter(status=status, claim=claim, blocker=blocker, model=model, tier=tier)
        nodes = plane.managed.nodes
        async with plane.pool.acquire() as conn:
            page = await list_nodes(
                conn, where, after=after, limit=limit + 1, now=plane.clock(), policy=nodes.policy
            )
        more = len(page) > limit
        page = page[:limit]
        next_cursor = b64encode(page[-1].node_id.encode()) if more else None
        return NodePage(data=page, next_cursor=next_cursor)

    @get(
        "/v1/nodes/{node_id:str}",
        summary="A node: enrollment, inventory, heartbeat, profiles",
        responses=problems(400, 401, 404),
    )
    async def node(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        node_id: FromPath[str],
    ) -> NodeDetail:
        return await plane.managed.nodes.detail(check_node_id(node_id))

    @get(
        "/v1/nodes/{node_id:str}/readiness",
        summary="The five gates, now, with evidence",
        responses=problems(400, 401, 404),
    )
    async def readiness(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        node_id: FromPath[str],
        model: FromQuery[str | None] = None,
    ) -> NodeReadiness:
        return await plane.managed.nodes.readiness(check_node_id(node_id), model)

    @post(
        "/v1/nodes/{node_id:str}/approve",
        summary="Approve a pending enrollment (operator)",
        responses=problems(400, 401, 403, 404, 409),
    )
    async def approve(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        node_id: FromPath[str],
    ) -> NodeChange:
        require(session, "operator")
        return await plane.managed.nodes.approve(check_node_id(node_id), session.token_id)

    @post(
        "/v1/nodes/{node_id:str}/revoke",
        summary="Revoke a node (admin)",
        responses=problems(400, 401, 403, 404, 409),
    )
    async def revoke(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        node_id: FromPath[str],
        data: JSONBody[Revocation],
    ) -> NodeChange:
        require(session, "admin")
        return await plane.managed.nodes.revoke(
            check_node_id(node_id), session.token_id, data.reason
        )

    @post(
        "/v1/admin/nodes/{node_id:str}/protocol",
        summary="Record a registry observation",
        responses=problems(400, 401, 403, 404),
    )
    async def protocol(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        node_id: FromPath[str],
        data: JSONBody[ProtocolObservation],
    ) -> Recorded:
        require(session, "admin")
        result = await plane.managed.protocol.record(
            check_node_id(node_id),
            registered=data.registered,
            active=data.active,
            stake_wei=int(data.stake_wei),
            source=data.source,
            observed_at=data.observed_at or plane.clock(),
            recorded_by=session.token_id,
        )
        return Recorded(node_id=node_id, seq=None if result is None else result.last_seq)


def _decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        return b64decode(cursor).decode()
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_request", "Bad Request", "cursor: not one we issued") from None
