from collections.abc import Sequence
from datetime import datetime
from typing import cast

import msgspec

from domain.decoding import Decoded
from domain.events import HeartbeatRecorded
from domain.heartbeat_report import HeartbeatReport, decode_report
from projections.db import Database

_UPSERT = """
INSERT INTO node_heartbeats AS h
    (node_id, heartbeat_seq, sent_at, recorded_at, agent_version, heartbeat_count, stream_seq,
     event_id, inventory, runtimes)
SELECT n, s, sa, ra, av, c, ss, e, i::jsonb, r::jsonb
FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::timestamptz[], $5::text[],
            $6::bigint[], $7::bigint[], $8::text[], $9::text[], $10::text[])
    AS t(n, s, sa, ra, av, c, ss, e, i, r)
ON CONFLICT (node_id) DO UPDATE SET
    heartbeat_seq = EXCLUDED.heartbeat_seq, sent_at = EXCLUDED.sent_at,
    recorded_at = EXCLUDED.recorded_at, agent_version = EXCLUDED.agent_version,
    heartbeat_count = h.heartbeat_count + EXCLUDED.heartbeat_count,
    stream_seq = EXCLUDED.stream_seq, event_id = EXCLUDED.event_id,
    inventory = coalesce(EXCLUDED.inventory, h.inventory),
    runtimes = coalesce(EXCLUDED.runtimes, h.runtimes)
"""

_PROFILES = """
INSERT INTO model_profiles AS m (node_id, model, profile_id, status, runtime_kind, route_tier,
    network_eligible, benchmark_verified, paid_route_eligible, queue_health, queue_depth,
    context_length, heartbeat_seq, reported_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::bool[], $8::bool[], $9::bool[], $10::text[], $11::int[], $12::int[], $13::bigint[],
    $14::timestamptz[])
ON CONFLICT (node_id, model) DO UPDATE SET
    profile_id = EXCLUDED.profile_id, status = EXCLUDED.status,
    runtime_kind = EXCLUDED.runtime_kind, route_tier = EXCLUDED.route_tier,
    network_eligible = EXCLUDED.network_eligible,
    benchmark_verified = EXCLUDED.benchmark_verified,
    paid_route_eligible = EXCLUDED.paid_route_eligible, queue_health = EXCLUDED.queue_health,
    queue_depth = EXCLUDED.queue_depth, context_length = EXCLUDED.context_length,
    heartbeat_seq = EXCLUDED.heartbeat_seq, reported_at = EXCLUDED.reported_at
"""
# Profiles the nodes no longer report. Updating the rest in place (rather than deleting
# and inserting every profile of every node each batch) leaves the indexes alone: most
# heartbeats repeat the same models, and index churn was most of the database's work.
_DROPPED = """
DELETE FROM model_profiles p USING unnest($1::text[]) AS b(node_id)
WHERE p.node_id = b.node_id
  AND (p.node_id, p.model) NOT IN (SELECT * FROM unnest($2::text[], $3::text[]))
"""

_json = msgspec.json.Encoder()
_HEARTBEAT = HeartbeatRecorded.__name__


class HeartbeatsProjection:
    """The latest heartbeat per node (with its inventory) and the node's model profiles.

    A batch collapses to one row per node, sent as arrays in a single statement: a
    replay costs a few round trips per batch, however many heartbeats it holds.
    """

    name = "heartbeats"
    stream = "heartbeats"
    handles = (HeartbeatRecorded,)
    tables = ("node_heartbeats", "model_profiles")

    async def apply(self, db: Database, batch: Sequence[Decoded]) -> None:
        # A node's heartbeats share its subject: only the latest of each is decoded.
        latest: dict[str, Decoded] = {}
        counts: dict[str, int] = {}
        for p in batch:
            if p.body.type == _HEARTBEAT:
                latest[p.subject] = p
                counts[p.subject] = counts.get(p.subject, 0) + 1
        if not latest:
            return
        columns: list[list[object]] = [[] for _ in range(10)]
        reports: dict[str, tuple[HeartbeatReport, datetime]] = {}
        for subject, p in latest.items():
            event = cast(HeartbeatRecorded, p.event)
            node_id = event.node_id
            report = _report(event)
            if report is not None:
                reports[node_id] = (report, p.body.occurred_at)
            row = (
                node_id,
                event.heartbeat_seq,
                event.sent_at,
                p.body.occurred_at,
                event.agent_version,
                counts[subject],
                p.seq,
                p.body.event_id,
                None if report is None else _json.encode(report.inventory).decode(),
                None if report is None else _json.encode(report.runtimes).decode(),
            )
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        await db.execute(_UPSERT, *columns)
        if reports:
            await _replace_profiles(db, reports)


def _report(event: HeartbeatRecorded) -> HeartbeatReport | None:
    if event.evidence.request_body is None:
        return None
    try:
        return decode_report(event.evidence.request_body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None  # verified on the way in; an older schema just carries no profiles


async def _replace_profiles(
    db: Database, reports: dict[str, tuple[HeartbeatReport, datetime]]
) -> None:
    columns: list[list[object]] = [[] for _ in range(14)]
    for node_id, (report, at) in reports.items():
        seen = set()
        for q in report.profiles:
            if q.model in seen:
                continue  # one profile per model: the first one reported
            seen.add(q.model)
            row = (
                node_id,
                q.model,
                q.profile_id,
                q.status,
                q.runtime_kind,
                q.route_tier,
                q.network_eligible,
                q.benchmark_verified,
                q.paid_route_eligible,
                q.queue_health,
                q.queue_depth,
                q.context_length,
                report.heartbeat_seq,
                at,
            )
            for column, value in zip(columns, row, strict=True):
                column.append(value)
    await db.execute(_DROPPED, list(reports), columns[0], columns[1])
    if columns[0]:
        await db.execute(_PROFILES, *columns)
