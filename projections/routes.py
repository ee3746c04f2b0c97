"""Each node's broker route: its session and policy (ledger) and latest probe (evidence)."""

from collections.abc import Sequence
from typing import Any

from domain.decoding import Decoded
from domain.events import RouteConnected, RouteDisconnected, RoutePolicySet, RouteProbed
from projections.db import Database

_ROUTE = """
INSERT INTO node_routes AS r (node_id, connected, session_id, process_id,
    public_inference_allowed, connected_at, disconnected_at, disconnect_reason,
    connect_rtt_ms, event_id, seq, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (node_id) DO UPDATE SET
    connected = EXCLUDED.connected, session_id = EXCLUDED.session_id,
    process_id = coalesce(EXCLUDED.process_id, r.process_id),
    public_inference_allowed = EXCLUDED.public_inference_allowed,
    connected_at = coalesce(EXCLUDED.connected_at, r.connected_at),
    disconnected_at = coalesce(EXCLUDED.disconnected_at, r.disconnected_at),
    disconnect_reason = coalesce(EXCLUDED.disconnect_reason, r.disconnect_reason),
    connect_rtt_ms = coalesce(EXCLUDED.connect_rtt_ms, r.connect_rtt_ms),
    event_id = EXCLUDED.event_id, seq = EXCLUDED.seq, updated_at = EXCLUDED.updated_at
"""

_PROBE = """
INSERT INTO node_route_probes (node_id, session_id, ok, rtt_ms, probed_at, event_id, stream_seq)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (node_id) DO UPDATE SET
    session_id = EXCLUDED.session_id, ok = EXCLUDED.ok, rtt_ms = EXCLUDED.rtt_ms,
    probed_at = EXCLUDED.probed_at, event_id = EXCLUDED.event_id,
    stream_seq = EXCLUDED.stream_seq
"""


class RoutesProjection:
    name = "routes"
    stream = "ledger"
    handles = (RouteConnected, RouteDisconnected, RoutePolicySet)
    tables = ("node_routes",)

    async def apply(self, db: Database, batch: Sequence[Decoded]) -> None:
        rows: list[tuple[Any, ...]] = []
        for p in batch:
            e = p.event
            if not isinstance(e, RouteConnected | RouteDisconnected | RoutePolicySet):
                continue
            at = p.body.occurred_at
            connected = e if isinstance(e, RouteConnected) else None
            rows.append(
                (
                    e.node_id,
                    e.route.connected,
                    e.route.session_id,
                    connected.process_id if connected else None,
                    e.route.public_inference_allowed,
                    at if connected else None,
                    at if isinstance(e, RouteDisconnected) else None,
                    e.reason if isinstance(e, RouteDisconnected) else None,
                    connected.rtt_ms if connected else None,
                    p.body.event_id,
                    p.seq,
                    at,
                )
            )
        if rows:  # in order: a node's later event in the batch overwrites its earlier one
            await db.executemany(_ROUTE, rows)


class RouteProbesProjection:
    name = "route_probes"
    stream = "heartbeats"
    handles = (RouteProbed,)
    tables = ("node_route_probes",)

    async def apply(self, db: Database, batch: Sequence[Decoded]) -> None:
        latest: dict[str, tuple[Any, ...]] = {}
        for p in batch:
            e = p.event
            if isinstance(e, RouteProbed):
                latest[e.node_id] = (
                    e.node_id,
                    e.session_id,
                    e.ok,
                    e.rtt_ms,
                    e.probed_at,
                    p.body.event_id,
                    p.seq,
                )
        if latest:
            await db.executemany(_PROBE, list(latest.values()))
