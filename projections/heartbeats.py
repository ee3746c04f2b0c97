from collections.abc import Sequence
from datetime import datetime

from domain.decoding import Decoded
from domain.events import HeartbeatRecorded
from projections.db import Database

_UPSERT = """
INSERT INTO node_heartbeats AS h
    (node_id, heartbeat_seq, sent_at, recorded_at, agent_version, heartbeat_count, stream_seq)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::timestamptz[],
                     $5::text[], $6::bigint[], $7::bigint[])
ON CONFLICT (node_id) DO UPDATE SET
    heartbeat_seq = EXCLUDED.heartbeat_seq, sent_at = EXCLUDED.sent_at,
    recorded_at = EXCLUDED.recorded_at, agent_version = EXCLUDED.agent_version,
    heartbeat_count = h.heartbeat_count + EXCLUDED.heartbeat_count,
    stream_seq = EXCLUDED.stream_seq
"""


class HeartbeatsProjection:
    """The latest heartbeat per node and how many were seen.

    A batch collapses to one row per node, sent as arrays in a single statement: a
    replay costs one round trip per batch, however many heartbeats it holds.
    """

    name = "heartbeats"
    stream = "heartbeats"
    tables = ("node_heartbeats",)

    async def apply(self, db: Database, batch: Sequence[Decoded]) -> None:
        latest: dict[str, tuple[HeartbeatRecorded, datetime, int]] = {}
        counts: dict[str, int] = {}
        for p in batch:
            if isinstance(p.event, HeartbeatRecorded):
                latest[p.event.node_id] = (p.event, p.body.occurred_at, p.seq)
                counts[p.event.node_id] = counts.get(p.event.node_id, 0) + 1
        if not latest:
            return
        columns: list[list[object]] = [[] for _ in range(7)]
        for node_id, (event, recorded_at, seq) in latest.items():
            row = (
                node_id,
                event.heartbeat_seq,
                event.sent_at,
                recorded_at,
                event.agent_version,
                counts[node_id],
                seq,
            )
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        await db.execute(_UPSERT, *columns)
