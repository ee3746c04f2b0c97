from datetime import datetime

import msgspec

from domain.events.base import Event, NodeEvidence


class NodeState(msgspec.Struct, frozen=True, kw_only=True):
    """A node as the ledger knows it after an event: node events carry it, so a decision
    needs only the subject's last event."""

    node_id: str
    key_id: str
    public_key: str
    status: str
    """pending (awaiting approval), enrolled, or revoked."""
    challenge_issued_at: datetime | None = None
    """Issue time of the last challenge used: older or equal challenges are spent."""


class NodeEnrolled(Event, frozen=True, kw_only=True):
    node_id: str
    key_id: str
    public_key: str
    agent_version: str
    evidence: NodeEvidence
    """The node's signed answer to its enrollment challenge."""
    status: str = "enrolled"
    """pending when the control plane requires an operator's approval."""
    challenge_id: str = ""
    challenge_issued_at: datetime | None = None


class HeartbeatRecorded(Event, frozen=True, kw_only=True):
    node_id: str
    heartbeat_seq: int
    """The node's own monotonically increasing counter."""
    sent_at: datetime
    agent_version: str
    evidence: NodeEvidence
    """The node's signed heartbeat report (inventory and readiness posture)."""


class NodeApproved(Event, frozen=True, kw_only=True):
    node_id: str
    approved_by: str
    """The admin token id of the operator who approved."""
    node: NodeState


class NodeRevoked(Event, frozen=True, kw_only=True):
    node_id: str
    revoked_by: str
    reason: str
    node: NodeState


class NodeKeyRotated(Event, frozen=True, kw_only=True):
    node_id: str
    old_key_id: str
    key_id: str
    public_key: str
    evidence: NodeEvidence
    """The request signed by the old key that names the new one."""
    node: NodeState
