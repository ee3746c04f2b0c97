"""Authenticating signed node requests: the node's key from the ledger, replays refused."""

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import NamedTuple

from adapters.http.problems import ApiError
from domain.canonical import b64decode
from domain.decoding import decode_stored
from domain.events import NodeState
from domain.node_requests import (
    Rejection,
    SignedHeaders,
    canonical_request,
    check_request,
    parse_headers,
)
from domain.nodes import REVOKED, state_of
from domain.ports import EventStore, NonceRegistry
from domain.signing import Keyring
from domain.streams import Topology


class _Known(NamedTuple):
    state: NodeState | None
    keys: Keyring
    fetched: float


class NodeDirectory:
    """Each node's current key and status, read from the last event on its ledger subject.

    Cached for ``ttl_s`` so heartbeats cost no extra read; this process forgets a node
    as soon as it changes it, and another process sees a revocation within ``ttl_s``.
    """

    MAX_CACHED = 200_000

    def __init__(self, store: EventStore, topology: Topology, ttl_s: float = 2.0) -> None:
        self._store = store
        self._topology = topology
        self._ttl_s = ttl_s
        self._cache: OrderedDict[str, _Known] = OrderedDict()

    async def state(self, node_id: str) -> tuple[NodeState | None, Keyring]:
        known = self._cache.get(node_id)
        if known is not None and time.monotonic() - known.fetched < self._ttl_s:
            return known.state, known.keys
        stored = await self._store.last(self._topology.subject("node", node_id))
        state = None if stored is None else state_of(decode_stored(stored).event)
        keys = Keyring() if state is None else Keyring([b64decode(state.public_key)])
        self._cache[node_id] = _Known(state, keys, time.monotonic())
        self._cache.move_to_end(node_id)
        if len(self._cache) > self.MAX_CACHED:
            self._cache.popitem(last=False)
        return state, keys

    def forget(self, node_id: str) -> None:
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
        rejection = check_request(
            signed,
            method=method,
            path=path,
            body=body,
            node_keys=keys,
            now=self._clock(),
            skew_s=self._skew_s,
        )
        if rejection is not None:
            raise refuse(rejection)
        if not await self._nonces.first_use(node_id, signed.nonce):
            raise refuse(Rejection("invalid_signature", "replayed_nonce"))
        canonical = canonical_request(
            method=method,
            path=path,
            body=body,
            timestamp=signed.timestamp,
            nonce=signed.nonce,
            node_id=node_id,
            key_id=signed.key_id,
        )
        return Authenticated(signed, state, canonical)
