"""A node's broker route: sessions and policy on its ledger subject, probes as evidence.

Route events on ``route.<node id>`` carry the route's state after them, so a decision
needs only the subject's last event. Probes are frequent and only their latest matters,
so they go to the windowed evidence stream beside heartbeats.
"""

from datetime import datetime

import msgspec

from domain.events.base import Event


class RouteState(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    connected: bool = False
    session_id: str | None = None
    """The live connection; a newer session replaces an older one."""
    public_inference_allowed: bool = False
    """Operator policy: may the network send public (paid) inference over this route."""


class RouteConnected(Event, frozen=True, kw_only=True):
    node_id: str
    session_id: str
    process_id: str
    """Which control-plane process holds the connection (it answers for the node)."""
    key_id: str
    """The node key that signed the connection request."""
    rtt_ms: float
    route: RouteState


class RouteDisconnected(Event, frozen=True, kw_only=True):
    node_id: str
    session_id: str
    reason: str
    """node_closed, probe_failed, replaced, node_revoked or shutdown."""
    route: RouteState


class RoutePolicySet(Event, frozen=True, kw_only=True):
    node_id: str
    public_inference_allowed: bool
    set_by: str
    reason: str
    route: RouteState


class RouteProbed(Event, frozen=True, kw_only=True):
    """A ping over the live connection and its answer, timed by the holding process."""

    node_id: str
    session_id: str
    ok: bool
    rtt_ms: float | None
    probed_at: datetime


ROUTE_EVENTS = (RouteConnected, RouteDisconnected, RoutePolicySet, RouteProbed)
