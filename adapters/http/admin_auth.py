"""Operator authentication: an admin token in X-B3IQ-Admin-Token or Authorization: Bearer."""

from typing import Any

from litestar import Request
from litestar.di import NamedDependency, Provide

from adapters.admin_tokens import AdminSession
from adapters.bootstrap import ControlPlane
from adapters.http.bearer import bearer_token
from adapters.http.problems import ApiError


def token_of(request: Request[Any, Any, Any]) -> str | None:
    token = request.headers.get("x-b3iq-admin-token")
    if token:
        return token
    return bearer_token(request.headers.get("authorization"))


async def _session(
    request: Request[Any, Any, Any], plane: NamedDependency[ControlPlane]
) -> AdminSession:
    token = token_of(request)
    session = None if token is None else await plane.managed.admin_tokens.authenticate(token)
    if session is None:
        raise ApiError(401, "unauthorized", "Unauthorized", "a valid admin token is required")
    return session


def require(session: NamedDependency[AdminSession], role: str) -> None:
    if not session.allows(role):
        raise ApiError(403, "forbidden", "Forbidden", f"this action needs the {role} role")


provide_session = Provide(_session)
