"""Command endpoints: the node's signed long-poll and result upload, and the operator's queue."""

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from msgspec import Meta

from adapters.admin_tokens import AdminSession
from adapters.bootstrap import ControlPlane
from adapters.command_queue import Change, Issued, ResultAccepted
from adapters.enrollment import NODE_ID, check_node_id
from adapters.http.admin_auth import provide_session, require
from adapters.http.enrollment import signed_path
from adapters.http.problems import ApiError, problems
from domain.canonical import b64decode, b64encode
from domain.command_messages import Polled
from domain.command_specs import KINDS, CommandSpec
from domain.commands import STATES
from projections.command_queries import CommandFilter, CommandView

Reason = Annotated[str, Meta(max_length=512)]
_ID = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,128}$")]


class NewCommand(msgspec.Struct, frozen=True, kw_only=True):
    node_id: _ID
    command: CommandSpec
    reason: Reason
    command_id: _ID | None = None
    """Optional: lets a client retry the issue without making a second command."""


class Why(msgspec.Struct, frozen=True):
    reason: Reason


class CommandPage(msgspec.Struct, frozen=True, kw_only=True):
    data: list[CommandView]
    next_cursor: str | None


def _command_id(command_id: str) -> str:
    if not NODE_ID.match(command_id):  # the same token rule as node ids
        raise ApiError(404, "not_found", "Not Found", "no such command")
    return command_id


class NodeCommandsController(Controller):
    tags = ["managed"]

    @get(
        "/v1/nodes/{node_id:str}/commands",
        summary="Signed long-poll: lease waiting commands",
        responses=problems(400, 401, 409),
    )
    async def poll(
        self,
        plane: NamedDependency[ControlPlane],
        request: Request[Any, Any, Any],
        node_id: FromPath[str],
        wait: Annotated[float, QueryParameter(ge=0, le=300)] = 0.0,
    ) -> Polled:
        check_node_id(node_id)
        return await plane.managed.commands.poll(
            node_id, signed_path(request), request.headers, wait
        )

    @post(
        "/v1/nodes/{node_id:str}/commands/{command_id:str}/result",
        summary="Signed result (or refusal) of a leased command",
        status_code=200,
        responses=problems(400, 401, 404, 409),
    )
    async def result(
        self,
        plane: NamedDependency[ControlPlane],
        request: Request[Any, Any, Any],
        node_id: FromPath[str],
        command_id: FromPath[str],
    ) -> ResultAccepted:
        check_node_id(node_id)
        body = await request.body()
        return await plane.managed.commands.report(
            node_id, _command_id(command_id), signed_path(request), request.headers, body
        )


class OperatorCommandsController(Controller):
    tags = ["operator"]
    dependencies = {"session": provide_session}

    @post(
        "/v1/commands",
        summary="Issue a typed command to a node (operator)",
        responses=problems(400, 401, 403, 404, 409),
    )
    async def issue(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        data: JSONBody[NewCommand],
    ) -> Issued:
        require(session, "operator")
        return await plane.managed.commands.issue(
            data.node_id, data.command, session.token_id, data.reason, data.command_id
        )

    @get(
        "/v1/commands",
        summary="Commands, newest first, by node, state (comma list) or kind",
        responses=problems(400, 401),
    )
    async def search(  # noqa: PLR0917
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        node_id: FromQuery[str | None] = None,
        states_in: Annotated[str | None, QueryParameter(name="state")] = None,
        kind: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> CommandPage:
        states = tuple(s for s in (states_in or "").split(",") if s)
        if not set(states) <= set(STATES):
            raise ApiError(400, "invalid_request", "Bad Request", f"state: of {list(STATES)}")
        if kind is not None and kind not in KINDS:
            raise ApiError(400, "invalid_request", "Bad Request", f"kind: one of {list(KINDS)}")
        try:
            after = None if cursor is None else b64decode(cursor).decode()
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "invalid_request", "Bad Request", "cursor: not ours") from None
        where = CommandFilter(node_id=node_id, states=states, kind=kind)
        page = await plane.managed.commands.search(where, after=after, limit=limit + 1)
        more = len(page) > limit
        page = page[:limit]
        return CommandPage(
            data=page, next_cursor=b64encode(page[-1].command_id.encode()) if more else None
        )

    @get(
        "/v1/commands/{command_id:str}",
        summary="One command, its state judged now",
        responses=problems(400, 401, 404),
    )
    async def show(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        command_id: FromPath[str],
    ) -> CommandView:
        return await plane.managed.commands.show(_command_id(command_id))

    @post(
        "/v1/commands/{command_id:str}/retry",
        summary="Queue a finished command again",
        responses=problems(400, 401, 403, 404, 409),
    )
    async def retry(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        command_id: FromPath[str],
        data: JSONBody[Why],
    ) -> Change:
        require(session, "operator")
        return await plane.managed.commands.retry(
            _command_id(command_id), session.token_id, data.reason
        )

    @post(
        "/v1/commands/{command_id:str}/cancel",
        summary="Cancel a queued or leased command",
        responses=problems(400, 401, 403, 404, 409),
    )
    async def cancel(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        command_id: FromPath[str],
        data: JSONBody[Why],
    ) -> Change:
        require(session, "operator")
        return await plane.managed.commands.cancel(
            _command_id(command_id), session.token_id, data.reason
        )

    @get(
        "/v1/commands/{command_id:str}/audit",
        summary="The command's signed events as JSON lines, exactly as the log holds them",
        media_type="application/x-ndjson",
        responses=problems(400, 401, 404),
    )
    async def audit(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        command_id: FromPath[str],
    ) -> Response[bytes]:
        events = await plane.managed.commands.audit(_command_id(command_id))
        lines = b"".join(
            _line.encode({"seq": e.seq, "envelope": msgspec.Raw(e.data)}) + b"\n" for e in events
        )
        return Response(lines, media_type="application/x-ndjson")


_line = msgspec.json.Encoder()
