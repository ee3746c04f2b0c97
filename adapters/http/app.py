"""The control plane's HTTP API (Litestar)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

from adapters.bootstrap import ControlPlane
from adapters.http.billing import CustomerBillingController, PublicReceiptController
from adapters.http.billing_admin import BillingAdminController
from adapters.http.broker_socket import BrokerEntrance
from adapters.http.chat_route import ChatRoute
from adapters.http.commands import NodeCommandsController, OperatorCommandsController
from adapters.http.enrollment import NO_HTTP_METRICS, NodeFacingController
from adapters.http.gateway import GatewayController
from adapters.http.heartbeat_route import HeartbeatRoute
from adapters.http.node_receipts import NodeReceiptsController
from adapters.http.operator import OperatorController
from adapters.http.problems import make_handlers
from adapters.http.public import PublicController
from adapters.http.routes import RoutesController
from adapters.http.support import GrantAdminController, SupportController
from adapters.http.system import SystemController


def create_app(plane: ControlPlane, *, own_plane: bool = False) -> BrokerEntrance:
    """``own_plane``: close the control plane's connections when the app shuts down."""

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if own_plane:
                await plane.close()

    def provide_plane() -> ControlPlane:
        return plane

    metrics = PrometheusConfig(
        app_name="b3iq_control_plane",
        prefix="b3iq",
        group_path=True,
        exclude_opt_key=NO_HTTP_METRICS,
    )
    app = Litestar(
        route_handlers=[
            SystemController,
            NodeFacingController,
            OperatorController,
            NodeCommandsController,
            OperatorCommandsController,
            NodeReceiptsController,
            GrantAdminController,
            SupportController,
            PublicController,
            RoutesController,
            GatewayController,
            BillingAdminController,
            CustomerBillingController,
            PublicReceiptController,
            PrometheusController,
        ],
        dependencies={"plane": Provide(provide_plane, sync_to_thread=False)},
        exception_handlers=make_handlers(plane.settings.retry_after_s),  # type: ignore[arg-type]
        middleware=[metrics.middleware],
        openapi_config=OpenAPIConfig(title="B3IQ control plane", version="0.1.0", path="/schema"),
        lifespan=[lifespan],
        debug=False,
    )
    chat = ChatRoute(app, plane.gateway)
    heartbeats = HeartbeatRoute(
        chat, plane.managed.heartbeats, retry_after_s=plane.settings.retry_after_s
    )
    return BrokerEntrance(heartbeats, plane.managed.broker, plane.managed.auth)
