"""Reconciliation over a real workload on NATS and PostgreSQL: clean, then a read-model
row edited by hand is reported with its customer and the events behind it."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.audit import read_log
from adapters.reconciliation import reconcile, record_summary
from domain.billing.discrepancy import Code
from domain.decoding import decode_stored
from domain.events import ReconciliationCompleted
from domain.streams import Topology
from tests.billing_support import customer, receipt
from tests.conftest import Servers
from tests.integration.test_billing import KEYS, NODE, reserve
from tests.integration.test_managed import Harness, _harness


@pytest.fixture
async def cp(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Harness]:
    async for harness in _harness(servers, database_url, topology, tmp_path):
        yield harness


async def workload(cp: Harness) -> list[str]:
    billing = cp.plane.managed.billing
    ids = []
    for n in range(3):
        customer_id, secret = await customer(cp.plane, 10_000)
        ids.append(customer_id)
        for job in range(4):
            held = await reserve(billing, secret, f"job-{n}-{job}")
            await billing.claim(held, "node-a")
            if job % 2:
                await billing.release(held, "node_failed")
            else:
                await billing.settle(
                    held,
                    receipt(
                        NODE, "node-a", 5, job + 1, cp.clock(), dispatch_id=held.reservation_id
                    ),
                    KEYS,
                )
    await reserve(billing, secret, "still-open")
    await cp.project()
    return ids


async def test_a_real_workload_reconciles_and_an_edited_row_is_named(cp: Harness) -> None:
    plane = cp.plane
    ids = await workload(cp)
    report = await reconcile(read_log(plane.store, plane.topology), plane.topology, plane.pool)
    assert report.discrepancies == []
    assert (report.customers, report.reservations, report.open_reservations) == (3, 13, 1)
    assert (report.receipts, report.payouts, report.pending_payouts) == (6, 6, 6)

    victim = ids[1]
    async with plane.pool.acquire() as conn:
        await conn.execute(
            "UPDATE billing_customers SET balance_wei = balance_wei + 7 WHERE customer_id = $1",
            victim,
        )
        last_seq = await conn.fetchval(
            "SELECT last_seq FROM billing_customers WHERE customer_id = $1", victim
        )
    report = await reconcile(read_log(plane.store, plane.topology), plane.topology, plane.pool)
    assert not report.ok
    (found,) = report.discrepancies
    assert (found.code, found.customer_id, found.table) == (
        Code.READ_MODEL,
        victim,
        "billing_customers",
    )
    assert "balance_wei" in found.detail
    assert [r.seq for r in found.events] == [last_seq]
    stored = [s async for s in read_log(plane.store, plane.topology) if s.seq == last_seq]
    assert found.events[0].event_id == decode_stored(stored[0]).body.event_id

    await record_summary(plane.recorder, report, cp.clock())
    head = await plane.store.last(
        plane.topology.subject("reconciliation", cp.clock().strftime("%Y%m%d"))
    )
    assert head is not None
    summary = decode_stored(head).event
    assert isinstance(summary, ReconciliationCompleted)
    assert (summary.discrepancies, summary.by_code) == (1, {"read_model_mismatch": 1})
