"""Signed node requests, enrollment challenges and node decisions (pure)."""

from datetime import UTC, datetime, timedelta

import pytest

from domain.canonical import b64encode
from domain.enrollment import IssuedChallenge, answer_challenge, check_answer, issue_challenge
from domain.events import NodeEvidence, NodeRevoked
from domain.node_requests import (
    Rejection,
    SignedHeaders,
    canonical_request,
    check_request,
    parse_headers,
    sign_request,
)
from domain.nodes import (
    Refused,
    decide_approval,
    decide_enrollment,
    decide_revocation,
    state_of,
)
from domain.signing import Keyring, Signer

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NONCE = "abcdefghijklmnop"


def _signed(node: Signer, body: bytes = b"{}", when: datetime = NOW) -> SignedHeaders:
    headers = sign_request(
        node,
        "n1",
        method="POST",
        path="/v1/x",
        body=body,
        timestamp=int(when.timestamp()),
        nonce=NONCE,
    )
    parsed = parse_headers(headers)
    assert isinstance(parsed, SignedHeaders)
    return parsed


def _check(signed: SignedHeaders, keys: Keyring, body: bytes = b"{}") -> Rejection | None:
    return check_request(
        signed, method="POST", path="/v1/x", body=body, node_keys=keys, now=NOW, skew_s=60
    )


def test_the_canonical_text_is_eight_lines_naming_the_body_digest() -> None:
    text = canonical_request(
        method="post",
        path="/v1/a?b=1",
        body=b"",
        timestamp=7,
        nonce=NONCE,
        node_id="n",
        key_id="ed25519:00",
    )
    assert text.decode().split("\n") == [
        "B3IQ-NODE-REQUEST-V1",
        "POST",
        "/v1/a?b=1",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "7",
        NONCE,
        "n",
        "ed25519:00",
    ]


def test_a_signed_request_verifies_and_every_alteration_is_refused() -> None:
    node = Signer.generate()
    keys = Keyring([node.public_key])
    signed = _signed(node)
    assert _check(signed, keys) is None
    assert _check(signed, keys, body=b'{"x":1}') == Rejection("invalid_signature", "bad_signature")
    forged = signed._replace(signature=Signer.generate().sign(b"x"))
    assert _check(forged, keys) == Rejection("invalid_signature", "bad_signature")
    other = Signer.generate()
    assert _check(_signed(other), keys) == Rejection("invalid_signature", "wrong_key")
    skewed = _signed(node, when=NOW - timedelta(seconds=61))
    assert _check(skewed, keys) == Rejection("invalid_signature", "timestamp_outside_window")


def test_headers_must_all_be_present_and_well_formed() -> None:
    assert parse_headers({}) == Rejection("unauthorized", "missing_signature_headers")
    headers = sign_request(
        Signer.generate(), "n", method="GET", path="/", body=b"", timestamp=1, nonce=NONCE
    )
    assert parse_headers({**headers, "x-b3iq-nonce": "short"}) == Rejection(
        "invalid_signature", "malformed_nonce"
    )
    assert parse_headers({**headers, "x-b3iq-timestamp": "-1"}) == Rejection(
        "invalid_signature", "malformed_timestamp"
    )


def _challenge(cp: Signer, node: Signer, now: datetime = NOW) -> IssuedChallenge:
    return issue_challenge(
        cp,
        challenge_id="c1",
        node_id="n1",
        public_key=b64encode(node.public_key),
        nonce="nonce-1",
        now=now,
        ttl_s=300,
    )


def test_a_challenge_answer_is_checked_for_origin_expiry_and_key() -> None:
    cp, node = Signer.generate(), Signer.generate()
    ours = Keyring([cp.public_key])
    issued = _challenge(cp, node)
    challenge = check_answer(issued, answer_challenge(node, issued), ours, NOW)
    assert not isinstance(challenge, Rejection)
    assert challenge.node_id == "n1"
    late = NOW + timedelta(seconds=300)
    assert check_answer(issued, answer_challenge(node, issued), ours, late) == Rejection(
        "challenge_expired", "challenge_expired"
    )
    wrong = answer_challenge(Signer.generate(), issued)
    assert check_answer(issued, wrong, ours, NOW) == Rejection(
        "invalid_signature", "bad_answer_signature"
    )
    foreign = _challenge(Signer.generate(), node)
    assert check_answer(foreign, answer_challenge(node, foreign), ours, NOW) == Rejection(
        "invalid_challenge", "not_issued_here"
    )


def test_enrollment_spends_the_challenge_and_revocation_sticks() -> None:
    cp, node = Signer.generate(), Signer.generate()
    issued = _challenge(cp, node)
    challenge = check_answer(issued, answer_challenge(node, issued), Keyring([cp.public_key]), NOW)
    assert not isinstance(challenge, Rejection)
    answer = NodeEvidence(node.key_id, issued.challenge, answer_challenge(node, issued))
    [enrolled] = decide_enrollment(None, challenge, answer, "0.1", require_approval=True)
    state = state_of(enrolled)
    assert state is not None
    assert state.status == "pending"
    with pytest.raises(Refused) as used:
        decide_enrollment(state, challenge, answer, "0.1", require_approval=True)
    assert used.value.code == "challenge_used"
    [approved] = decide_approval(state, "tok1")
    state = state_of(approved)
    assert state is not None
    assert state.status == "enrolled"
    assert decide_approval(state, "tok1") == []
    [revoked] = decide_revocation(state, "tok1", "stolen")
    assert isinstance(revoked, NodeRevoked)
    later = _challenge(cp, node, NOW + timedelta(seconds=1))
    fresh = check_answer(later, answer_challenge(node, later), Keyring([cp.public_key]), NOW)
    assert not isinstance(fresh, Rejection)
    with pytest.raises(Refused) as refused:
        decide_enrollment(state_of(revoked), fresh, answer, "0.1", require_approval=False)
    assert refused.value.reason == "node_revoked"


def test_another_key_cannot_take_over_an_enrolled_node() -> None:
    cp, node, thief = Signer.generate(), Signer.generate(), Signer.generate()
    keys = Keyring([cp.public_key])
    issued = _challenge(cp, node)
    challenge = check_answer(issued, answer_challenge(node, issued), keys, NOW)
    assert not isinstance(challenge, Rejection)
    answer = NodeEvidence(node.key_id, issued.challenge, answer_challenge(node, issued))
    [enrolled] = decide_enrollment(None, challenge, answer, "0.1", require_approval=False)
    stolen = _challenge(cp, thief, NOW + timedelta(seconds=1))
    taken = check_answer(stolen, answer_challenge(thief, stolen), keys, NOW)
    assert not isinstance(taken, Rejection)
    with pytest.raises(Refused) as refused:
        decide_enrollment(state_of(enrolled), taken, answer, "0.1", require_approval=False)
    assert refused.value.reason == "key_mismatch"
