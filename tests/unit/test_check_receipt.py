"""A dispatched request's receipt must verify and answer the dispatch, node and model asked."""

from datetime import UTC, datetime

from domain.receipts import check_receipt
from domain.signing import Keyring, Signer
from tests.billing_support import receipt

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def test_only_a_verified_receipt_for_the_dispatch_node_and_model_asked_passes() -> None:
    node = Signer.generate()
    keys = Keyring([node.public_key])
    signed = receipt(node, "node-a", 3, 5, NOW, model="tiny", dispatch_id="d1")
    asked = {"node_id": "node-a", "model": "tiny", "dispatch_id": "d1"}
    assert check_receipt(signed, keys, **asked) is None
    for wrong in ({"model": "big"}, {"node_id": "node-b"}, {"dispatch_id": "d2"}):
        assert check_receipt(signed, keys, **(asked | wrong)) == "receipt_mismatch"
    stranger = Keyring([Signer.generate().public_key])
    assert check_receipt(signed, stranger, **asked) == "invalid_signature"
