"""Reservations per second on one hot customer, with zero overshoot.

    .venv/bin/python ops/bench/bench_reservations.py [--reservations N] [--quick]

Starts its own nats-server and PostgreSQL in a temp dir (or uses B3IQ_NATS_URL /
B3IQ_DATABASE_URL, on streams with a random prefix and a fresh schema). Each worker
reserves and then releases, like a request that fails at once: every reservation is a
full decide → conditional append on the customer's subject. Overshoot is counted from
the log itself afterwards: every event of the customer must have balance ≥ reserved ≥ 0
and the rolling spend must stay under the cap. The baseline, measured in the same run, is
``Recorder.record`` of one small event per call on one subject (one writer). Exit status 1
if a target failed.
"""

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from adapters.billing import Billing, GatewayPrincipal
from adapters.bootstrap import ControlPlane, bootstrap
from adapters.http.problems import ApiError
from adapters.postgres import create_pool, migrate
from adapters.settings import Settings
from adapters.subject_history import subject_history
from domain.billing.money import Quote
from domain.billing.spend import window_spend
from domain.billing.state import INFERENCE, Policy
from domain.decoding import Decoded, decode_stored
from domain.events import CreditGranted, CustomerEvent, Event
from ops.bench.bench_event_log import Env, console, drop_schema, run, servers

TARGET = 1000.0
QUOTE_WEI = 10 * 2 + 10 * 10


@dataclass
class Row:
    label: str
    concurrency: int
    processes: int
    reservations: int
    refused: int
    seconds: float
    overshoot: int
    baseline_rate: float
    target: bool

    @property
    def rate(self) -> float:
        return self.reservations / self.seconds

    def verdict(self) -> str | None:
        if self.overshoot:
            return "FAIL"
        if not self.target:
            return None
        return "PASS" if self.rate >= TARGET else "FAIL"


async def _plane(env: Env, data_dir: Path) -> ControlPlane:
    settings = Settings(
        nats_url=env.nats_url,
        database_url=env.dsn,
        stream_prefix=env.prefix + "res",
        data_dir=data_dir,
        billing_max_open_reservations=10_000,
        billing_finished_kept=Settings.from_env().billing_finished_kept,
    )
    pool = await create_pool(env.dsn, schema=env.schema, max_size=4)
    return await bootstrap(settings, pool=pool)


async def _customer(plane: ControlPlane, balance: int, cap: int | None) -> tuple[str, str]:
    admin = plane.managed.billing_admin
    state = await admin.create_customer("bench", Policy(), "bench")
    await admin.grant(state.customer_id, balance, "bench", "bench")
    key_policy = Policy(spend_cap_wei=None if cap is None else str(cap), spend_window_s=3600)
    issued = await admin.issue_key(state.customer_id, "k", (INFERENCE,), key_policy, None, "b")
    await admin.set_price("tiny", None, 2, 10, "bench")
    return state.customer_id, issued.secret


async def _principal(billing: Billing, secret: str) -> GatewayPrincipal:
    found = await billing.authenticate(secret)
    assert found is not None
    return found


async def _cycles(
    billings: Sequence[Billing], secret: str, concurrency: int, total: int
) -> tuple[int, int, float]:
    """(reserved, refused, seconds) for ``total`` reserve → release cycles."""
    principals = [await _principal(b, secret) for b in billings]
    quote: Quote = await billings[0].quote(principals[0], "tiny", 10, 10)
    left = [total]
    counts = [0, 0]

    async def worker(n: int) -> None:
        billing, who = billings[n % len(billings)], principals[n % len(billings)]
        while left[0] > 0:
            left[0] -= 1
            try:
                held = await billing.reserve(
                    who, model="tiny", route_tier="network_beta", quote=quote, job_id="bench"
                )
            except ApiError as refused:
                if refused.code not in ("insufficient_balance", "gateway_spend_cap_exceeded"):
                    raise
                counts[1] += 1
                await asyncio.sleep(0)
                continue
            counts[0] += 1
            await billing.release(held, "bench")

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return counts[0], counts[1], time.perf_counter() - started


async def _overshoot(plane: ControlPlane, customer_id: str, cap: int | None) -> int:
    """Events after which the account held more than it had, or more than the cap allows."""
    bad = 0
    for stored in await subject_history(
        plane.store, plane.topology.subject("customer", customer_id)
    ):
        event = decode_stored(stored).event
        assert isinstance(event, CustomerEvent)
        balance, reserved = int(event.balance_after_wei), int(event.reserved_after_wei)
        if not balance >= reserved >= 0:
            bad += 1
        account = event.account
        if cap is not None and account is not None and account.keys:
            key = next(iter(account.keys.values()))
            now_s = int(decode_stored(stored).body.occurred_at.timestamp())
            if window_spend(key.spend, now_s, 3600) + int(key.reserved_wei) > cap:
                bad += 1
    return bad


async def _baseline(plane: ControlPlane, count: int) -> float:
    recorder = plane.recorder
    subject = plane.topology.subject("customer", "baseline")
    event = CreditGranted(
        customer_id="baseline",
        balance_after_wei="0",
        reserved_after_wei="0",
        amount_wei="1",
        reason="bench",
        granted_by="bench",
    )

    def decide(_: Decoded | None) -> list[Event]:
        return [event]

    for _ in range(50):
        await recorder.record(subject, decide)
    started = time.perf_counter()
    for _ in range(count):
        await recorder.record(subject, decide)
    return count / (time.perf_counter() - started)


async def run_all(env: Env, total: int) -> list[Row]:
    await migrate(env.dsn, env.schema)
    with tempfile.TemporaryDirectory() as data:
        a = await _plane(env, Path(data))
        b = await _plane(env, Path(data))
        try:
            baseline = await _baseline(a, min(total, 2000))
            rows = []
            plans = [
                ("one process", 1, 1, None, None),
                ("one process", 16, 1, None, None),
                ("one process", 64, 1, None, None),
                ("two Billing instances", 16, 2, None, None),
                ("two Billing instances", 64, 2, None, None),
                ("two instances, balance covers 48 quotes", 64, 2, 48 * QUOTE_WEI, None),
                ("two instances, spend cap covers 48 quotes", 64, 2, None, 48 * QUOTE_WEI),
            ]
            for label, concurrency, processes, balance, cap in plans:
                customer_id, secret = await _customer(a, balance or 10**30, cap)
                billings = [a.managed.billing, b.managed.billing][:processes]
                await _cycles(billings, secret, concurrency, 100)  # warm up
                reserved, refused, seconds = await _cycles(billings, secret, concurrency, total)
                overshoot = await _overshoot(a, customer_id, cap)
                rows.append(
                    Row(
                        label=label,
                        concurrency=concurrency,
                        processes=processes,
                        reservations=reserved,
                        refused=refused,
                        seconds=seconds,
                        overshoot=overshoot,
                        baseline_rate=baseline,
                        target=concurrency >= 16 and balance is None and cap is None,
                    )
                )
            return rows
        finally:
            await _drop_streams(a)
            for plane in (a, b):
                await plane.close()
            await drop_schema(env)


async def _drop_streams(plane: ControlPlane) -> None:
    js = plane.store.js  # type: ignore[attr-defined]
    for spec in plane.topology.streams:
        await js.delete_stream(spec.name)


def render(rows: Sequence[Row], caption: str) -> Table:
    table = Table(
        title="B3IQ reservations on one hot customer", caption=caption, caption_justify="left"
    )
    for column in ("Measurement", "Concurrency", "Reservations", "Refused", "Reservations/s"):
        table.add_column(column, justify="left" if column == "Measurement" else "right")
    for column in ("Baseline/s", "Ratio", "Overshoot", "Target", "Result"):
        table.add_column(column, justify="right")
    for row in rows:
        verdict = row.verdict()
        result = {"PASS": "[green]PASS[/]", "FAIL": "[bold red]FAIL[/]", None: "[dim]info[/]"}[
            verdict
        ]
        table.add_row(
            row.label,
            str(row.concurrency),
            f"{row.reservations:,}",
            f"{row.refused:,}",
            f"{row.rate:,.0f}",
            f"{row.baseline_rate:,.0f}",
            f"{row.rate / row.baseline_rate:.2f}x",
            str(row.overshoot),
            f"≥ {TARGET:,.0f}/s, 0 over" if row.target else "0 over",
            result,
        )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--reservations", type=int, help="per measurement (default 3000)")
    parser.add_argument("--quick", action="store_true", help="500 per measurement")
    parser.add_argument("--no-uvloop", action="store_true", help="use asyncio's own loop")
    args = parser.parse_args(argv)
    total = args.reservations or (500 if args.quick else 3000)
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="b3iq-bench-"))
    try:
        with servers(workdir) as env:
            rows, loop = run(run_all(env, total), use_uvloop=not args.no_uvloop)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    caption = "\n".join(
        [
            f"Event loop: {loop}. Python {platform.python_version()}, {os.cpu_count()} CPUs;"
            f" {env.where}.",
            "Each worker: reserve (decide on the customer's account, append conditionally on"
            " its subject) then release; concurrent calls of one customer in one process are"
            " decided in order and appended as one atomic batch. Two instances: two control"
            " planes (own NATS connection, recorder, lanes) on one log, in one process.",
            "Baseline: Recorder.record of one small event per call on one subject, one writer.",
            "Overshoot: events of the customer after which reserved > balance, anything < 0, or"
            " window spend + held > the key's cap (read back from the log).",
            f"Whole run {time.perf_counter() - started:.0f} s.",
        ]
    )
    console.print(render(rows, caption))
    return 1 if any(row.verdict() == "FAIL" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
