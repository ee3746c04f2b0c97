from collections.abc import Sequence
from typing import Any

from domain.decoding import Decoded
from domain.events import NodeEnrolled
from projections.db import Database


class NodesProjection:
    """Enrollment state per node; a re-enrollment replaces the node's key."""

    name = "nodes"
    stream = "ledger"
    tables = ("nodes",)

    async def apply(self, db: Database, batch: Sequence[Decoded]) -> None:
        latest: dict[str, tuple[Any, ...]] = {}
        for p in batch:
            if isinstance(p.event, NodeEnrolled):
                e = p.event
                latest[e.node_id] = (
                    e.node_id,
                    e.key_id,
                    e.public_key,
                    e.agent_version,
                    p.body.occurred_at,
                    p.seq,
                )
        if latest:
            await db.executemany(
                "INSERT INTO nodes (node_id, key_id, public_key, agent_version, enrolled_at,"
                " enrolled_seq, last_seq) VALUES ($1, $2, $3, $4, $5, $6, $6)"
                " ON CONFLICT (node_id) DO UPDATE SET key_id = EXCLUDED.key_id,"
                " public_key = EXCLUDED.public_key, agent_version = EXCLUDED.agent_version,"
                " enrolled_at = EXCLUDED.enrolled_at, enrolled_seq = EXCLUDED.enrolled_seq,"
                " last_seq = EXCLUDED.last_seq",
                list(latest.values()),
            )
