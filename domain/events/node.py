from datetime import datetime

from domain.events.base import Event, NodeEvidence


class NodeEnrolled(Event, frozen=True, kw_only=True):
    node_id: str
    key_id: str
    public_key: str
    agent_version: str
    evidence: NodeEvidence
    """The node's signed answer to its enrollment challenge."""


class HeartbeatRecorded(Event, frozen=True, kw_only=True):
    node_id: str
    heartbeat_seq: int
    """The node's own monotonically increasing counter."""
    sent_at: datetime
    agent_version: str
    evidence: NodeEvidence
    """The node's signed heartbeat report (inventory and readiness posture)."""
