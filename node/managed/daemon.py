"""Managed Mode inside the running daemon, once this node is enrolled: heartbeats, the
command long-poll, the broker route and receipt submission."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

from node.managed.client import ControlPlaneClient
from node.managed.commands import CommandLoop
from node.managed.heartbeats import HeartbeatLoop, build_report
from node.managed.jobs import Jobs
from node.managed.outbox import Outbox
from node.managed.receipt_outbox import ReceiptOutbox
from node.managed.receipt_sender import ReceiptSender
from node.managed.route import RouteClient
from node.services import NodeServices

AGENT_VERSION = "0.1.0"
CONTROL_PLANE_URL = "control_plane_url"
"""The meta key `b3iq-host enroll` sets."""


@contextlib.asynccontextmanager
async def managed_mode(services: NodeServices) -> AsyncIterator[HeartbeatLoop | None]:
    url = services.db.get_meta(CONTROL_PLANE_URL)
    if url is None:
        yield None
        return
    services.enrolled = True
    client = ControlPlaneClient(url, services.identity)
    interval = float(services.db.get_meta("heartbeat_interval_s") or 30.0)
    loop = HeartbeatLoop(
        lambda seq: build_report(services, seq, AGENT_VERSION),
        client,
        Outbox(services.db),
        interval_s=interval,
    )
    stop = asyncio.Event()
    commands = CommandLoop(
        client, Jobs(services, AGENT_VERSION), wait_s=services.settings.command_wait_s
    )
    route = RouteClient(services, client)
    receipts = ReceiptSender(
        client,
        ReceiptOutbox(services.db, services.identity.signer.key_id),
        auto=services.settings.auto_submit_receipts,
        every_s=services.settings.receipts_flush_s,
        wake=services.receipts_queued,
    )
    task = asyncio.create_task(loop.run(stop))
    polling = asyncio.create_task(commands.run(stop))
    routing = asyncio.create_task(route.run(stop))
    sending = asyncio.create_task(receipts.run(stop))
    try:
        yield loop
    finally:
        stop.set()
        polling.cancel()  # a long-poll in flight has nothing worth waiting for
        sending.cancel()  # a batch in flight stays queued: resent next time, recorded once
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)
        for other in (polling, routing, sending):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(other, timeout=5)
        await client.close()
