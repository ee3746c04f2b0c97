"""The command queue: operators issue, nodes long-poll and lease, nodes report signed results."""

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime

import asyncpg
import msgspec

from adapters.command_signals import CommandSignals
from adapters.enrollment import refused
from adapters.http.problems import ApiError
from adapters.node_auth import NodeAuthenticator, NodeDirectory
from adapters.recorder import Recorder
from adapters.subject_history import subject_history
from domain.canonical import sha256_hex
from domain.command_messages import CommandResult, LeasedCommand, Polled
from domain.command_specs import CommandSpec
from domain.commands import (
    OUTCOMES,
    TERMINAL,
    current,
    decide_cancel,
    decide_issue,
    decide_lease,
    decide_result,
    decide_retry,
)
from domain.decoding import Decoded
from domain.envelope import StoredEvent
from domain.events import CommandState, Event, NodeEvidence
from domain.ids import uuid7
from domain.nodes import REVOKED, Refused
from domain.ports import AppendResult
from projections.command_queries import (
    CommandFilter,
    CommandView,
    command,
    list_commands,
    waiting_for,
)

STATUS_OF_CODE = {
    "stale_lease": 409,
    "command_cancelled": 409,
    "result_already_reported": 409,
    "invalid_state": 409,
}


class Issued(msgspec.Struct, frozen=True, kw_only=True):
    command_id: str
    node_id: str
    state: str
    seq: int | None
    """Where it landed on the ledger (for read-your-writes); None for a repeated issue."""


class ResultAccepted(msgspec.Struct, frozen=True, kw_only=True):
    command_id: str
    state: str
    seq: int | None
    duplicate: bool
    """True when this exact result was already on the log (a retried upload)."""


class Change(msgspec.Struct, frozen=True, kw_only=True):
    command_id: str
    state: str
    seq: int | None


_result = msgspec.json.Decoder(CommandResult)
assert set(OUTCOMES) == {"succeeded", "failed", "refused"}


def _refused(exc: Refused) -> ApiError:
    status = STATUS_OF_CODE.get(exc.code)
    if status is None:
        return refused(exc)
    return ApiError(status, exc.code, "Refused", exc.reason)


def _state(tail: Decoded | None) -> CommandState | None:
    return getattr(tail.event, "command", None) if tail else None


class CommandQueue:
    MAX_LEASED_PER_POLL = 8

    def __init__(
        self,
        pool: asyncpg.Pool,
        recorder: Recorder,
        auth: NodeAuthenticator,
        directory: NodeDirectory,
        signals: CommandSignals,
        *,
        lease_s: float,
        ttl_s: float,
        max_attempts: int,
        max_wait_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._pool = pool
        self._recorder = recorder
        self._auth = auth
        self._directory = directory
        self.signals = signals
        self._lease_s = lease_s
        self._ttl_s = ttl_s
        self._max_attempts = max_attempts
        self.max_wait_s = max_wait_s
        self._clock = clock

    def _subject(self, command_id: str) -> str:
        try:
            return self._recorder.topology.subject("command", command_id)
        except ValueError:
            raise ApiError(404, "not_found", "Not Found", "no such command") from None

    async def _record(
        self, command_id: str, decide: Callable[[CommandState | None], list[Event]]
    ) -> tuple[AppendResult | None, CommandState | None]:
        after: list[CommandState] = []

        def on_tail(tail: Decoded | None) -> list[Event]:
            state = _state(tail)
            events = decide(state)
            last = getattr(events[-1], "command", None) if events else state
            after[:] = [last] if last is not None else []
            return events

        subject = self._subject(command_id)
        try:
            result = await self._recorder.record(subject, on_tail)
        except Refused as exc:
            raise _refused(exc) from None
        if after and after[0].state in TERMINAL:
            # Nothing follows a finished command: keeping its tail would only fill the
            # recorder's cache (the soak's API memory grew with finished commands).
            self._recorder.forget(subject)
        return result, (after[0] if after else None)

    async def issue(
        self, node_id: str, spec: CommandSpec, by: str, reason: str, command_id: str | None = None
    ) -> Issued:
        state, _ = await self._directory.state(node_id)
        if state is None:
            raise ApiError(404, "not_found", "Not Found", "no such node")
        if state.status == REVOKED:
            raise ApiError(409, "node_revoked", "Conflict", "the node is revoked")
        command_id = command_id or uuid7()
        now = self._clock()
        result, after = await self._record(
            command_id,
            lambda existing: decide_issue(
                existing,
                command_id,
                node_id,
                spec,
                by,
                reason,
                now=now,
                lease_s=self._lease_s,
                ttl_s=self._ttl_s,
                max_attempts=self._max_attempts,
            ),
        )
        if after is None or after.node_id != node_id:
            raise ApiError(409, "conflict", "Conflict", "that command id is taken")
        self.signals.notify(node_id, command_id)
        return Issued(
            command_id=command_id,
            node_id=node_id,
            state=current(after, now).state,
            seq=None if result is None else result.last_seq,
        )

    async def poll(
        self, node_id: str, path: str, headers: Mapping[str, str], wait_s: float
    ) -> Polled:
        """Lease what waits for the node; if nothing does, wait (up to ``wait_s``) for it."""
        request = await self._auth.authenticate(node_id, "GET", path, headers, b"")
        evidence = NodeEvidence(
            key_id=request.signed.key_id,
            body=request.canonical.decode(),
            sig=request.signed.signature,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(wait_s, self.max_wait_s))
        with self.signals.waiter(node_id) as waiter:
            while True:
                hinted = waiter.take()
                async with self._pool.acquire() as conn:
                    known = await waiting_for(
                        conn, node_id, self._clock(), self.MAX_LEASED_PER_POLL
                    )
                leased = await self._lease_all([*hinted, *known], node_id, evidence)
                remaining = deadline - loop.time()
                if leased or remaining <= 0:
                    return Polled(commands=leased)
                await waiter.wait(remaining)

    async def _lease_all(
        self, ids: list[str], node_id: str, evidence: NodeEvidence
    ) -> list[LeasedCommand]:
        leased: list[LeasedCommand] = []
        for command_id in dict.fromkeys(ids):
            if len(leased) == self.MAX_LEASED_PER_POLL:
                break
            lease_id, now = uuid7(), self._clock()

            def decide(
                state: CommandState | None, lease_id: str = lease_id, now: datetime = now
            ) -> list[Event]:
                return decide_lease(state, node_id, lease_id, evidence, now)

            result, after = await self._record(command_id, decide)
            if result is not None and after is not None and after.lease_id == lease_id:
                assert after.lease_expires_at is not None
                leased.append(
                    LeasedCommand(
                        command_id=command_id,
                        lease_id=lease_id,
                        lease_expires_at=after.lease_expires_at,
                        attempt=after.attempt,
                        spec=after.spec,
                    )
                )
        return leased

    async def report(
        self, node_id: str, command_id: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> ResultAccepted:
        request = await self._auth.authenticate(node_id, "POST", path, headers, body)
        try:
            text = body.decode()
            result = _result.decode(text)
        except (UnicodeDecodeError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ApiError(400, "invalid_request", "Bad Request", str(exc)) from None
        if result.command_id != command_id:
            raise ApiError(400, "invalid_request", "Bad Request", "result command_id differs")
        evidence = NodeEvidence(
            key_id=request.signed.key_id,
            body=request.canonical.decode(),
            sig=request.signed.signature,
            request_body=text,
        )
        digest = sha256_hex(canonical_result(result))
        now = self._clock()
        recorded, after = await self._record(
            command_id,
            lambda state: decide_result(
                state,
                node_id,
                result.lease_id,
                result.outcome,
                result.code,
                evidence,
                digest,
                now,
            ),
        )
        assert after is not None
        return ResultAccepted(
            command_id=command_id,
            state=after.state,
            seq=None if recorded is None else recorded.last_seq,
            duplicate=recorded is None,
        )

    async def retry(self, command_id: str, by: str, reason: str) -> Change:
        now = self._clock()
        result, after = await self._record(
            command_id, lambda state: decide_retry(state, by, reason, now=now, ttl_s=self._ttl_s)
        )
        assert after is not None
        self.signals.notify(after.node_id, command_id)
        return Change(
            command_id=command_id,
            state=after.state,
            seq=None if result is None else result.last_seq,
        )

    async def cancel(self, command_id: str, by: str, reason: str) -> Change:
        now = self._clock()
        result, after = await self._record(
            command_id, lambda state: decide_cancel(state, by, reason, now)
        )
        assert after is not None
        return Change(
            command_id=command_id,
            state=after.state,
            seq=None if result is None else result.last_seq,
        )

    async def show(self, command_id: str) -> CommandView:
        async with self._pool.acquire() as conn:
            found = await command(conn, command_id, self._clock())
        if found is None:
            raise ApiError(404, "not_found", "Not Found", "no such command")
        return found

    async def search(
        self, where: CommandFilter, *, after: str | None, limit: int
    ) -> list[CommandView]:
        async with self._pool.acquire() as conn:
            return await list_commands(conn, where, after=after, limit=limit, now=self._clock())

    async def audit(self, command_id: str) -> list[StoredEvent]:
        events = await subject_history(self._recorder.store, self._subject(command_id))
        if not events:
            raise ApiError(404, "not_found", "Not Found", "no such command")
        return events


_canonical = msgspec.json.Encoder(order="deterministic")


def canonical_result(result: CommandResult) -> bytes:
    """Two uploads of one result differ in signature and nonce, never in these bytes."""
    return _canonical.encode(result)
