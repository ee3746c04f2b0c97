"""Builders of events, and stores opened for a test."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from adapters.jetstream import JetStreamEventStore
from domain.canonical import b64encode, canonical_bytes
from domain.events import HeartbeatRecorded, NodeEnrolled, NodeEvidence
from domain.ports import ConcurrencyConflict
from domain.signing import Signer
from domain.streams import Topology


def evidence(node: Signer, body: object) -> NodeEvidence:
    text = canonical_bytes(body)
    return NodeEvidence(key_id=node.key_id, body=text.decode(), sig=node.sign(text))


def enrolled(node_id: str, node: Signer) -> NodeEnrolled:
    return NodeEnrolled(
        node_id=node_id,
        key_id=node.key_id,
        public_key=b64encode(node.public_key),
        agent_version="0.1.0",
        evidence=evidence(node, {"challenge": "n-" + node_id}),
    )


def heartbeat(node_id: str, seq: int, node: Signer) -> HeartbeatRecorded:
    return HeartbeatRecorded(
        node_id=node_id,
        heartbeat_seq=seq,
        sent_at=datetime(2026, 11, 25, 12, 0, seq % 60, tzinfo=UTC),
        agent_version="0.1.0",
        evidence=evidence(node, {"node_id": node_id, "seq": seq}),
    )


@asynccontextmanager
async def jetstream_store(url: str, topology: Topology) -> AsyncIterator[JetStreamEventStore]:
    """A store on the test's own streams, deleted afterwards."""
    store = await JetStreamEventStore.connect(url, topology)
    try:
        yield store
    finally:
        for spec in topology.streams:
            await store.js.delete_stream(spec.name)
        await store.close()


class Refusals:
    """Counts the conditional appends the given stores refuse (ConcurrencyConflict)."""

    def __init__(self, *stores: Any) -> None:
        self.count = 0
        for store in stores:
            self._count_on(store)

    def _count_on(self, store: Any) -> None:
        append = store.append

        async def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                return await append(*args, **kwargs)
            except ConcurrencyConflict:
                self.count += 1
                raise

        store.append = counted


async def framework(scope: Any, receive: Any, send: Any) -> None:
    """What a route served ahead of the framework hands the rest to: a plain ASGI app
    that says it answered (status 299, its method and path)."""
    body = f"framework {scope['method']} {scope['path']}".encode()
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": body})
