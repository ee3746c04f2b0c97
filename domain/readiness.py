"""Readiness through the five gates, in order, with exact claims (pure; the clock is an input).

Each gate decides only on the evidence it is given and names it; missing evidence is a
failing gate with its blocker, never a pass.
"""

from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec

from domain.heartbeat_report import ProfileReport

GATES = ("identity", "route", "protocol", "model", "customer")
LOCAL_READY = "local-ready"
MANAGED_ENROLLED = "managed-enrolled"
ROUTE_READY = "route-ready"
BENCHMARK_OBSERVED = "benchmark-observed"
PAID_ROUTE_ELIGIBLE = "paid-route eligible"
CLAIMS = (LOCAL_READY, MANAGED_ENROLLED, ROUTE_READY, BENCHMARK_OBSERVED, PAID_ROUTE_ELIGIBLE)
BLOCKERS = (
    "enrollment",
    "heartbeat",
    "runtime",
    "protocol_stake",
    "route_tier",
    "benchmark_proof",
    "queue_health",
    "customer_policy",
)
PAID_TIERS = frozenset({"portable_local", "network_beta"})
UNHEALTHY_QUEUES = frozenset({"blocked", "unhealthy"})


class EvidenceRef(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    kind: str
    event_id: str | None = None
    stream: str | None = None
    seq: int | None = None
    at: datetime | None = None


class Blocker(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    detail: str
    next_action: str


class GateResult(msgspec.Struct, frozen=True, kw_only=True):
    gate: str
    status: str
    """pass, fail, or per_request (decided for each customer request, never here)."""
    blockers: list[Blocker]
    evidence: list[EvidenceRef]


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    model: str | None
    evaluated_at: datetime
    claims: list[str]
    gates: list[GateResult]
    blockers: list[Blocker]
    """Every gate's blockers, in gate order."""


class EnrollmentFacts(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    ref: EvidenceRef


class HeartbeatFacts(msgspec.Struct, frozen=True, kw_only=True):
    heartbeat_seq: int
    sent_at: datetime
    recorded_at: datetime
    ref: EvidenceRef
    profiles: Sequence[ProfileReport] = ()


class ProtocolFacts(msgspec.Struct, frozen=True, kw_only=True):
    registered: bool
    active: bool
    stake_wei: int
    ref: EvidenceRef


class RouteFacts(msgspec.Struct, frozen=True, kw_only=True):
    """The node's broker route as the control plane saw it: the ledger's session state
    and the holding process's latest probe of that session."""

    connected: bool
    public_inference_allowed: bool
    ref: EvidenceRef
    probed_at: datetime | None = None
    probe_ok: bool = False
    probe_ref: EvidenceRef | None = None


class BenchmarkFacts(msgspec.Struct, frozen=True, kw_only=True):
    """A benchmark the control plane itself ran through the node's route."""

    observed_at: datetime
    ref: EvidenceRef


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    heartbeat_fresh_s: float = 90.0
    route_fresh_s: float = 60.0
    min_stake_wei: int = 0
    benchmark_fresh_s: float = 7 * 24 * 3600.0


class Evidence(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    enrollment: EnrollmentFacts | None = None
    heartbeat: HeartbeatFacts | None = None
    protocol: ProtocolFacts | None = None
    route: RouteFacts | None = None
    benchmarks: dict[str, BenchmarkFacts] = {}
    """Observed benchmarks by model."""


def evaluate(evidence: Evidence, model: str | None, policy: Policy, now: datetime) -> Readiness:
    """The five gates for one node and (optionally) one of its models, at ``now``."""
    profile = _profile(evidence.heartbeat, model)
    benchmark = evidence.benchmarks.get(model) if model else None
    gates = [
        _identity(evidence, policy, now),
        _route(evidence.route, policy, now),
        _protocol(evidence.protocol, policy),
        _model(model, profile, benchmark, policy, now),
        GateResult(gate="customer", status="per_request", blockers=[], evidence=[]),
    ]
    passed = {g.gate for g in gates if g.status == "pass"}
    claims = []
    if _local_ready(evidence.heartbeat, model, policy, now):
        claims.append(LOCAL_READY)
    if evidence.enrollment is not None and evidence.enrollment.status == "enrolled":
        claims.append(MANAGED_ENROLLED)
    if {"identity", "route"} <= passed:
        claims.append(ROUTE_READY)
    if benchmark is not None and _fresh(benchmark.observed_at, policy.benchmark_fresh_s, now):
        claims.append(BENCHMARK_OBSERVED)
    if {"identity", "route", "protocol", "model"} <= passed:
        claims.append(PAID_ROUTE_ELIGIBLE)
    return Readiness(
        node_id=evidence.node_id,
        model=model,
        evaluated_at=now,
        claims=claims,
        gates=gates,
        blockers=[b for g in gates for b in g.blockers],
    )


def heartbeat_observed_at(heartbeat: HeartbeatFacts) -> datetime:
    """The node's clock may run ahead: a heartbeat is no newer than when we received it."""
    return min(heartbeat.sent_at, heartbeat.recorded_at)


def _fresh(at: datetime, window_s: float, now: datetime) -> bool:
    return now - at <= timedelta(seconds=window_s)


def _gate(name: str, blockers: list[Blocker], evidence: list[EvidenceRef]) -> GateResult:
    return GateResult(
        gate=name, status="fail" if blockers else "pass", blockers=blockers, evidence=evidence
    )


def _identity(evidence: Evidence, policy: Policy, now: datetime) -> GateResult:
    blockers, refs = [], []
    enrollment, heartbeat = evidence.enrollment, evidence.heartbeat
    if enrollment is None:
        blockers.append(
            Blocker(
                code="enrollment",
                detail="the node is not enrolled",
                next_action="run `b3iq-host enroll --control-plane URL` on the host",
            )
        )
    else:
        refs.append(enrollment.ref)
        if enrollment.status == "pending":
            blockers.append(
                Blocker(
                    code="enrollment",
                    detail="enrollment awaits an operator's approval",
                    next_action=(
                        f"an operator approves it: POST /v1/nodes/{evidence.node_id}/approve"
                    ),
                )
            )
        elif enrollment.status != "enrolled":
            blockers.append(
                Blocker(
                    code="enrollment",
                    detail=f"enrollment is {enrollment.status}",
                    next_action="an admin reviews the revocation; the node cannot re-enroll itself",
                )
            )
    if heartbeat is None:
        blockers.append(
            Blocker(
                code="heartbeat",
                detail="no signed heartbeat received",
                next_action="run `b3iq-host run` on the enrolled host so it heartbeats",
            )
        )
    else:
        refs.append(heartbeat.ref)
        observed = heartbeat_observed_at(heartbeat)
        if not _fresh(observed, policy.heartbeat_fresh_s, now):
            age = int((now - observed).total_seconds())
            blockers.append(
                Blocker(
                    code="heartbeat",
                    detail=f"last heartbeat {age} s ago, older than {policy.heartbeat_fresh_s:g} s",
                    next_action="check that the host daemon runs and reaches the control plane",
                )
            )
    return _gate("identity", blockers, refs)


def _route(route: RouteFacts | None, policy: Policy, now: datetime) -> GateResult:
    if route is None:
        return _gate(
            "route",
            [
                Blocker(
                    code="route_tier",
                    detail="no broker route health evidence for this node",
                    next_action="connect the node's broker route and pass a route health check",
                )
            ],
            [],
        )
    blockers = []
    refs = [route.ref] + ([route.probe_ref] if route.probe_ref else [])
    if not route.connected:
        blockers.append(
            Blocker(
                code="route_tier",
                detail="the node's broker route is not connected",
                next_action="run `b3iq-host run` on the enrolled host; it dials the broker",
            )
        )
    elif route.probed_at is None or not _fresh(route.probed_at, policy.route_fresh_s, now):
        blockers.append(
            Blocker(
                code="route_tier",
                detail=f"no route probe answered in the last {policy.route_fresh_s:g} s",
                next_action="check the host's outbound connection to the control plane",
            )
        )
    elif not route.probe_ok:
        blockers.append(
            Blocker(
                code="route_tier",
                detail="the last route probe went unanswered",
                next_action="check the host's outbound connection to the control plane",
            )
        )
    if not route.public_inference_allowed:
        blockers.append(
            Blocker(
                code="route_tier",
                detail="public inference is not allowed on this route",
                next_action=(
                    "an operator allows it: PUT /v1/nodes/{id}/route/policy"
                    ' {"public_inference_allowed": true}'
                ),
            )
        )
    return _gate("route", blockers, refs)


def _protocol(protocol: ProtocolFacts | None, policy: Policy) -> GateResult:
    action = "register the node on the protocol registry, activate it and stake the minimum"
    if protocol is None:
        blocker = Blocker(
            code="protocol_stake", detail="no protocol registry observation", next_action=action
        )
        return _gate("protocol", [blocker], [])
    problems = []
    if not protocol.registered:
        problems.append("not registered")
    if not protocol.active:
        problems.append("not active")
    if protocol.stake_wei < policy.min_stake_wei:
        problems.append(f"stake {protocol.stake_wei} wei is below {policy.min_stake_wei} wei")
    blockers = (
        [Blocker(code="protocol_stake", detail="; ".join(problems), next_action=action)]
        if problems
        else []
    )
    return _gate("protocol", blockers, [protocol.ref])


def _model(
    model: str | None,
    profile: ProfileReport | None,
    benchmark: BenchmarkFacts | None,
    policy: Policy,
    now: datetime,
) -> GateResult:
    if profile is None:
        detail = "no model chosen" if model is None else f"the node reports no profile for {model}"
        blocker = Blocker(
            code="runtime",
            detail=detail,
            next_action="install the model on the host and restart `b3iq-host run`",
        )
        return _gate("model", [blocker], [])
    blockers = []
    if profile.status != "installed":
        blockers.append(
            Blocker(
                code="runtime",
                detail=f"profile status is {profile.status}",
                next_action="install the model and its runtime on the host",
            )
        )
    if profile.route_tier not in PAID_TIERS:
        blockers.append(
            Blocker(
                code="route_tier",
                detail=f"route tier {profile.route_tier} is not approved for paid routing",
                next_action="move the profile to an approved tier (network_beta or portable_local)",
            )
        )
    if not profile.network_eligible or not profile.paid_route_eligible:
        blockers.append(
            Blocker(
                code="route_tier",
                detail="the profile is not network and paid-route eligible",
                next_action="enable network serving for this model on the host",
            )
        )
    if profile.queue_health in UNHEALTHY_QUEUES:
        blockers.append(
            Blocker(
                code="queue_health",
                detail=f"queue health is {profile.queue_health}",
                next_action="reduce load or add capacity until the queue drains",
            )
        )
    refs = []
    if benchmark is None:
        blockers.append(
            Blocker(
                code="benchmark_proof",
                detail=(
                    "no benchmark observed by the control plane"
                    " (the host's own claim does not count)"
                ),
                next_action="run a control-plane benchmark of this model on the node",
            )
        )
    else:
        refs.append(benchmark.ref)
        if not _fresh(benchmark.observed_at, policy.benchmark_fresh_s, now):
            blockers.append(
                Blocker(
                    code="benchmark_proof",
                    detail="the observed benchmark is stale",
                    next_action="re-run the control-plane benchmark of this model",
                )
            )
    return _gate("model", blockers, refs)


def _profile(heartbeat: HeartbeatFacts | None, model: str | None) -> ProfileReport | None:
    if heartbeat is None or model is None:
        return None
    return next((p for p in heartbeat.profiles if p.model == model), None)


def _local_ready(
    heartbeat: HeartbeatFacts | None, model: str | None, policy: Policy, now: datetime
) -> bool:
    if heartbeat is None:
        return False
    if not _fresh(heartbeat_observed_at(heartbeat), policy.heartbeat_fresh_s, now):
        return False
    return any(
        p.status == "installed"
        and p.queue_health not in UNHEALTHY_QUEUES
        and (model is None or p.model == model)
        for p in heartbeat.profiles
    )
