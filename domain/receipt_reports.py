"""A node's batch of signed receipts for the control plane, and how one is judged (pure).

The control plane takes a batch whole or not at all: every receipt must be this node's,
hashed over its body and signed by the node's current key, else the first one that is not
is named with a stable code.
"""

from collections.abc import Sequence
from typing import Annotated, NamedTuple

import msgspec
from msgspec import Meta

from domain.canonical import canonical_bytes
from domain.receipts import Receipt, verify_receipt
from domain.signing import Keyring

MAX_RECEIPTS_PER_BATCH = 200
"""Bounds one request and the one ledger event it becomes (a receipt is under 1 KB)."""
MAX_TIME_MS = 253_402_300_799_999
"""The last millisecond of year 9999: a later time is no time a database can hold."""
MAX_TOKENS = 2**63 - 1


class ReceiptBatch(msgspec.Struct, frozen=True):
    receipts: Annotated[list[Receipt], Meta(min_length=1, max_length=MAX_RECEIPTS_PER_BATCH)]


class BadReceipt(NamedTuple):
    position: int
    receipt_hash: str
    code: str
    """receipt_mismatch (another node's), invalid_receipt (values no completion has),
    receipt_hash_mismatch or invalid_signature."""

    def describe(self) -> str:
        return f"receipts[{self.position}] ({self.receipt_hash[:64]}): {self.code}"


def first_bad_receipt(
    receipts: Sequence[Receipt], keyring: Keyring, node_id: str
) -> BadReceipt | None:
    for index, receipt in enumerate(receipts):
        if receipt.body.node_id != node_id:
            return BadReceipt(index, receipt.receipt_hash, "receipt_mismatch")
        if not plausible(receipt):
            return BadReceipt(index, receipt.receipt_hash, "invalid_receipt")
        problem = verify_receipt(receipt, keyring)
        if problem is not None:
            return BadReceipt(index, receipt.receipt_hash, problem)
    return None


def plausible(receipt: Receipt) -> bool:
    """Values a read model can hold: a signature proves who wrote them, not that they fit."""
    usage = receipt.body.usage
    tokens = (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    return (
        0 <= receipt.body.created_at_ms <= MAX_TIME_MS
        and all(0 <= n <= MAX_TOKENS for n in tokens)
        and b"\\u0000" not in canonical_bytes(receipt)  # no text column takes a NUL
    )


def new_receipts(receipts: Sequence[Receipt], recorded: set[str]) -> list[Receipt]:
    """The batch less what the ledger already holds, each receipt once, in batch order."""
    fresh: dict[str, Receipt] = {}
    for receipt in receipts:
        if receipt.receipt_hash not in recorded:
            fresh.setdefault(receipt.receipt_hash, receipt)
    return list(fresh.values())
