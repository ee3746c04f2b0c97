"""POST /v1/nodes/{node_id}/heartbeats, answered ahead of the framework.

Heartbeats are nearly all of the API's traffic (every node, every 30 s), and the
framework's work per request (routing, dependency injection, signature models, the
response pipeline) cost more CPU than half of a heartbeat's own checks. So this one route
is served here as plain ASGI, by the same intake, with the same problem JSON; everything
else, including a heartbeat path whose node id is malformed, goes on to the app, where
the route's handler also defines it for the OpenAPI schema.
"""

import logging

import msgspec
from litestar.types import ASGIApp

from adapters.enrollment import NODE_ID
from adapters.heartbeat_intake import HeartbeatIntake
from adapters.http.plain_asgi import App, Receive, Scope, Send, read_body, respond
from adapters.http.problems import ApiError, Problem, ProblemBody
from adapters.outages import TRANSIENT

log = logging.getLogger("b3iq.http")

PREFIX, SUFFIX = "/v1/nodes/", "/heartbeats"
MAX_BODY_BYTES = 1_000_000
_encoder = msgspec.json.Encoder()


class HeartbeatRoute:
    def __init__(self, app: ASGIApp | App, intake: HeartbeatIntake, *, retry_after_s: int) -> None:
        self._app = app
        self._intake = intake
        self._retry_after = str(retry_after_s).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not path.startswith(PREFIX)
            or not path.endswith(SUFFIX)
            or not NODE_ID.match(node_id := path[len(PREFIX) : -len(SUFFIX)])
        ):
            await self._app(scope, receive, send)  # type: ignore[arg-type]
            return
        query: bytes = scope.get("query_string", b"")
        signed_path = f"{path}?{query.decode('latin-1')}" if query else path
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = await read_body(receive, MAX_BODY_BYTES)
            accepted = await self._intake.accept(node_id, signed_path, headers, body)
        except ApiError as exc:
            await _problem(send, exc.status, exc.code, exc.title, exc.detail)
        except TRANSIENT as exc:
            log.warning("dependency unavailable: %s", type(exc).__name__)
            await _problem(
                send,
                503,
                "service_unavailable",
                "Service Unavailable",
                "the event log or the read-model database is unreachable; retry later",
                headers=[(b"retry-after", self._retry_after)],
            )
        except Exception as exc:
            log.error("unhandled %s", type(exc).__name__, exc_info=exc)
            await _problem(send, 500, "internal_error", "Internal Server Error", "unexpected")
        else:
            await respond(send, 201, b"application/json", _encoder.encode(accepted))


async def _problem(
    send: Send,
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = _encoder.encode(ProblemBody(Problem(status, title, detail, code)))
    await respond(send, status, b"application/problem+json", body, headers)
