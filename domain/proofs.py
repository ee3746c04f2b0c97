"""An inclusion proof a third party can check with nothing but our public key (pure)."""

import msgspec

from domain.envelope import StoredEvent
from domain.events import LedgerCheckpointed
from domain.merkle import leaf_hash, verify_inclusion
from domain.signing import Keyring
from domain.verification import Problem, verify_event


class ProvenEvent(msgspec.Struct, frozen=True):
    stream: str
    seq: int
    subject: str
    data: msgspec.Raw
    """The stored envelope, byte for byte: its RFC 6962 leaf is SHA-256(0x00 || data)."""


class InclusionProof(msgspec.Struct, frozen=True, kw_only=True):
    """Event ``event`` is leaf ``seq - 1`` of the tree whose signed head is ``checkpoint``."""

    event: ProvenEvent
    tree_size: int
    root: str
    audit_path: list[str]
    checkpoint: ProvenEvent


def as_proven(stored: StoredEvent) -> ProvenEvent:
    return ProvenEvent(stored.stream, stored.seq, stored.subject, msgspec.Raw(stored.data))


def check_proof(proof: InclusionProof, keyring: Keyring) -> list[str]:
    """Every reason the proof fails; empty when it holds."""
    c = proof.checkpoint
    outcome = verify_event(StoredEvent(c.stream, c.seq, c.subject, bytes(c.data)), keyring)
    if isinstance(outcome, Problem):
        return [f"checkpoint: {outcome}"]
    head = outcome.event
    if not isinstance(head, LedgerCheckpointed):
        return [f"checkpoint is a {type(head).__name__}, not a LedgerCheckpointed"]
    failures = []
    if (head.tree_size, head.root) != (proof.tree_size, proof.root):
        failures.append(f"checkpoint signs size {head.tree_size} root {head.root}")
    try:
        path = [bytes.fromhex(h) for h in proof.audit_path]
        root = bytes.fromhex(proof.root)
    except ValueError:
        return [*failures, "audit path or root is not hex"]
    leaf = leaf_hash(bytes(proof.event.data))
    if not verify_inclusion(proof.event.seq - 1, proof.tree_size, leaf, path, root):
        failures.append(f"event {proof.event.seq} is not in the tree of {proof.tree_size}")
    return failures
