"""Moving this node to a new identity key without losing the control plane's trust.

The new key is written beside the current one first (``<key>.next``, mode 0600), the
control plane is asked to rotate (a request signed with the current key that carries
the new key's proof), and only its answer promotes the new key over the old one. A run
cut short after the control plane accepted finds the pending key next time, and a
request signed with it tells whether the control plane already holds it.
"""

import os
import secrets
import time
from pathlib import Path

import httpx

from adapters.keyfile import load_or_create_signer
from domain.canonical import canonical_bytes
from domain.key_rotation import rotation_request
from domain.node_requests import sign_request
from domain.signing import Signer
from node.managed.client import ControlPlaneClient


class RotationFailed(Exception):
    pass


def pending_key_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + ".next")


async def rotate_key(client: ControlPlaneClient, key_path: Path) -> Signer:
    """The new key, once the control plane holds it and it is this node's key file."""
    pending = pending_key_path(key_path)
    new = load_or_create_signer(pending)
    current = client.identity.signer
    response = await _ask(client, current, current.key_id, new)
    if response.status_code == 201 or (
        _detail(response) == "wrong_key" and await _holds(client, new)
    ):
        os.replace(pending, key_path)
        return new
    raise RotationFailed(f"control plane answered {response.status_code}: {_detail(response)}")


async def _holds(client: ControlPlaneClient, key: Signer) -> bool:
    """Whether ``key`` is already the node's key there: a rotation to itself, signed with
    it, gets past authentication and is refused as ``same_key`` (nothing is recorded)."""
    return _detail(await _ask(client, key, key.key_id, key)) == "same_key"


async def _ask(
    client: ControlPlaneClient, signer: Signer, current_key_id: str, new: Signer
) -> httpx.Response:
    node_id = client.identity.node_id
    path = f"/v1/nodes/{node_id}/keys"
    body = canonical_bytes(rotation_request(node_id, current_key_id, new))
    headers = sign_request(
        signer,
        node_id,
        method="POST",
        path=path,
        body=body,
        timestamp=int(time.time()),
        nonce=secrets.token_urlsafe(18),
    )
    return await client.http.post(
        path, content=body, headers={"content-type": "application/json", **headers}
    )


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["detail"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
