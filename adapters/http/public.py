"""Public, unauthenticated readiness: only public-safe fields (PRODUCT.md §8)."""

from datetime import datetime

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery

from adapters.bootstrap import ControlPlane
from adapters.enrollment import check_node_id
from adapters.http.problems import problems
from domain.readiness import Readiness


class PublicBlocker(msgspec.Struct, frozen=True, kw_only=True):
    gate: str
    code: str
    next_action: str


class PublicGate(msgspec.Struct, frozen=True, kw_only=True):
    gate: str
    status: str


class RouteReadiness(msgspec.Struct, frozen=True, kw_only=True):
    node_id: FromPath[str]
    model: str | None
    evaluated_at: datetime
    claims: list[str]
    gates: list[PublicGate]
    blockers: list[PublicBlocker]
    heartbeat_fresh: bool


class PublicController(Controller):
    tags = ["public"]

    @get(
        "/v1/public/nodes/{node_id:str}/route-readiness",
        summary="Public-safe readiness of a node (and a model)",
        responses=problems(400, 404),
    )
    async def route_readiness(
        self,
        plane: NamedDependency[ControlPlane],
        node_id: FromPath[str],
        model: FromQuery[str | None] = None,
    ) -> RouteReadiness:
        return await public_readiness(plane, check_node_id(node_id), model)


async def public_readiness(plane: ControlPlane, node_id: str, model: str | None) -> RouteReadiness:
    """Readiness with only the public-safe fields."""
    report = await plane.managed.nodes.readiness(node_id, model)
    chosen: Readiness = report.models[0] if model is not None else report.node
    return RouteReadiness(
        node_id=node_id,
        model=chosen.model,
        evaluated_at=chosen.evaluated_at,
        claims=chosen.claims,
        gates=[PublicGate(gate=g.gate, status=g.status) for g in chosen.gates],
        blockers=[
            PublicBlocker(gate=g.gate, code=b.code, next_action=b.next_action)
            for g in chosen.gates
            for b in g.blockers
        ],
        heartbeat_fresh=not any(b.code == "heartbeat" for b in chosen.blockers),
    )
