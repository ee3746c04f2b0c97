"""The node's Litestar application: local API, setup page, health, metrics, OpenAPI."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.openapi.config import OpenAPIConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from node.api import errors, openai_routes, setup_page
from node.api.auth import services_of
from node.errors import NodeError
from node.managed.daemon import managed_mode
from node.services import NodeServices

_KNOWN_ROUTES = (
    "/v1/chat/completions",
    "/v1/models",
    "/v1/model-profiles",
    "/v1/receipts/submit",
    "/v1/receipts",
    "/health",
    "/metrics",
    "/setup",
)


@get("/health", sync_to_thread=False)
def health(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services = services_of(request)
    profiles = services.profiles()
    ready = any(p.status == "installed" and p.queue_health != "unhealthy" for p in profiles)
    return {
        "status": "ok",
        "mode": "local",
        "node_id": services.identity.node_id,
        "readiness": ["local-ready"] if ready else [],
        "models": len(profiles),
    }


@get("/metrics", sync_to_thread=False, include_in_schema=False)
def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    body = services_of(request).metrics.render()
    return Response(body, media_type="text/plain; version=0.0.4")


def _route_label(path: str) -> str:
    return next((r for r in _KNOWN_ROUTES if path.startswith(r)), "other")


def count_requests(services: NodeServices) -> Any:
    def middleware(app: ASGIApp) -> ASGIApp:
        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            route = _route_label(scope["path"])

            async def send_counted(message: Message) -> None:
                if message["type"] == "http.response.start":
                    services.metrics.requests.labels(route, str(message["status"])).inc()
                await send(message)

            await app(scope, receive, send_counted)

        return counted

    return middleware


def create_app(services: NodeServices, extra_models: list[Path] | None = None) -> Litestar:
    services.metrics.watch_queues(
        lambda: [(n, r.queue_depth, r.queue_health) for n, r in services.runtimes.items()]
    )

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await services.start(extra_models or [])
        try:
            async with managed_mode(services):
                yield
        finally:
            await services.close()

    return Litestar(
        route_handlers=[health, metrics, *openai_routes.ROUTES, *setup_page.ROUTES],
        state=State({"node": services}),
        lifespan=[lifespan],
        middleware=[count_requests(services)],
        exception_handlers={
            NodeError: errors.handle_node_error,
            HTTPException: errors.handle_http_exception,
            UnicodeDecodeError: errors.handle_bad_text,
            Exception: errors.handle_unexpected,
        },
        request_max_body_size=services.settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="B3IQ host agent (Local Mode)", version="0.1.0"),
        logging_config=None,
        debug=False,
    )
