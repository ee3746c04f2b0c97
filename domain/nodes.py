"""The node aggregate: enrollment, approval, revocation and key rotation as decisions (pure)."""

import msgspec

from domain.enrollment import Challenge
from domain.events import (
    Event,
    NodeApproved,
    NodeEnrolled,
    NodeEvidence,
    NodeKeyRotated,
    NodeRevoked,
    NodeState,
)
from domain.signing import key_id_for

PENDING, ENROLLED, REVOKED = "pending", "enrolled", "revoked"


class Refused(Exception):
    """A decision that appends nothing: a stable code and a precise reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code, self.reason = code, reason


def state_of(event: Event | None) -> NodeState | None:
    """The node's state after the last event on its subject."""
    if isinstance(event, NodeEnrolled):
        return NodeState(
            node_id=event.node_id,
            key_id=event.key_id,
            public_key=event.public_key,
            status=event.status,
            challenge_issued_at=event.challenge_issued_at,
        )
    if isinstance(event, NodeApproved | NodeRevoked | NodeKeyRotated):
        return event.node
    return None


def decide_enrollment(
    state: NodeState | None,
    challenge: Challenge,
    answer: NodeEvidence,
    agent_version: str,
    *,
    require_approval: bool,
) -> list[Event]:
    if state is not None:
        if state.status == REVOKED:
            raise Refused("unauthorized", "node_revoked")
        if state.public_key != challenge.public_key:
            raise Refused("unauthorized", "key_mismatch")
        spent = state.challenge_issued_at
        if spent is not None and challenge.issued_at <= spent:
            raise Refused("challenge_used", "challenge_used")
    status = (PENDING if require_approval else ENROLLED) if state is None else state.status
    return [
        NodeEnrolled(
            node_id=challenge.node_id,
            key_id=answer.key_id,
            public_key=challenge.public_key,
            agent_version=agent_version,
            evidence=answer,
            status=status,
            challenge_id=challenge.challenge_id,
            challenge_issued_at=challenge.issued_at,
        )
    ]


def decide_approval(state: NodeState | None, by: str) -> list[Event]:
    if state is None:
        raise Refused("not_found", "unknown_node")
    if state.status == REVOKED:
        raise Refused("node_revoked", "node_revoked")
    if state.status == ENROLLED:
        return []
    node = msgspec.structs.replace(state, status=ENROLLED)
    return [NodeApproved(node_id=state.node_id, approved_by=by, node=node)]


def decide_revocation(state: NodeState | None, by: str, reason: str) -> list[Event]:
    if state is None:
        raise Refused("not_found", "unknown_node")
    if state.status == REVOKED:
        return []
    node = msgspec.structs.replace(state, status=REVOKED)
    return [NodeRevoked(node_id=state.node_id, revoked_by=by, reason=reason, node=node)]


def decide_rotation(
    state: NodeState | None,
    signed_by: str,
    new_public_key: bytes,
    new_public_key_text: str,
    evidence: NodeEvidence,
) -> list[Event]:
    if state is None or state.status == REVOKED:
        raise Refused("unauthorized", "unknown_node" if state is None else "node_revoked")
    if signed_by != state.key_id:
        raise Refused("invalid_signature", "wrong_key")
    key_id = key_id_for(new_public_key)
    node = msgspec.structs.replace(state, key_id=key_id, public_key=new_public_key_text)
    return [
        NodeKeyRotated(
            node_id=state.node_id,
            old_key_id=state.key_id,
            key_id=key_id,
            public_key=new_public_key_text,
            evidence=evidence,
            node=node,
        )
    ]
