"""Operator endpoints over node routes: see one, set its policy, send a request through it
(diagnostics), and run or list benchmarks."""

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.response import Stream
from msgspec import Meta

from adapters.admin_tokens import AdminSession
from adapters.bootstrap import ControlPlane
from adapters.broker import RouteUnavailable
from adapters.enrollment import check_node_id
from adapters.http import sse
from adapters.http.admin_auth import provide_session, require
from adapters.http.problems import ApiError, problems
from adapters.route_operations import PolicyChange, RouteView
from domain.broker_frames import Chunk, Done, Failed, Reply
from domain.events import BenchmarkObserved
from projections.benchmarks import benchmarks_of

Reason = Annotated[str, Meta(max_length=512)]
_chat_object = msgspec.json.Decoder(dict[str, msgspec.Raw])


class RoutePolicy(msgspec.Struct, frozen=True, kw_only=True):
    public_inference_allowed: bool
    reason: Reason


class BenchmarkRequest(msgspec.Struct, frozen=True, kw_only=True):
    model: Annotated[str, Meta(min_length=1, max_length=256)]


class BenchmarkEvidence(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    source: str
    """observed (by the control plane) or self_reported (the node's own claim)."""
    observed_at: datetime
    ttft_ms: float
    tokens_per_s: float
    output_sha256: str
    counts_for_paid_routing: bool


class BenchmarkList(msgspec.Struct, frozen=True):
    data: list[BenchmarkEvidence]


def failure(frame: Failed) -> ApiError:
    status = frame.status if 400 <= frame.status <= 599 else 502
    return ApiError(status, frame.code, "Route Error", frame.message)


async def first_reply(frames: AsyncIterator[Reply]) -> Reply:
    """The first reply decides the status code; a route that is down is a 503."""
    try:
        return await anext(frames)
    except RouteUnavailable:
        raise ApiError(
            503, "route_unavailable", "Service Unavailable", "the node's broker route is down"
        ) from None
    except StopAsyncIteration:
        raise ApiError(502, "router_dispatch_failed", "Bad Gateway", "no reply") from None


async def passed_on(first: Chunk, frames: AsyncIterator[Reply]) -> AsyncIterator[bytes]:
    yield sse.event(first.data)
    async for frame in frames:
        if isinstance(frame, Chunk):
            yield sse.event(frame.data)
        elif isinstance(frame, Failed):
            yield sse.in_stream_error(frame)
            return
    yield sse.DONE


async def _require_node(plane: ControlPlane, node_id: str) -> None:
    """404 for a node the log has never enrolled: its route is not down, it never was."""
    check_node_id(node_id)
    known, _ = await plane.managed.directory.state(node_id)  # the log, not a read model
    if known is None:
        raise ApiError(404, "not_found", "Not Found", "no such node")


class RoutesController(Controller):
    tags = ["operator"]
    dependencies = {"session": provide_session}

    @get(
        "/v1/nodes/{node_id:str}/route",
        summary="The node's broker route and latest probe",
        responses=problems(400, 401),
    )
    async def route(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        node_id: FromPath[str],
    ) -> RouteView:
        check_node_id(node_id)
        return await plane.managed.routes.view(node_id)

    @put(
        "/v1/nodes/{node_id:str}/route/policy",
        summary="Allow or forbid public inference over the node's route (operator)",
        responses=problems(400, 401, 403, 404),
    )
    async def policy(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        node_id: FromPath[str],
        data: JSONBody[RoutePolicy],
    ) -> PolicyChange:
        require(session, "operator")
        await _require_node(plane, node_id)
        return await plane.managed.routes.set_policy(
            node_id, data.public_inference_allowed, session.token_id, data.reason
        )

    @post(
        "/v1/nodes/{node_id:str}/route/chat/completions",
        summary="Send one chat request to this node over its route (operator diagnostics)",
        status_code=200,
        responses=problems(400, 401, 403, 404, 413, 429, 502),
        operation_class=sse.ChatPassThrough,
    )
    async def chat(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        request: Request[Any, Any, Any],
        node_id: FromPath[str],
    ) -> Response[Any] | Stream:
        require(session, "operator")
        await _require_node(plane, node_id)
        body = await request.body()
        try:
            _chat_object.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            # Passed on as it came, so it must be JSON: anything else would make a frame
            # the node cannot read, and no reply would ever come.
            raise ApiError(
                400, "invalid_request", "Bad Request", "the body must be a JSON object"
            ) from None
        frames = plane.managed.broker.dispatch(node_id, body)
        first = await first_reply(frames)
        if isinstance(first, Failed):
            raise failure(first)
        if isinstance(first, Done):
            if first.streamed:  # a plain request answered without its body
                raise ApiError(502, "router_dispatch_failed", "Bad Gateway", "no answer")
            return Response(bytes(first.response), media_type="application/json")
        return Stream(passed_on(first, frames), media_type="text/event-stream", headers=sse.HEADERS)

    @post(
        "/v1/nodes/{node_id:str}/benchmarks",
        summary="Run the fixed benchmark set through the node's route and record it (operator)",
        status_code=201,
        responses=problems(400, 401, 403, 404, 429, 502),
    )
    async def observe(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        node_id: FromPath[str],
        data: JSONBody[BenchmarkRequest],
    ) -> BenchmarkObserved:
        require(session, "operator")
        await _require_node(plane, node_id)
        return await plane.managed.benchmarks.observe(node_id, data.model, session.token_id)

    @get(
        "/v1/nodes/{node_id:str}/benchmarks",
        summary="Benchmark evidence, observed and claimed",
        responses=problems(400, 401),
    )
    async def benchmarks(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        node_id: FromPath[str],
    ) -> BenchmarkList:
        check_node_id(node_id)
        async with plane.pool.acquire() as conn:
            rows = await benchmarks_of(conn, node_id)
        return BenchmarkList(
            [
                BenchmarkEvidence(**r, counts_for_paid_routing=r["source"] == "observed")
                for r in rows
            ]
        )
