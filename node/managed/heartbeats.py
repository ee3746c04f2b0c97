"""The daemon's heartbeat loop: a report every interval into the outbox, the outbox out
in order, jittered exponential backoff while the control plane is away."""

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import msgspec

from domain.canonical import canonical_bytes
from domain.heartbeat_report import (
    GpuReport,
    HeartbeatReport,
    InventoryReport,
    ProfileReport,
    RuntimeReport,
)
from node.inventory import Inventory
from node.managed.client import ControlPlaneClient
from node.managed.outbox import Outbox
from node.services import NodeServices

log = logging.getLogger("b3iq.node.heartbeats")


def inventory_report(inventory: Inventory | None) -> InventoryReport:
    if inventory is None:
        return InventoryReport(os="unknown")
    return InventoryReport(
        os=inventory.os,
        os_release=inventory.os_release,
        arch=inventory.arch,
        cpu_model=inventory.cpu_model,
        cpu_count=inventory.cpu_count,
        ram_total_mib=inventory.ram_total_mib,
        ram_available_mib=inventory.ram_available_mib,
        disk_total_gib=inventory.disk_total_gib,
        disk_free_gib=inventory.disk_free_gib,
        gpus=[
            GpuReport(name=g.name, memory_mib=g.memory_mib, driver=g.driver) for g in inventory.gpus
        ],
    )


def build_report(services: NodeServices, seq: int, agent_version: str) -> HeartbeatReport:
    profiles = [
        msgspec.convert(msgspec.structs.asdict(p), ProfileReport) for p in services.profiles()
    ]
    return HeartbeatReport(
        node_id=services.identity.node_id,
        heartbeat_seq=seq,
        sent_at=datetime.now(UTC),
        agent_version=agent_version,
        inventory=inventory_report(services.inventory),
        runtimes=[
            RuntimeReport(
                model=p.model,
                runtime_kind=p.runtime_kind,
                reachable=p.model in services.runtimes and p.status == "installed",
            )
            for p in profiles
        ],
        profiles=profiles,
    )


class HeartbeatLoop:
    def __init__(
        self,
        report: Callable[[int], HeartbeatReport],
        client: ControlPlaneClient,
        outbox: Outbox,
        *,
        interval_s: float = 30.0,
        max_backoff_s: float = 300.0,
    ) -> None:
        self._report = report
        self._client = client
        self._outbox = outbox
        self.interval_s = interval_s
        self._max_backoff_s = max_backoff_s
        self.failures = 0

    def beat(self) -> None:
        report = self._report(self._outbox.next_heartbeat_seq())
        path = f"/v1/nodes/{report.node_id}/heartbeats"
        self._outbox.add(path, canonical_bytes(report))

    async def flush(self) -> bool:
        """Send what waits, oldest first; False at the first failure (it stays queued)."""
        while batch := self._outbox.pending():
            for item in batch:
                try:
                    response = await self._client.post_signed(item.path, item.body)
                except httpx.HTTPError as exc:
                    log.warning("control plane unreachable: %s", type(exc).__name__)
                    return False
                delivered = response.status_code < 300 or (
                    response.status_code == 409 and _code(response) == "stale_sequence"
                )
                if not delivered:
                    log.warning("heartbeat refused: %s %s", response.status_code, _code(response))
                    return False
                self._outbox.done(item.id)
                if response.status_code < 300:
                    self.interval_s = float(response.json().get("next_interval_s", self.interval_s))
        return True

    def backoff_s(self) -> float:
        base = min(self._max_backoff_s, 2.0 ** min(self.failures, 16))
        return base * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not secrecy

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        while not stop.is_set():
            if loop.time() >= next_beat:
                self.beat()
                next_beat = loop.time() + self.interval_s
            if await self.flush():
                self.failures = 0
                wait = next_beat - loop.time()
            else:
                self.failures += 1
                wait = min(self.backoff_s(), next_beat - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(wait, 0.05))


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""
