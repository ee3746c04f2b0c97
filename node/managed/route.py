"""The node's end of the broker route: one outbound WebSocket that carries inference.

The node dials out (so it works behind NAT: it accepts nothing inbound), proves who it is
with a signed request on the upgrade, then serves what the control plane dispatches over
the connection, streaming chunks back and finishing each request with its signed receipt.
Only models the node's owner made network-eligible are served this way. A dropped
connection is dialled again with jittered backoff.
"""

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from domain.broker_frames import (
    BROKER_PATH,
    Cancel,
    Chunk,
    Dispatch,
    Done,
    Failed,
    Ping,
    Pong,
    encode,
    to_node,
)
from node.api.schemas import ChatCompletionRequest
from node.completions import CompletionService
from node.errors import NodeError
from node.managed.client import ControlPlaneClient
from node.services import NodeServices

log = logging.getLogger("b3iq.node.route")

_request = msgspec.json.Decoder(ChatCompletionRequest)


def broker_url(base_url: str) -> str:
    scheme, _, rest = base_url.rstrip("/").partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{BROKER_PATH}"


class RouteClient:
    def __init__(
        self,
        services: NodeServices,
        client: ControlPlaneClient,
        *,
        max_backoff_s: float = 30.0,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self._services = services
        self._client = client
        self._max_backoff_s = max_backoff_s
        self._on_state = on_state
        self._running: dict[str, asyncio.Task[None]] = {}
        self.connected = asyncio.Event()
        self.failures = 0

    async def run(self, stop: asyncio.Event) -> None:
        url = broker_url(str(self._client.http.base_url))
        while not stop.is_set():
            try:
                await self._session(url, stop)
                self.failures = 0
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError) as exc:
                self.failures += 1
                reason = exc.response.status_code if isinstance(exc, InvalidStatus) else exc
                log.warning("broker route down: %s", reason)
            finally:
                self._set_connected(False)
            if stop.is_set():
                break
            wait = min(self._max_backoff_s, 0.5 * 2 ** min(self.failures, 8))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait * random.uniform(0.5, 1.5))  # noqa: S311

    def _set_connected(self, up: bool) -> None:
        (self.connected.set if up else self.connected.clear)()
        if self._on_state is not None:
            self._on_state(up)

    async def _session(self, url: str, stop: asyncio.Event) -> None:
        headers = self._client.signed_headers("GET", BROKER_PATH, b"")
        # No permessage-deflate: it halves what each idle route costs the broker, and chat
        # frames are small (compression cost more time than it saved bytes).
        async with connect(
            url,
            additional_headers=headers,
            max_size=16 * 2**20,
            open_timeout=10,
            compression=None,
        ) as ws:
            self._set_connected(True)
            log.info("broker route up")
            closing = asyncio.ensure_future(stop.wait())
            try:
                reading = asyncio.ensure_future(self._read(ws))
                await asyncio.wait({closing, reading}, return_when=asyncio.FIRST_COMPLETED)
                if reading.done():
                    reading.result()  # a closed connection raises here
                reading.cancel()
            finally:
                closing.cancel()
                for task in list(self._running.values()):
                    task.cancel()

    async def _read(self, ws: ClientConnection) -> None:
        async for message in ws:
            try:
                frame = to_node.decode(message)
            except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
                # A newer control plane may send frames this node does not know: skip them
                # rather than drop the route.
                log.warning("skipped an unknown frame from the broker")
                continue
            if isinstance(frame, Ping):
                await ws.send(encode(Pong(frame.id)))
            elif isinstance(frame, Dispatch):
                self._start(ws, frame)
            elif isinstance(frame, Cancel):
                running = self._running.get(frame.id)
                if running is not None:
                    running.cancel()

    def _start(self, ws: ClientConnection, frame: Dispatch) -> None:
        task = asyncio.create_task(self._serve(ws, frame))
        self._running[frame.id] = task
        task.add_done_callback(lambda _: self._running.pop(frame.id, None))

    async def _serve(self, ws: ClientConnection, frame: Dispatch) -> None:
        arrived = time.perf_counter()
        reply: Done | Failed
        try:
            reply = await self._run(ws, frame, arrived)
        except NodeError as exc:
            reply = Failed(frame.id, exc.status, exc.code, exc.message)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
            reply = Failed(frame.id, 400, "invalid_request", str(exc))
        except Exception:
            log.exception("routed request failed")
            reply = Failed(frame.id, 500, "runtime_failed", "the model runtime failed")
        with contextlib.suppress(ConnectionClosed):
            await ws.send(encode(reply))

    async def _run(self, ws: ClientConnection, frame: Dispatch, arrived: float) -> Done:
        request = _request.decode(frame.request)
        if not self._services.offered_to_network(request.model):
            raise NodeError(
                403,
                "model_not_network_eligible",
                f"model {request.model!r} is not served to the network from this host",
            )
        service = CompletionService(self._services, dispatch_id=frame.id)
        runtime = service.runtime(request.model)
        if request.stream:
            chunks = await service.stream(request, runtime, arrived)
            async for chunk in chunks:
                await ws.send(encode(Chunk(frame.id, msgspec.Raw(encode(chunk)))))
            assert service.receipt is not None
            return Done(frame.id, service.receipt)
        response = await service.complete(request, runtime, arrived)
        assert service.receipt is not None
        return Done(frame.id, service.receipt, msgspec.Raw(encode(response)))
