"""Judging a node's receipt batch: the first bad receipt named, values a read model can hold."""

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from domain.receipt_reports import (
    MAX_TIME_MS,
    MAX_TOKENS,
    first_bad_receipt,
    new_receipts,
    plausible,
)
from domain.receipts import Receipt, Usage, sign_receipt
from domain.signing import Keyring, Signer
from tests.billing_support import receipt

NODE = Signer(b"\x09" * 32)
KEYS = Keyring([NODE.public_key])
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def made(**body: Any) -> Receipt:
    r = receipt(NODE, "n1", 3, 4, NOW, dispatch_id="d1")
    return sign_receipt(NODE, msgspec.structs.replace(r.body, **body))


@pytest.mark.parametrize(
    ("body", "holds"),
    [
        ({}, True),
        ({"created_at_ms": MAX_TIME_MS}, True),
        ({"created_at_ms": MAX_TIME_MS + 1}, False),
        ({"created_at_ms": -1}, False),
        ({"usage": Usage(MAX_TOKENS, 0, MAX_TOKENS)}, True),
        ({"usage": Usage(MAX_TOKENS + 1, 0, 0)}, False),
        ({"usage": Usage(0, -1, 0)}, False),
        ({"finish_reason": "st\x00p"}, False),
    ],
)
def test_only_values_a_read_model_holds_are_plausible(body: dict[str, Any], holds: bool) -> None:
    r = made(**body)
    assert plausible(r) is holds
    bad = first_bad_receipt([made(), r], KEYS, "n1")
    assert bad == (None if holds else (1, r.receipt_hash, "invalid_receipt"))


def test_the_first_bad_receipt_is_named_and_duplicates_drop_out() -> None:
    good, other = made(), made(model="other")
    assert first_bad_receipt([good, other], KEYS, "n2") == (
        0,
        good.receipt_hash,
        "receipt_mismatch",
    )
    assert first_bad_receipt([good], Keyring(), "n1") == (0, good.receipt_hash, "invalid_signature")
    assert new_receipts([good, other, good], {other.receipt_hash}) == [good]
