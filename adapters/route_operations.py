"""What operators do with node routes: set the public-inference policy, see the route,
send a request over it (diagnostics), and run an observed benchmark."""

from datetime import datetime

import asyncpg
import msgspec

from adapters.broker import Broker
from adapters.recorder import Recorder
from domain.decoding import Decoded
from domain.events import Event
from domain.routes import decide_policy, route_state
from projections.node_queries import route_row


class RouteView(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    connected: bool
    public_inference_allowed: bool
    held_here: bool
    """Whether this API process holds the connection (any process can dispatch to it)."""
    session_id: str | None = None
    connected_at: datetime | None = None
    disconnected_at: datetime | None = None
    disconnect_reason: str | None = None
    last_probe_at: datetime | None = None
    last_probe_ok: bool | None = None
    last_probe_rtt_ms: float | None = None


class PolicyChange(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    public_inference_allowed: bool
    seq: int | None
    """The ledger sequence of the change; None when it was already so."""


class RouteOperations:
    def __init__(self, pool: asyncpg.Pool, recorder: Recorder, broker: Broker) -> None:
        self._pool = pool
        self._recorder = recorder
        self.broker = broker

    async def set_policy(self, node_id: str, allowed: bool, by: str, reason: str) -> PolicyChange:
        def decide(tail: Decoded | None) -> list[Event]:
            state = route_state(tail.event if tail else None, node_id)
            return decide_policy(state, allowed=allowed, by=by, reason=reason)

        result = await self._recorder.record(
            self._recorder.topology.subject("route", node_id), decide
        )
        return PolicyChange(
            node_id=node_id,
            public_inference_allowed=allowed,
            seq=None if result is None else result.last_seq,
        )

    async def view(self, node_id: str) -> RouteView:
        async with self._pool.acquire() as conn:
            row = await route_row(conn, node_id)
        held = node_id in self.broker.connections
        if row is None:
            return RouteView(
                node_id=node_id, connected=False, public_inference_allowed=False, held_here=held
            )
        current = row["current_probe"]
        return RouteView(
            node_id=node_id,
            connected=row["connected"],
            public_inference_allowed=row["public_inference_allowed"],
            held_here=held,
            session_id=row["session_id"],
            connected_at=row["connected_at"],
            disconnected_at=row["disconnected_at"],
            disconnect_reason=row["disconnect_reason"],
            last_probe_at=row["probed_at"] if current else None,
            last_probe_ok=row["ok"] if current else None,
            last_probe_rtt_ms=row["rtt_ms"] if current else None,
        )
