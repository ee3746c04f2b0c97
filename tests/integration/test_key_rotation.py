"""Key rotation over a signed node request: the old key vouches, the new key proves itself."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from domain.canonical import b64encode, canonical_bytes
from domain.decoding import decode_stored
from domain.events import NodeKeyRotated
from domain.key_rotation import KeyRotationRequest, rotation_request
from domain.signing import Signer
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


def keys_path(node: SimulatedNode) -> str:
    return f"/v1/nodes/{node.node_id}/keys"


async def rotate(
    node: SimulatedNode, body: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await node.client.post(
        keys_path(node),
        content=body,
        headers={
            "content-type": "application/json",
            **(headers or node.headers(body, path=keys_path(node))),
        },
    )


def proof(node: SimulatedNode, new: Signer) -> bytes:
    return canonical_bytes(rotation_request(node.node_id, node.signer.key_id, new))


async def enrolled(cp: Harness, node_id: str) -> SimulatedNode:
    node = cp.node(node_id)
    assert (await node.enroll()).status_code == 201
    assert (await node.heartbeat()).status_code == 201
    return node


async def test_a_rotation_moves_the_node_to_its_new_key(cp: Harness) -> None:
    node = await enrolled(cp, "node-r")
    old, new = node.signer, Signer.generate()
    ledger, beats = await cp.heads()

    response = await rotate(node, proof(node, new))

    assert response.status_code == 201, response.text
    assert response.json() == {
        "node_id": "node-r",
        "old_key_id": old.key_id,
        "key_id": new.key_id,
        "seq": ledger + 1,
    }
    assert await cp.heads() == (ledger + 1, beats)
    stored = await cp.plane.store.last(cp.plane.topology.subject("node", "node-r"))
    assert stored is not None
    event = decode_stored(stored).event
    assert isinstance(event, NodeKeyRotated)
    assert (event.old_key_id, event.key_id) == (old.key_id, new.key_id)
    assert event.evidence.key_id == old.key_id  # the old key's signed request, kept whole
    assert event.node.public_key == b64encode(new.public_key)

    stale = await node.heartbeat()
    assert stale.status_code == 401
    assert stale.json()["error"]["detail"] == "wrong_key"
    node.signer = new
    assert (await node.heartbeat()).status_code == 201
    await cp.project()
    detail = await cp.client.get("/v1/nodes/node-r", headers=cp.as_admin())
    assert detail.json()["node"]["key_id"] == new.key_id


async def test_a_rotation_needs_both_signatures_right(cp: Harness) -> None:
    node = await enrolled(cp, "node-w")
    new, stranger = Signer.generate(), Signer.generate()
    before = await cp.heads()

    async def refused(
        response: httpx.Response, status: int, code: str, detail: str | None = None
    ) -> None:
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
        if detail is not None:
            assert response.json()["error"]["detail"] == detail
        assert await cp.heads() == before

    body = proof(node, new)
    forged = {**node.headers(body, path=keys_path(node)), "x-b3iq-signature": new.sign(b"x")}
    await refused(await rotate(node, body, forged), 401, "invalid_signature", "bad_signature")
    by_stranger = node.headers(body, path=keys_path(node), signer=stranger)
    await refused(await rotate(node, body, by_stranger), 401, "invalid_signature", "wrong_key")

    # The new key must sign the statement for this node and this current key.
    unproven = canonical_bytes(
        KeyRotationRequest(public_key=b64encode(new.public_key), signature=stranger.sign(b"x"))
    )
    await refused(await rotate(node, unproven), 401, "invalid_signature", "bad_new_key_signature")
    elsewhere = canonical_bytes(rotation_request("node-other", node.signer.key_id, new))
    await refused(await rotate(node, elsewhere), 401, "invalid_signature", "bad_new_key_signature")
    await refused(await rotate(node, proof(node, node.signer)), 400, "invalid_request", "same_key")
    short = canonical_bytes(KeyRotationRequest(public_key="AAAA", signature="x"))
    await refused(await rotate(node, short), 400, "invalid_request", "public_key_malformed")
    await refused(await rotate(node, b"{"), 400, "invalid_request")


async def test_a_rotation_request_works_once(cp: Harness) -> None:
    node = await enrolled(cp, "node-x")
    body = proof(node, Signer.generate())
    headers = node.headers(body, path=keys_path(node))
    ledger, beats = await cp.heads()

    # The same request twice at once: its nonce lets exactly one through.
    first, second = await asyncio.gather(rotate(node, body, headers), rotate(node, body, headers))
    assert sorted([first.status_code, second.status_code]) == [201, 401]
    loser = first if first.status_code == 401 else second
    assert loser.json()["error"] == {
        "status": 401,
        "title": "Unauthorized",
        "detail": "replayed_nonce",
        "code": "invalid_signature",
    }
    assert await cp.heads() == (ledger + 1, beats)

    # Replayed later, or signed afresh, it fails too: the key that vouched is retired.
    for again in (await rotate(node, body, headers), await rotate(node, body)):
        assert again.status_code == 401
        assert again.json()["error"]["detail"] == "wrong_key"
    assert await cp.heads() == (ledger + 1, beats)


async def test_a_revoked_node_cannot_rotate(cp: Harness) -> None:
    node = await enrolled(cp, "node-v")
    revoked = await cp.client.post(
        "/v1/nodes/node-v/revoke", json={"reason": "lost"}, headers=cp.as_admin()
    )
    assert revoked.status_code == 201
    before = await cp.heads()
    response = await rotate(node, proof(node, Signer.generate()))
    assert response.status_code == 401
    assert response.json()["error"]["detail"] == "node_revoked"
    assert await cp.heads() == before
