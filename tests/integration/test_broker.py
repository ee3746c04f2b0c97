"""The broker route with a real node daemon and two control-plane API processes.

Both control planes serve over real sockets (uvicorn) against the same NATS and Postgres;
the node runs its Managed Mode loops (heartbeats, commands, route) from its own state, and
serves no port at all: everything reaches it over the connection it dials out.
"""

from datetime import timedelta
from typing import Any

import httpx
import msgspec
import openai
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from node.managed.client import ControlPlaneClient
from node.managed.route import BROKER_PATH, broker_url
from tests.route_support import FRESH_S, World, eventually


def chat(stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 8,
        "temperature": 0,
        "seed": 1,
        "stream": stream,
        **extra,
    }


async def test_the_route_is_recorded_probed_and_gated_by_policy(world: World) -> None:
    route = await world.route(via=world.two)
    assert route["connected"] is True
    assert route["held_here"] is False  # the node dialled the first process
    assert route["last_probe_ok"] is True
    assert route["last_probe_rtt_ms"] >= 0
    gate = (await world.gates())["route"]
    assert gate["status"] == "fail"
    assert [b["detail"] for b in gate["blockers"]] == [
        "public inference is not allowed on this route"
    ]

    await world.allow_public()
    gate = (await world.gates())["route"]
    assert gate["status"] == "pass", gate
    assert [e["kind"] for e in gate["evidence"]] == ["route", "route_probe"]

    world.cp.clock.now += timedelta(seconds=world.cp.plane.settings.route_fresh_s + 1)
    gate = (await world.gates())["route"]
    assert "no route probe answered" in gate["blockers"][0]["detail"]
    await world.one.plane.managed.broker.probe_all()  # the holder probes on its schedule
    assert (await world.gates())["route"]["status"] == "pass"


@pytest.mark.parametrize("via", ["holder", "other"])
async def test_routed_requests_reach_the_node_from_either_process(world: World, via: str) -> None:
    served = world.one if via == "holder" else world.two
    base = f"{served.url}/v1/nodes/{world.node_id}/route"
    async with httpx.AsyncClient() as http:
        plain = await http.post(f"{base}/chat/completions", json=chat(), headers=world.admin())
    assert plain.status_code == 200, plain.text
    body = plain.json()
    assert body["object"] == "chat.completion"
    assert body["usage"]["completion_tokens"] > 0
    assert len(body["b3iq"]["receipt_hash"]) == 64

    client = openai.AsyncOpenAI(base_url=base, api_key=world.cp.admin)
    stream = await client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=8,
        temperature=0,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == body["choices"][0]["message"]["content"]  # greedy: the same answer
    assert chunks[-1].usage is not None
    await client.close()


async def test_node_errors_and_ineligible_models_come_back_with_their_codes(
    world: World,
) -> None:
    base = f"{world.two.url}/v1/nodes/{world.node_id}/route/chat/completions"
    async with httpx.AsyncClient() as http:
        missing = await http.post(base, json=chat(model="nope"), headers=world.admin())
        invalid = await http.post(base, json={"model": "tiny"}, headers=world.admin())
    assert missing.status_code == 403  # not offered to the network, let alone present
    assert missing.json()["error"]["code"] == "model_not_network_eligible"
    assert invalid.status_code == 400
    assert invalid.json()["error"]["code"] == "invalid_request"


async def test_an_observed_benchmark_makes_the_profile_benchmark_observed_until_stale(
    world: World,
) -> None:
    async with httpx.AsyncClient(base_url=world.two.url, timeout=60) as http:
        path = f"/v1/nodes/{world.node_id}/benchmarks"
        first = await http.post(path, json={"model": "tiny"}, headers=world.admin())
        again = await http.post(path, json={"model": "tiny"}, headers=world.admin())
        assert first.status_code == 201, first.text
        observed = first.json()
        assert observed["set_id"] == "b3iq-bench-v1"
        assert len(observed["runs"]) == 3
        assert observed["tokens_per_s"] > 0
        assert observed["runtime_kind"] == "llama_cpp"
        assert again.json()["output_sha256"] == observed["output_sha256"]  # deterministic

        await world.cp.project()
        listed = (await http.get(path, headers=world.admin())).json()["data"]
    assert [(b["source"], b["counts_for_paid_routing"]) for b in listed] == [("observed", True)]
    model = (await world.gates())["model"]
    assert "benchmark_proof" not in [b["code"] for b in model["blockers"]]
    readiness = await world.cp.readiness(world.node_id, "tiny")
    assert "benchmark-observed" in readiness["models"][0]["claims"]  # type: ignore[index]

    # The harness clock started before the benchmark ran (which the other process timed).
    world.cp.clock.now += timedelta(seconds=FRESH_S + 60)
    model = (await world.gates())["model"]
    stale = [b for b in model["blockers"] if b["code"] == "benchmark_proof"]
    assert stale[0]["detail"] == "the observed benchmark is stale"


async def test_a_dropped_route_is_recorded_and_the_node_dials_again(world: World) -> None:
    before = (await world.route())["session_id"]
    world.one.plane.managed.broker.connections[world.node_id].close("probe_failed")
    await eventually(lambda: _reconnected(world, before))
    route = await world.route()
    assert route["connected"] is True
    assert route["session_id"] != before

    await world.one.stop()  # the holding process goes away: nobody answers for the node
    async with httpx.AsyncClient() as http:
        down = await http.post(
            f"{world.two.url}/v1/nodes/{world.node_id}/route/chat/completions",
            json=chat(),
            headers=world.admin(),
        )
    assert down.status_code == 503
    assert down.json()["error"]["code"] == "route_unavailable"
    route = await world.route(via=world.two)
    assert (route["connected"], route["disconnect_reason"]) == (False, "shutdown")


async def _reconnected(world: World, before: str) -> bool:
    conn = world.one.plane.managed.broker.connections.get(world.node_id)
    return conn is not None and conn.session_id != before and not conn.closed.is_set()


async def test_connections_are_refused_without_a_valid_signed_upgrade(world: World) -> None:
    url = broker_url(world.one.url)
    with pytest.raises(InvalidStatus) as unsigned:
        async with connect(url):
            pass
    assert unsigned.value.response.status_code == 401
    assert b"missing_signature_headers" in unsigned.value.response.body

    client = ControlPlaneClient(world.one.url, world.node.identity)
    headers = client.signed_headers("GET", BROKER_PATH, b"")
    await client.close()
    headers["x-b3iq-signature"] = headers["x-b3iq-signature"][::-1]
    with pytest.raises(InvalidStatus) as forged:
        async with connect(url, additional_headers=headers):
            pass
    assert forged.value.response.status_code == 401

    revoked = await world.cp.client.post(
        f"/v1/nodes/{world.node_id}/revoke", json={"reason": "test"}, headers=world.admin()
    )
    assert revoked.status_code == 201, revoked.text
    await world.one.plane.managed.broker.probe_all()
    route = await world.route()
    assert (route["connected"], route["disconnect_reason"]) == (False, "node_revoked")
    client = ControlPlaneClient(world.one.url, world.node.identity)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers=client.signed_headers("GET", BROKER_PATH, b"")):
            pass
    await client.close()
    assert refused.value.response.status_code == 401
    assert msgspec.json.decode(refused.value.response.body)["error"]["detail"] == "node_revoked"


async def test_bad_route_requests_are_refused_here_not_left_to_time_out(world: World) -> None:
    """Found by fuzzing: a body that is not JSON made a dispatch frame the node could not
    read (no reply ever came, then a 502); an unknown node was a 503 as if its route were
    down; a benchmark of a model the node does not offer was a 502."""
    async with httpx.AsyncClient(base_url=world.one.url, timeout=10) as http:
        route = f"/v1/nodes/{world.node_id}/route/chat/completions"
        for body in (b"", b"not json", b"[1, 2]"):
            refused = await http.post(route, content=body, headers=world.admin())
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["code"] == "invalid_request"
        for path in ("/v1/nodes/nobody/route/chat/completions", "/v1/nodes/nobody/benchmarks"):
            unknown = await http.post(path, json=chat(), headers=world.admin())
            assert unknown.status_code == 404, unknown.text
        bench = f"/v1/nodes/{world.node_id}/benchmarks"
        missing = await http.post(bench, json={"model": "nope"}, headers=world.admin())
        assert missing.status_code == 403, missing.text
        assert missing.json()["error"]["code"] == "model_not_network_eligible"
        # The route still works: nothing was left waiting on the node.
        fine = await http.post(route, json=chat(), headers=world.admin())
        assert fine.status_code == 200, fine.text
