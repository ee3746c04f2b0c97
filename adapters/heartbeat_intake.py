"""Signed heartbeats in: authenticate, check the node's sequence, append to the window."""

from collections.abc import Callable, Mapping
from datetime import datetime

import msgspec

from adapters.http.problems import ApiError
from adapters.node_auth import NodeAuthenticator
from adapters.recorder import Recorder
from domain.decoding import decode_stored
from domain.events import HeartbeatRecorded, NodeEvidence
from domain.heartbeat_report import decode_report


class HeartbeatAccepted(msgspec.Struct, frozen=True, kw_only=True):
    heartbeat_seq: int
    stream_seq: int
    """Where it landed on the heartbeat stream (for read-your-writes)."""
    next_interval_s: float
    """When the control plane wants the next heartbeat."""


class HeartbeatIntake:
    MAX_TRACKED = 200_000

    def __init__(
        self,
        auth: NodeAuthenticator,
        recorder: Recorder,
        *,
        interval_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._auth = auth
        self._recorder = recorder
        self._interval_s = interval_s
        self._clock = clock
        self._last_seq: dict[str, int] = {}

    async def accept(
        self, node_id: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> HeartbeatAccepted:
        request = await self._auth.authenticate(node_id, "POST", path, headers, body)
        try:
            text = body.decode()
            report = decode_report(text)
        except (UnicodeDecodeError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ApiError(400, "invalid_request", "Bad Request", str(exc)) from None
        if report.node_id != node_id:
            raise ApiError(400, "invalid_request", "Bad Request", "report node_id differs")
        subject = self._recorder.topology.heartbeat_subject(node_id)
        previous = await self._previous_seq(node_id, subject)
        # Claim the sequence before awaiting the append, so a concurrent duplicate loses.
        if report.heartbeat_seq <= max(previous, self._last_seq.get(node_id, 0)):
            raise ApiError(
                409,
                "stale_sequence",
                "Conflict",
                f"heartbeat_seq {report.heartbeat_seq} is not after {previous}",
            )
        self._last_seq[node_id] = report.heartbeat_seq
        event = HeartbeatRecorded(
            node_id=node_id,
            heartbeat_seq=report.heartbeat_seq,
            sent_at=report.sent_at,
            agent_version=report.agent_version,
            evidence=NodeEvidence(
                key_id=request.signed.key_id,
                body=request.canonical.decode(),
                sig=request.signed.signature,
                request_body=text,
            ),
        )
        try:
            [result] = await self._recorder.record_evidence([(subject, event)])
        except BaseException:
            if self._last_seq.get(node_id) == report.heartbeat_seq:
                self._last_seq[node_id] = previous  # let the node retry this sequence
            raise
        return HeartbeatAccepted(
            heartbeat_seq=report.heartbeat_seq,
            stream_seq=result.last_seq,
            next_interval_s=self._interval_s,
        )

    async def _previous_seq(self, node_id: str, subject: str) -> int:
        known = self._last_seq.get(node_id)
        if known is not None:
            return known
        stored = await self._recorder.store.last(subject)
        seq = 0
        if stored is not None:
            event = decode_stored(stored).event
            if isinstance(event, HeartbeatRecorded):
                seq = event.heartbeat_seq
        if len(self._last_seq) >= self.MAX_TRACKED:
            self._last_seq.clear()  # the log still holds every node's last sequence
        return max(seq, self._last_seq.get(node_id, 0))
