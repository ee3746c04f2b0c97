import msgspec
import pytest

from domain.signing import Keyring, Signer
from node.receipts import (
    Receipt,
    ReceiptStore,
    Timings,
    Usage,
    digest,
    issue_receipt,
    verify_receipt,
)
from node.state import Database


def make(signer: Signer) -> Receipt:
    return issue_receipt(
        signer,
        node_id="node-1",
        model="tiny",
        runtime_kind="llama_cpp",
        stream=True,
        finish_reason="length",
        usage=Usage(10, 5, 15),
        timings=Timings(queue_us=100, ttft_us=2500, latency_us=9000),
        request_digest=digest({"messages": [{"role": "user", "content": "secret prompt"}]}),
        response_digest=digest({"content": "secret output", "finish_reason": "length"}),
    )


@pytest.fixture
def signer() -> Signer:
    return Signer.generate()


def keyring_for(signer: Signer) -> Keyring:
    keyring = Keyring()
    keyring.add(signer.public_key)
    return keyring


def test_a_fresh_receipt_verifies(signer: Signer) -> None:
    assert verify_receipt(make(signer), keyring_for(signer)) is None


def test_content_never_appears_in_a_receipt(signer: Signer) -> None:
    encoded = msgspec.json.encode(make(signer))
    assert b"secret prompt" not in encoded
    assert b"secret output" not in encoded


def test_tampering_is_detected(signer: Signer) -> None:
    receipt = make(signer)
    changed = msgspec.structs.replace(
        receipt, body=msgspec.structs.replace(receipt.body, usage=Usage(10, 500, 510))
    )
    assert verify_receipt(changed, keyring_for(signer)) == "receipt_hash_mismatch"
    other = Signer.generate()
    assert verify_receipt(receipt, keyring_for(other)) == "invalid_signature"
    forged = msgspec.structs.replace(receipt, signature=other.sign(b"x"))
    assert verify_receipt(forged, keyring_for(signer)) == "invalid_signature"


def test_store_round_trip_keeps_the_signed_bytes(signer: Signer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = ReceiptStore(Database(tmp_path / "db.sqlite3"))
    first, second = make(signer), make(signer)
    store.add(first)
    store.add(second)
    assert store.recent(10) == [second, first]
    assert all(verify_receipt(r, keyring_for(signer)) is None for r in store.recent(10))
    assert store.count() == 2
