"""The hosted gateway end to end: a customer's key, two API processes, a real node.

The node passes all five gates on real evidence (its heartbeat, a live probed route, a
protocol observation, an observed benchmark); customers pay through the official
`openai` client, and the money path is read back from the billing APIs and the log.
"""

import asyncio
from typing import Any

import httpx
import msgspec
import openai
import pytest

from adapters.gateway import HostedRequest, prompt_estimate
from domain.billing.state import Policy
from domain.streams import Topology
from tests.billing_support import COMPLETION_PRICE, PROMPT_PRICE, customer
from tests.route_support import World

PROMPT = "zebra-quartz-4711 says hello"


async def account(world: World, secret: str) -> dict[str, Any]:
    for plane in (world.one.plane, world.two.plane):
        await plane.gateway.drain()
    await world.cp.project()
    async with httpx.AsyncClient(base_url=world.one.url) as http:
        response = await http.get(
            "/v1/billing/account", headers={"authorization": f"Bearer {secret}"}
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def client(world: World, secret: str, via: str = "two") -> openai.AsyncOpenAI:
    served = world.two if via == "two" else world.one
    return openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key=secret, max_retries=0)


def cost(usage: Any) -> int:
    return int(usage.prompt_tokens) * PROMPT_PRICE + int(usage.completion_tokens) * COMPLETION_PRICE


async def test_a_paid_request_debits_usage_times_price_and_pays_the_node(paid: World) -> None:
    _, secret = await customer(paid.one.plane, 1_000_000)
    gateway = client(paid, secret)
    models = await gateway.models.list()
    assert [m.id for m in models.data] == ["tiny"]

    done = await gateway.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": PROMPT}], max_tokens=8, temperature=0
    )
    info = done.model_extra["b3iq"]  # type: ignore[index]
    assert info["runtime_kind"] == "llama_cpp" and len(info["receipt_hash"]) == 64
    assert info["latency_ms"] >= info["ttft_ms"] >= 0
    spent = cost(done.usage)

    stream = await gateway.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        done.choices[0].message.content
    )
    spent += cost(chunks[-1].usage)
    await gateway.close()

    after = await account(paid, secret)
    assert (after["balance_wei"], after["reserved_wei"]) == (str(1_000_000 - spent), "0")
    async with httpx.AsyncClient(base_url=paid.two.url) as http:
        public = (await http.get(f"/v1/receipts/{info['receipt_hash']}")).json()
        treasury = (
            await http.get("/v1/admin/billing/treasury-report", headers=paid.admin())
        ).json()
    assert public["node_id"] == paid.node_id and "customer_id" not in str(public)
    assert int(treasury["customer_debits_wei"]) == spent
    assert int(treasury["node_payouts_wei"]) + int(treasury["protocol_fees_wei"]) == spent


async def test_idempotent_retries_charge_once(paid: World) -> None:
    _, secret = await customer(paid.one.plane, 1_000_000)
    body = {"model": "tiny", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4}
    headers = {"authorization": f"Bearer {secret}", "idempotency-key": "retry-me"}
    async with httpx.AsyncClient(timeout=30) as http:
        first = await http.post(f"{paid.one.url}/v1/chat/completions", json=body, headers=headers)
        for plane in (paid.one.plane, paid.two.plane):
            await plane.gateway.drain()
        await paid.cp.project()
        again = await http.post(f"{paid.two.url}/v1/chat/completions", json=body, headers=headers)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json()["b3iq"]["idempotent_replay"] is True
    assert again.json()["b3iq"]["receipt_hash"] == first.json()["b3iq"]["receipt_hash"]
    usage = first.json()["usage"]
    charged = usage["prompt_tokens"] * PROMPT_PRICE + usage["completion_tokens"] * COMPLETION_PRICE
    assert (await account(paid, secret))["balance_wei"] == str(1_000_000 - charged)


async def test_a_failing_node_releases_the_reservation(
    paid: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, secret = await customer(paid.one.plane, 1_000_000)

    async def broken(*_: object, **__: object) -> None:
        raise RuntimeError("the GPU fell off")

    monkeypatch.setattr(paid.node.runtimes["tiny"], "complete", broken)
    with pytest.raises(openai.APIStatusError) as failed:
        await client(paid, secret).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": PROMPT}], max_tokens=4
        )
    assert failed.value.status_code == 502
    assert failed.value.body["code"] == "router_dispatch_failed"  # type: ignore[index]
    assert failed.value.body["b3iq"]["status"] == 502  # type: ignore[index]
    after = await account(paid, secret)
    assert (after["balance_wei"], after["reserved_wei"]) == ("1000000", "0")


async def test_errors_are_openai_shaped_with_stable_codes(paid: World) -> None:
    _, poor = await customer(paid.one.plane, 5)
    with pytest.raises(openai.APIStatusError) as broke:
        await client(paid, poor).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": PROMPT}], max_tokens=4
        )
    assert (broke.value.status_code, broke.value.body["code"]) == (402, "insufficient_balance")  # type: ignore[index]
    assert broke.value.body["type"] == "insufficient_quota"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        await client(paid, "b3iq_gateway_nope").models.list()
    _, secret = await customer(paid.one.plane, 1_000_000)
    with pytest.raises(openai.BadRequestError) as many:
        await client(paid, secret).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}], n=2
        )
    assert many.value.body["param"] == "n"  # type: ignore[index]
    with pytest.raises(openai.APIStatusError) as nowhere:
        await client(paid, secret).chat.completions.create(
            model="huge", messages=[{"role": "user", "content": "x"}], max_tokens=4
        )
    assert nowhere.value.status_code == 503
    assert nowhere.value.body["code"] == "no_healthy_candidates"  # type: ignore[index]


@pytest.mark.parametrize("limit", ["balance", "spend_cap"])
async def test_concurrent_requests_never_spend_more_than_the_limit(paid: World, limit: str) -> None:
    """200 requests through two API processes against a balance, or a rolling spend cap,
    that covers exactly ten quotes."""
    body = {"model": "tiny", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4}
    estimate = prompt_estimate(msgspec.convert(body, HostedRequest))
    quote = estimate * PROMPT_PRICE + 4 * COMPLETION_PRICE
    if limit == "balance":
        start, code = 10 * quote, "insufficient_balance"
        _, secret = await customer(paid.one.plane, start)
    else:
        start, code = 10**9, "gateway_spend_cap_exceeded"
        capped = Policy(spend_cap_wei=str(10 * quote), spend_window_s=3600)
        _, secret = await customer(paid.one.plane, start, key_policy=capped)
    headers = {"authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(timeout=60) as http:
        responses = await asyncio.gather(
            *(
                http.post(
                    f"{(paid.one, paid.two)[i % 2].url}/v1/chat/completions",
                    json=body,
                    headers=headers,
                )
                for i in range(200)
            )
        )
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(ok) >= 10
    assert {(r.status_code, r.json()["error"]["code"]) for r in refused} == {(402, code)}
    spent = sum(
        r.json()["usage"]["prompt_tokens"] * PROMPT_PRICE
        + r.json()["usage"]["completion_tokens"] * COMPLETION_PRICE
        for r in ok
    )
    assert spent <= 10 * quote
    after = await account(paid, secret)
    assert after["reserved_wei"] == "0"
    assert int(after["balance_wei"]) == start - spent >= 0


async def test_no_prompt_is_stored_anywhere(paid: World, topology: Topology) -> None:
    _, secret = await customer(paid.one.plane, 1_000_000)
    gateway = client(paid, secret)
    await gateway.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": PROMPT}], max_tokens=4
    )
    await gateway.close()
    await account(paid, secret)
    plane = paid.cp.plane
    async with plane.pool.acquire() as conn:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        for row in tables:
            dump = await conn.fetchval(f"SELECT string_agg(t::text, '') FROM \"{row[0]}\" t")
            assert PROMPT not in (dump or ""), row[0]
    for spec in topology.streams:
        _, last = await plane.store.bounds(spec.name)
        reader = await plane.store.reader(spec.name, 1)
        seen = 0
        while seen < last:
            batch = await reader.next_batch(1000, timeout=2)
            assert batch, spec.name
            seen = batch[-1].seq
            assert not any(PROMPT.encode() in e.data for e in batch)
        await reader.close()
