"""Key rotation: the node moves to a new Ed25519 key and proves both halves (pure).

The request is a signed node request made with the current key, and its body names the
new public key: the old key vouches for the new one. The body also carries the new key's
signature over a rotation statement, so a node can only rotate to a key it holds::

    B3IQ-KEY-ROTATION-V1\\n<node id>\\n<current key id>\\n<new key id>

(four lines joined by "\\n", no trailing newline). Naming the current key makes the
statement good for one rotation only: once it is done, that key id is no longer current.
"""

from typing import Annotated

import msgspec
from msgspec import Meta

from domain.canonical import b64decode, b64encode
from domain.node_requests import Rejection
from domain.signing import Keyring, Signer, key_id_for

SCHEME = "B3IQ-KEY-ROTATION-V1"

Short = Annotated[str, Meta(max_length=512)]


class KeyRotationRequest(msgspec.Struct, frozen=True, kw_only=True):
    public_key: Short
    """URL-safe base64 (no padding) of the new raw 32-byte Ed25519 public key."""
    signature: Short
    """The new key's signature over the rotation statement."""


def rotation_statement(node_id: str, current_key_id: str, new_key_id: str) -> bytes:
    return "\n".join((SCHEME, node_id, current_key_id, new_key_id)).encode()


def rotation_request(node_id: str, current_key_id: str, new_key: Signer) -> KeyRotationRequest:
    """What a node sends (signed with its current key) to move to ``new_key``."""
    statement = rotation_statement(node_id, current_key_id, new_key.key_id)
    return KeyRotationRequest(
        public_key=b64encode(new_key.public_key), signature=new_key.sign(statement)
    )


def check_new_key(
    request: KeyRotationRequest, node_id: str, current_key_id: str
) -> bytes | Rejection:
    """The new raw public key, if the new key signed the statement for this rotation."""
    try:
        public_key = b64decode(request.public_key)
    except ValueError:
        public_key = b""
    if len(public_key) != 32:
        return Rejection("invalid_request", "public_key_malformed")
    key_id = key_id_for(public_key)
    if key_id == current_key_id:
        return Rejection("invalid_request", "same_key")
    statement = rotation_statement(node_id, current_key_id, key_id)
    if not Keyring([public_key]).verify(key_id, statement, request.signature):
        return Rejection("invalid_signature", "bad_new_key_signature")
    return public_key
