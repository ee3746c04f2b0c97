"""Checking envelopes and logs with nothing but the bytes and the public keys (pure).

Every failure names the exact event and one precise reason, so an auditor can act on it.
"""

from collections import Counter
from enum import StrEnum

import msgspec

from domain.canonical import b64decode, sha256_hex
from domain.envelope import EnvelopeBody, StoredEvent, decode_body, event_hash, split_wire
from domain.events import (
    CustomerDebited,
    Event,
    LedgerCheckpointed,
    NodeEnrolled,
    NodeEvidence,
    NodeKeyRotated,
    NodeReceiptsReported,
    SchemaMismatch,
    UnknownEventType,
    decode_payload,
)
from domain.merkle import Frontier, leaf_hash, verify_consistency
from domain.receipts import Receipt, verify_receipt
from domain.signing import Keyring


class Reason(StrEnum):
    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    SCHEMA_MISMATCH = "schema_mismatch"
    UNKNOWN_TYPE = "unknown_event_type"
    SUBJECT_MISMATCH = "subject_mismatch"
    BROKEN_CHAIN = "broken_chain"
    SEQUENCE_GAP = "sequence_gap"
    UNKNOWN_NODE_KEY = "unknown_node_key"
    BAD_NODE_SIGNATURE = "bad_node_signature"
    BAD_RECEIPT = "bad_receipt"
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"
    CHECKPOINT_INCONSISTENT = "checkpoint_inconsistent"
    TRUNCATED = "truncated"


class Problem(msgspec.Struct, frozen=True):
    reason: Reason
    detail: str
    stream: str
    seq: int
    subject: str
    event_id: str | None = None

    def __str__(self) -> str:
        where = f"{self.stream}#{self.seq} {self.subject}"
        return f"{self.reason}: {self.detail} ({where}, event {self.event_id or '?'})"


class Verified(msgspec.Struct, frozen=True):
    body: EnvelopeBody
    event: Event
    hash: str


def _problem(stored: StoredEvent, reason: Reason, detail: str, event_id: str | None) -> Problem:
    return Problem(reason, detail, stored.stream, stored.seq, stored.subject, event_id)


def verify_event(stored: StoredEvent, keyring: Keyring) -> Verified | Problem:
    """Signature, schema and placement of one stored event (not its chain)."""
    try:
        wire = split_wire(stored.data)
        body = decode_body(wire.body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _problem(stored, Reason.MALFORMED, str(exc), None)
    if body.signer not in keyring:
        return _problem(stored, Reason.UNKNOWN_KEY, f"signer {body.signer}", body.event_id)
    if not keyring.verify(body.signer, bytes(wire.body), wire.sig):
        return _problem(stored, Reason.BAD_SIGNATURE, f"signer {body.signer}", body.event_id)
    if body.subject != stored.subject:
        detail = f"signed for {body.subject!r}, stored on {stored.subject!r}"
        return _problem(stored, Reason.SUBJECT_MISMATCH, detail, body.event_id)
    try:
        event = decode_payload(body.type, body.schema_version, body.payload)
    except UnknownEventType as exc:
        return _problem(stored, Reason.UNKNOWN_TYPE, str(exc), body.event_id)
    except SchemaMismatch as exc:
        return _problem(stored, Reason.SCHEMA_MISMATCH, str(exc), body.event_id)
    return Verified(body, event, event_hash(wire.body))


class LogVerifier:
    """Feeds a log through in stream order; reports each problem once, at the event it hits.

    Checks per event, plus: stream sequences are contiguous, and on chained streams each
    event's ``prev_hash`` is the hash of the previous event on its subject, and each signed
    checkpoint's tree head is the RFC 6962 root of every message before it, provably
    consistent with the checkpoint before. Streams with a retention window (heartbeats)
    are unchained and may start after sequence 1.
    """

    def __init__(self, keyring: Keyring, *, unchained_streams: frozenset[str] = frozenset()):
        self.keyring = keyring
        self.unchained_streams = unchained_streams
        self.by_type: Counter[str] = Counter()
        self.by_signer: Counter[str] = Counter()
        self.verified = 0
        self.checkpoints = 0
        self._last_seq: dict[str, int] = {}
        self._tip: dict[str, str] = {}
        self._trees: dict[str, Frontier] = {}
        self._node_keys: dict[str, Keyring] = {}
        self._last_checkpoint: dict[str, LedgerCheckpointed] = {}

    def feed(self, stored: StoredEvent) -> list[Problem]:
        problems = self._check_sequence(stored)
        outcome = verify_event(stored, self.keyring)
        if isinstance(outcome, Problem):
            return [*problems, outcome]
        problems.extend(self._check_node_evidence(stored, outcome))
        problems.extend(self._check_receipt(stored, outcome))
        if stored.stream not in self.unchained_streams:
            problems.extend(self._check_chain(stored, outcome))
            problems.extend(self._check_checkpoint(stored, outcome))
            self._trees.setdefault(stored.stream, Frontier()).append(leaf_hash(stored.data))
        self.verified += 1
        self.by_type[outcome.body.type] += 1
        self.by_signer[outcome.body.signer] += 1
        return problems

    def _check_sequence(self, stored: StoredEvent) -> list[Problem]:
        last = self._last_seq.get(stored.stream)
        self._last_seq[stored.stream] = stored.seq
        start = 1 if stored.stream not in self.unchained_streams else stored.seq
        expected = start if last is None else last + 1
        if stored.seq == expected:
            return []
        detail = f"expected sequence {expected}, got {stored.seq}"
        return [_problem(stored, Reason.SEQUENCE_GAP, detail, None)]

    def _check_chain(self, stored: StoredEvent, outcome: Verified) -> list[Problem]:
        tip = self._tip.get(stored.subject)
        self._tip[stored.subject] = outcome.hash
        if outcome.body.prev_hash == tip:
            return []
        detail = f"prev_hash {outcome.body.prev_hash} but the subject's previous event is {tip}"
        return [_problem(stored, Reason.BROKEN_CHAIN, detail, outcome.body.event_id)]

    def _check_node_evidence(self, stored: StoredEvent, outcome: Verified) -> list[Problem]:
        """What a node signed is checked against the keys the log itself gave that node:
        its enrollment introduces a key, a rotation (signed by the old key) the next."""
        event = outcome.event
        evidence = getattr(event, "evidence", None)
        node_id = getattr(event, "node_id", None)
        if not isinstance(evidence, NodeEvidence) or not isinstance(node_id, str):
            return []
        keys = self._node_keys.setdefault(node_id, Keyring())
        if isinstance(event, NodeEnrolled):
            keys.add(b64decode(event.public_key))  # the enrollment answer proves this key
        failure = evidence_failure(evidence, node_id, keys)
        if isinstance(event, NodeKeyRotated) and failure is None:
            keys.add(b64decode(event.public_key))
        if failure is None:
            return []
        reason = (
            Reason.UNKNOWN_NODE_KEY if evidence.key_id not in keys else Reason.BAD_NODE_SIGNATURE
        )
        return [_problem(stored, reason, failure, outcome.body.event_id)]

    def _check_receipt(self, stored: StoredEvent, outcome: Verified) -> list[Problem]:
        """A debit holds the node's signed receipt verbatim, a node's report holds many:
        each hash must be over its body and each signature by a key the log gave that node
        before this event (and a report holds its own node's receipts only)."""
        event = outcome.event
        if isinstance(event, CustomerDebited):
            found = self._receipt_failure(event.receipt, f"reservation {event.reservation_id}")
            failures = [] if found is None else [found]
        elif isinstance(event, NodeReceiptsReported):
            where = f"reported by node {event.node_id}"
            failures = []
            for receipt in event.receipts:
                if receipt.body.node_id != event.node_id:
                    detail = (
                        f"node {receipt.body.node_id}'s receipt ({receipt.receipt_hash}, {where})"
                    )
                    failures.append((Reason.BAD_RECEIPT, detail))
                elif (found := self._receipt_failure(receipt, where)) is not None:
                    failures.append(found)
        else:
            return []
        return [_problem(stored, r, d, outcome.body.event_id) for r, d in failures]

    def _receipt_failure(self, receipt: Receipt, where: str) -> tuple[Reason, str] | None:
        node_id = receipt.body.node_id
        keys = self._node_keys.get(node_id, Keyring())
        failure = verify_receipt(receipt, keys)
        if failure is None:
            return None
        if failure == "receipt_hash_mismatch":
            reason, detail = Reason.BAD_RECEIPT, "the receipt hash is not over its body"
        elif receipt.body.key_id not in keys:
            reason = Reason.UNKNOWN_NODE_KEY
            detail = f"node {node_id} has no key {receipt.body.key_id} in the log"
        else:
            reason, detail = Reason.BAD_RECEIPT, f"node {node_id}'s receipt signature is invalid"
        return reason, f"{detail} (receipt {receipt.receipt_hash}, {where})"

    def _check_checkpoint(self, stored: StoredEvent, outcome: Verified) -> list[Problem]:
        checkpoint = outcome.event
        if not isinstance(checkpoint, LedgerCheckpointed):
            return []
        self.checkpoints += 1
        tree = self._trees.get(stored.stream, Frontier())
        event_id = outcome.body.event_id
        if (checkpoint.tree_size, checkpoint.root) != (tree.size, tree.root().hex()):
            detail = (
                f"signs root {checkpoint.root} over {checkpoint.tree_size} messages; the "
                f"{tree.size} messages before it have root {tree.root().hex()}"
            )
            return [_problem(stored, Reason.CHECKPOINT_MISMATCH, detail, event_id)]
        previous = self._last_checkpoint.get(stored.stream)
        self._last_checkpoint[stored.stream] = checkpoint
        if previous is None:
            return []
        try:
            consistent = checkpoint.previous_size == previous.tree_size and verify_consistency(
                previous.tree_size,
                checkpoint.tree_size,
                bytes.fromhex(previous.root),
                bytes.fromhex(checkpoint.root),
                [bytes.fromhex(h) for h in checkpoint.consistency],
            )
        except ValueError:  # not hex: as unprovable as a wrong proof
            consistent = False
        if consistent:
            return []
        detail = f"no valid consistency proof from the checkpoint at size {previous.tree_size}"
        return [_problem(stored, Reason.CHECKPOINT_INCONSISTENT, detail, event_id)]


def evidence_failure(evidence: NodeEvidence, node_id: str, keys: Keyring) -> str | None:
    """Why a node's signed evidence does not hold, or None when it does."""
    if evidence.key_id not in keys:
        return f"node {node_id} has no key {evidence.key_id} in the log"
    if not keys.verify(evidence.key_id, evidence.body.encode(), evidence.sig):
        return f"node {node_id}'s signature does not match what it signed"
    if evidence.request_body is None:
        return None
    lines = evidence.body.split("\n")
    # A signed request names its body's digest (line 4) and its node (line 7).
    if len(lines) != 8 or lines[3] != sha256_hex(evidence.request_body.encode()):
        return "the kept request body is not the one the node signed"
    if lines[6] != node_id:
        return f"the node signed a request for {lines[6]!r}, not {node_id!r}"
    return None
