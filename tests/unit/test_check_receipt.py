"""A dispatched request's receipt must verify and be for the node and model asked."""

from datetime import UTC, datetime

from domain.receipts import check_receipt
from domain.signing import Keyring, Signer
from tests.billing_support import receipt

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def test_only_a_verified_receipt_for_the_node_and_model_asked_passes() -> None:
    node = Signer.generate()
    keys = Keyring([node.public_key])
    signed = receipt(node, "node-a", 3, 5, NOW, model="tiny")
    assert check_receipt(signed, keys, node_id="node-a", model="tiny") is None
    assert check_receipt(signed, keys, node_id="node-a", model="big") == "receipt_mismatch"
    assert check_receipt(signed, keys, node_id="node-b", model="tiny") == "receipt_mismatch"
    stranger = Keyring([Signer.generate().public_key])
    assert check_receipt(signed, stranger, node_id="node-a", model="tiny") == "invalid_signature"
