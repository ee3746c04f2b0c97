"""Tampering of any kind is detected, and the exact event is named."""

from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
import pytest

from domain.canonical import canonical_bytes
from domain.envelope import EnvelopeBody, StoredEvent, decode_body, split_wire, wire_bytes
from domain.events import Event, NodeEvidence
from domain.node_requests import canonical_request
from domain.sealing import seal
from domain.signing import Keyring, Signer
from domain.verification import LogVerifier, Reason, verify_event
from tests.support import enrolled, heartbeat

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
STREAM = "B3IQ_LEDGER"
SUBJECT = "b3iq.ev.node.n1"


@pytest.fixture
def signer() -> Signer:
    return Signer.generate()


@pytest.fixture
def log(signer: Signer) -> list[StoredEvent]:
    events = [enrolled("n1", signer)] + [heartbeat("n1", i, signer) for i in range(4)]
    sealed = seal(SUBJECT, events, prev_hash=None, signer=signer, now=NOW)
    return [StoredEvent(STREAM, i, SUBJECT, s.data) for i, s in enumerate(sealed, start=1)]


def problems(log: list[StoredEvent], signer: Signer) -> list[tuple[Reason, int]]:
    """What verification reports with every signature checked at once. Held for a
    checkpoint instead (these logs have none: they are checked at the end), the first
    problem is the same, and nothing else is reported (the knock-on problems of a bad
    signature may be fewer: the event still counts in its chain)."""
    found = []
    for every_signature in (True, False):
        verifier = LogVerifier(Keyring([signer.public_key]), every_signature=every_signature)
        reported = [p for e in log for p in verifier.feed(e)] + verifier.finish()
        found.append([(p.reason, p.seq) for p in reported])
    at_once, held = found
    assert held[:1] == at_once[:1] and set(held) <= set(at_once)
    return at_once


def renumber(log: list[StoredEvent]) -> list[StoredEvent]:
    return [StoredEvent(e.stream, i, e.subject, e.data) for i, e in enumerate(log, start=1)]


def test_an_untouched_log_verifies(log: list[StoredEvent], signer: Signer) -> None:
    verifier = LogVerifier(Keyring([signer.public_key]))
    assert [p for e in log for p in verifier.feed(e)] == []
    assert verifier.by_type == {"NodeEnrolled": 1, "HeartbeatRecorded": 4}
    assert verifier.by_signer == {signer.key_id: 5}


@pytest.mark.parametrize("index", range(5))
def test_a_flipped_byte_anywhere_names_that_event(
    log: list[StoredEvent], signer: Signer, index: int
) -> None:
    data = bytearray(log[index].data)
    for position in range(0, len(data), 7):
        flipped = bytearray(data)
        flipped[position] ^= 0x01
        tampered = [*log]
        tampered[index] = StoredEvent(STREAM, index + 1, SUBJECT, bytes(flipped))
        found = problems(tampered, signer)
        assert found, f"flip at byte {position} of event {index + 1} went unnoticed"
        assert found[0][1] == index + 1


def test_reordered_events_break_the_chain(log: list[StoredEvent], signer: Signer) -> None:
    log[2], log[3] = log[3], log[2]
    assert problems(renumber(log), signer)[0] == (Reason.BROKEN_CHAIN, 3)


def test_a_deleted_event_is_a_gap_and_a_broken_chain(
    log: list[StoredEvent], signer: Signer
) -> None:
    del log[2]
    assert problems(log, signer) == [(Reason.SEQUENCE_GAP, 4), (Reason.BROKEN_CHAIN, 4)]
    assert problems(renumber(log), signer) == [(Reason.BROKEN_CHAIN, 3)]


def test_an_unknown_signer_is_named(log: list[StoredEvent]) -> None:
    assert problems(log, Signer.generate())[0] == (Reason.UNKNOWN_KEY, 1)


def test_an_event_moved_to_another_subject_is_caught(
    log: list[StoredEvent], signer: Signer
) -> None:
    moved = StoredEvent(STREAM, 1, "b3iq.ev.node.n2", log[0].data)
    outcome = verify_event(moved, Keyring([signer.public_key]))
    assert not hasattr(outcome, "event")
    assert outcome.reason == Reason.SUBJECT_MISMATCH  # type: ignore[union-attr]


def resign(data: bytes, signer: Signer, **changes: object) -> bytes:
    body = decode_body(split_wire(data).body)
    new = canonical_bytes(msgspec.structs.replace(body, **changes))
    return wire_bytes(new, signer.sign(new))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"schema_version": 99}, Reason.SCHEMA_MISMATCH),
        ({"type": "NoSuchEvent"}, Reason.UNKNOWN_TYPE),
        ({"type": "HeartbeatRecorded"}, Reason.SCHEMA_MISMATCH),  # payload is NodeEnrolled
        ({"payload": msgspec.Raw(b'{"type":"NodeEnrolled"}')}, Reason.SCHEMA_MISMATCH),
    ],
)
def test_validly_signed_but_wrong_schema_is_precise(
    log: list[StoredEvent], signer: Signer, changes: dict[str, object], reason: Reason
) -> None:
    stored = StoredEvent(STREAM, 1, SUBJECT, resign(log[0].data, signer, **changes))
    outcome = verify_event(stored, Keyring([signer.public_key]))
    assert outcome.reason == reason  # type: ignore[union-attr]


@pytest.mark.parametrize("garbage", [b"", b"{}", b"[1,2]", b'{"body":{},"sig":"x"}', b"\xff" * 9])
def test_garbage_is_malformed_not_a_crash(garbage: bytes, signer: Signer) -> None:
    outcome = verify_event(StoredEvent(STREAM, 1, SUBJECT, garbage), Keyring())
    assert outcome.reason == Reason.MALFORMED  # type: ignore[union-attr]


def test_the_signature_covers_every_envelope_field(signer: Signer) -> None:
    fields = {f.name for f in msgspec.structs.fields(EnvelopeBody)}
    sealed = seal(SUBJECT, [enrolled("n1", signer)], prev_hash=None, signer=signer, now=NOW)
    body = split_wire(sealed[0].data).body
    assert set(msgspec.json.decode(body)) == fields


def test_chains_link_consecutive_appends(signer: Signer) -> None:
    first = seal(SUBJECT, [enrolled("n1", signer)], prev_hash=None, signer=signer, now=NOW)
    second = seal(
        SUBJECT, [heartbeat("n1", 1, signer)], prev_hash=first[0].hash, signer=signer, now=NOW
    )
    assert decode_body(split_wire(second[0].data).body).prev_hash == first[0].hash


def log_of(signer: Signer, events: list[Event]) -> list[StoredEvent]:
    sealed = seal(SUBJECT, events, prev_hash=None, signer=signer, now=NOW)
    return [StoredEvent(STREAM, i, SUBJECT, s.data) for i, s in enumerate(sealed, start=1)]


def signed_request_evidence(node: Signer, node_id: str, body: bytes) -> NodeEvidence:
    text = canonical_request(
        method="POST",
        path=f"/v1/nodes/{node_id}/heartbeats",
        body=body,
        timestamp=1,
        nonce="n" * 16,
        node_id=node_id,
        key_id=node.key_id,
    )
    return NodeEvidence(node.key_id, text.decode(), node.sign(text), request_body=body.decode())


def test_node_evidence_is_checked_against_the_keys_the_log_gave_the_node(signer: Signer) -> None:
    node = Signer.generate()
    good = signed_request_evidence(node, "n1", b'{"seq":1}')
    beat = msgspec.structs.replace(heartbeat("n1", 1, node), evidence=good)
    assert problems(log_of(signer, [enrolled("n1", node), beat]), signer) == []
    assert problems(log_of(signer, [beat]), signer) == [(Reason.UNKNOWN_NODE_KEY, 1)]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda e: msgspec.structs.replace(e, sig=Signer.generate().sign(e.body.encode())),
        lambda e: msgspec.structs.replace(e, request_body='{"seq":2}'),
        lambda e: msgspec.structs.replace(e, body=e.body.replace("n1", "n2")),
    ],
    ids=["forged signature", "swapped request body", "edited signed text"],
)
def test_node_evidence_re_signed_by_the_control_plane_still_fails(
    signer: Signer, tamper: Callable[[NodeEvidence], NodeEvidence]
) -> None:
    """Even the control plane's own key cannot make a node say what it did not."""
    node = Signer.generate()
    evidence = tamper(signed_request_evidence(node, "n1", b'{"seq":1}'))
    beat = msgspec.structs.replace(heartbeat("n1", 1, node), evidence=evidence)
    assert problems(log_of(signer, [enrolled("n1", node), beat]), signer) == [
        (Reason.BAD_NODE_SIGNATURE, 2)
    ]


def test_held_signatures_stay_bounded_and_are_all_checked(signer: Signer) -> None:
    events = [enrolled("n1", signer)] + [heartbeat("n1", i, signer) for i in range(30)]
    log = log_of(signer, events)
    body = bytes(split_wire(log[20].data).body)  # signed by the right key, over other bytes
    log[20] = StoredEvent(STREAM, 21, SUBJECT, wire_bytes(body, signer.sign(b"other")))
    verifier = LogVerifier(Keyring([signer.public_key]), every_signature=False)
    verifier.PENDING_MAX = 8
    reported = []
    for event in log:
        reported += verifier.feed(event)
        assert len(verifier._pending.get(STREAM, [])) <= 8
    reported += verifier.finish()
    assert [(p.reason, p.seq) for p in reported] == [(Reason.BAD_SIGNATURE, 21)]
    # 31 envelopes one by one (no checkpoint vouches), and the 31 node signatures inside
    assert (verifier.signatures, verifier.vouched, verifier.verified) == (31 + 31, 0, 30)
