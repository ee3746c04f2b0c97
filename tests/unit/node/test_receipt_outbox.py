"""The node's receipt queue and sender, against a fake control plane (httpx.MockTransport)."""

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec
import pytest

from domain.signing import Signer
from node.identity import NodeIdentity
from node.managed.client import ControlPlaneClient
from node.managed.receipt_outbox import OTHER_KEY, ReceiptOutbox, UnknownReceipt
from node.managed.receipt_sender import ReceiptSender
from node.receipts import Receipt, ReceiptStore, Usage
from node.state import Database
from tests.unit.node.test_receipts import make

NODE = "node-1"  # the node test_receipts.make issues for


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(tmp_path / "node.sqlite3")


def stored(db: Database, *receipts: Receipt) -> list[str]:
    store = ReceiptStore(db)
    for receipt in receipts:
        store.add(receipt)
    assert store.count() >= len(receipts)
    return [r.receipt_hash for r in receipts]


def refusal(db: Database, receipt_hash: str) -> str | None:
    row = db.one("SELECT refused FROM receipt_submissions WHERE receipt_hash = ?", [receipt_hash])
    assert row is not None
    return row["refused"]  # type: ignore[no-any-return]


def test_each_receipt_is_queued_once_and_old_keys_are_set_aside(db: Database) -> None:
    signer, old = Signer.generate(), Signer.generate()
    mine = stored(db, make(signer), make(signer), make(signer))
    (theirs,) = stored(db, make(old))
    outbox = ReceiptOutbox(db, signer.key_id)
    first = outbox.queue_new(limit=2)
    assert (first.queued, first.remaining, first.waiting) == (2, 2, 2)
    rest = outbox.queue_new()
    assert (rest.queued, rest.not_submittable, rest.remaining, rest.waiting) == (1, 1, 0, 3)
    assert outbox.queue_new().queued == 0  # nothing new since
    assert refusal(db, theirs) == OTHER_KEY

    outbox.accepted(mine[:1])
    again = outbox.queue([*mine, theirs])
    assert (again.already_submitted, again.already_queued, again.not_submittable) == (1, 2, 1)
    assert [r.receipt_hash for r in outbox.waiting(10)] == mine[1:]

    (late,) = stored(db, make(signer))
    with pytest.raises(UnknownReceipt):
        outbox.queue([late, "0" * 64])
    assert outbox.queue_new().queued == 1  # the failed call queued nothing


Reply = Callable[[httpx.Request], httpx.Response]


def sender(db: Database, signer: Signer, replies: list[Reply]) -> tuple[ReceiptSender, list[int]]:
    """A sender whose control plane answers with ``replies`` in turn; the batch sizes seen."""
    sizes: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sizes.append(len(json.loads(request.content)["receipts"]))
        return replies[min(len(sizes), len(replies)) - 1](request)

    client = ControlPlaneClient(
        "http://cp", NodeIdentity(NODE, signer), transport=httpx.MockTransport(handle)
    )
    outbox = ReceiptOutbox(db, signer.key_id)
    return ReceiptSender(client, outbox, auto=True, every_s=1, wake=asyncio.Event()), sizes


def ok(_: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"recorded": 1})


def refused(status: int, code: str) -> Reply:
    return lambda _: httpx.Response(status, json={"error": {"code": code}})


async def test_receipts_wait_until_the_control_plane_takes_them(db: Database) -> None:
    signer = Signer.generate()
    stored(db, *(make(signer) for _ in range(150)))
    down, sizes = sender(db, signer, [refused(503, "service_unavailable")])
    assert await down.step() is False
    assert len(ReceiptOutbox(db, signer.key_id).waiting(1000)) == 150
    up, sizes = sender(db, signer, [ok])
    assert await up.step() is True
    assert sizes == [100, 50]
    assert ReceiptOutbox(db, signer.key_id).waiting(1000) == []


async def test_a_receipt_refused_by_name_leaves_the_queue_only_if_it_fails_here(
    db: Database,
) -> None:
    signer = Signer.generate()
    good = make(signer)
    broken = make(signer)
    broken = msgspec.structs.replace(
        broken, body=msgspec.structs.replace(broken.body, usage=Usage(0, 0, 0))
    )
    stored(db, good, broken)
    outbox = ReceiptOutbox(db, signer.key_id)
    outbox.queue_new()
    first, sizes = sender(db, signer, [refused(422, "receipt_hash_mismatch"), ok])
    assert await first.flush() is True
    assert sizes == [2, 1]  # the broken one left out, the good one sent again
    assert refusal(db, broken.receipt_hash) == "receipt_hash_mismatch"

    # Every receipt holds here: the control plane knows another key for this node. Wait.
    stored(db, make(signer))
    outbox.queue_new()
    disputed, sizes = sender(db, signer, [refused(422, "invalid_signature")])
    assert await disputed.flush() is False
    assert len(outbox.waiting(10)) == 1
