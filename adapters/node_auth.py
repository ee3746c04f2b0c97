"""Authenticating signed node requests: the node's key from the ledger, replays refused."""

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import NamedTuple

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from adapters.http.problems import ApiError
from domain.canonical import b64decode
from domain.decoding import decode_stored
from domain.events import NodeState
from domain.node_requests import (
    Rejection,
    SignedHeaders,
    canonical_request,
    check_signed_text,
    parse_headers,
)
from domain.nodes import REVOKED, state_of
from domain.ports import EventStore, NonceRegistry
from domain.receipts import Receipt, check_receipt
from domain.signing import Keyring
from domain.streams import Topology


class _Known(NamedTuple):
    state: NodeState | None
    keys: Keyring
    fetched: float


class NodeDirectory:
    """Each node's current key and status, read from the last event on its ledger subject.

    Cached, so a heartbeat costs no read. This process forgets a node as soon as it
    changes it; once ``follow`` runs, it also forgets a node the moment any process
    appends to the node's subject (NATS delivers every ledger append to plain
    subscribers too), and everything after a reconnect, when some news may have been
    missed. ``ttl_s`` bounds how stale an entry can get without that news.
    """

    MAX_CACHED = 200_000
    FOLLOWED_TTL_S = 600.0

    def __init__(self, store: EventStore, topology: Topology, ttl_s: float = 2.0) -> None:
        self._store = store
        self._topology = topology
        self._ttl_s = ttl_s
        self._cache: OrderedDict[str, _Known] = OrderedDict()
        self._changes = 0
        """Forgotten nodes so far: a read that overlaps one is not cached."""
        self._nc: Client | None = None
        self._reconnects = 0
        self._sub: Subscription | None = None

    async def follow(self, nc: Client) -> None:
        """Keep the cache for long, dropping entries as the ledger changes them."""
        prefix = f"{self._topology.prefix}.ev.node."
        self._nc, self._reconnects = nc, nc.stats["reconnects"]

        async def on_change(msg: Msg) -> None:
            self.forget(msg.subject[len(prefix) :])

        self._sub = await nc.subscribe(prefix + "*", cb=on_change)
        self._ttl_s = self.FOLLOWED_TTL_S

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def state(self, node_id: str) -> tuple[NodeState | None, Keyring]:
        if self._nc is not None and self._nc.stats["reconnects"] != self._reconnects:
            self._reconnects = self._nc.stats["reconnects"]
            self._cache.clear()
            self._changes += 1
        known = self._cache.get(node_id)
        if known is not None and time.monotonic() - known.fetched < self._ttl_s:
            return known.state, known.keys
        changes = self._changes
        stored = await self._store.last(self._topology.subject("node", node_id))
        state = None if stored is None else state_of(decode_stored(stored).event)
        keys = Keyring() if state is None else Keyring([b64decode(state.public_key)])
        if changes == self._changes:
            self._cache[node_id] = _Known(state, keys, time.monotonic())
            self._cache.move_to_end(node_id)
            if len(self._cache) > self.MAX_CACHED:
                self._cache.popitem(last=False)
        return state, keys

    def forget(self, node_id: str) -> None:
        self._changes += 1
        self._cache.pop(node_id, None)


class Authenticated(NamedTuple):
    signed: SignedHeaders
    state: NodeState
    canonical: bytes
    """The exact text the node signed, kept as evidence."""


def refuse(rejection: Rejection) -> ApiError:
    return ApiError(401, rejection.code, "Unauthorized", rejection.reason)


class NodeAuthenticator:
    def __init__(
        self,
        directory: NodeDirectory,
        nonces: NonceRegistry,
        *,
        skew_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.directory = directory
        self._nonces = nonces
        self._skew_s = skew_s
        self._clock = clock

    async def authenticate(
        self, node_id: str, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> Authenticated:
        """The node's verified request, or ApiError 401 (invalid_signature / unauthorized)."""
        signed = parse_headers(headers)
        if isinstance(signed, Rejection):
            raise refuse(signed)
        if signed.node_id != node_id:
            raise refuse(Rejection("unauthorized", "node_id_mismatch"))
        state, keys = await self.directory.state(node_id)
        if state is None:
            raise refuse(Rejection("unauthorized", "unknown_node"))
        if state.status == REVOKED:
            raise refuse(Rejection("unauthorized", "node_revoked"))
        canonical = canonical_request(
            method=method,
            path=path,
            body=body,
            timestamp=signed.timestamp,
            nonce=signed.nonce,
            node_id=node_id,
            key_id=signed.key_id,
        )
        rejection = check_signed_text(
            signed, canonical, node_keys=keys, now=self._clock(), skew_s=self._skew_s
        )
        if rejection is not None:
            raise refuse(rejection)
        if not await self._nonces.first_use(node_id, signed.nonce):
            raise refuse(Rejection("invalid_signature", "replayed_nonce"))
        return Authenticated(signed, state, canonical)


async def require_receipt(
    directory: NodeDirectory, receipt: Receipt, *, node_id: str, model: str, dispatch_id: str
) -> None:
    """A dispatched request's receipt, checked with the node's current key; a bad one is
    the node's failure (502), never the caller's."""
    _, keys = await directory.state(node_id)
    problem = check_receipt(receipt, keys, node_id=node_id, model=model, dispatch_id=dispatch_id)
    if problem is not None:
        raise ApiError(502, problem, "Bad Gateway", "the node's receipt does not verify")
