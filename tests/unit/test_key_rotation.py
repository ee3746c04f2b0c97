"""The key rotation statement and the new key's proof (pure)."""

from domain.canonical import b64encode
from domain.key_rotation import (
    KeyRotationRequest,
    check_new_key,
    rotation_request,
    rotation_statement,
)
from domain.node_requests import Rejection
from domain.signing import Signer


def test_the_statement_is_four_lines_naming_node_and_both_keys() -> None:
    text = rotation_statement("n1", "ed25519:aa", "ed25519:bb")
    assert text.decode().split("\n") == ["B3IQ-KEY-ROTATION-V1", "n1", "ed25519:aa", "ed25519:bb"]


def test_only_the_new_key_signing_this_rotation_proves_it() -> None:
    old, new, other = Signer.generate(), Signer.generate(), Signer.generate()
    request = rotation_request("n1", old.key_id, new)
    assert check_new_key(request, "n1", old.key_id) == new.public_key
    bad = Rejection("invalid_signature", "bad_new_key_signature")
    assert check_new_key(request, "n2", old.key_id) == bad
    assert check_new_key(request, "n1", other.key_id) == bad
    stolen = KeyRotationRequest(public_key=b64encode(other.public_key), signature=request.signature)
    assert check_new_key(stolen, "n1", old.key_id) == bad
    same = rotation_request("n1", old.key_id, old)
    assert check_new_key(same, "n1", old.key_id) == Rejection("invalid_request", "same_key")
    short = KeyRotationRequest(public_key="AAAA", signature=request.signature)
    assert check_new_key(short, "n1", old.key_id) == Rejection(
        "invalid_request", "public_key_malformed"
    )
