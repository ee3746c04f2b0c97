"""Signed receipt batches from nodes: verified with the node's current key, recorded once
each, read back by operators; `audit verify` checks them, a replay rebuilds them and
billing leaves them alone."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from adapters.audit import read_log, verify_log
from adapters.reconciliation import reconcile
from adapters.services import rebuild
from domain.canonical import canonical_bytes
from domain.ids import uuid7
from domain.receipt_reports import ReceiptBatch
from domain.receipts import Receipt, ReceiptBody, Timings, Usage, sign_receipt
from domain.signing import Keyring, Signer
from domain.streams import Topology
from tests.conftest import Servers
from tests.integration.test_managed import Harness, _harness
from tests.managed_support import SimulatedNode


@pytest.fixture
async def cp(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Harness]:
    async for harness in _harness(servers, database_url, topology, tmp_path):
        yield harness


def local_receipt(signer: Signer, node_id: str, n: int, **body: Any) -> Receipt:
    values: dict[str, Any] = {
        "receipt_id": uuid7(),
        "node_id": node_id,
        "key_id": signer.key_id,
        "model": "tiny",
        "runtime_kind": "llama_cpp",
        "created_at_ms": 1_790_000_000_000 + n,
        "stream": False,
        "finish_reason": "stop",
        "usage": Usage(3, n, 3 + n),
        "timings": Timings(queue_us=1, ttft_us=2, latency_us=3),
        "request_digest": "1" * 64,
        "response_digest": "2" * 64,
    }
    values.update(body)
    return sign_receipt(signer, ReceiptBody(**values))


async def submit(node: SimulatedNode, receipts: list[Receipt]) -> httpx.Response:
    path = f"/v1/nodes/{node.node_id}/receipts"
    body = canonical_bytes(ReceiptBatch(receipts))
    return await node.client.post(
        path,
        content=body,
        headers={"content-type": "application/json", **node.headers(body, path=path)},
    )


async def enrolled(cp: Harness, node_id: str) -> SimulatedNode:
    node = cp.node(node_id)
    assert (await node.enroll()).status_code == 201
    return node


async def listed(cp: Harness, node_id: str, **params: Any) -> dict[str, Any]:
    await cp.project()
    response = await cp.client.get(
        f"/v1/nodes/{node_id}/receipts", params=params, headers=cp.as_admin()
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_batch_is_recorded_once_however_often_it_arrives(cp: Harness) -> None:
    node = await enrolled(cp, "node-r")
    receipts = [local_receipt(node.signer, "node-r", n) for n in range(3)]
    first = await submit(node, receipts)
    assert first.status_code == 200, first.text
    assert first.json() | {"seq": 0} == {
        "node_id": "node-r",
        "received": 3,
        "recorded": 3,
        "duplicates": 0,
        "seq": 0,
    }
    head = (await cp.heads())[0]

    # Retried before the projector ran (the ledger answers) and after (the read model does).
    again = await submit(node, [*receipts, receipts[0]])
    assert again.json()["recorded"] == 0
    assert again.json()["duplicates"] == 4
    await cp.project()
    overlapping = await submit(node, [receipts[2], local_receipt(node.signer, "node-r", 9)])
    assert (overlapping.json()["recorded"], overlapping.json()["duplicates"]) == (1, 1)
    assert (await cp.heads())[0] == head + 1

    page = await listed(cp, "node-r")
    assert [r["receipt_hash"] for r in page["data"]][-3:] == sorted(
        (r.receipt_hash for r in receipts), reverse=True
    )
    newest = page["data"][0]
    assert newest["usage"] == {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}
    assert newest["dispatch_id"] is None
    # The stored receipt still verifies with the node's key, offline.
    stored = msgspec.convert(newest["receipt"], Receipt)
    assert stored.body.receipt_id and stored.receipt_hash == newest["receipt_hash"]
    assert sign_receipt(node.signer, stored.body) == stored

    keys = Keyring([cp.plane.signer.public_key])
    verifier, problems = await verify_log(
        read_log(cp.plane.store, cp.plane.topology), cp.plane.topology, keys
    )
    assert problems == []
    assert verifier.by_type["NodeReceiptsReported"] == 2
    report = await reconcile(
        read_log(cp.plane.store, cp.plane.topology), cp.plane.topology, cp.plane.pool
    )
    assert (report.discrepancies, report.receipts) == ([], 0)  # not paid work
    rebuilt = await rebuild(cp.plane.settings, jobs=2)
    assert "node_receipts" in rebuilt.tables
    assert rebuilt.differences == []


def _usage(r: Receipt) -> Receipt:
    return msgspec.structs.replace(r, body=msgspec.structs.replace(r.body, usage=Usage(0, 0, 0)))


def _stranger(r: Receipt) -> Receipt:
    stranger = Signer.generate()
    return sign_receipt(stranger, msgspec.structs.replace(r.body, key_id=stranger.key_id))


def _signature(r: Receipt) -> Receipt:
    return msgspec.structs.replace(
        r, signature=("A" if r.signature[0] != "A" else "B") + r.signature[1:]
    )


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (_usage, "receipt_hash_mismatch"),
        (_signature, "invalid_signature"),
        (_stranger, "invalid_signature"),
    ],
)
async def test_a_tampered_receipt_refuses_the_whole_batch_by_name(
    cp: Harness, tamper: Any, code: str
) -> None:
    node = await enrolled(cp, "node-t")
    good = local_receipt(node.signer, "node-t", 1)
    bad = tamper(local_receipt(node.signer, "node-t", 2))
    head = (await cp.heads())[0]
    response = await submit(node, [good, bad])
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["detail"].startswith(f"receipts[1] ({bad.receipt_hash})")
    assert (await cp.heads())[0] == head
    assert (await listed(cp, "node-t"))["data"] == []


async def test_only_its_own_receipts_from_an_enrolled_node(cp: Harness) -> None:
    node, other = await enrolled(cp, "node-o"), await enrolled(cp, "node-p")
    theirs = local_receipt(other.signer, "node-p", 1)
    response = await submit(node, [theirs])
    assert (response.status_code, response.json()["error"]["code"]) == (422, "receipt_mismatch")
    odd = local_receipt(node.signer, "node-o", 1, model="ti\x00ny")
    response = await submit(node, [odd])
    assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_receipt")

    forged = cp.node("node-o")  # right id, wrong key: the request signature fails first
    response = await submit(forged, [local_receipt(forged.signer, "node-o", 1)])
    assert (response.status_code, response.json()["error"]["code"]) == (401, "invalid_signature")
    stranger = cp.node("node-x")
    response = await submit(stranger, [local_receipt(stranger.signer, "node-x", 1)])
    assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized")
    for body in (b"", b"{}", b'{"receipts": []}', b"\xff"):
        path = "/v1/nodes/node-o/receipts"
        raw = await node.client.post(path, content=body, headers=node.headers(body, path=path))
        assert raw.status_code == 400, raw.text

    revoked = await cp.client.post(
        "/v1/nodes/node-o/revoke", json={"reason": "test"}, headers=cp.as_admin()
    )
    assert revoked.status_code == 201, revoked.text
    response = await submit(node, [local_receipt(node.signer, "node-o", 2)])
    assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized")


async def test_operators_page_through_a_nodes_receipts(cp: Harness) -> None:
    node = await enrolled(cp, "node-q")
    for start in (0, 3):
        batch = [local_receipt(node.signer, "node-q", n) for n in range(start, start + 3)]
        assert (await submit(node, batch)).status_code == 200
    viewer = await cp.token("viewer")
    seen: list[str] = []
    cursor = None
    while True:
        page = await listed(cp, "node-q", limit=4, **({"cursor": cursor} if cursor else {}))
        seen += [r["receipt_hash"] for r in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 6
    as_viewer = await cp.client.get("/v1/nodes/node-q/receipts", headers=cp.as_admin(viewer))
    assert as_viewer.status_code == 200
    for path, status in (
        ("/v1/nodes/node-q/receipts?cursor=bm9wZQ", 400),
        ("/v1/nodes/nobody/receipts", 404),
    ):
        response = await cp.client.get(path, headers=cp.as_admin())
        assert response.status_code == status, response.text
    assert (await cp.client.get("/v1/nodes/node-q/receipts")).status_code == 401


async def test_a_node_awaiting_approval_is_told_so(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path
) -> None:
    async for cp in _harness(servers, database_url, topology, tmp_path, require_approval=True):
        node = await enrolled(cp, "node-w")
        response = await submit(node, [local_receipt(node.signer, "node-w", 1)])
        assert (response.status_code, response.json()["error"]["code"]) == (409, "node_pending")
        approved = await cp.client.post("/v1/nodes/node-w/approve", headers=cp.as_admin())
        assert approved.status_code == 201, approved.text
        response = await submit(node, [local_receipt(node.signer, "node-w", 1)])
        assert response.status_code == 200, response.text
