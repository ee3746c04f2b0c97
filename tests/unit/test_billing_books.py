"""Billing decisions, pure: reserve, settle, release, caps, keys, idempotency."""

import random
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from domain.billing.books import (
    Books,
    Rules,
    account_of,
    decide_batch,
    decide_release,
    decide_reserve,
    decide_settle,
    new_account,
)
from domain.billing.money import Price, Quote, cost_of, fee_of, quote_for
from domain.billing.prices import book_of, decide_price, price_in
from domain.billing.spend import SpendBucket, add_spend, window_spend
from domain.billing.state import INFERENCE, AccountState, Policy
from domain.events import (
    CustomerDebited,
    CustomerEvent,
    Event,
    NodePayoutCreated,
    ReservationCreated,
    ReservationReleased,
)
from domain.nodes import Refused
from domain.receipts import Receipt, ReceiptBody, Timings, Usage, sign_receipt, verify_receipt
from domain.signing import Keyring, Signer

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RULES = Rules(fee_bps=500)
PRICE = Price(model="tiny", prompt_wei=2, completion_wei=10)
NODE = Signer.generate()


def quote(prompt: int = 10, max_tokens: int = 10) -> Quote:
    return quote_for(PRICE, prompt, max_tokens)  # 20 + 100 = 120 wei


def account(
    balance: int = 1000,
    policy: Policy | None = None,
    key_policy: Policy | None = None,
    expires_at: datetime | None = None,
) -> AccountState:
    (created,) = new_account(None, "cust", "Cust", policy or Policy(), "admin", T0)
    state = account_of(created)
    assert state is not None

    def setup(b: Books) -> tuple[list[Event], None]:
        events = b.grant(balance, "seed", "admin")
        events += b.issue_key(
            "k1",
            "main",
            (INFERENCE,),
            key_policy or Policy(),
            expires_at,
            "admin",
        )
        return events, None

    events, _ = decide_batch(state, [setup], RULES, T0)
    after = account_of(events[-1])
    assert after is not None
    return after


def apply(state: AccountState, events: list[Event]) -> AccountState:
    after = account_of(events[-1]) if events else state
    assert after is not None
    return after


def receipt(
    usage: Usage,
    model: str = "tiny",
    at: datetime = T0,
    signer: Signer = NODE,
    dispatch_id: str = "r1",
) -> Receipt:
    body = ReceiptBody(
        receipt_id="r1",
        node_id="node-a",
        key_id=signer.key_id,
        model=model,
        runtime_kind="llama_cpp",
        created_at_ms=int(at.timestamp() * 1000),
        stream=False,
        finish_reason="stop",
        usage=usage,
        timings=Timings(queue_us=1, ttft_us=2, latency_us=3),
        request_digest="a" * 64,
        response_digest="b" * 64,
        dispatch_id=dispatch_id,
    )
    return sign_receipt(signer, body)


def reserve(  # type: ignore[no-untyped-def]
    state: AccountState,
    rid: str,
    q: Quote | None = None,
    tier: str = "network_beta",
    *,
    idempotent: bool = True,
):
    def op(b: Books) -> tuple[list[Event], None]:
        events = b.reserve("k1", rid, "job-" + rid, q or quote(), tier, idempotent=idempotent)
        return events, None

    events, (outcome,) = decide_batch(state, [op], RULES, T0)
    if isinstance(outcome, Refused):
        raise outcome
    return events


def test_quote_and_money() -> None:
    q = quote(10, 10)
    assert q.amount_wei == 120
    assert cost_of(Usage(3, 4, 7), 2, 10, held_wei=120) == 46
    assert cost_of(Usage(100, 100, 200), 2, 10, held_wei=120) == 120
    assert fee_of(46, 500) == 2
    with pytest.raises(ValueError, match="max_tokens"):
        quote_for(PRICE, 1, 0)


def test_reserve_holds_and_events_carry_totals() -> None:
    state = account(1000)
    events = reserve(state, "r1")
    (created,) = events
    assert isinstance(created, ReservationCreated)
    assert (created.balance_after_wei, created.reserved_after_wei) == ("1000", "120")
    after = apply(state, events)
    assert after.open["r1"].state == "queued"
    assert after.keys["k1"].reserved_wei == "120"
    assert reserve(after, "r1") == []  # a retried reserve holds nothing more


def test_insufficient_balance_refused() -> None:
    state = account(239)
    state = apply(state, reserve(state, "r1"))
    with pytest.raises(Refused) as refused:
        reserve(state, "r2")
    assert refused.value.code == "insufficient_balance"


@pytest.mark.parametrize(
    ("policy", "tier"),
    [
        (Policy(allowed_models=("other",)), "network_beta"),
        (Policy(allowed_route_tiers=("portable_local",)), "network_beta"),
        (Policy(max_price_wei="119"), "network_beta"),
        (Policy(), "local_convenience"),
    ],
)
def test_scope_denied(policy: Policy, tier: str) -> None:
    for state in (account(policy=policy), account(key_policy=policy)):
        with pytest.raises(Refused) as refused:
            reserve(state, "r1", tier=tier)
        assert refused.value.code == "gateway_api_key_scope_denied"


def test_revoked_or_expired_key_refused() -> None:
    expired = account(expires_at=T0 - timedelta(seconds=1))
    with pytest.raises(Refused) as refused:
        reserve(expired, "r1")
    assert refused.value.code == "unauthorized"
    state = account()
    events, _ = decide_batch(state, [lambda b: (b.revoke_key("k1", "a", "x"), None)], RULES, T0)
    revoked = apply(state, events)
    assert "k1" not in revoked.keys  # nothing held, nothing spent: forgotten
    with pytest.raises(Refused) as refused:
        reserve(revoked, "r1")
    assert refused.value.code == "unauthorized"


def test_settle_debits_usage_pays_node_releases_rest() -> None:
    state = account(1000)
    state = apply(state, reserve(state, "r1"))
    good = receipt(Usage(3, 4, 7))
    assert verify_receipt(good, Keyring([NODE.public_key])) is None
    events = decide_settle(state, "r1", good, RULES, T0)
    debit, payout, release = events
    assert isinstance(debit, CustomerDebited) and debit.amount_wei == "46"
    assert (debit.balance_after_wei, debit.reserved_after_wei) == ("954", "74")
    assert isinstance(payout, NodePayoutCreated)
    assert (payout.amount_wei, payout.fee_wei, payout.node_id) == ("44", "2", "node-a")
    assert isinstance(release, ReservationReleased)
    assert (release.amount_wei, release.outcome, release.reserved_after_wei) == (
        "74",
        "settled",
        "0",
    )
    after = apply(state, events)
    assert after.open == {} and after.finished[-1].debited_wei == "46"
    assert after.keys["k1"].reserved_wei == "0"
    assert decide_settle(after, "r1", good, RULES, T0) == []  # retried: same outcome
    with pytest.raises(Refused) as refused:
        decide_settle(after, "r1", receipt(Usage(1, 1, 2)), RULES, T0)
    assert refused.value.code == "reservation_finished"


def test_settle_never_debits_more_than_held_and_checks_receipt() -> None:
    state = account(1000)
    state = apply(state, reserve(state, "r1"))
    with pytest.raises(Refused) as refused:
        decide_settle(state, "r1", receipt(Usage(1, 1, 2), model="big"), RULES, T0)
    assert refused.value.code == "receipt_mismatch"
    with pytest.raises(Refused):
        decide_settle(state, "r1", receipt(Usage(1, 1, 2), at=T0 - timedelta(hours=1)), RULES, T0)
    events = decide_settle(state, "r1", receipt(Usage(500, 500, 1000)), RULES, T0)
    assert events[0].amount_wei == "120"  # type: ignore[attr-defined]
    after = apply(state, events)
    assert (after.balance_wei, after.reserved_wei) == ("880", "0")
    state = apply(after, reserve(after, "r2"))
    with pytest.raises(Refused) as refused:  # r1's receipt answers r1's dispatch only
        decide_settle(state, "r2", receipt(Usage(500, 500, 1000)), RULES, T0)
    assert refused.value.code == "receipt_mismatch"


def test_only_idempotent_outcomes_are_remembered() -> None:
    state = account(1000)
    state = apply(state, reserve(state, "r1", idempotent=False))
    state = apply(state, reserve(state, "r2"))
    state = apply(state, decide_settle(state, "r1", receipt(Usage(1, 1, 2)), RULES, T0))
    state = apply(state, decide_release(state, "r2", "failed", RULES, T0))
    assert [f.reservation_id for f in state.finished] == ["r2"]
    with pytest.raises(Refused) as refused:  # a retry of r1 is answered by the read models
        decide_release(state, "r1", "again", RULES, T0)
    assert refused.value.code == "reservation_not_found"
    assert reserve(state, "r2") == []  # a retried idempotent reserve: its outcome stands


def test_release_frees_everything_and_is_idempotent() -> None:
    state = account(1000)
    state = apply(state, reserve(state, "r1"))
    events = decide_release(state, "r1", "node_failed", RULES, T0)
    after = apply(state, events)
    assert (after.balance_wei, after.reserved_wei, after.keys["k1"].reserved_wei) == (
        "1000",
        "0",
        "0",
    )
    assert decide_release(after, "r1", "again", RULES, T0) == []
    with pytest.raises(Refused) as refused:
        decide_release(after, "nope", "x", RULES, T0)
    assert refused.value.code == "reservation_not_found"


def test_spend_cap_counts_spend_and_holds() -> None:
    state = account(10_000, policy=Policy(spend_cap_wei="300", spend_window_s=3600))
    state = apply(state, reserve(state, "r1"))
    state = apply(state, decide_settle(state, "r1", receipt(Usage(500, 500, 1000)), RULES, T0))
    state = apply(state, reserve(state, "r2"))  # 120 spent + 120 held
    with pytest.raises(Refused) as refused:
        reserve(state, "r3")
    assert refused.value.code == "gateway_spend_cap_exceeded"
    later = T0 + timedelta(seconds=3600 + 3600 // 24)
    events = decide_reserve(state, "k1", "r3", "j", quote(), "network_beta", RULES, later)
    assert events  # the spend left the window; only the hold counts


def test_spend_buckets_overcount_never_undercount() -> None:
    buckets: tuple[SpendBucket, ...] = ()
    for second in range(0, 7200, 97):
        buckets = add_spend(buckets, second, 3600, 1)
        exact = sum(1 for s in range(0, second + 1, 97) if s > second - 3600)
        counted = window_spend(buckets, second, 3600)
        assert exact <= counted <= exact + 3600 // 24 // 97 + 1
    assert len(buckets) <= 25


def test_price_book() -> None:
    (first,) = decide_price((), "tiny", None, 2, 10, "admin")
    book = book_of(first)
    (second,) = decide_price(book, "tiny", "p-tiny", 3, 11, "admin")
    book = book_of(second)
    assert decide_price(book, "tiny", "p-tiny", 3, 11, "admin") == []
    assert price_in(book, "tiny", "p-tiny") == Price(
        model="tiny", profile_id="p-tiny", prompt_wei=3, completion_wei=11
    )
    assert price_in(book, "tiny", "p-other") == Price(model="tiny", prompt_wei=2, completion_wei=10)
    assert price_in(book, "big", None) is None


def test_batch_refusals_affect_their_caller_alone() -> None:
    state = account(240)

    def reserving(rid: str):  # type: ignore[no-untyped-def]
        return lambda b: (b.reserve("k1", rid, "j", quote(), "network_beta"), rid)

    events, outcomes = decide_batch(state, [reserving(f"r{i}") for i in range(4)], RULES, T0)
    assert outcomes[:2] == ["r0", "r1"]
    assert [o.code for o in outcomes[2:]] == ["insufficient_balance"] * 2  # type: ignore[union-attr]
    assert len(events) == 2
    assert events[0].account is None and events[1].account is not None  # type: ignore[attr-defined]


def test_random_interleavings_keep_every_invariant() -> None:
    rng = random.Random(20261201)
    cap = 5_000
    state = account(20_000, policy=Policy(spend_cap_wei=str(cap), spend_window_s=600))
    now = T0
    held: dict[str, int] = {}
    debited = 0
    for step in range(3000):
        now += timedelta(seconds=rng.choice([0, 0, 1, 5, 30]))
        batch = []
        for _ in range(rng.randint(1, 8)):
            roll = rng.random()
            if roll < 0.5 or not held:
                rid = f"r{step}-{rng.randint(0, 3)}"
                q = quote(rng.randint(0, 50), rng.randint(1, 50))
                batch.append(
                    lambda b, rid=rid, q=q: (b.reserve("k1", rid, "j", q, "network_beta"), rid)
                )
            elif roll < 0.8:
                rid = rng.choice(list(held))
                usage = Usage(rng.randint(0, 80), rng.randint(0, 80), 0)
                r = receipt(usage, at=now, dispatch_id=rid)
                r = msgspec.structs.replace(r, receipt_hash=f"{rid}-{step}")
                batch.append(lambda b, rid=rid, r=r: (b.settle(rid, r), rid))
            else:
                rid = rng.choice(list(held))
                batch.append(lambda b, rid=rid: (b.release(rid, "failed"), rid))
        before = state
        events, _ = decide_batch(state, batch, RULES, now)
        state = apply(state, events)
        balance, reserved = int(state.balance_wei), int(state.reserved_wei)
        for e in events:
            assert isinstance(e, CustomerEvent)
            assert int(e.balance_after_wei) >= int(e.reserved_after_wei) >= 0
            if isinstance(e, CustomerDebited):
                debited += int(e.amount_wei)
                assert int(e.amount_wei) <= int(before.open[e.reservation_id].amount_wei)
        assert balance >= reserved >= 0
        assert reserved == sum(int(r.amount_wei) for r in state.open.values())
        assert state.keys["k1"].reserved_wei == str(reserved)
        spent = window_spend(state.spend, int(now.timestamp()), 600)
        assert spent + reserved <= cap
        held = {rid: int(r.amount_wei) for rid, r in state.open.items()}
    assert balance == 20_000 - debited
    assert debited > 0
