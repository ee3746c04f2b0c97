"""Local API key checks, run as a guard so a bad key is a 401 before the body is parsed."""

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

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


async def require_local_key(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    # async only so Litestar runs it on the loop: one indexed SQLite read doesn't earn a
    # thread hop, which cost more than the rest of the check.
    key = services_of(connection).keys.authenticate(presented_key(connection))
    require_scope(key, handler.opt["scope"])
    connection.state["local_key"] = key


def local_key(connection: ASGIConnection[Any, Any, Any, Any]) -> LocalKey:
    key: LocalKey = connection.state["local_key"]
    return key
