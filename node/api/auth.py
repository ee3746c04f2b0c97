"""Local API key checks, run before the request's handler so a bad key is a 401 before the
body is parsed."""

from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection

from node.keys import LocalKey, require_scope
from node.services import NodeServices


def services_of(connection: ASGIConnection[Any, Any, Any, Any]) -> NodeServices:
    services: NodeServices = connection.app.state["node"]
    return services


def presented_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def require_local_key(request: Request[Any, Any, Any]) -> None:
    """A route's ``before_request`` hook: the key must allow the route's ``opt["scope"]``.

    Not a guard: Litestar copies the route handler for every guard call, which cost more
    than this check. Async only so that it runs on the loop: one indexed SQLite read does
    not earn a thread hop."""
    key = services_of(request).keys.authenticate(presented_key(request))
    require_scope(key, request.route_handler.opt["scope"])
    request.state["local_key"] = key


def local_key(connection: ASGIConnection[Any, Any, Any, Any]) -> LocalKey:
    key: LocalKey = connection.state["local_key"]
    return key
