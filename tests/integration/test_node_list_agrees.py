"""The node list's SQL filters judge every node as the readiness engine does.

A mixed population is built through the API (fresh, stale and silent heartbeats; pending,
enrolled and revoked nodes; protocol observations that pass and fail; profiles that are
installed, missing, blocked or absent) and projected; then, under an injected clock,
every claim and blocker filter, with and without a model, must list exactly the nodes
whose readiness (GET /v1/nodes/{id}/readiness) says so.
"""

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from domain.readiness import BLOCKERS, CLAIMS
from domain.streams import Topology
from projections.node_queries import BLOCKER_FILTERS, CLAIM_FILTERS
from tests.conftest import Servers
from tests.integration.test_managed import Harness, _harness
from tests.managed_support import profile

MODELS = (None, "tiny", "big")


@pytest.fixture
async def cp(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Harness]:
    settings = {"require_approval": True, "min_stake_wei": 100}
    async for harness in _harness(servers, database_url, topology, tmp_path, **settings):
        yield harness


async def population(cp: Harness) -> None:
    """Nodes named for what sets them apart; the clock ends 100 s after the first beat."""
    reports = {
        "fresh": [profile("tiny")],
        "stale": [profile("tiny")],
        "silent": None,
        "pending": [profile("tiny")],
        "revoked": [profile("tiny")],
        "queue-blocked": [
            profile("tiny", queue_health="blocked"),
            profile("big", status="ready_to_install"),
        ],
        "runtime-missing": [profile("tiny", status="runtime_missing")],
        "other-model": [profile("big", route_tier="local_convenience")],
        "no-profiles": [],
    }
    stakes = {
        "fresh": (True, "1000"),
        "stale": (True, "1000"),
        "silent": (False, "1000"),
        "revoked": (True, "1000"),
        "queue-blocked": (True, "10"),
        "runtime-missing": (True, "100"),
        "other-model": (True, "5000"),
        "no-profiles": (True, "1000"),
    }
    nodes = {name: cp.node(name) for name in reports}
    for name, node in nodes.items():
        assert (await node.enroll()).status_code == 201
        if name != "pending":
            approved = await cp.client.post(f"/v1/nodes/{name}/approve", headers=cp.as_admin())
            assert approved.status_code == 201, approved.text
    for name, (active, stake) in stakes.items():
        observed = await cp.client.post(
            f"/v1/admin/nodes/{name}/protocol",
            json={"registered": True, "active": active, "stake_wei": stake, "source": "test"},
            headers=cp.as_admin(),
        )
        assert observed.status_code == 201, observed.text
    assert (
        await nodes["stale"].heartbeat(nodes["stale"].report(profiles=reports["stale"]))
    ).status_code == 201
    cp.clock.now += timedelta(seconds=60)
    for name, profiles in reports.items():
        if name not in ("stale", "silent"):
            body = nodes[name].report(profiles=profiles)
            assert (await nodes[name].heartbeat(body)).status_code == 201
    revoked = await cp.client.post(
        "/v1/nodes/revoked/revoke", json={"reason": "lost"}, headers=cp.as_admin()
    )
    assert revoked.status_code == 201
    await cp.project()
    cp.clock.now += timedelta(seconds=40)  # "stale" is now 100 s old, the rest 40 s


def codes(readiness: dict[str, Any], gates: set[str] | None = None) -> set[str]:
    return {
        b["code"]
        for g in readiness["gates"]
        if gates is None or g["gate"] in gates
        for b in g["blockers"]
    }


async def judged(cp: Harness, node_id: str, model: str | None) -> tuple[set[str], set[str]] | None:
    """The engine's claims and blockers by the list's rules; None: not in the list."""
    overall = await cp.readiness(node_id)
    reported = [m["model"] for m in overall["models"]]  # type: ignore[union-attr]
    if model is not None:
        if model not in reported:
            return None  # the model filter lists only nodes that report the model
        [chosen] = (await cp.readiness(node_id, model))["models"]  # type: ignore[misc]
        return set(chosen["claims"]), codes(chosen)
    # Without a model: the node as a whole, across every model it reports.
    node: dict[str, Any] = overall["node"]  # type: ignore[assignment]
    claims, blockers = set(node["claims"]), codes(node, {"identity", "route", "protocol"})
    for chosen in overall["models"]:  # type: ignore[attr-defined]
        claims |= set(chosen["claims"])
        blockers |= codes(chosen)
    if not reported:
        blockers |= codes(node, {"model"})  # nothing to run: runtime
    return claims, blockers


async def listed(cp: Harness, **params: str) -> set[str]:
    page = await cp.client.get(
        "/v1/nodes", params={**params, "limit": "500"}, headers=cp.as_admin()
    )
    assert page.status_code == 200, page.text
    assert page.json()["next_cursor"] is None
    return {n["node_id"] for n in page.json()["data"]}


async def agree(cp: Harness, everyone: set[str]) -> None:
    for model in MODELS:
        engine = {n: await judged(cp, n, model) for n in sorted(everyone)}
        scope = {"model": model} if model else {}
        for claim in CLAIMS:
            expected = {n for n, j in engine.items() if j is not None and claim in j[0]}
            assert await listed(cp, claim=claim, **scope) == expected, (claim, model)
        for blocker in BLOCKERS:
            expected = {n for n, j in engine.items() if j is not None and blocker in j[1]}
            assert await listed(cp, blocker=blocker, **scope) == expected, (blocker, model)


async def test_every_filter_lists_what_the_engine_says(cp: Harness) -> None:
    await population(cp)
    assert set(CLAIMS) == CLAIM_FILTERS
    assert set(BLOCKERS) == BLOCKER_FILTERS
    everyone = await listed(cp)
    assert len(everyone) == 9
    await agree(cp, everyone)

    # The population is mixed enough for the comparison to mean something.
    assert await listed(cp, claim="local-ready") == {"fresh", "pending", "revoked", "other-model"}
    assert await listed(cp, blocker="heartbeat") == {"stale", "silent"}
    assert await listed(cp, blocker="protocol_stake") == {"silent", "pending", "queue-blocked"}
    assert await listed(cp, blocker="runtime") == {
        "silent",
        "queue-blocked",
        "runtime-missing",
        "no-profiles",
    }
    assert await listed(cp, blocker="queue_health", model="tiny") == {"queue-blocked"}

    cp.clock.now += timedelta(seconds=51)  # every heartbeat is past 90 s now
    await agree(cp, everyone)
    assert await listed(cp, claim="local-ready") == set()
    assert await listed(cp, blocker="heartbeat") == everyone
