"""Payout batches: rows under an RFC 6962 root, their lifecycle, and row proofs (pure).

preview → created → submitted → finalized. Only ``created`` claims payouts; the ledger
decides who claimed first (see ``adapters/payout_batches.py``), never a read model.
"""

from collections.abc import Sequence

import msgspec

from domain.canonical import canonical_bytes
from domain.events import (
    Event,
    PayoutBatchCreated,
    PayoutBatchEvent,
    PayoutBatchFinalized,
    PayoutBatchPreviewed,
    PayoutBatchSubmitted,
    PayoutRow,
)
from domain.merkle import MerkleTree, leaf_hash, verify_inclusion
from domain.nodes import Refused

PREVIEW, CREATED, SUBMITTED, FINALIZED = "preview", "created", "submitted", "finalized"
STATE_AFTER: dict[type[PayoutBatchEvent], str] = {
    PayoutBatchPreviewed: PREVIEW,
    PayoutBatchCreated: CREATED,
    PayoutBatchSubmitted: SUBMITTED,
    PayoutBatchFinalized: FINALIZED,
}
ALLOWED_FROM: dict[str, str | None] = {
    PREVIEW: None,
    CREATED: PREVIEW,
    SUBMITTED: CREATED,
    FINALIZED: SUBMITTED,
}
"""The state each transition requires before it (None: a new batch)."""


def row_leaf(row: PayoutRow) -> bytes:
    return leaf_hash(canonical_bytes(row))


def tree_of(rows: Sequence[PayoutRow]) -> MerkleTree:
    return MerkleTree([row_leaf(r) for r in rows])


def root_of(rows: Sequence[PayoutRow]) -> str:
    return tree_of(rows).root().hex()


class BatchHead(msgspec.Struct, frozen=True, kw_only=True):
    """What a settlement target is told about a batch: its root, count and total."""

    batch_id: str
    merkle_root: str
    payout_count: int
    total_amount_wei: str


def head_of(event: PayoutBatchPreviewed | PayoutBatchCreated) -> BatchHead:
    return BatchHead(
        batch_id=event.batch_id,
        merkle_root=event.merkle_root,
        payout_count=event.payout_count,
        total_amount_wei=event.total_amount_wei,
    )


def propose(
    batch_id: str, pending: Sequence[PayoutRow], up_to_seq: int, by: str, *, create: bool
) -> list[Event]:
    """A preview of ``pending`` (sorted by payout id, so the root is reproducible), and
    with ``create`` the claim too, in the same append."""
    if not pending:
        raise Refused("nothing_to_batch", "no pending payouts outside a batch")
    rows = tuple(sorted(pending, key=lambda r: r.payout_id))
    preview = PayoutBatchPreviewed(
        batch_id=batch_id,
        merkle_root=root_of(rows),
        payout_count=len(rows),
        total_amount_wei=str(sum(int(r.amount_wei) for r in rows)),
        rows=rows,
        up_to_seq=up_to_seq,
        by=by,
    )
    if not create:
        return [preview]
    return [preview, PayoutBatchCreated(**msgspec.structs.asdict(preview))]


def transition_refusal(state: str | None, event: PayoutBatchEvent) -> str | None:
    """Why ``event`` may not follow a batch in ``state``, or None."""
    wanted = STATE_AFTER[type(event)]
    if ALLOWED_FROM[wanted] != state:
        return f"a batch {state or 'that does not exist'} cannot become {wanted}"
    return None


class PayoutProof(msgspec.Struct, frozen=True, kw_only=True):
    """Payout ``row`` is leaf ``index`` of the batch whose root is ``merkle_root``: checkable
    with nothing but this (and, to trust the root, the signed batch event on the log)."""

    batch_id: str
    merkle_root: str
    payout_count: int
    index: int
    row: PayoutRow
    leaf: str
    """Hex SHA-256(0x00 || canonical bytes of ``row``)."""
    audit_path: list[str]


def prove_row(batch_id: str, rows: Sequence[PayoutRow], payout_id: str) -> PayoutProof:
    index = next((i for i, r in enumerate(rows) if r.payout_id == payout_id), None)
    if index is None:
        raise Refused("not_found", f"payout {payout_id} is not in batch {batch_id}")
    tree = tree_of(rows)
    return PayoutProof(
        batch_id=batch_id,
        merkle_root=tree.root().hex(),
        payout_count=len(rows),
        index=index,
        row=rows[index],
        leaf=row_leaf(rows[index]).hex(),
        audit_path=[p.hex() for p in tree.inclusion_proof(index)],
    )


def check_payout_proof(proof: PayoutProof) -> list[str]:
    """Every reason the proof fails; empty when it holds."""
    leaf = row_leaf(proof.row)
    failures = [] if leaf.hex() == proof.leaf else ["the leaf is not the row's hash"]
    try:
        path = [bytes.fromhex(h) for h in proof.audit_path]
        root = bytes.fromhex(proof.merkle_root)
    except ValueError:
        return [*failures, "audit path or root is not hex"]
    if not verify_inclusion(proof.index, proof.payout_count, leaf, path, root):
        failures.append(f"the row is not leaf {proof.index} of {proof.payout_count} under the root")
    return failures
