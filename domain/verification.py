"""Checking envelopes and logs with nothing but the bytes and the public keys (pure).

Every failure names the exact event and one precise reason, so an auditor can act on it.
The work is split in two so it can run on several cores: ``check_event`` does what needs
only the event itself (signatures, schema, hashes) and may run anywhere, in any order;
``LogVerifier.accept`` then takes the results in log order and does what depends on the
order (sequences, hash chains, checkpoints, which keys a node holds at that point).
"""

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from enum import StrEnum
from typing import NamedTuple

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
from domain.signing import Keyring, key_id_for


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


class NodeSignature(NamedTuple):
    """A node's signature inside an event, checked against one candidate key for it."""

    node_id: str
    key_id: str
    checked_with: bytes | None
    """The public key it was checked against; None when none was known where it was checked."""
    valid: bool


class EvidenceCheck(NamedTuple):
    signature: NodeSignature
    request_failure: str | None
    """What is wrong with the kept request body, whoever signed it."""
    enrolls: bytes | None
    """NodeEnrolled: the key it gives the node (before its own evidence is checked)."""
    rotates_to: bytes | None
    """NodeKeyRotated: the key it gives the node (once the old key's evidence holds)."""


class ReceiptCheck(NamedTuple):
    signature: NodeSignature
    hash_ok: bool
    where: str
    """Names the receipt and its reservation (or report) in a problem's detail."""
    foreign: bool = False
    """A node's report holding another node's receipt."""


class Checked(NamedTuple):
    """What ``LogVerifier.accept`` needs of one event that passed ``verify_event``."""

    event_id: str
    type: str
    signer: str
    prev_hash: str | None
    hash: str
    leaf: bytes | None
    """The RFC 6962 leaf hash of the stored bytes (chained streams only)."""
    evidence: EvidenceCheck | None
    receipts: tuple[ReceiptCheck, ...]
    checkpoint: LedgerCheckpointed | None


def check_event(
    stored: StoredEvent, keyring: Keyring, node_keys: Mapping[str, Keyring], *, chained: bool
) -> Checked | Problem:
    """``verify_event``, plus every node signature inside, each checked against the key
    ``node_keys`` holds for it (a candidate: ``accept`` decides whether the node held that
    key at this point of the log)."""
    outcome = verify_event(stored, keyring)
    if isinstance(outcome, Problem):
        return outcome
    event = outcome.event
    return Checked(
        event_id=outcome.body.event_id,
        type=outcome.body.type,
        signer=outcome.body.signer,
        prev_hash=outcome.body.prev_hash,
        hash=outcome.hash,
        leaf=leaf_hash(stored.data) if chained else None,
        evidence=_check_evidence(event, node_keys),
        receipts=_check_receipts(event, node_keys),
        checkpoint=event if isinstance(event, LedgerCheckpointed) else None,
    )


def _node_signature(
    node_id: str, key_id: str, keys: Keyring | None, message: bytes, sig: str
) -> NodeSignature:
    public_key = None if keys is None else keys.public_key(key_id)
    if keys is None or public_key is None:
        return NodeSignature(node_id, key_id, None, False)
    return NodeSignature(node_id, key_id, public_key, keys.verify(key_id, message, sig))


def _check_evidence(event: Event, node_keys: Mapping[str, Keyring]) -> EvidenceCheck | None:
    evidence = getattr(event, "evidence", None)
    node_id = getattr(event, "node_id", None)
    if not isinstance(evidence, NodeEvidence) or not isinstance(node_id, str):
        return None
    enrolls = rotates_to = None
    keys = node_keys.get(node_id)
    if isinstance(event, NodeEnrolled):
        enrolls = b64decode(event.public_key)
        if key_id_for(enrolls) == evidence.key_id:  # the enrollment answer proves this key
            keys = Keyring([enrolls])
    elif isinstance(event, NodeKeyRotated):
        rotates_to = b64decode(event.public_key)
    signature = _node_signature(
        node_id, evidence.key_id, keys, evidence.body.encode(), evidence.sig
    )
    return EvidenceCheck(signature, request_failure(evidence, node_id), enrolls, rotates_to)


def _check_receipts(event: Event, node_keys: Mapping[str, Keyring]) -> tuple[ReceiptCheck, ...]:
    """A debit holds the node's signed receipt verbatim, a node's report holds many: each
    hash must be over its body and each signature by a key the log gave that node before
    this event (and a report holds its own node's receipts only)."""
    if isinstance(event, CustomerDebited):
        where = f"reservation {event.reservation_id}"
        return (_check_receipt(event.receipt, node_keys, where),)
    if isinstance(event, NodeReceiptsReported):
        where = f"reported by node {event.node_id}"
        return tuple(
            _check_receipt(r, node_keys, where, foreign=r.body.node_id != event.node_id)
            for r in event.receipts
        )
    return ()


def _check_receipt(
    receipt: Receipt, node_keys: Mapping[str, Keyring], where: str, *, foreign: bool = False
) -> ReceiptCheck:
    node_id, key_id = receipt.body.node_id, receipt.body.key_id
    keys = node_keys.get(node_id) or Keyring()
    failure = verify_receipt(receipt, keys)
    hash_ok = failure != "receipt_hash_mismatch"
    checked_with = keys.public_key(key_id) if hash_ok else None
    signature = NodeSignature(node_id, key_id, checked_with, failure is None)
    return ReceiptCheck(signature, hash_ok, f" (receipt {receipt.receipt_hash}, {where})", foreign)


def request_failure(evidence: NodeEvidence, node_id: str) -> str | None:
    """Why a kept request body is not the one the node's signed text names, or None."""
    if evidence.request_body is None:
        return None
    lines = evidence.body.split("\n")
    # A signed request names its body's digest (line 4) and its node (line 7).
    if len(lines) != 8 or lines[3] != sha256_hex(evidence.request_body.encode()):
        return "the kept request body is not the one the node signed"
    if lines[6] != node_id:
        return f"the node signed a request for {lines[6]!r}, not {node_id!r}"
    return None


def check_chunk(
    events: Iterable[StoredEvent],
    keyring: Keyring,
    candidates: MutableMapping[str, Keyring],
    unchained_streams: frozenset[str],
) -> list[Checked | Problem]:
    """``check_event`` over consecutive events, away from the ``LogVerifier``: node keys
    come from ``candidates``, which also learns every key these events introduce (only
    candidates: ``accept`` compares each with the key the log really gave the node)."""
    results: list[Checked | Problem] = []
    for stored in events:
        checked = check_event(
            stored, keyring, candidates, chained=stored.stream not in unchained_streams
        )
        results.append(checked)
        evidence = None if isinstance(checked, Problem) else checked.evidence
        if evidence is not None:
            for key in (evidence.enrolls, evidence.rotates_to):
                if key is not None:
                    candidates.setdefault(evidence.signature.node_id, Keyring()).add(key)
    return results


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
        self.signatures = 0
        """Ed25519 signatures checked: the control plane's, and the nodes' inside events."""
        self.node_keys: dict[str, Keyring] = {}
        """The keys the log has given each node so far."""
        self.given_keys: list[tuple[str, bytes]] = []
        """The same, as (node id, public key) in the order the log gave them."""
        self._last_seq: dict[str, int] = {}
        self._tip: dict[str, str] = {}
        self._trees: dict[str, Frontier] = {}
        self._last_checkpoint: dict[str, LedgerCheckpointed] = {}

    def feed(self, stored: StoredEvent) -> list[Problem]:
        return self.accept(stored, self.check(stored))

    def check(self, stored: StoredEvent) -> Checked | Problem:
        chained = stored.stream not in self.unchained_streams
        return check_event(stored, self.keyring, self.node_keys, chained=chained)

    def accept(self, stored: StoredEvent, checked: Checked | Problem) -> list[Problem]:
        """The order-dependent checks of the next event, given ``check_event``'s result."""
        problems = self._check_sequence(stored)
        if isinstance(checked, Problem):
            return [*problems, checked]
        self.signatures += 1
        problems.extend(self._accept_evidence(stored, checked))
        for index, receipt in enumerate(checked.receipts):
            problems.extend(self._accept_receipt(stored, checked, index, receipt))
        if stored.stream not in self.unchained_streams:
            problems.extend(self._check_chain(stored, checked))
            problems.extend(self._check_checkpoint(stored, checked))
            self._trees.setdefault(stored.stream, Frontier()).append(
                checked.leaf or leaf_hash(stored.data)
            )
        self.verified += 1
        self.by_type[checked.type] += 1
        self.by_signer[checked.signer] += 1
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

    def _check_chain(self, stored: StoredEvent, checked: Checked) -> list[Problem]:
        tip = self._tip.get(stored.subject)
        self._tip[stored.subject] = checked.hash
        if checked.prev_hash == tip:
            return []
        detail = f"prev_hash {checked.prev_hash} but the subject's previous event is {tip}"
        return [_problem(stored, Reason.BROKEN_CHAIN, detail, checked.event_id)]

    def _holds(
        self,
        stored: StoredEvent,
        signature: NodeSignature,
        keys: Keyring,
        part: Callable[[Checked], EvidenceCheck | ReceiptCheck | None],
    ) -> bool:
        """Whether a node's signature holds under the key the log gave the node by now.
        One checked elsewhere against another key (or none) is checked again here."""
        self.signatures += 1
        public_key = keys.public_key(signature.key_id)
        if signature.checked_with is not None and signature.checked_with == public_key:
            return signature.valid
        again = self.check(stored)  # now against this verifier's own node keys
        redone = None if isinstance(again, Problem) else part(again)
        return redone is not None and redone.signature.valid

    def _accept_evidence(self, stored: StoredEvent, checked: Checked) -> list[Problem]:
        """What a node signed is checked against the keys the log itself gave that node:
        its enrollment introduces a key, a rotation (signed by the old key) the next."""
        evidence = checked.evidence
        if evidence is None:
            return []
        signature = evidence.signature
        node_id, key_id = signature.node_id, signature.key_id
        keys = self.node_keys.setdefault(node_id, Keyring())
        if evidence.enrolls is not None:
            self._give(node_id, keys, evidence.enrolls)
        failure: str | None
        reason = Reason.BAD_NODE_SIGNATURE
        if key_id not in keys:
            failure = f"node {node_id} has no key {key_id} in the log"
            reason = Reason.UNKNOWN_NODE_KEY
        elif not self._holds(stored, signature, keys, lambda c: c.evidence):
            failure = f"node {node_id}'s signature does not match what it signed"
        else:
            failure = evidence.request_failure
        if evidence.rotates_to is not None and failure is None:
            self._give(node_id, keys, evidence.rotates_to)
        if failure is None:
            return []
        return [_problem(stored, reason, failure, checked.event_id)]

    def _give(self, node_id: str, keys: Keyring, public_key: bytes) -> None:
        keys.add(public_key)
        self.given_keys.append((node_id, public_key))

    def _accept_receipt(
        self, stored: StoredEvent, checked: Checked, index: int, receipt: ReceiptCheck
    ) -> list[Problem]:
        node_id, key_id = receipt.signature.node_id, receipt.signature.key_id
        keys = self.node_keys.get(node_id, Keyring())
        if receipt.foreign:
            reason, detail = Reason.BAD_RECEIPT, f"node {node_id}'s receipt"
        elif not receipt.hash_ok:
            reason, detail = Reason.BAD_RECEIPT, "the receipt hash is not over its body"
        elif key_id not in keys:
            reason = Reason.UNKNOWN_NODE_KEY
            detail = f"node {node_id} has no key {key_id} in the log"
        elif not self._holds(stored, receipt.signature, keys, lambda c: c.receipts[index]):
            reason, detail = Reason.BAD_RECEIPT, f"node {node_id}'s receipt signature is invalid"
        else:
            return []
        return [_problem(stored, reason, detail + receipt.where, checked.event_id)]

    def _check_checkpoint(self, stored: StoredEvent, checked: Checked) -> list[Problem]:
        checkpoint = checked.checkpoint
        if checkpoint is None:
            return []
        self.checkpoints += 1
        tree = self._trees.get(stored.stream, Frontier())
        event_id = checked.event_id
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
