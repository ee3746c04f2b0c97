"""Releases reservations left open (queued, claimed, awaiting a receipt) for too long,
so a crashed gateway or a silent node never keeps a customer's credit held."""

import asyncio
import logging

from adapters.billing import Billing
from adapters.outages import TRANSIENT, wait_or_stop

log = logging.getLogger("b3iq.billing")


class StaleSweeper:
    def __init__(self, billing: Billing, every_s: float) -> None:
        self.billing = billing
        self.every_s = every_s

    async def sweep(self) -> int:
        released = [s for s in await self.billing.release_stale() if s.released]
        if released:
            log.info("released %d stale reservations", len(released))
        return len(released)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except TRANSIENT as exc:
                log.warning("stale sweep paused: %s", type(exc).__name__)
            await wait_or_stop(stop, self.every_s)
