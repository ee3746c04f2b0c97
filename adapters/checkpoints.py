"""Signed checkpoints: RFC 6962 tree heads over the ledger, appended by the control plane."""

import asyncio
import functools
import logging
import time

from adapters.outages import wait_or_stop
from adapters.recorder import Recorder
from domain.decoding import Decoded, decode_stored
from domain.envelope import StoredEvent
from domain.events import Event, LedgerCheckpointed
from domain.merkle import RecentPrefixes, consistency_from, leaf_hash
from domain.ports import EventReader, EventStore, StoreUnavailable
from domain.signing import Keyring
from domain.streams import Topology
from domain.verification import Problem, Reason, self_published_key, verify_event

log = logging.getLogger("b3iq.checkpoints")


class InconsistentLog(Exception):
    """The ledger no longer matches a checkpoint we signed: refuse to sign anything more."""


class UnverifiedMessage(InconsistentLog):
    """A ledger message whose control-plane signature does not hold (forged, or written
    by someone without the key): no checkpoint may cover it, so none is signed again."""


class Checkpointer:
    """Keeps the ledger's Merkle tree and appends a signed tree head every ``every_events``
    events or ``every_s`` seconds (when anything new arrived).

    A checkpoint covers the ledger as far as the checkpointer had read it: messages that
    land while it is signed go under the next one. (Landing right after the tree's last
    leaf, on condition, lost every race on a busy ledger: in the soak none landed for 20
    minutes.) Before signing it checks that the log still produces the last checkpoint's
    root, and it carries the consistency proof from that checkpoint, so it can never sign
    a head inconsistent with an earlier one. Nor does it cover a message whose signature it has
    not checked (``signatures_verified``): a forged message on the ledger stops
    checkpoints right there, and an auditor checks everything after the last one.

    Memory stays bounded however long the ledger grows: the tree is kept as its peaks at
    the last checkpoint and the leaves after it, which are all a consistency proof from
    that checkpoint needs.
    """

    def __init__(
        self,
        store: EventStore,
        recorder: Recorder,
        topology: Topology,
        *,
        every_events: int = 1000,
        every_s: float = 60.0,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.stream = topology.ledger.name
        self.subject = topology.subject("checkpoint", "ledger")
        self.every_events = every_events
        self.every_s = every_s
        self.keyring = Keyring([recorder.signer.public_key])
        """Our key, and those we signed with before it (learned from the ledger)."""
        self.tree = RecentPrefixes()
        """Every ledger message read so far, from the last checkpoint we know of on."""
        self._known: int | None = None
        """The last checkpoint's size when we started reading (None: not looked yet)."""
        self._reader: EventReader | None = None
        self._decided: LedgerCheckpointed | None = None

    async def catch_up(self) -> None:
        """Read the ledger to its head, checking every message before it becomes a leaf."""
        if self._known is None:  # leaves up to the last checkpoint need not be kept
            tail = await self.store.last(self.subject)
            last = None if tail is None else decode_stored(tail).event
            self._known = last.tree_size if isinstance(last, LedgerCheckpointed) else 0
        _, head = await self.store.bounds(self.stream)
        if self._reader is None:
            self._reader = await self.store.reader(self.stream, self.tree.size + 1)
        while self.tree.size < head:
            batch = await self._reader.next_batch(min(5000, head - self.tree.size), 1.0)
            if not batch:
                break
            for stored in batch:
                if stored.seq != self.tree.size + 1:
                    raise InconsistentLog(f"ledger sequence {stored.seq} after {self.tree.size}")
                self._verify(stored)
                self.tree.append(leaf_hash(stored.data))
                if self.tree.size <= self._known:  # under that checkpoint: not needed
                    self.tree.forget_before(self.tree.size)

    def _verify(self, stored: StoredEvent) -> None:
        outcome = verify_event(stored, self.keyring)
        if isinstance(outcome, Problem) and outcome.reason is Reason.UNKNOWN_KEY:
            earlier = self_published_key(stored)  # a key we signed with before this one
            if earlier is not None:
                self.keyring.add(earlier)
                outcome = verify_event(stored, self.keyring)
        if isinstance(outcome, Problem):
            raise UnverifiedMessage(f"refusing to checkpoint over {outcome}")

    async def checkpoint(self) -> LedgerCheckpointed | None:
        """Append a checkpoint over the ledger as far as it is read now; None when nothing
        is new."""
        await self.catch_up()
        result = await self.recorder.record(
            self.subject, functools.partial(self._decide, self.tree.size)
        )
        return None if result is None else self._decided

    def _decide(self, size: int, tail: Decoded | None) -> list[Event]:
        previous = None if tail is None else tail.event
        if not isinstance(previous, LedgerCheckpointed | None):
            raise InconsistentLog(f"{self.subject} holds a {type(previous).__name__}")
        if previous is not None:
            assert tail is not None
            self._check_still_holds(previous)
            itself = 1 if previous.tree_size < tail.seq <= size else 0
            if size - previous.tree_size - itself <= 0:
                return []  # nothing new but that checkpoint itself
        self._decided = self._head(previous, size)
        return [self._decided]

    def _check_still_holds(self, previous: LedgerCheckpointed) -> None:
        if not self.tree.forget_before(previous.tree_size):
            raise InconsistentLog(
                f"a checkpoint at {previous.tree_size} is outside what we have read"
            )
        if self.tree.base.root().hex() != previous.root:
            raise InconsistentLog(
                f"the ledger's first {previous.tree_size} messages no longer have the root "
                f"{previous.root} we signed"
            )

    def _head(self, previous: LedgerCheckpointed | None, size: int) -> LedgerCheckpointed:
        assert size == self.tree.size  # decided right after catching up, nothing between
        root = self.tree.root_at(size)
        assert root is not None
        if previous is None:
            return LedgerCheckpointed(tree_size=size, root=root.hex(), signatures_verified=True)
        proof = consistency_from(self.tree.base, self.tree.since)
        return LedgerCheckpointed(
            tree_size=size,
            root=root.hex(),
            previous_size=previous.tree_size,
            consistency=[p.hex() for p in proof],
            signatures_verified=True,
        )

    async def run(self, stop: asyncio.Event) -> None:
        last_at, last_size = time.monotonic(), 0
        refused = ""
        while not stop.is_set():
            try:
                _, head = await self.store.bounds(self.stream)
                due = time.monotonic() - last_at >= self.every_s
                if head - last_size >= self.every_events or (due and head > last_size):
                    made = await self.checkpoint()
                    last_at = time.monotonic()
                    if made is not None:
                        last_size = made.tree_size + 1
                        log.info("checkpoint at %d: %s", made.tree_size, made.root)
            except StoreUnavailable as exc:
                log.warning("checkpoints paused: %s", exc)
                await self._drop_reader()
            except UnverifiedMessage as exc:
                # Projections go on; checkpoints stop here until an operator looks.
                if str(exc) != refused:
                    refused = str(exc)
                    log.error("%s", exc)
                await self._drop_reader()  # read it again from the last good leaf
            await wait_or_stop(stop, 1.0)
        await self._drop_reader()

    async def _drop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()
