"""The readiness engine: five gates in order, exact claims, the clock as an input."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.heartbeat_report import ProfileReport
from domain.readiness import (
    BenchmarkFacts,
    EnrollmentFacts,
    Evidence,
    EvidenceRef,
    HeartbeatFacts,
    Policy,
    ProtocolFacts,
    RouteFacts,
    evaluate,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = Policy(heartbeat_fresh_s=90, min_stake_wei=100)


def profile(**overrides: object) -> ProfileReport:
    values: dict[str, object] = {
        "profile_id": "p1",
        "model": "tiny",
        "status": "installed",
        "runtime_kind": "llama_cpp",
        "route_tier": "network_beta",
        "network_eligible": True,
        "benchmark_verified": True,
        "paid_route_eligible": True,
        "queue_health": "healthy",
    }
    values.update(overrides)
    return ProfileReport(**values)  # type: ignore[arg-type]


def evidence(beat_at: datetime = NOW, **overrides: object) -> Evidence:
    values: dict[str, object] = {
        "node_id": "n1",
        "enrollment": EnrollmentFacts(
            status="enrolled", ref=EvidenceRef(kind="enrollment", event_id="e1", seq=3)
        ),
        "heartbeat": HeartbeatFacts(
            heartbeat_seq=5,
            sent_at=beat_at,
            recorded_at=beat_at,
            ref=EvidenceRef(kind="heartbeat", seq=9, at=beat_at),
            profiles=[profile()],
        ),
        "protocol": ProtocolFacts(
            registered=True, active=True, stake_wei=100, ref=EvidenceRef(kind="protocol")
        ),
    }
    values.update(overrides)
    return Evidence(**values)  # type: ignore[arg-type]


def gate_status(readiness: object) -> dict[str, str]:
    return {g.gate: g.status for g in readiness.gates}  # type: ignore[attr-defined]


def codes(readiness: object) -> list[str]:
    return [b.code for b in readiness.blockers]  # type: ignore[attr-defined]


def test_without_route_and_benchmark_evidence_those_gates_fail_never_pass() -> None:
    r = evaluate(evidence(), "tiny", POLICY, NOW)
    assert [g.gate for g in r.gates] == ["identity", "route", "protocol", "model", "customer"]
    assert gate_status(r) == {
        "identity": "pass",
        "route": "fail",
        "protocol": "pass",
        "model": "fail",
        "customer": "per_request",
    }
    assert codes(r) == ["route_tier", "benchmark_proof"]
    assert r.claims == ["local-ready", "managed-enrolled"]
    assert all(b.next_action for b in r.blockers)
    assert [e.kind for e in r.gates[0].evidence] == ["enrollment", "heartbeat"]


def test_a_heartbeat_goes_stale_against_the_clock_at_query_time() -> None:
    e = evidence(beat_at=NOW)
    assert "heartbeat" not in codes(evaluate(e, "tiny", POLICY, NOW + timedelta(seconds=90)))
    later = evaluate(e, "tiny", POLICY, NOW + timedelta(seconds=91))
    assert codes(later)[0] == "heartbeat"
    assert "local-ready" not in later.claims


def test_a_node_clock_ahead_does_not_extend_freshness() -> None:
    beat = HeartbeatFacts(
        heartbeat_seq=1,
        sent_at=NOW + timedelta(hours=1),
        recorded_at=NOW,
        ref=EvidenceRef(kind="heartbeat"),
        profiles=[profile()],
    )
    r = evaluate(evidence(heartbeat=beat), "tiny", POLICY, NOW + timedelta(seconds=100))
    assert codes(r)[0] == "heartbeat"


def test_every_gate_passes_only_with_all_its_evidence() -> None:
    full = evidence(
        route=route(),
        benchmarks={"tiny": BenchmarkFacts(observed_at=NOW, ref=EvidenceRef(kind="bench"))},
    )
    r = evaluate(full, "tiny", POLICY, NOW)
    assert r.blockers == []
    assert r.claims == [
        "local-ready",
        "managed-enrolled",
        "route-ready",
        "benchmark-observed",
        "paid-route eligible",
    ]
    stale = evaluate(full, "tiny", Policy(benchmark_fresh_s=60), NOW + timedelta(seconds=61))
    assert "benchmark_proof" in codes(stale)
    assert "paid-route eligible" not in stale.claims


def route(**changes: Any) -> RouteFacts:
    facts = {
        "connected": True,
        "public_inference_allowed": True,
        "ref": EvidenceRef(kind="route"),
        "probed_at": NOW,
        "probe_ok": True,
        "probe_ref": EvidenceRef(kind="route_probe"),
    }
    return RouteFacts(**{**facts, **changes})


@pytest.mark.parametrize(
    ("facts", "detail"),
    [
        ({"connected": False}, "not connected"),
        ({"probed_at": None}, "no route probe"),
        ({"probed_at": NOW - timedelta(seconds=61)}, "no route probe"),
        ({"probe_ok": False}, "unanswered"),
        ({"public_inference_allowed": False}, "public inference is not allowed"),
    ],
)
def test_the_route_gate_needs_a_live_probed_route_that_allows_public_inference(
    facts: dict[str, Any], detail: str
) -> None:
    r = evaluate(evidence(route=route(**facts)), "tiny", Policy(route_fresh_s=60), NOW)
    route_gate = r.gates[1]
    assert route_gate.status == "fail"
    assert [b.code for b in route_gate.blockers] == ["route_tier"]
    assert detail in route_gate.blockers[0].detail
    assert "route-ready" not in r.claims


def test_a_live_route_names_its_session_and_its_probe_as_evidence() -> None:
    r = evaluate(evidence(route=route()), "tiny", POLICY, NOW)
    assert r.gates[1].status == "pass"
    assert [e.kind for e in r.gates[1].evidence] == ["route", "route_probe"]
    assert "route-ready" in r.claims


def test_missing_evidence_names_each_blocker() -> None:
    r = evaluate(Evidence(node_id="n9"), "tiny", POLICY, NOW)
    assert codes(r) == ["enrollment", "heartbeat", "route_tier", "protocol_stake", "runtime"]
    assert r.claims == []


def test_pending_enrollment_low_stake_and_bad_profiles_block() -> None:
    e = evidence(
        enrollment=EnrollmentFacts(status="pending", ref=EvidenceRef(kind="enrollment")),
        protocol=ProtocolFacts(
            registered=True, active=False, stake_wei=5, ref=EvidenceRef(kind="protocol")
        ),
        heartbeat=HeartbeatFacts(
            heartbeat_seq=1,
            sent_at=NOW,
            recorded_at=NOW,
            ref=EvidenceRef(kind="heartbeat"),
            profiles=[
                profile(
                    status="runtime_missing",
                    route_tier="local_convenience",
                    queue_health="blocked",
                    paid_route_eligible=False,
                )
            ],
        ),
    )
    r = evaluate(e, "tiny", POLICY, NOW)
    assert codes(r) == [
        "enrollment",
        "route_tier",
        "protocol_stake",
        "runtime",
        "route_tier",
        "route_tier",
        "queue_health",
        "benchmark_proof",
    ]
    assert "not active" in r.blockers[2].detail
    assert r.claims == []
