"""The daemon's receipt loop: queue new receipts (when the owner lets it), send what waits
in signed batches, and back off while the control plane is away.

A batch refused by name (one receipt does not verify) is checked here too: receipts that
fail with this node's own key will never be taken and leave the queue, refused; if every
receipt holds here, the control plane knows another key for this node, and the batch
waits for that to be put right.
"""

import asyncio
import contextlib
import logging
import random

import httpx

from domain.canonical import canonical_bytes
from domain.receipt_reports import ReceiptBatch, first_bad_receipt
from domain.receipts import Receipt
from domain.signing import Keyring
from node.managed.client import ControlPlaneClient
from node.managed.receipt_outbox import OTHER_KEY, ReceiptOutbox

log = logging.getLogger("b3iq.node.receipts")
RECEIPT_CODES = frozenset(
    {"receipt_mismatch", "invalid_receipt", "receipt_hash_mismatch", "invalid_signature"}
)


class ReceiptSender:
    BATCH = 100

    def __init__(
        self,
        client: ControlPlaneClient,
        outbox: ReceiptOutbox,
        *,
        auto: bool,
        every_s: float,
        wake: asyncio.Event,
        max_backoff_s: float = 300.0,
    ) -> None:
        self._client = client
        self._outbox = outbox
        self._auto = auto
        self._every_s = every_s
        self._wake = wake
        self._max_backoff_s = max_backoff_s
        signer = client.identity.signer
        self._keys = Keyring([signer.public_key])
        self._key_id = signer.key_id
        self.failures = 0

    async def flush(self) -> bool:
        """Send what waits, oldest first; False at the first batch that did not get through."""
        node_id = self._client.identity.node_id
        path = f"/v1/nodes/{node_id}/receipts"
        while batch := self._outbox.waiting(self.BATCH):
            try:
                response = await self._client.post_signed(
                    path, canonical_bytes(ReceiptBatch(batch))
                )
            except httpx.HTTPError as exc:
                log.warning("control plane unreachable: %s", type(exc).__name__)
                return False
            if response.status_code < 300:
                self._outbox.accepted([r.receipt_hash for r in batch])
                continue
            code = _code(response)
            if not (
                response.status_code == 422 and code in RECEIPT_CODES and self._drop_bad(batch)
            ):
                log.warning("receipts refused: %s %s", response.status_code, code)
                return False
        return True

    def _drop_bad(self, batch: list[Receipt]) -> bool:
        """Mark the receipts that fail here refused; False when none does."""
        node_id = self._client.identity.node_id
        bad: dict[str, list[str]] = {}
        for receipt in batch:
            found = first_bad_receipt([receipt], self._keys, node_id)
            if found is not None:
                code = OTHER_KEY if receipt.body.key_id != self._key_id else found.code
                bad.setdefault(code, []).append(receipt.receipt_hash)
        for code, hashes in bad.items():
            log.warning("%d receipts will never verify (%s); left out", len(hashes), code)
            self._outbox.refused(hashes, code)
        return bool(bad)

    async def step(self) -> bool:
        more = self._auto and self._outbox.queue_new().remaining > 0
        delivered = await self.flush()
        if delivered and more:
            self._wake.set()  # the next slice at once, without holding the loop meanwhile
        return delivered

    def backoff_s(self) -> float:
        base = min(self._max_backoff_s, self._every_s * 2.0 ** min(self.failures, 16))
        return base * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not secrecy

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            if await self.step():
                self.failures, wait = 0, self._every_s
            else:
                self.failures += 1
                wait = self.backoff_s()
            await _first(stop, self._wake, timeout=wait)


async def _first(a: asyncio.Event, b: asyncio.Event, timeout: float) -> None:
    waits = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""
