"""Signed heartbeats in: authenticate, check the node's sequence, append to the window.

Heartbeats that reach the append together are sealed and appended as one pipelined
batch, so under load the per-heartbeat cost is little more than its signature checks.
Each append is conditional on the node's last heartbeat, so the sequence check holds
across API processes without a read per heartbeat.
"""

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import NamedTuple

import msgspec
from prometheus_client import Counter, Histogram

from adapters.coalescer import Coalescer
from adapters.http.problems import ApiError
from adapters.node_auth import NodeAuthenticator
from adapters.recorder import Recorder
from domain.decoding import decode_stored
from domain.events import Event, HeartbeatRecorded, NodeEvidence
from domain.heartbeat_report import decode_report
from domain.ports import AppendResult, ConcurrencyConflict

# Heartbeats skip the HTTP metrics middleware (it cost as much as verifying one); these
# count them instead.
RECEIVED = Counter("b3iq_heartbeats_total", "Heartbeats received, by outcome", ["outcome"])
ACCEPTED = RECEIVED.labels("accepted")
SECONDS = Histogram(
    "b3iq_heartbeat_seconds",
    "Time to accept a heartbeat: checks, append, acknowledgement",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class HeartbeatAccepted(msgspec.Struct, frozen=True, kw_only=True):
    heartbeat_seq: int
    stream_seq: int
    """Where it landed on the heartbeat stream (for read-your-writes)."""
    next_interval_s: float
    """When the control plane wants the next heartbeat."""


class _Tail(NamedTuple):
    """A node's last heartbeat as this process knows it."""

    heartbeat_seq: int
    stream_seq: int
    """Its place on the heartbeat stream (0: the node has none there)."""


class HeartbeatIntake:
    MAX_TRACKED = 200_000
    MAX_ATTEMPTS = 4

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
        self._tails: dict[str, _Tail] = {}
        self._appends: Coalescer[tuple[str, Event, int | None], AppendResult] = Coalescer(
            recorder.record_evidence_each
        )

    async def accept(
        self, node_id: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> HeartbeatAccepted:
        started = time.perf_counter()
        try:
            accepted = await self._accept(node_id, path, headers, body)
        except ApiError as exc:
            RECEIVED.labels(exc.code).inc()
            raise
        ACCEPTED.inc()
        SECONDS.observe(time.perf_counter() - started)
        return accepted

    async def _accept(
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
        for attempt in range(self.MAX_ATTEMPTS):
            tail = await self._tail(node_id, subject, reload=attempt > 0)
            if report.heartbeat_seq <= tail.heartbeat_seq:
                raise ApiError(
                    409,
                    "stale_sequence",
                    "Conflict",
                    f"heartbeat_seq {report.heartbeat_seq} is not after {tail.heartbeat_seq}",
                )
            # On condition that the node's last heartbeat is still the one we judged
            # against: whichever request or API process gets there first, each sequence
            # is accepted once and in order, and the loser judges again.
            try:
                result = await self._appends.submit((subject, event, tail.stream_seq))
            except ConcurrencyConflict:
                continue
            self._remember(node_id, _Tail(report.heartbeat_seq, result.last_seq))
            return HeartbeatAccepted(
                heartbeat_seq=report.heartbeat_seq,
                stream_seq=result.last_seq,
                next_interval_s=self._interval_s,
            )
        raise ApiError(409, "concurrency_conflict", "Conflict", "heartbeats raced; retry")

    async def _tail(self, node_id: str, subject: str, *, reload: bool) -> _Tail:
        known = None if reload else self._tails.get(node_id)
        if known is not None:
            return known
        stored = await self._recorder.store.last(subject)
        tail = _Tail(0, 0)
        if stored is not None:
            event = decode_stored(stored).event
            if isinstance(event, HeartbeatRecorded):
                tail = _Tail(event.heartbeat_seq, stored.seq)
        self._remember(node_id, tail)
        return tail

    def _remember(self, node_id: str, tail: _Tail) -> None:
        known = self._tails.get(node_id)
        if known is not None and known.stream_seq > tail.stream_seq:
            return  # a later heartbeat of this node landed meanwhile
        if len(self._tails) >= self.MAX_TRACKED:
            self._tails.clear()  # the log still holds every node's last heartbeat
        self._tails[node_id] = tail
