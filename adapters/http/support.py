"""Support grants: admins issue and revoke them; holders read diagnostics of one node."""

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody
from msgspec import Meta

from adapters.admin_tokens import AdminSession
from adapters.bootstrap import ControlPlane
from adapters.command_queue import Issued
from adapters.enrollment import check_node_id
from adapters.http.admin_auth import provide_session, require
from adapters.http.problems import problems
from adapters.http.public import RouteReadiness, public_readiness
from adapters.support_grants import Grant
from domain.command_specs import SupportBundle
from projections.command_queries import CommandFilter


class NewGrant(msgspec.Struct, frozen=True, kw_only=True):
    reason: Annotated[str, Meta(max_length=512)]
    ttl_s: Annotated[float, Meta(gt=0, le=7 * 24 * 3600)] | None = None


class IssuedGrantOut(msgspec.Struct, frozen=True, kw_only=True):
    grant_id: str
    node_id: str
    scope: str
    expires_at: datetime
    grant: str
    """The b3iq_support_ secret: shown once, only its hash is kept."""


class GrantList(msgspec.Struct, frozen=True):
    data: list[Grant]


class CommandStateOut(msgspec.Struct, frozen=True, kw_only=True):
    command_id: str
    kind: str
    state: str
    updated_at: datetime


class CommandStates(msgspec.Struct, frozen=True):
    data: list[CommandStateOut]


def grant_of(request: Request[Any, Any, Any]) -> str | None:
    secret = request.headers.get("x-b3iq-support-grant")
    if secret:
        return secret
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class GrantAdminController(Controller):
    tags = ["operator"]
    dependencies = {"session": provide_session}

    @post(
        "/v1/nodes/{node_id:str}/support-grants",
        summary="Issue a support grant (admin)",
        responses=problems(400, 401, 403, 404),
    )
    async def issue(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        node_id: FromPath[str],
        data: JSONBody[NewGrant],
    ) -> IssuedGrantOut:
        require(session, "admin")
        await plane.managed.nodes.detail(check_node_id(node_id))  # 404 for an unknown node
        issued = await plane.managed.grants.issue(
            node_id, session.token_id, data.reason, data.ttl_s
        )
        g = issued.grant
        return IssuedGrantOut(
            grant_id=g.grant_id,
            node_id=g.node_id,
            scope=g.scope,
            expires_at=g.expires_at,
            grant=issued.secret,
        )

    @get(
        "/v1/nodes/{node_id:str}/support-grants",
        summary="A node's support grants (no secrets)",
        responses=problems(400, 401),
    )
    async def of_node(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        node_id: FromPath[str],
    ) -> GrantList:
        return GrantList(await plane.managed.grants.of_node(check_node_id(node_id)))

    @post(
        "/v1/support-grants/{grant_id:str}/revoke",
        summary="Revoke a support grant (admin)",
        responses=problems(400, 401, 403, 404),
    )
    async def revoke(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        grant_id: FromPath[str],
    ) -> Grant:
        require(session, "admin")
        return await plane.managed.grants.revoke(grant_id, session.token_id)


class SupportController(Controller):
    """What a grant holder may do: read one node's diagnostics, ask for its bundle."""

    tags = ["support"]

    @get(
        "/v1/support/nodes/{node_id:str}/readiness",
        summary="Public readiness (support grant)",
        responses=problems(400, 401, 403, 404),
    )
    async def readiness(
        self,
        plane: NamedDependency[ControlPlane],
        request: Request[Any, Any, Any],
        node_id: FromPath[str],
        model: FromQuery[str | None] = None,
    ) -> RouteReadiness:
        node_id = check_node_id(node_id)
        await plane.managed.grants.authorize(grant_of(request), node_id, "read_readiness")
        return await public_readiness(plane, node_id, model)

    @get(
        "/v1/support/nodes/{node_id:str}/commands",
        summary="Recent command states (grant)",
        responses=problems(400, 401, 403),
    )
    async def commands(
        self,
        plane: NamedDependency[ControlPlane],
        request: Request[Any, Any, Any],
        node_id: FromPath[str],
    ) -> CommandStates:
        node_id = check_node_id(node_id)
        await plane.managed.grants.authorize(grant_of(request), node_id, "read_commands")
        found = await plane.managed.commands.search(
            CommandFilter(node_id=node_id), after=None, limit=50
        )
        return CommandStates(
            [
                CommandStateOut(
                    command_id=c.command_id, kind=c.kind, state=c.state, updated_at=c.updated_at
                )
                for c in found
            ]
        )

    @post(
        "/v1/support/nodes/{node_id:str}/support-bundle",
        summary="Ask for a support bundle",
        responses=problems(400, 401, 403, 409),
    )
    async def bundle(
        self,
        plane: NamedDependency[ControlPlane],
        request: Request[Any, Any, Any],
        node_id: FromPath[str],
    ) -> Issued:
        node_id = check_node_id(node_id)
        grant = await plane.managed.grants.authorize(grant_of(request), node_id, "support_bundle")
        return await plane.managed.commands.issue(
            node_id, SupportBundle(), f"support_grant:{grant.grant_id}", "support grant holder"
        )
