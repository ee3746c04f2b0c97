"""Properties of everything that decodes bytes from outside: envelopes, payloads, receipts,
broker frames, signed-request headers, enrollment answers and proofs.

Random or mutated input never raises anything but the documented error types, and never
verifies; a valid envelope or receipt with any single byte changed never verifies.
(The example count comes from the hypothesis profile in tests/conftest.py.)
"""

import contextlib
import string
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from domain import broker_frames
from domain.canonical import b64decode, b64encode, canonical_bytes
from domain.enrollment import IssuedChallenge, check_answer, issue_challenge
from domain.envelope import StoredEvent, decode_body, split_wire
from domain.events import EVENT_TYPES, SchemaMismatch, UnknownEventType, decode_payload
from domain.key_rotation import KeyRotationRequest, check_new_key
from domain.node_requests import HEADERS, Rejection, check_request, parse_headers
from domain.proofs import InclusionProof, ProvenEvent, check_proof
from domain.receipts import Receipt, check_receipt, verify_receipt
from domain.sealing import seal
from domain.signing import Keyring, Signer
from domain.verification import LogVerifier, Problem, Verified, verify_event
from tests.billing_support import receipt as signed_receipt
from tests.support import enrolled, heartbeat

MSGSPEC_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)
RAW_MSGSPEC_ERRORS = (*MSGSPEC_ERRORS, UnicodeDecodeError)
"""What a bare msgspec decoder raises: bad UTF-8 inside a string is a UnicodeDecodeError
(which split_wire and decode_body turn into a DecodeError; every caller catches it)."""
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SIGNER = Signer(bytes(range(32)))
NODE = Signer(bytes(range(1, 33)))
KEYS = Keyring([SIGNER.public_key])
SUBJECT = "b3iq.ev.node.n1"
LOG = seal(
    SUBJECT,
    [enrolled("n1", NODE), heartbeat("n1", 1, NODE), heartbeat("n1", 2, NODE)],
    prev_hash=None,
    signer=SIGNER,
    now=NOW,
)
ENVELOPE = LOG[0].data
RECEIPT = signed_receipt(NODE, "n1", 5, 7, NOW, dispatch_id="d1")
NODE_KEYS = Keyring([NODE.public_key])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
json_bytes = json_values.map(msgspec.json.encode)
"""Well-formed JSON of any shape: gets past the parser, so the schema checks are tested."""
inputs = st.binary(max_size=512) | json_bytes


def stored(data: bytes, seq: int = 1) -> StoredEvent:
    return StoredEvent("LEDGER", seq, SUBJECT, data)


def flipped(data: bytes, index: int, mask: int) -> bytes:
    index %= len(data)
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


def test_the_fixtures_verify() -> None:
    verifier = LogVerifier(KEYS)
    assert [verifier.feed(stored(s.data, i + 1)) for i, s in enumerate(LOG)] == [[], [], []]
    assert verify_receipt(RECEIPT, NODE_KEYS) is None


@given(inputs)
def test_split_wire_and_decode_body_raise_only_decode_errors(data: bytes) -> None:
    with contextlib.suppress(MSGSPEC_ERRORS):
        decode_body(split_wire(data).body)


@given(st.sampled_from([*EVENT_TYPES, "Nope", ""]), st.integers(-2, 5), inputs)
@example("NodeApproved", 1, b"not json")  # a payload that is not JSON at all
def test_decode_payload_raises_only_its_own_errors(kind: str, version: int, data: bytes) -> None:
    with contextlib.suppress(UnknownEventType, SchemaMismatch):
        decode_payload(kind, version, data)


@given(inputs)
def test_random_bytes_never_verify(data: bytes) -> None:
    assert isinstance(verify_event(stored(data), KEYS), Problem)
    verifier = LogVerifier(KEYS)
    assert verifier.feed(stored(data)) != []
    assert verifier.verified == 0


@given(st.integers(min_value=0), st.integers(1, 255))
def test_a_valid_envelope_with_any_byte_changed_never_verifies(index: int, mask: int) -> None:
    # Including the spare bits of the signature's last base64 character: those once gave
    # one signature 16 spellings, each of which verified.
    assert isinstance(verify_event(stored(flipped(ENVELOPE, index, mask)), KEYS), Problem)


@given(st.integers(0, len(LOG) - 1), st.integers(min_value=0), st.integers(1, 255))
def test_a_log_with_any_byte_changed_reports_a_problem(which: int, index: int, mask: int) -> None:
    verifier = LogVerifier(KEYS)
    problems = [
        problem
        for i, sealed in enumerate(LOG)
        for problem in verifier.feed(
            stored(flipped(sealed.data, index, mask) if i == which else sealed.data, i + 1)
        )
    ]
    assert problems
    assert problems[0].seq == which + 1  # then the next event's chain link breaks too


@given(inputs)
def test_receipts_decode_only_to_msgspec_errors_and_random_ones_never_verify(data: bytes) -> None:
    try:
        found = msgspec.json.decode(data, type=Receipt)
    except RAW_MSGSPEC_ERRORS:
        return
    assert verify_receipt(found, NODE_KEYS) is not None


@given(st.integers(min_value=0), st.integers(1, 255))
def test_a_receipt_with_any_byte_changed_never_verifies(index: int, mask: int) -> None:
    data = flipped(msgspec.json.encode(RECEIPT), index, mask)
    try:
        changed = msgspec.json.decode(data, type=Receipt)
    except RAW_MSGSPEC_ERRORS:
        return
    assume(changed != RECEIPT)  # e.g. a flipped key-name letter that msgspec ignores
    asked = {"node_id": "n1", "model": "tiny", "dispatch_id": "d1"}
    assert check_receipt(changed, NODE_KEYS, **asked) is not None


@given(inputs)
def test_broker_frames_decode_only_to_msgspec_errors(data: bytes) -> None:
    for decoder in (broker_frames.to_node, broker_frames.from_node):
        try:
            frame = decoder.decode(data)
        except RAW_MSGSPEC_ERRORS:
            continue
        if isinstance(frame, broker_frames.Done):
            assert verify_receipt(frame.receipt, NODE_KEYS) is not None


header_text = st.text(st.characters(max_codepoint=255), max_size=80)
"""What ASGI hands over: header bytes decoded as latin-1."""


@given(st.dictionaries(st.sampled_from(HEADERS), header_text), st.binary(max_size=64))
@example(dict.fromkeys(HEADERS, "x" * 16) | {"x-b3iq-timestamp": "\u00b2"}, b"")  # "²".isdigit()
def test_signed_request_headers_are_parsed_or_refused_never_raise(
    headers: dict[str, str], body: bytes
) -> None:
    signed = parse_headers(headers)
    if isinstance(signed, Rejection):
        return
    refused = check_request(
        signed, method="POST", path="/p", body=body, node_keys=NODE_KEYS, now=NOW, skew_s=1e12
    )
    assert isinstance(refused, Rejection)


@given(st.text(max_size=600), st.text(max_size=100), st.text(max_size=100))
def test_enrollment_answers_to_forged_challenges_are_refused(
    challenge: str, signature: str, answer: str
) -> None:
    outcome = check_answer(IssuedChallenge(challenge, signature), answer, KEYS, NOW)
    assert isinstance(outcome, Rejection)


@given(st.integers(min_value=0), st.integers(1, 255))
def test_a_challenge_with_any_byte_changed_is_refused(index: int, mask: int) -> None:
    issued = issue_challenge(
        SIGNER,
        challenge_id="c1",
        node_id="n1",
        public_key=b64encode(NODE.public_key),
        nonce="nonce",
        now=NOW,
        ttl_s=300,
    )
    answer = NODE.sign(issued.challenge.encode())
    text = flipped(issued.challenge.encode(), index, mask).decode("latin-1")
    assume(text != issued.challenge)
    assert isinstance(
        check_answer(IssuedChallenge(text, issued.signature), answer, KEYS, NOW), Rejection
    )


@given(st.text(max_size=100), st.text(max_size=100))
def test_forged_key_rotations_are_refused(public_key: str, signature: str) -> None:
    request = KeyRotationRequest(public_key=public_key, signature=signature)
    assert isinstance(check_new_key(request, "n1", NODE.key_id), Rejection)


@given(inputs)
def test_random_inclusion_proofs_fail(data: bytes) -> None:
    try:
        proof = msgspec.json.decode(data, type=InclusionProof)
    except RAW_MSGSPEC_ERRORS:
        return
    assert check_proof(proof, KEYS) != []


@given(st.lists(st.text(max_size=70), max_size=5), st.integers(-5, 10), st.integers(-5, 10))
def test_a_proof_around_a_real_event_with_a_forged_path_fails(
    path: list[str], seq: int, size: int
) -> None:
    event = ProvenEvent("LEDGER", seq, SUBJECT, msgspec.Raw(ENVELOPE))
    proof = InclusionProof(
        event=event, tree_size=size, root="00", audit_path=path, checkpoint=event
    )
    assert check_proof(proof, KEYS) != []  # the checkpoint is not a LedgerCheckpointed


@pytest.mark.parametrize("mask", [1, 2, 4, 8])
def test_a_signature_spelled_with_other_spare_bits_is_refused(mask: int) -> None:
    signature = SIGNER.sign(b"m")
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    other = signature[:-1] + alphabet[alphabet.index(signature[-1]) ^ mask]
    assert b64decode(other) == b64decode(signature)  # the same 64 bytes, spelled otherwise
    assert KEYS.verify(SIGNER.key_id, b"m", signature)
    assert not KEYS.verify(SIGNER.key_id, b"m", other)


def test_canonical_bytes_round_trip_is_what_gets_signed() -> None:
    body = split_wire(ENVELOPE).body
    assert canonical_bytes(decode_body(body)) == bytes(body)
    assert isinstance(verify_event(stored(ENVELOPE), KEYS), Verified)
