"""The money path against real NATS and PostgreSQL: reserve, settle, release, and no
overshoot of balance or spend cap under concurrency across two API processes."""

import asyncio
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from adapters.billing import Billing, Reservation, Settlement
from adapters.bootstrap import ControlPlane, bootstrap
from adapters.http.problems import ApiError
from adapters.shared_tails import TailNotice
from adapters.stale_sweeper import StaleSweeper
from domain.billing.state import Policy
from domain.decoding import decode_stored
from domain.sealing import seal
from domain.signing import Keyring, Signer
from domain.streams import Topology
from tests.billing_support import customer, principal, receipt
from tests.conftest import Servers
from tests.integration.test_managed import Harness, _harness
from tests.support import Refusals

NODE = Signer.generate()
KEYS = Keyring([NODE.public_key])
QUOTE_WEI = 10 * 2 + 10 * 10  # 10 prompt tokens at 2 wei, max_tokens 10 at 10 wei


@pytest.fixture
async def cp(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Harness]:
    async for harness in _harness(servers, database_url, topology, tmp_path):
        yield harness


@pytest.fixture
async def second(cp: Harness) -> AsyncIterator[ControlPlane]:
    """Another API process on the same log and database."""
    plane = await bootstrap(cp.plane.settings, clock=cp.clock)
    yield plane
    await plane.close()


async def reserve(billing: Billing, secret: str, job: str, key: str | None = None) -> Reservation:
    who = await principal(billing, secret)
    quoted = await billing.quote(who, "tiny", 10, 10)
    assert quoted.amount_wei == QUOTE_WEI
    return await billing.reserve(
        who, model="tiny", route_tier="network_beta", quote=quoted, job_id=job, idempotency_key=key
    )


async def balances(billing: Billing, customer_id: str) -> tuple[int, int]:
    state = await billing.account(customer_id)
    assert state is not None
    return int(state.balance_wei), int(state.reserved_wei)


async def test_settle_debits_usage_pays_the_node_and_releases_the_rest(cp: Harness) -> None:
    billing = cp.plane.managed.billing
    customer_id, secret = await customer(cp.plane, 1000)
    held = await reserve(billing, secret, "job-1")
    assert (held.state, held.amount_wei) == ("queued", QUOTE_WEI)
    claimed = await billing.claim(held, "node-a")
    assert claimed.state == "claimed"
    assert await balances(billing, customer_id) == (1000, QUOTE_WEI)

    signed = receipt(NODE, "node-a", 7, 3, cp.clock(), dispatch_id=held.reservation_id)
    settled = await billing.settle(held, signed, KEYS)
    cost = 7 * 2 + 3 * 10
    assert (settled.debited_wei, settled.released_wei) == (cost, QUOTE_WEI - cost)
    assert (settled.fee_wei, settled.payout_wei) == (cost * 500 // 10_000, cost - 2)
    assert await balances(billing, customer_id) == (1000 - cost, 0)
    await cp.project()  # the account lets a finished reservation go; the read models answer
    again = await billing.settle(held, signed, KEYS)
    assert again.duplicate and again.debited_wei == cost
    assert await balances(billing, customer_id) == (1000 - cost, 0)

    await cp.project()
    async with cp.plane.pool.acquire() as conn:
        kinds = await conn.fetch(
            "SELECT kind, amount_wei, balance_after_wei, reserved_after_wei FROM billing_entries"
            " WHERE customer_id = $1 ORDER BY seq",
            customer_id,
        )
        payout = await conn.fetchrow("SELECT * FROM node_payouts")
        row = await conn.fetchrow("SELECT * FROM billing_reservations")
        public = await conn.fetchrow("SELECT * FROM receipts_accepted")
    assert [(k["kind"], int(k["amount_wei"])) for k in kinds] == [
        ("credit", 1000),
        ("reserve", QUOTE_WEI),
        ("debit", cost),
        ("release", QUOTE_WEI - cost),
    ]
    assert (int(kinds[-1]["balance_after_wei"]), int(kinds[-1]["reserved_after_wei"])) == (
        1000 - cost,
        0,
    )
    assert (payout["node_id"], int(payout["amount_wei"]), payout["state"]) == (
        "node-a",
        cost - 2,
        "pending",
    )
    assert (row["state"], int(row["debited_wei"]), row["receipt_hash"]) == (
        "settled",
        cost,
        signed.receipt_hash,
    )
    assert public["receipt_hash"] == signed.receipt_hash and "customer_id" not in dict(public)


async def test_release_frees_everything_and_debits_nothing(cp: Harness) -> None:
    billing = cp.plane.managed.billing
    customer_id, secret = await customer(cp.plane, 1000)
    held = await reserve(billing, secret, "job-1")
    released = await billing.release(held, "node_failed")
    assert released.state == "released"
    assert await balances(billing, customer_id) == (1000, 0)
    await cp.project()
    assert (await billing.release(held, "again")).state == "released"
    with pytest.raises(ApiError) as refused:
        await billing.settle(
            held, receipt(NODE, "node-a", 1, 1, cp.clock(), dispatch_id=held.reservation_id), KEYS
        )
    assert refused.value.code == "reservation_finished"


async def test_bad_receipts_are_refused_and_append_nothing(cp: Harness) -> None:
    billing = cp.plane.managed.billing
    _, secret = await customer(cp.plane, 1000)
    held = await reserve(billing, secret, "job-1")
    good = receipt(NODE, "node-a", 1, 1, cp.clock(), dispatch_id=held.reservation_id)
    head = await cp.heads()
    forged = msgspec.structs.replace(
        good, body=msgspec.structs.replace(good.body, usage=good.body.usage.__class__(0, 0, 0))
    )
    with pytest.raises(ApiError) as refused:
        await billing.settle(held, forged, KEYS)
    assert (refused.value.status, refused.value.code) == (400, "receipt_hash_mismatch")
    stranger = receipt(
        Signer.generate(), "node-a", 1, 1, cp.clock(), dispatch_id=held.reservation_id
    )
    with pytest.raises(ApiError) as refused:
        await billing.settle(held, stranger, KEYS)
    assert (refused.value.status, refused.value.code) == (401, "invalid_signature")
    other_model = receipt(
        NODE, "node-a", 1, 1, cp.clock(), model="big", dispatch_id=held.reservation_id
    )
    with pytest.raises(ApiError) as refused:
        await billing.settle(held, other_model, KEYS)
    assert refused.value.code == "receipt_mismatch"
    assert await cp.heads() == head


async def test_idempotent_reserve_and_settle_charge_once(cp: Harness, second: ControlPlane) -> None:
    a, b = cp.plane.managed.billing, second.managed.billing
    customer_id, secret = await customer(cp.plane, 1000)
    first = await reserve(a, secret, "job-1", key="retry-me")
    again = await reserve(b, secret, "job-1-retry", key="retry-me")
    assert again.reservation_id == first.reservation_id and again.existing
    assert await balances(a, customer_id) == (1000, QUOTE_WEI)
    signed = receipt(NODE, "node-a", 5, 5, cp.clock(), dispatch_id=first.reservation_id)
    results = await asyncio.gather(a.settle(first, signed, KEYS), b.settle(first, signed, KEYS))
    assert sorted(r.duplicate for r in results) == [False, True]
    assert await balances(a, customer_id) == (1000 - 60, 0)
    after = await reserve(b, secret, "job-1-late", key="retry-me")
    assert (after.state, after.debited_wei, after.existing) == ("settled", 60, True)
    assert await balances(a, customer_id) == (1000 - 60, 0)


async def _storm(cp: Harness, second: ControlPlane, secret: str) -> list[Reservation | ApiError]:
    planes = [cp.plane.managed.billing, second.managed.billing]

    async def one(n: int) -> Reservation | ApiError:
        try:
            return await reserve(planes[n % 2], secret, f"job-{n}")
        except ApiError as refused:
            return refused

    return list(await asyncio.gather(*(one(n) for n in range(200))))


async def test_two_processes_never_hold_more_than_the_balance(
    cp: Harness, second: ControlPlane
) -> None:
    customer_id, secret = await customer(cp.plane, 10 * QUOTE_WEI)
    outcomes = await _storm(cp, second, secret)
    held = [o for o in outcomes if isinstance(o, Reservation)]
    refused = [o for o in outcomes if isinstance(o, ApiError)]
    assert len(held) == 10
    assert {(r.status, r.code) for r in refused} == {(402, "insufficient_balance")}
    assert await balances(cp.plane.managed.billing, customer_id) == (10 * QUOTE_WEI, 10 * QUOTE_WEI)
    billing = [cp.plane.managed.billing, second.managed.billing]
    await asyncio.gather(*(billing[i % 2].release(r, "done") for i, r in enumerate(held)))
    assert await balances(cp.plane.managed.billing, customer_id) == (10 * QUOTE_WEI, 0)
    await cp.project()
    async with cp.plane.pool.acquire() as conn:
        lowest = await conn.fetchval(
            "SELECT min(balance_after_wei - reserved_after_wei) FROM billing_entries"
        )
    assert lowest >= 0


async def test_two_processes_never_pass_the_spend_cap(cp: Harness, second: ControlPlane) -> None:
    cap = Policy(spend_cap_wei=str(10 * QUOTE_WEI), spend_window_s=3600)
    customer_id, secret = await customer(cp.plane, 10**18, key_policy=cap)
    outcomes = await _storm(cp, second, secret)
    held = [o for o in outcomes if isinstance(o, Reservation)]
    refused = [o for o in outcomes if isinstance(o, ApiError)]
    assert len(held) == 10
    assert {(r.status, r.code) for r in refused} == {(402, "gateway_spend_cap_exceeded")}
    billing = cp.plane.managed.billing
    for r in held:  # spent in full: the window is used up even with nothing held
        await billing.settle(
            r, receipt(NODE, "node-a", 10, 10, cp.clock(), dispatch_id=r.reservation_id), KEYS
        )
    assert await balances(billing, customer_id) == (10**18 - 10 * QUOTE_WEI, 0)
    with pytest.raises(ApiError) as capped:
        await reserve(billing, secret, "one-more")
    assert capped.value.code == "gateway_spend_cap_exceeded"


async def test_stale_reservations_dry_run_then_release(cp: Harness) -> None:
    billing = cp.plane.managed.billing
    customer_id, secret = await customer(cp.plane, 1000)
    await reserve(billing, secret, "job-1")
    await cp.project()
    assert await billing.release_stale(60, dry_run=True) == []
    cp.clock.now += timedelta(seconds=1000)  # past B3IQ_BILLING_STALE_AFTER_S
    found = await billing.release_stale(60, dry_run=True)
    assert [(s.state, s.released) for s in found] == [("queued", False)]
    assert await balances(billing, customer_id) == (1000, QUOTE_WEI)
    swept = await StaleSweeper(billing, every_s=60).sweep()  # the projector's scheduled sweep
    assert swept == 1
    assert await balances(billing, customer_id) == (1000, 0)
    await cp.project()
    assert await billing.release_stale(60, dry_run=True) == []


async def test_settlements_that_may_wait_go_out_together_in_one_append(
    cp: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each settlement is a batch JetStream syncs to disk while holding the stream; those
    that may wait are gathered, and close() sends what still waits at once."""
    billing = cp.plane.managed.billing
    customer_id, secret = await customer(cp.plane, 10_000)
    held = [await reserve(billing, secret, f"job-{n}") for n in range(4)]
    store = billing.lanes.recorder.store
    appended: list[int] = []
    append = store.append

    async def counted(subject: str, sealed: list[Any], *args: Any, **kwargs: Any) -> Any:
        appended.append(len(sealed))
        return await append(subject, sealed, *args, **kwargs)

    monkeypatch.setattr(store, "append", counted)

    def settle(h: Reservation, after_s: float) -> Awaitable[Settlement]:
        signed = receipt(NODE, "node-a", 1, 1, cp.clock(), dispatch_id=h.reservation_id)
        return billing.settle(h, signed, KEYS, after_s=after_s)

    settled = await asyncio.gather(*(settle(h, 0.05) for h in held[:3]))
    assert appended == [9]  # debit, payout and release of each, in one append
    assert [s.debited_wei for s in settled] == [12, 12, 12]

    waiting = asyncio.ensure_future(settle(held[3], 3600.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await billing.lanes.close()
    assert (await waiting).debited_wei == 12
    assert appended == [9, 3]
    assert await balances(billing, customer_id) == (10_000 - 4 * 12, 0)


async def test_a_reservation_short_of_funds_goes_again_after_the_settlements_waiting(
    cp: Harness,
) -> None:
    """A waiting settlement still holds its whole reservation: a request it would leave
    room for is decided again after it, not refused."""
    billing = cp.plane.managed.billing
    customer_id, secret = await customer(cp.plane, QUOTE_WEI + 12)
    first = await reserve(billing, secret, "job-1")
    signed = receipt(NODE, "node-a", 1, 1, cp.clock(), dispatch_id=first.reservation_id)
    settling = asyncio.ensure_future(billing.settle(first, signed, KEYS, after_s=3600.0))
    await asyncio.sleep(0.01)
    second = await reserve(billing, secret, "job-2")
    assert second.state == "queued" and not second.existing
    assert (await settling).debited_wei == 12
    assert await balances(billing, customer_id) == (QUOTE_WEI, QUOTE_WEI)
    with pytest.raises(ApiError) as refused:  # nothing waits now: refused at once
        await reserve(billing, secret, "job-3")
    assert refused.value.code == "insufficient_balance"


async def test_processes_share_customer_tails_and_ignore_forged_ones(
    cp: Harness, second: ControlPlane
) -> None:
    """Requests of one customer alternating between two API processes: each decides on
    the other's last append (announced on NATS), not on a refused append and a re-read."""
    a, b = cp.plane.managed.billing, second.managed.billing
    customer_id, secret = await customer(cp.plane, 1000)
    subject = a.lanes.subject(customer_id)
    refused = Refusals(cp.plane.store, second.store)

    async def caught_up(billing: Billing) -> None:
        last = await billing.lanes.recorder.store.last(subject)
        assert last is not None
        for _ in range(200):
            if not billing.lanes.recorder.behind(subject, last.seq):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the other process's tail never arrived")

    held = [await reserve(a, secret, "job-0"), await reserve(b, secret, "job-1")]
    refused.count = 0  # b knew nothing of the customer before its first append
    for n, here in enumerate([a, b, a, b], start=2):
        await caught_up(here)
        held.append(await reserve(here, secret, f"job-{n}"))
    assert refused.count == 0
    assert await balances(a, customer_id) == (1000, 6 * QUOTE_WEI)

    # A notice of a later "tail" signed by a key the control plane does not hold is
    # ignored: the next decision is still made on the real tail, and lands.
    last = await a.lanes.recorder.store.last(subject)
    assert last is not None
    forged = seal(subject, [decode_stored(last).event], prev_hash=None,
                  signer=Signer.generate(), now=cp.clock())[0]  # fmt: skip
    notice = TailNotice(last.stream, last.seq + 1, subject, forged.data)
    nc = second.store.nc  # type: ignore[attr-defined]
    nc.publish_now(f"{cp.plane.topology.prefix}.tails", msgspec.msgpack.encode(notice))
    await nc.flush()
    await asyncio.sleep(0.1)
    recorder = a.lanes.recorder  # still at the real tail
    assert not recorder.behind(subject, last.seq) and recorder.behind(subject, last.seq + 1)
    held.append(await reserve(a, secret, "job-last"))
    assert await balances(a, customer_id) == (1000, 7 * QUOTE_WEI)
