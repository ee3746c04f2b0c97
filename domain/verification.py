"""Checking envelopes and logs with nothing but the bytes and the public keys (pure).

Every failure names the exact event and one precise reason, so an auditor can act on it.
The work is split in two so it can run on several cores: ``check_event`` does what needs
only the event itself (signatures, schema, hashes) and may run anywhere, in any order;
``LogVerifier.accept`` then takes the results in log order and does what depends on the
order (sequences, hash chains, checkpoints, which keys a node holds at that point).

Signatures on the ledger may be taken on a checkpoint's word: a checkpoint that says
``signatures_verified`` was signed only after its checkpointer checked the control plane's
signature on every message it covers, and its Merkle root pins those messages' exact
bytes. So, unless asked for every signature, the verifier holds a ledger message's own
signature until the next checkpoint: if that checkpoint holds (its signature, root and
consistency) and vouches, the held signatures are settled with it; if not, and for the
messages after the last checkpoint, each is checked one by one, and a bad one is named
exactly as it would have been at once. Keys are still checked against the auditor's own
keyring on every message, and the nodes' signatures inside events always are.
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
    SignerKeyPublished,
    UnknownEventType,
    decode_payload,
    type_names,
)
from domain.merkle import RecentPrefixes, leaf_hash, verify_consistency
from domain.receipts import Receipt, verify_receipt
from domain.signing import Keyring, key_id_for

NEVER_DEFERRED = type_names(LedgerCheckpointed, NodeEnrolled, NodeKeyRotated, SignerKeyPublished)
"""Checked at once even when signatures may wait: what vouches, and what gives keys
(a key given by a forged event would change what later events are checked against)."""


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
    deferred: bool = False
    """The envelope's signature was not checked (``verify_event``'s ``defer``)."""


def _problem(stored: StoredEvent, reason: Reason, detail: str, event_id: str | None) -> Problem:
    return Problem(reason, detail, stored.stream, stored.seq, stored.subject, event_id)


def verify_event(
    stored: StoredEvent, keyring: Keyring, *, defer: bool = False
) -> Verified | Problem:
    """Signature, schema and placement of one stored event (not its chain). ``defer``:
    leave the signature to a checkpoint, if nothing else is wrong with the event and it
    is not one of ``NEVER_DEFERRED``."""
    try:
        wire = split_wire(stored.data)
        body = decode_body(wire.body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _problem(stored, Reason.MALFORMED, str(exc), None)
    if body.signer not in keyring:
        return _problem(stored, Reason.UNKNOWN_KEY, f"signer {body.signer}", body.event_id)
    problem: Problem | None = None
    if body.subject != stored.subject:
        detail = f"signed for {body.subject!r}, stored on {stored.subject!r}"
        problem = _problem(stored, Reason.SUBJECT_MISMATCH, detail, body.event_id)
    else:
        try:
            event = decode_payload(body.type, body.schema_version, body.payload)
        except UnknownEventType as exc:
            problem = _problem(stored, Reason.UNKNOWN_TYPE, str(exc), body.event_id)
        except SchemaMismatch as exc:
            problem = _problem(stored, Reason.SCHEMA_MISMATCH, str(exc), body.event_id)
    # A bad signature is the problem whatever else is wrong, so it is checked whenever
    # something is.
    deferred = defer and problem is None and body.type not in NEVER_DEFERRED
    if not deferred and not keyring.verify(body.signer, bytes(wire.body), wire.sig):
        return _problem(stored, Reason.BAD_SIGNATURE, f"signer {body.signer}", body.event_id)
    if problem is not None:
        return problem
    return Verified(body, event, event_hash(wire.body), deferred)


def self_published_key(stored: StoredEvent) -> bytes | None:
    """The key a ``SignerKeyPublished`` message announces, when the message is signed by
    that very key: how a checkpointer learns the keys the control plane signed with before
    its current one. (It proves possession, not trust: an auditor still trusts only the
    keys it was given, and a checkpoint vouches only for signatures that hold.)"""
    try:
        wire = split_wire(stored.data)
        body = decode_body(wire.body)
        if body.type != SignerKeyPublished.__name__:
            return None
        event = decode_payload(body.type, body.schema_version, body.payload)
        assert isinstance(event, SignerKeyPublished)
        public_key = b64decode(event.public_key)
    except (msgspec.DecodeError, msgspec.ValidationError, UnknownEventType, SchemaMismatch):
        return None
    except ValueError:  # not base64
        return None
    if key_id_for(public_key) != body.signer or event.key_id != body.signer:
        return None
    return (
        public_key
        if Keyring([public_key]).verify(body.signer, bytes(wire.body), wire.sig)
        else None
    )


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
    deferred: bool = False
    """The envelope's signature waits for a checkpoint (see the module's doc)."""


def check_event(
    stored: StoredEvent,
    keyring: Keyring,
    node_keys: Mapping[str, Keyring],
    *,
    chained: bool,
    defer: bool = False,
) -> Checked | Problem:
    """``verify_event``, plus every node signature inside, each checked against the key
    ``node_keys`` holds for it (a candidate: ``accept`` decides whether the node held that
    key at this point of the log). ``defer``: the envelope's signature, on a chained
    stream, waits for a checkpoint."""
    outcome = verify_event(stored, keyring, defer=defer and chained)
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
        deferred=outcome.deferred,
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
    defer: bool = False,
) -> list[Checked | Problem]:
    """``check_event`` over consecutive events, away from the ``LogVerifier``: node keys
    come from ``candidates``, which also learns every key these events introduce (only
    candidates: ``accept`` compares each with the key the log really gave the node)."""
    results: list[Checked | Problem] = []
    for stored in events:
        chained = stored.stream not in unchained_streams
        checked = check_event(stored, keyring, candidates, chained=chained, defer=defer)
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
    checkpoint's tree head is the RFC 6962 root of the messages it covers (a prefix of those
    before it: what was written while it was signed goes under the next), provably
    consistent with the checkpoint before. Streams with a retention window (heartbeats)
    are unchained and may start after sequence 1.

    ``every_signature`` False: ledger signatures wait for a checkpoint to vouch for them
    (see the module's doc); ``finish`` then checks those no checkpoint vouched for.
    """

    LEAVES_KEPT = 200_000
    """Leaves kept since the last checkpoint (one covering a prefix older than that can
    not be checked; checkpoints come every thousand messages or so)."""
    PENDING_MAX = 10_000
    """Held signatures kept at most (memory stays flat on a log that never checkpoints):
    past it, the oldest half are checked one by one."""

    def __init__(
        self,
        keyring: Keyring,
        *,
        unchained_streams: frozenset[str] = frozenset(),
        every_signature: bool = True,
    ):
        self.keyring = keyring
        self.unchained_streams = unchained_streams
        self.defer = not every_signature
        self.by_type: Counter[str] = Counter()
        self.by_signer: Counter[str] = Counter()
        self.verified = 0
        self.checkpoints = 0
        self.signatures = 0
        """Ed25519 signatures checked: the control plane's, and the nodes' inside events."""
        self.vouched = 0
        """The control plane's signatures taken on a checkpoint's word instead."""
        self.node_keys: dict[str, Keyring] = {}
        """The keys the log has given each node so far."""
        self.given_keys: list[tuple[str, bytes]] = []
        """The same, as (node id, public key) in the order the log gave them."""
        self._last_seq: dict[str, int] = {}
        self._tip: dict[str, str] = {}
        self._trees: dict[str, RecentPrefixes] = {}
        self._last_checkpoint: dict[str, LedgerCheckpointed] = {}
        self._pending: dict[str, list[tuple[StoredEvent, Checked]]] = {}
        """Per stream, the messages whose signature waits for a checkpoint."""

    def feed(self, stored: StoredEvent) -> list[Problem]:
        return self.accept(stored, self.check(stored))

    def check(self, stored: StoredEvent) -> Checked | Problem:
        chained = stored.stream not in self.unchained_streams
        return check_event(stored, self.keyring, self.node_keys, chained=chained, defer=self.defer)

    def accept(self, stored: StoredEvent, checked: Checked | Problem) -> list[Problem]:
        """The order-dependent checks of the next event, given ``check_event``'s result.

        Held signatures never change what is reported, only when: a problem on a chained
        stream is reported after those of the held signatures before it (checked first),
        and an event whose insides fail has its own envelope checked at once."""
        problems = self._check_sequence(stored)
        if not isinstance(checked, Problem) and checked.deferred and self._suspect(stored, checked):
            outcome = verify_event(stored, self.keyring)
            checked = outcome if isinstance(outcome, Problem) else checked._replace(deferred=False)
        if isinstance(checked, Problem):
            return self._after_held(stored.stream, [*problems, checked])
        problems.extend(self._accept_evidence(stored, checked))
        for index, receipt in enumerate(checked.receipts):
            problems.extend(self._accept_receipt(stored, checked, index, receipt))
        if stored.stream not in self.unchained_streams:
            problems.extend(self._check_chain(stored, checked))
            problems.extend(self._check_checkpoint(stored, checked))
            tree = self._trees.setdefault(stored.stream, RecentPrefixes(self.LEAVES_KEPT))
            tree.append(checked.leaf or leaf_hash(stored.data))
        problems = self._after_held(stored.stream, problems)
        if checked.deferred:
            problems.extend(self._hold(stored, checked))
        else:
            self.signatures += 1
            self._count(checked)
        return problems

    def _after_held(self, stream: str, problems: list[Problem]) -> list[Problem]:
        if not problems or not self._pending.get(stream):
            return problems
        return [*self._settle_one_by_one(stream), *problems]

    def _suspect(self, stored: StoredEvent, checked: Checked) -> bool:
        """Whether a node signature, receipt or chain link inside fails on its face."""
        evidence = checked.evidence
        if evidence is not None and not evidence.signature.valid:
            return True
        if any(not (r.signature.valid and r.hash_ok) or r.foreign for r in checked.receipts):
            return True
        chained = stored.stream not in self.unchained_streams
        return chained and checked.prev_hash != self._tip.get(stored.subject)

    def finish(self) -> list[Problem]:
        """Check the signatures no checkpoint vouched for (those after the last one)."""
        return [p for stream in list(self._pending) for p in self._settle_one_by_one(stream)]

    def _count(self, checked: Checked) -> None:
        self.verified += 1
        self.by_type[checked.type] += 1
        self.by_signer[checked.signer] += 1

    def _hold(self, stored: StoredEvent, checked: Checked) -> list[Problem]:
        pending = self._pending.setdefault(stored.stream, [])
        pending.append((stored, checked))
        if len(pending) <= self.PENDING_MAX:
            return []
        return self._settle_one_by_one(stored.stream, len(pending) // 2)

    def _settle_one_by_one(self, stream: str, count: int | None = None) -> list[Problem]:
        pending = self._pending.get(stream, [])
        count = len(pending) if count is None else count
        settled, self._pending[stream] = pending[:count], pending[count:]
        problems = []
        for stored, checked in settled:
            self.signatures += 1
            outcome = verify_event(stored, self.keyring)
            if isinstance(outcome, Problem):
                problems.append(outcome)
            else:
                self._count(checked)
        return problems

    def _vouch(self, stream: str, tree_size: int) -> None:
        """Settle the held signatures of the messages a checkpoint covers (a ledger's
        sequences are its leaves' positions, from 1)."""
        pending = self._pending.get(stream, [])
        covered = next((i for i, (s, _) in enumerate(pending) if s.seq > tree_size), len(pending))
        self._pending[stream] = pending[covered:]
        self.vouched += covered
        for _, checked in pending[:covered]:
            self._count(checked)

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
        problems = self._checkpoint_problems(stored, checked, checkpoint)
        if not problems and checkpoint.signatures_verified:
            self._vouch(stored.stream, checkpoint.tree_size)
            return []
        # It vouches for nothing: every held signature is checked, and reported first.
        return [*self._settle_one_by_one(stored.stream), *problems]

    def _checkpoint_problems(
        self, stored: StoredEvent, checked: Checked, checkpoint: LedgerCheckpointed
    ) -> list[Problem]:
        tree = self._trees.get(stored.stream, RecentPrefixes())
        event_id = checked.event_id
        size = checkpoint.tree_size
        root = tree.root_at(size)
        if root is None or root.hex() != checkpoint.root:
            if size > tree.size:
                detail = f"signs a root over {size} messages; {tree.size} come before it"
            elif root is None:
                detail = f"covers the first {size} messages; roots are kept from {tree.base.size}"
            else:
                detail = (
                    f"signs root {checkpoint.root} over {size} messages; the first {size} "
                    f"messages have root {root.hex()}"
                )
            return [_problem(stored, Reason.CHECKPOINT_MISMATCH, detail, event_id)]
        tree.forget_before(size)  # later checkpoints cover more (or fail consistency)
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
