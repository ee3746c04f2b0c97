from collections.abc import Sequence
from typing import Any

from domain.decoding import Decoded
from domain.events import NodeApproved, NodeEnrolled, NodeKeyRotated, NodeRevoked
from projections.db import Database

_UPSERT = """
INSERT INTO nodes AS n (node_id, key_id, public_key, status, agent_version, enrolled_at,
    enrolled_seq, enrollment_event_id, approved_at, revoked_at, revoked_reason, last_seq)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (node_id) DO UPDATE SET
    key_id = EXCLUDED.key_id, public_key = EXCLUDED.public_key, status = EXCLUDED.status,
    agent_version = coalesce(EXCLUDED.agent_version, n.agent_version),
    enrolled_at = coalesce(EXCLUDED.enrolled_at, n.enrolled_at),
    enrolled_seq = coalesce(EXCLUDED.enrolled_seq, n.enrolled_seq),
    enrollment_event_id = coalesce(EXCLUDED.enrollment_event_id, n.enrollment_event_id),
    approved_at = coalesce(EXCLUDED.approved_at, n.approved_at),
    revoked_at = coalesce(EXCLUDED.revoked_at, n.revoked_at),
    revoked_reason = coalesce(EXCLUDED.revoked_reason, n.revoked_reason),
    last_seq = EXCLUDED.last_seq
"""
_COLUMNS = (
    "node_id",
    "key_id",
    "public_key",
    "status",
    "agent_version",
    "enrolled_at",
    "enrolled_seq",
    "enrollment_event_id",
    "approved_at",
    "revoked_at",
    "revoked_reason",
    "last_seq",
)


class NodesProjection:
    """Enrollment state per node: enrolled, approved, revoked, its current key.

    A batch folds to one row per node (every node event carries the node's state), so
    it costs one statement per node touched, however many events it held.
    """

    name = "nodes"
    stream = "ledger"
    handles = (NodeEnrolled, NodeApproved, NodeRevoked, NodeKeyRotated)
    tables = ("nodes",)

    async def apply(self, db: Database, batch: Sequence[Decoded]) -> None:
        rows: dict[str, dict[str, Any]] = {}
        for p in batch:
            e, at = p.event, p.body.occurred_at
            if isinstance(e, NodeEnrolled):
                row = rows.setdefault(e.node_id, {})
                row.update(
                    key_id=e.key_id,
                    public_key=e.public_key,
                    status=e.status,
                    agent_version=e.agent_version,
                    enrolled_at=at,
                    enrolled_seq=p.seq,
                    enrollment_event_id=p.body.event_id,
                )
            elif isinstance(e, NodeApproved | NodeRevoked | NodeKeyRotated):
                row = rows.setdefault(e.node_id, {})
                row.update(key_id=e.node.key_id, public_key=e.node.public_key, status=e.node.status)
                if isinstance(e, NodeApproved):
                    row["approved_at"] = at
                elif isinstance(e, NodeRevoked):
                    row.update(revoked_at=at, revoked_reason=e.reason)
            else:
                continue
            row["last_seq"] = p.seq
        if rows:
            await db.executemany(
                _UPSERT,
                [
                    tuple({**row, "node_id": node_id}.get(c) for c in _COLUMNS)
                    for node_id, row in rows.items()
                ],
            )
