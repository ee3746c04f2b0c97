"""Payout batches on real NATS and PostgreSQL: payouts from settled requests are batched
under a Merkle root, every row is provable offline, settlement through the local anchor
moves the batch to submitted and finalized, and no payout ever lands in two batches."""

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from adapters.audit import read_log
from adapters.local_anchor import LocalAnchor
from adapters.payout_batches import PayoutBatches, payout_batches_for
from adapters.reconciliation import reconcile
from adapters.recorder import Recorder
from adapters.subject_history import subject_history
from domain.decoding import decode_stored
from domain.events import (
    PayoutBatchCreated,
    PayoutBatchFinalized,
    PayoutBatchPreviewed,
    PayoutBatchSubmitted,
    SettlementAnchored,
)
from domain.nodes import Refused
from domain.payout_batches import check_payout_proof
from domain.streams import Topology
from ops.cli import main
from tests.billing_support import customer, receipt
from tests.conftest import Servers
from tests.integration.test_billing import KEYS, NODE, reserve
from tests.integration.test_managed import Harness, _harness
from tests.integration.test_reconcile import workload

B3IQ = str(Path(sys.executable).parent / "b3iq")


@pytest.fixture
async def cp(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Harness]:
    async for harness in _harness(servers, database_url, topology, tmp_path):
        yield harness


def batches_of(cp: Harness) -> PayoutBatches:
    return payout_batches_for(cp.plane.recorder, cp.plane.pool)


async def payouts(cp: Harness) -> dict[str, tuple[int, str | None, str]]:
    async with cp.plane.pool.acquire() as conn:
        rows = await conn.fetch("SELECT payout_id, amount_wei, batch_id, state FROM node_payouts")
    return {r[0]: (int(r[1]), r[2], r[3]) for r in rows}


async def assert_reconciles(cp: Harness) -> None:
    await cp.project()
    plane = cp.plane
    report = await reconcile(read_log(plane.store, plane.topology), plane.topology, plane.pool)
    assert report.discrepancies == []
    assert report.pending_payouts == sum(1 for p in (await payouts(cp)).values() if not p[1])


async def more_payouts(cp: Harness, n: int) -> None:
    billing = cp.plane.managed.billing
    _, secret = await customer(cp.plane, 10_000)
    for job in range(n):
        held = await reserve(billing, secret, f"more-{job}")
        await billing.claim(held, "node-b")
        await billing.settle(
            held,
            receipt(NODE, "node-b", 3, job + 2, cp.clock(), dispatch_id=held.reservation_id),
            KEYS,
        )


async def test_batch_prove_check_offline_submit_and_finalize(cp: Harness, tmp_path: Path) -> None:
    await workload(cp)
    batches = batches_of(cp)
    owed = await payouts(cp)
    assert len(owed) == 6

    preview = await batches.preview("test")
    assert isinstance(preview, PayoutBatchPreviewed)
    assert preview.payout_count == 6
    made = await batches.create("test")
    assert isinstance(made, PayoutBatchCreated)
    assert made.merkle_root == preview.merkle_root  # same rows, same root
    assert made.payout_count == 6
    assert int(made.total_amount_wei) == sum(a for a, _, _ in owed.values())
    assert [r.payout_id for r in made.rows] == sorted(owed)

    for payout_id in owed:
        proof = await batches.prove(made.batch_id, payout_id)
        assert proof.merkle_root == made.merkle_root
        assert check_payout_proof(proof) == []
    path = tmp_path / "proof.json"
    path.write_bytes(msgspec.json.encode(proof))
    assert main(["payouts", "check-proof", str(path)]) == 0  # offline: no servers named
    forged = msgspec.structs.replace(proof.row, amount_wei=str(int(proof.row.amount_wei) + 1))
    path.write_bytes(msgspec.json.encode(msgspec.structs.replace(proof, row=forged)))
    assert main(["payouts", "check-proof", str(path)]) == 1
    with pytest.raises(Refused) as not_there:
        await batches.prove(made.batch_id, "no-such-payout")
    assert not_there.value.code == "not_found"

    with pytest.raises(Refused):
        await batches.finalize(made.batch_id, "test")  # created, not submitted
    submitted = await batches.submit(made.batch_id, "test")
    assert isinstance(submitted, PayoutBatchSubmitted)
    assert submitted.target == "local-anchor"
    assert await batches.submit(made.batch_id, "test") == submitted  # idempotent
    finalized = await batches.finalize(made.batch_id, "test")
    assert isinstance(finalized, PayoutBatchFinalized)
    assert await batches.finalize(made.batch_id, "test") == finalized

    history = [
        decode_stored(s)
        for s in await subject_history(cp.plane.store, batches.subject(made.batch_id))
    ]
    assert [type(d.event) for d in history] == [
        PayoutBatchPreviewed,
        PayoutBatchCreated,
        PayoutBatchSubmitted,
        PayoutBatchFinalized,
    ]
    anchor = LocalAnchor(cp.plane.recorder)
    anchors = [
        decode_stored(s)
        for s in await subject_history(cp.plane.store, anchor.subject(made.batch_id))
    ]
    assert [a.event.stage for a in anchors] == ["submitted", "finalized"]  # type: ignore[attr-defined]
    for a in anchors:
        assert isinstance(a.event, SettlementAnchored)
        assert (a.event.merkle_root, a.event.payout_count) == (made.merkle_root, 6)
        assert a.body.signer == cp.plane.signer.key_id
    assert submitted.reference == f"{anchors[0].body.event_id}@{anchors[0].seq}"
    assert finalized.reference == f"{anchors[1].body.event_id}@{anchors[1].seq}"

    await assert_reconciles(cp)
    assert {(b, s) for _, b, s in (await payouts(cp)).values()} == {(made.batch_id, "finalized")}
    listed = {b.batch_id: b for b in await batches.recent()}
    assert listed[made.batch_id].state == "finalized"
    assert listed[made.batch_id].reference == submitted.reference
    assert listed[preview.batch_id].state == "preview"


async def test_a_second_batch_takes_only_unbatched_payouts(cp: Harness) -> None:
    await workload(cp)
    batches = batches_of(cp)
    first = await batches.create("test")
    # Not projected yet: the claim is seen in the ledger's tail past the read models.
    with pytest.raises(Refused) as nothing:
        await batches.create("test")
    assert nothing.value.code == "nothing_to_batch"
    await more_payouts(cp, 3)
    second = await batches.create("test")
    assert second.payout_count == 3
    assert not {r.payout_id for r in first.rows} & {r.payout_id for r in second.rows}
    await assert_reconciles(cp)
    await more_payouts(cp, 2)
    await cp.project()
    third = await batches.create("test")  # from the read model this time
    assert third.payout_count == 2
    assert len({r.payout_id for b in (first, second, third) for r in b.rows}) == 11
    await assert_reconciles(cp)


async def test_concurrent_creates_never_share_a_payout(cp: Harness) -> None:
    await workload(cp)
    await more_payouts(cp, 4)
    await cp.project()
    half = await payouts(cp)
    await more_payouts(cp, 4)  # these only on the log, not in the read models yet
    everyone = [
        PayoutBatches(
            Recorder(cp.plane.store, cp.plane.signer, cp.plane.topology, clock=cp.clock),
            cp.plane.pool,
            LocalAnchor(cp.plane.recorder),
        )
        for _ in range(4)
    ]
    assert len(half) == 10
    results = await asyncio.gather(
        *(b.create(f"racer-{i}") for i, b in enumerate(everyone)), return_exceptions=True
    )
    late = asyncio.gather(*(b.create("late") for b in everyone[:2]), return_exceptions=True)
    await more_payouts(cp, 3)  # while two more creates race the new payouts
    results += await late
    with contextlib.suppress(Refused):
        results.append(await everyone[0].create("sweep"))
    made = [r for r in results if isinstance(r, PayoutBatchCreated)]
    refused = [r for r in results if not isinstance(r, PayoutBatchCreated)]
    assert made
    assert all(isinstance(r, Refused) and r.code == "nothing_to_batch" for r in refused), refused
    claimed = [r.payout_id for b in made for r in b.rows]
    assert len(claimed) == len(set(claimed)) == 17
    await assert_reconciles(cp)


async def test_the_cli_batches_proves_and_settles(
    cp: Harness, servers: Servers, database_url: str, tmp_path: Path
) -> None:
    await workload(cp)
    env = {
        **os.environ,
        "B3IQ_NATS_URL": servers.nats_url,
        "B3IQ_DATABASE_URL": database_url,
        "B3IQ_STREAM_PREFIX": cp.plane.topology.prefix,
        "B3IQ_DATA_DIR": str(cp.plane.settings.data_dir),
        "COLUMNS": "200",
    }

    def b3iq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [B3IQ, "payouts", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    async def ok(*args: str) -> str:
        done = await asyncio.to_thread(b3iq, *args)
        assert done.returncode == 0, done.stderr + done.stdout
        return done.stdout

    assert "claims nothing" in await ok("batch", "--preview")
    made = await ok("batch", "--by", "ops")
    fields = dict(
        line.split(" ", 1)
        for line in made.splitlines()
        if line.startswith(("batch_id ", "payout_count ", "merkle_root "))
    )
    assert fields["payout_count"] == "6"
    batch_id = fields["batch_id"]
    refused = await asyncio.to_thread(b3iq, "batch")
    assert refused.returncode == 1
    assert "nothing_to_batch" in refused.stderr

    payout_id = next(iter(await payouts(cp)))
    proof_file = tmp_path / "cli-proof.json"
    proof_file.write_text(await ok("prove", batch_id, payout_id))
    assert msgspec.json.decode(proof_file.read_bytes())["merkle_root"] == fields["merkle_root"]
    assert "OK" in await ok("check-proof", str(proof_file))

    submitted = await ok("submit", batch_id)
    assert "no on-chain settlement adapter is included" in " ".join(submitted.split())
    assert "finalized" in await ok("finalize", batch_id)
    await cp.project()
    listed = await ok("list")
    assert batch_id in listed
    assert "finalized" in listed and "preview" in listed
    await assert_reconciles(cp)
