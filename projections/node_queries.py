"""Read-side queries over the node read models: plain SQL, time judged at query time."""

from datetime import datetime, timedelta
from typing import Any

import msgspec

from domain.heartbeat_report import InventoryReport, ProfileReport, RuntimeReport
from domain.readiness import (
    BenchmarkFacts,
    EnrollmentFacts,
    Evidence,
    EvidenceRef,
    HeartbeatFacts,
    Policy,
    ProtocolFacts,
    RouteFacts,
)
from projections.db import Database


class NodeSummary(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    status: str
    key_id: str
    agent_version: str
    enrolled_at: datetime
    last_heartbeat_at: datetime | None
    heartbeat_seq: int | None
    heartbeat_fresh: bool


class NodeDetail(msgspec.Struct, frozen=True, kw_only=True):
    node: NodeSummary
    approved_at: datetime | None
    revoked_at: datetime | None
    revoked_reason: str | None
    inventory: InventoryReport | None
    runtimes: list[RuntimeReport]
    profiles: list[ProfileReport]


class NodeFilter(msgspec.Struct, frozen=True, kw_only=True):
    status: str | None = None
    claim: str | None = None
    blocker: str | None = None
    model: str | None = None
    tier: str | None = None


_SELECT = """
SELECT n.node_id, n.status, n.key_id, n.agent_version, n.enrolled_at, n.enrolled_seq,
       n.enrollment_event_id, n.approved_at, n.revoked_at, n.revoked_reason,
       h.heartbeat_seq, h.sent_at, h.recorded_at, h.stream_seq, h.event_id AS hb_event_id,
       h.inventory::text AS inventory, h.runtimes::text AS runtimes,
       least(h.sent_at, h.recorded_at) AS observed_at
FROM nodes n LEFT JOIN node_heartbeats h ON h.node_id = n.node_id{bound}
"""
_FRESH = "least(h.sent_at, h.recorded_at) >= $1"
_PROFILE = "SELECT 1 FROM model_profiles p WHERE p.node_id = n.node_id AND p.node_id > $3"
_UNHEALTHY = "p.queue_health IN ('blocked', 'unhealthy')"
_IDENTITY = f"(n.status = 'enrolled' AND h.node_id IS NOT NULL AND {_FRESH})"
_ROUTE = (
    "EXISTS (SELECT 1 FROM node_routes r JOIN node_route_probes q"
    " ON q.node_id = r.node_id AND q.session_id = r.session_id"
    " WHERE r.node_id = n.node_id AND r.node_id > $3 AND r.connected"
    " AND r.public_inference_allowed AND q.ok AND q.probed_at >= $4)"
)
_PROTOCOL = (
    "EXISTS (SELECT 1 FROM node_protocol r WHERE r.node_id = n.node_id"
    " AND r.node_id > $3 AND r.registered AND r.active AND r.stake_wei >= $2)"
)
_OBSERVED = (
    "EXISTS (SELECT 1 FROM node_benchmarks b WHERE b.node_id = p.node_id"
    " AND b.model = p.model AND b.source = 'observed' AND b.observed_at >= $5)"
)
_TIER_BAD = (
    "(p.route_tier NOT IN ('portable_local', 'network_beta')"
    " OR NOT p.network_eligible OR NOT p.paid_route_eligible)"
)
_MODEL_PASS = f"p.status = 'installed' AND NOT {_TIER_BAD} AND NOT {_UNHEALTHY} AND {_OBSERVED}"
# Claims and blockers as SQL, judging as domain.readiness does (tests/integration/
# test_node_list_agrees.py holds them to it). With a model, the list holds the nodes that
# report it, judged for it. Without one, a node is judged as a whole: a claim it makes for
# any model it reports, a blocker on any of them or on a model-free gate, and `runtime`
# when it reports no model at all.
_CLAIMS = {
    "managed-enrolled": "n.status = 'enrolled'",
    "local-ready": f"{_FRESH} AND EXISTS ({_PROFILE} AND p.status = 'installed'"
    f" AND NOT {_UNHEALTHY} {{model}})",
    "route-ready": f"{_IDENTITY} AND {_ROUTE}",
    "benchmark-observed": f"EXISTS ({_PROFILE} AND {_OBSERVED} {{model}})",
    "paid-route eligible": f"{_IDENTITY} AND {_ROUTE} AND {_PROTOCOL}"
    f" AND EXISTS ({_PROFILE} AND {_MODEL_PASS} {{model}})",
}
_BLOCKERS = {
    "enrollment": "n.status <> 'enrolled'",
    "heartbeat": f"(h.node_id IS NULL OR NOT {_FRESH})",
    "route_tier": f"(NOT {_ROUTE} OR EXISTS ({_PROFILE} AND {_TIER_BAD} {{model}}))",
    "benchmark_proof": f"EXISTS ({_PROFILE} AND NOT {_OBSERVED} {{model}})",
    "protocol_stake": f"NOT {_PROTOCOL}",
    "runtime": f"(NOT EXISTS ({_PROFILE} {{model}})"
    f" OR EXISTS ({_PROFILE} AND p.status <> 'installed' {{model}}))",
    "queue_health": f"EXISTS ({_PROFILE} AND {_UNHEALTHY} {{model}})",
    "customer_policy": "FALSE",
}
CLAIM_FILTERS = frozenset(_CLAIMS)
BLOCKER_FILTERS = frozenset(_BLOCKERS)


def _summary(row: Any, cutoff: datetime) -> NodeSummary:
    observed = row["observed_at"]
    return NodeSummary(
        node_id=row["node_id"],
        status=row["status"],
        key_id=row["key_id"],
        agent_version=row["agent_version"],
        enrolled_at=row["enrolled_at"],
        last_heartbeat_at=observed,
        heartbeat_seq=row["heartbeat_seq"],
        heartbeat_fresh=observed is not None and observed >= cutoff,
    )


async def list_nodes(
    db: Database,
    where: NodeFilter,
    *,
    after: str | None,
    limit: int,
    now: datetime,
    policy: Policy,
) -> list[NodeSummary]:
    """One page in node id order, after the cursor ``after`` (keyset pagination)."""
    cutoff = now - timedelta(seconds=policy.heartbeat_fresh_s)
    # $3, the cursor, bounds every table the query touches, not just nodes: the planner
    # does not carry a range across a join, and would merge-join from the first row.
    args: list[object] = [
        cutoff,
        policy.min_stake_wei,
        after or "",
        now - timedelta(seconds=policy.route_fresh_s),
        now - timedelta(seconds=policy.benchmark_fresh_s),
    ]
    clauses = []

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    model = f"AND p.model = {arg(where.model)}" if where.model else ""
    if where.model:
        clauses.append(f"EXISTS ({_PROFILE} {model})")
    if where.tier:
        clauses.append(f"EXISTS ({_PROFILE} AND p.route_tier = {arg(where.tier)} {model})")
    if where.status:
        clauses.append(f"n.status = {arg(where.status)}")
    if where.claim:
        clauses.append(_CLAIMS[where.claim].format(model=model))
    if where.blocker:
        clauses.append(_BLOCKERS[where.blocker].format(model=model))
    # $1..$5 are always bound; referencing them keeps the parameter types known.
    sql = (
        f"{_SELECT.format(bound=' AND h.node_id > $3')}"
        " WHERE $1::timestamptz IS NOT NULL AND $2::numeric IS NOT NULL"
        " AND $4::timestamptz IS NOT NULL AND $5::timestamptz IS NOT NULL AND n.node_id > $3"
        f"{''.join(' AND ' + c for c in clauses)} ORDER BY n.node_id LIMIT {arg(limit)}"
    )
    rows = await db.fetch(sql, *args)
    return [_summary(r, cutoff) for r in rows]


_inventory = msgspec.json.Decoder(InventoryReport)
_runtimes = msgspec.json.Decoder(list[RuntimeReport])


async def profiles_of(db: Database, node_id: str) -> list[ProfileReport]:
    rows = await db.fetch(
        "SELECT profile_id, model, status, runtime_kind, route_tier, network_eligible,"
        " benchmark_verified, paid_route_eligible, queue_health, queue_depth, context_length"
        " FROM model_profiles WHERE node_id = $1 ORDER BY model",
        node_id,
    )
    return [ProfileReport(**dict(r)) for r in rows]


async def node_detail(
    db: Database, node_id: str, *, now: datetime, policy: Policy
) -> tuple[NodeDetail, Evidence] | None:
    """The node and its readiness evidence (without protocol facts); None if unknown."""
    row = await db.fetchrow(f"{_SELECT.format(bound='')} WHERE n.node_id = $1", node_id)
    if row is None:
        return None
    cutoff = now - timedelta(seconds=policy.heartbeat_fresh_s)
    profiles = await profiles_of(db, node_id)
    detail = NodeDetail(
        node=_summary(row, cutoff),
        approved_at=row["approved_at"],
        revoked_at=row["revoked_at"],
        revoked_reason=row["revoked_reason"],
        inventory=_inventory.decode(row["inventory"]) if row["inventory"] else None,
        runtimes=_runtimes.decode(row["runtimes"]) if row["runtimes"] else [],
        profiles=profiles,
    )
    evidence = msgspec.structs.replace(
        _evidence(row, profiles),
        route=await route_facts(db, node_id),
        benchmarks=await observed_benchmarks(db, node_id),
    )
    return detail, evidence


async def route_row(db: Database, node_id: str) -> Any:
    """The node's route and its latest probe; ``current_probe``: the probe is of the
    route's present session (an older session's probe proves nothing about this one)."""
    return await db.fetchrow(
        "SELECT r.connected, r.session_id, r.public_inference_allowed, r.connected_at,"
        " r.disconnected_at, r.disconnect_reason, r.event_id, r.seq, r.updated_at,"
        " q.ok, q.probed_at, q.rtt_ms, q.event_id AS probe_event_id, q.stream_seq,"
        " q.session_id IS NOT DISTINCT FROM r.session_id AND q.node_id IS NOT NULL"
        " AS current_probe"
        " FROM node_routes r LEFT JOIN node_route_probes q ON q.node_id = r.node_id"
        " WHERE r.node_id = $1",
        node_id,
    )


async def route_facts(db: Database, node_id: str) -> RouteFacts | None:
    row = await route_row(db, node_id)
    if row is None:
        return None
    probe = row["current_probe"]
    return RouteFacts(
        connected=row["connected"],
        public_inference_allowed=row["public_inference_allowed"],
        ref=EvidenceRef(
            kind="route",
            event_id=row["event_id"],
            stream="ledger",
            seq=row["seq"],
            at=row["updated_at"],
        ),
        probed_at=row["probed_at"] if probe else None,
        probe_ok=bool(row["ok"]) if probe else False,
        probe_ref=EvidenceRef(
            kind="route_probe",
            event_id=row["probe_event_id"],
            stream="heartbeats",
            seq=row["stream_seq"],
            at=row["probed_at"],
        )
        if probe
        else None,
    )


async def observed_benchmarks(db: Database, node_id: str) -> dict[str, BenchmarkFacts]:
    """Only what the control plane observed: a node's own benchmark never counts."""
    rows = await db.fetch(
        "SELECT model, observed_at, event_id, seq FROM node_benchmarks"
        " WHERE node_id = $1 AND source = 'observed'",
        node_id,
    )
    return {
        r["model"]: BenchmarkFacts(
            observed_at=r["observed_at"],
            ref=EvidenceRef(
                kind="benchmark_observed",
                event_id=r["event_id"],
                stream="ledger",
                seq=r["seq"],
                at=r["observed_at"],
            ),
        )
        for r in rows
    }


def _evidence(row: Any, profiles: list[ProfileReport]) -> Evidence:
    enrollment = EnrollmentFacts(
        status=row["status"],
        ref=EvidenceRef(
            kind="enrollment",
            event_id=row["enrollment_event_id"],
            stream="ledger",
            seq=row["enrolled_seq"],
            at=row["enrolled_at"],
        ),
    )
    heartbeat = None
    if row["heartbeat_seq"] is not None:
        heartbeat = HeartbeatFacts(
            heartbeat_seq=row["heartbeat_seq"],
            sent_at=row["sent_at"],
            recorded_at=row["recorded_at"],
            ref=EvidenceRef(
                kind="heartbeat",
                event_id=row["hb_event_id"],
                stream="heartbeats",
                seq=row["stream_seq"],
                at=row["recorded_at"],
            ),
            profiles=profiles,
        )
    return Evidence(node_id=row["node_id"], enrollment=enrollment, heartbeat=heartbeat)


def with_protocol(evidence: Evidence, protocol: ProtocolFacts | None) -> Evidence:
    return msgspec.structs.replace(evidence, protocol=protocol)


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """A node that passes the Identity, Route, Protocol and Model gates for one model."""

    node_id: str
    profile_id: str
    route_tier: str
    queue_depth: int
    tokens_per_s: float
    observed_at: datetime


_ELIGIBLE = f"""
SELECT {{columns}}
FROM nodes n
JOIN node_heartbeats h ON h.node_id = n.node_id
JOIN model_profiles p ON p.node_id = n.node_id{{model}}
JOIN node_benchmarks b ON b.node_id = n.node_id AND b.model = p.model AND b.source = 'observed'
WHERE $3::text = '' AND {_IDENTITY} AND {_ROUTE} AND {_PROTOCOL} AND {_MODEL_PASS}
"""


def _gate_args(now: datetime, policy: Policy) -> list[object]:
    return [
        now - timedelta(seconds=policy.heartbeat_fresh_s),
        policy.min_stake_wei,
        "",  # no cursor: $3 bounds nothing here
        now - timedelta(seconds=policy.route_fresh_s),
        now - timedelta(seconds=policy.benchmark_fresh_s),
    ]


async def candidates(
    db: Database, model: str, *, now: datetime, policy: Policy, limit: int = 16
) -> list[Candidate]:
    """Eligible nodes for ``model``, the least queued and then the fastest observed first:
    the node list's `paid-route eligible` judgement (and so the readiness engine's)."""
    columns = "n.node_id, p.profile_id, p.route_tier, p.queue_depth, b.tokens_per_s, b.observed_at"
    sql = _ELIGIBLE.format(columns=columns, model=" AND p.model = $6")
    rows = await db.fetch(
        f"{sql} ORDER BY p.queue_depth, b.tokens_per_s DESC LIMIT {int(limit)}",
        *_gate_args(now, policy),
        model,
    )
    return [Candidate(**dict(r)) for r in rows]


async def servable_models(
    db: Database, *, now: datetime, policy: Policy
) -> list[tuple[str, datetime]]:
    """Models with at least one eligible profile, with their freshest observation."""
    sql = _ELIGIBLE.format(columns="p.model, max(b.observed_at) AS observed_at", model="")
    rows = await db.fetch(f"{sql} GROUP BY p.model ORDER BY p.model", *_gate_args(now, policy))
    return [(r["model"], r["observed_at"]) for r in rows]
