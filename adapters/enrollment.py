"""Challenge enrollment: issue a signed challenge, verify the node's answer, record it."""

import re
import secrets
from collections.abc import Callable
from datetime import datetime

import msgspec

from adapters.http.problems import ApiError
from adapters.node_auth import NodeDirectory
from adapters.recorder import Recorder
from domain.canonical import b64decode
from domain.decoding import Decoded
from domain.enrollment import IssuedChallenge, check_answer, issue_challenge
from domain.events import Event, NodeEnrolled, NodeEvidence
from domain.ids import uuid7
from domain.node_requests import Rejection
from domain.nodes import Refused, decide_enrollment, state_of
from domain.signing import Keyring, Signer, key_id_for

NODE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
STATUS_OF_CODE = {
    "unauthorized": 401,
    "invalid_signature": 401,
    "invalid_challenge": 401,
    "challenge_expired": 401,
    "challenge_used": 409,
    "node_revoked": 409,
    "not_found": 404,
}


class Enrolled(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    key_id: str
    status: str
    seq: int
    """The ledger sequence the enrollment landed at (for read-your-writes)."""
    heartbeat_interval_s: float


def refused(exc: Refused) -> ApiError:
    return ApiError(STATUS_OF_CODE.get(exc.code, 400), exc.code, "Refused", exc.reason)


def check_node_id(node_id: str) -> str:
    if not NODE_ID.match(node_id):
        raise ApiError(400, "invalid_request", "Bad Request", "node_id: 1-128 of [A-Za-z0-9_-]")
    return node_id


class Enrollment:
    def __init__(
        self,
        signer: Signer,
        keyring: Keyring,
        recorder: Recorder,
        directory: NodeDirectory,
        *,
        challenge_ttl_s: float,
        require_approval: bool,
        heartbeat_interval_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._signer = signer
        self._keyring = keyring
        self._recorder = recorder
        self._directory = directory
        self._ttl_s = challenge_ttl_s
        self._require_approval = require_approval
        self._interval_s = heartbeat_interval_s
        self._clock = clock

    def challenge(self, node_id: str, public_key: str) -> IssuedChallenge:
        check_node_id(node_id)
        try:
            raw = b64decode(public_key)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ApiError(400, "invalid_request", "Bad Request", "public_key: 32 bytes, base64url")
        return issue_challenge(
            self._signer,
            challenge_id=uuid7(),
            node_id=node_id,
            public_key=public_key,
            nonce=secrets.token_urlsafe(24),
            now=self._clock(),
            ttl_s=self._ttl_s,
        )

    async def enroll(self, issued: IssuedChallenge, answer: str, agent_version: str) -> Enrolled:
        challenge = check_answer(issued, answer, self._keyring, self._clock())
        if isinstance(challenge, Rejection):
            raise refused(Refused(challenge.code, challenge.reason))
        key_id = key_id_for(b64decode(challenge.public_key))
        evidence = NodeEvidence(key_id=key_id, body=issued.challenge, sig=answer)

        decided: list[NodeEnrolled] = []

        def decide(tail: Decoded | None) -> list[Event]:
            state = state_of(tail.event) if tail else None
            events = decide_enrollment(
                state, challenge, evidence, agent_version, require_approval=self._require_approval
            )
            decided[:] = [e for e in events if isinstance(e, NodeEnrolled)]
            return events

        try:
            result = await self._recorder.record(
                self._recorder.topology.subject("node", challenge.node_id), decide
            )
        except Refused as exc:
            raise refused(exc) from None
        assert result is not None  # decide_enrollment always appends or refuses
        self._directory.forget(challenge.node_id)
        return Enrolled(
            node_id=challenge.node_id,
            key_id=key_id,
            status=decided[-1].status,
            seq=result.last_seq,
            heartbeat_interval_s=self._interval_s,
        )
