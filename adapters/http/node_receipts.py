"""Receipts in Managed Mode: the node's signed upload, and the operator's view of them."""

import re
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from adapters.admin_tokens import AdminSession
from adapters.bootstrap import ControlPlane
from adapters.enrollment import check_node_id
from adapters.http.admin_auth import provide_session
from adapters.http.enrollment import signed_path
from adapters.http.problems import ApiError, problems
from adapters.receipt_intake import ReceiptsAccepted
from domain.canonical import b64decode, b64encode
from projections.node_receipt_queries import NodeReceiptView, node_receipts

PATH = "/v1/nodes/{node_id:str}/receipts"


class NodeReceiptPage(msgspec.Struct, frozen=True, kw_only=True):
    data: list[NodeReceiptView]
    next_cursor: str | None


class NodeReceiptsController(Controller):
    """One path, two callers (so one controller: Litestar maps a path's methods once)."""

    @post(
        PATH,
        tags=["managed"],
        summary="Signed batch of the node's receipts (verified, recorded once each)",
        status_code=200,
        responses=problems(400, 401, 409, 413, 422),
    )
    async def submit(
        self,
        plane: NamedDependency[ControlPlane],
        request: Request[Any, Any, Any],
        node_id: FromPath[str],
    ) -> ReceiptsAccepted:
        check_node_id(node_id)
        body = await request.body()
        return await plane.managed.receipts.accept(
            node_id, signed_path(request), request.headers, body
        )

    @get(
        PATH,
        tags=["operator"],
        dependencies={"session": provide_session},
        summary="Receipts the node submitted, newest report first",
        responses=problems(400, 401, 404),
    )
    async def list_receipts(
        self,
        plane: NamedDependency[ControlPlane],
        session: NamedDependency[AdminSession],
        node_id: FromPath[str],
        cursor: Annotated[str | None, QueryParameter(max_length=200)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> NodeReceiptPage:
        async with plane.pool.acquire() as conn:
            page = await node_receipts(
                conn, check_node_id(node_id), after=_after(cursor), limit=limit + 1
            )
        if page is None:
            raise ApiError(404, "not_found", "Not Found", "no such node")
        more = len(page) > limit
        page = page[:limit]
        return NodeReceiptPage(data=page, next_cursor=_cursor(page[-1]) if more else None)


_CURSOR = re.compile(r"^([0-9]{1,18}):([0-9a-f]{64})$")


def _cursor(last: NodeReceiptView) -> str:
    return b64encode(f"{last.seq}:{last.receipt_hash}".encode())


def _after(cursor: str | None) -> tuple[int, str] | None:
    if cursor is None:
        return None
    try:
        found = _CURSOR.match(b64decode(cursor).decode())
    except (ValueError, UnicodeDecodeError):
        found = None
    if found is None:
        raise ApiError(400, "invalid_request", "Bad Request", "cursor: not one we issued")
    return int(found[1]), found[2]
