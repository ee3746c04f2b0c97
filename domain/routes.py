"""Decisions on a node's route subject (pure): connect, disconnect, policy.

Several control-plane processes may hold connections from one node over time (it
reconnects through a load balancer); the newest session wins, and an older holder's
late disconnect must not undo a newer connection.
"""

from domain.events import (
    Event,
    RouteConnected,
    RouteDisconnected,
    RoutePolicySet,
    RouteState,
)


def route_state(event: Event | None, node_id: str) -> RouteState:
    if isinstance(event, RouteConnected | RouteDisconnected | RoutePolicySet):
        return event.route
    return RouteState(node_id=node_id)


def decide_connected(
    state: RouteState, *, session_id: str, process_id: str, key_id: str, rtt_ms: float
) -> list[Event]:
    route = RouteState(
        node_id=state.node_id,
        connected=True,
        session_id=session_id,
        public_inference_allowed=state.public_inference_allowed,
    )
    return [
        RouteConnected(
            node_id=state.node_id,
            session_id=session_id,
            process_id=process_id,
            key_id=key_id,
            rtt_ms=rtt_ms,
            route=route,
        )
    ]


def decide_disconnected(state: RouteState, *, session_id: str, reason: str) -> list[Event]:
    """Nothing when a newer session has taken over (or this one is already closed)."""
    if not state.connected or state.session_id != session_id:
        return []
    route = RouteState(
        node_id=state.node_id,
        connected=False,
        session_id=session_id,
        public_inference_allowed=state.public_inference_allowed,
    )
    return [
        RouteDisconnected(node_id=state.node_id, session_id=session_id, reason=reason, route=route)
    ]


def decide_policy(state: RouteState, *, allowed: bool, by: str, reason: str) -> list[Event]:
    if state.public_inference_allowed == allowed:
        return []  # a retried PUT changes nothing
    route = RouteState(
        node_id=state.node_id,
        connected=state.connected,
        session_id=state.session_id,
        public_inference_allowed=allowed,
    )
    return [
        RoutePolicySet(
            node_id=state.node_id,
            public_inference_allowed=allowed,
            set_by=by,
            reason=reason,
            route=route,
        )
    ]
