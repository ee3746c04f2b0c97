"""The command aggregate as decisions (pure; the clock is an input).

Lease expiry is judged against the clock whenever the command is read or decided on, and
recorded as ``CommandExpired`` by the next decision that touches the command (the next
lease, a result, a retry, a cancel): no sweeper has to run for a lapsed lease to free
the command, and the log still says when and why it lapsed.
"""

from datetime import datetime, timedelta

import msgspec

from domain.command_specs import CommandSpec
from domain.events import (
    CommandCancelled,
    CommandExpired,
    CommandFailed,
    CommandIssued,
    CommandLeased,
    CommandResultReported,
    CommandRetried,
    CommandState,
    Event,
    NodeEvidence,
)
from domain.nodes import Refused

QUEUED, LEASED = "queued", "leased"
SUCCEEDED, FAILED, REFUSED, EXPIRED, CANCELLED = (
    "succeeded",
    "failed",
    "refused",
    "expired",
    "cancelled",
)
STATES = (QUEUED, LEASED, SUCCEEDED, FAILED, REFUSED, EXPIRED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, FAILED, REFUSED, EXPIRED, CANCELLED})
RETRYABLE = frozenset({FAILED, REFUSED, EXPIRED, CANCELLED})
OUTCOMES = (SUCCEEDED, FAILED, REFUSED)


def command_of(event: Event | None) -> CommandState | None:
    return getattr(event, "command", None) if event is not None else None


def _with(command: CommandState, /, **changes: object) -> CommandState:
    return msgspec.structs.replace(command, **changes)


def due_expiry(state: CommandState, now: datetime) -> list[Event]:
    """What the clock has decided since the last event: a lapsed lease or a passed deadline."""
    if state.state == LEASED and state.lease_expires_at and now >= state.lease_expires_at:
        if now >= state.expires_at:
            reason, requeued = "deadline", False
        elif state.attempt >= state.max_attempts:
            reason, requeued = "attempts_exhausted", False
        else:
            reason, requeued = "lease_expired", True
    elif state.state == QUEUED and now >= state.expires_at:
        reason, requeued = "deadline", False
    else:
        return []
    after = _with(
        state, state=QUEUED if requeued else EXPIRED, lease_id=None, lease_expires_at=None
    )
    return [
        CommandExpired(
            command_id=state.command_id,
            node_id=state.node_id,
            reason=reason,
            requeued=requeued,
            command=after,
        )
    ]


def current(state: CommandState, now: datetime) -> CommandState:
    """The state as the clock has it now (what a reader should see)."""
    expired = due_expiry(state, now)
    return command_of(expired[-1]) or state if expired else state


def decide_issue(  # noqa: PLR0917
    existing: CommandState | None,
    command_id: str,
    node_id: str,
    spec: CommandSpec,
    by: str,
    reason: str,
    *,
    now: datetime,
    lease_s: float,
    ttl_s: float,
    max_attempts: int,
) -> list[Event]:
    if existing is not None:
        return []  # a retried issue with the same id: already on the log
    state = CommandState(
        command_id=command_id,
        node_id=node_id,
        spec=spec,
        state=QUEUED,
        issued_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
        lease_s=lease_s,
        max_attempts=max_attempts,
    )
    return [
        CommandIssued(
            command_id=command_id, node_id=node_id, issued_by=by, reason=reason, command=state
        )
    ]


def decide_lease(
    state: CommandState | None, node_id: str, lease_id: str, evidence: NodeEvidence, now: datetime
) -> list[Event]:
    """Lease a waiting command to its node; nothing when it is not waiting any more."""
    if state is None or state.node_id != node_id:
        return []
    events = due_expiry(state, now)
    after = command_of(events[-1]) if events else state
    if after is None or after.state != QUEUED:
        return events
    expires = now + timedelta(seconds=after.lease_s)
    leased = _with(
        after, state=LEASED, attempt=after.attempt + 1, lease_id=lease_id, lease_expires_at=expires
    )
    return [
        *events,
        CommandLeased(
            command_id=state.command_id,
            node_id=node_id,
            lease_id=lease_id,
            lease_expires_at=expires,
            evidence=evidence,
            command=leased,
        ),
    ]


def decide_result(  # noqa: PLR0917
    state: CommandState | None,
    node_id: str,
    lease_id: str,
    outcome: str,
    code: str,
    evidence: NodeEvidence,
    body_sha256: str,
    now: datetime,
) -> list[Event]:
    """Accept the node's result for its current lease; the same upload again appends nothing."""
    if state is None or state.node_id != node_id:
        raise Refused("not_found", "unknown_command")
    if state.result_sha256 is not None and state.lease_id == lease_id:
        if state.result_sha256 == body_sha256:
            return []
        raise Refused("result_already_reported", "a different result was already reported")
    if state.state == CANCELLED:
        raise Refused("command_cancelled", "the command was cancelled")
    if state.state != LEASED or state.lease_id != lease_id:
        raise Refused("stale_lease", "this lease is not the command's current lease")
    if due_expiry(state, now):
        raise Refused("stale_lease", "the lease expired before the result arrived")
    done = _with(state, state=outcome, result_sha256=body_sha256)
    if outcome == SUCCEEDED:
        return [
            CommandResultReported(
                command_id=state.command_id,
                node_id=node_id,
                lease_id=lease_id,
                evidence=evidence,
                command=done,
            )
        ]
    return [
        CommandFailed(
            command_id=state.command_id,
            node_id=node_id,
            lease_id=lease_id,
            outcome=outcome,
            code=code,
            evidence=evidence,
            command=done,
        )
    ]


def decide_retry(
    state: CommandState | None, by: str, reason: str, *, now: datetime, ttl_s: float
) -> list[Event]:
    if state is None:
        raise Refused("not_found", "unknown_command")
    events = due_expiry(state, now)
    after = command_of(events[-1]) if events else state
    assert after is not None
    if after.state not in RETRYABLE:
        raise Refused("invalid_state", f"a {after.state} command cannot be retried")
    queued = _with(
        after,
        state=QUEUED,
        attempt=0,
        lease_id=None,
        lease_expires_at=None,
        result_sha256=None,
        expires_at=now + timedelta(seconds=ttl_s),
    )
    return [
        *events,
        CommandRetried(
            command_id=after.command_id,
            node_id=after.node_id,
            retried_by=by,
            reason=reason,
            command=queued,
        ),
    ]


def decide_cancel(state: CommandState | None, by: str, reason: str, now: datetime) -> list[Event]:
    if state is None:
        raise Refused("not_found", "unknown_command")
    if state.state == CANCELLED:
        return []
    events = due_expiry(state, now)
    after = command_of(events[-1]) if events else state
    assert after is not None
    if after.state in TERMINAL:
        raise Refused("invalid_state", f"a {after.state} command cannot be cancelled")
    cancelled = _with(after, state=CANCELLED, lease_id=None, lease_expires_at=None)
    return [
        *events,
        CommandCancelled(
            command_id=after.command_id,
            node_id=after.node_id,
            cancelled_by=by,
            reason=reason,
            command=cancelled,
        ),
    ]
