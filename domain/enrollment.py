"""Enrollment challenges: single-use, short-lived, bound to a node id and public key (pure).

A challenge is the control plane's own signed statement, so any API process can check
it without shared state; it is single-use because enrolling records its issue time in
the node's state and a challenge must be newer than the last one used.
"""

from datetime import datetime, timedelta

import msgspec

from domain.canonical import b64decode, canonical_bytes
from domain.node_requests import Rejection
from domain.signing import Keyring, Signer, key_id_for


class Challenge(msgspec.Struct, frozen=True, kw_only=True):
    purpose: str = "b3iq-enrollment-challenge-v1"
    challenge_id: str
    node_id: str
    public_key: str
    """URL-safe base64 of the node's raw Ed25519 public key."""
    nonce: str
    issued_at: datetime
    expires_at: datetime


class IssuedChallenge(msgspec.Struct, frozen=True):
    challenge: str
    """The challenge's canonical JSON text: the node signs exactly these bytes."""
    signature: str
    """The control plane's signature over the same bytes."""


_challenge_decoder = msgspec.json.Decoder(Challenge)


def issue_challenge(
    signer: Signer,
    *,
    challenge_id: str,
    node_id: str,
    public_key: str,
    nonce: str,
    now: datetime,
    ttl_s: float,
) -> IssuedChallenge:
    challenge = Challenge(
        challenge_id=challenge_id,
        node_id=node_id,
        public_key=public_key,
        nonce=nonce,
        issued_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
    )
    text = canonical_bytes(challenge)
    return IssuedChallenge(text.decode(), signer.sign(text))


def answer_challenge(node: Signer, issued: IssuedChallenge) -> str:
    """The node's answer: its signature over the challenge text."""
    return node.sign(issued.challenge.encode())


def check_answer(
    issued: IssuedChallenge, answer: str, control_plane: Keyring, now: datetime
) -> Challenge | Rejection:
    """The challenge if it is ours, unexpired and signed by the key it names."""
    text = issued.challenge.encode()
    if not any(
        control_plane.verify(k.key_id, text, issued.signature) for k in control_plane.public_keys()
    ):
        return Rejection("invalid_challenge", "not_issued_here")
    try:
        challenge = _challenge_decoder.decode(text)
        public_key = b64decode(challenge.public_key)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return Rejection("invalid_challenge", "malformed_challenge")
    if now >= challenge.expires_at:
        return Rejection("challenge_expired", "challenge_expired")
    if len(public_key) != 32 or not Keyring([public_key]).verify(
        key_id_for(public_key), text, answer
    ):
        return Rejection("invalid_signature", "bad_answer_signature")
    return challenge
