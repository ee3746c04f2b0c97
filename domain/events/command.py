"""A command's life on its own subject: issued, leased, reported, failed, expired, retried,
cancelled. Every event carries the command's state after it, so a decision needs only the
subject's last event."""

from datetime import datetime

import msgspec

from domain.command_specs import CommandSpec
from domain.events.base import Event, NodeEvidence


class CommandState(msgspec.Struct, frozen=True, kw_only=True):
    command_id: str
    node_id: str
    spec: CommandSpec
    state: str
    """queued, leased, succeeded, failed, refused, expired or cancelled."""
    issued_at: datetime
    expires_at: datetime
    """Past this, a command not yet done expires."""
    lease_s: float
    max_attempts: int
    attempt: int = 0
    """Leases handed out since it was last queued by an operator."""
    lease_id: str | None = None
    lease_expires_at: datetime | None = None
    result_sha256: str | None = None
    """SHA-256 of the accepted result body: the same upload again is a no-op."""


class CommandIssued(Event, frozen=True, kw_only=True):
    command_id: str
    node_id: str
    issued_by: str
    """The admin token id of the operator (or the support grant id) who asked."""
    reason: str
    command: CommandState


class CommandLeased(Event, frozen=True, kw_only=True):
    command_id: str
    node_id: str
    lease_id: str
    lease_expires_at: datetime
    evidence: NodeEvidence
    """The node's signed poll that took the lease."""
    command: CommandState


class CommandResultReported(Event, frozen=True, kw_only=True):
    command_id: str
    node_id: str
    lease_id: str
    evidence: NodeEvidence
    """The node's signed result upload, verbatim."""
    command: CommandState


class CommandFailed(Event, frozen=True, kw_only=True):
    command_id: str
    node_id: str
    lease_id: str
    outcome: str
    """failed (it ran and failed) or refused (the node does not allow it)."""
    code: str
    evidence: NodeEvidence
    command: CommandState


class CommandExpired(Event, frozen=True, kw_only=True):
    command_id: str
    node_id: str
    reason: str
    """lease_expired, attempts_exhausted or deadline."""
    requeued: bool
    """True: the lease lapsed and the command waits for the node again."""
    command: CommandState


class CommandRetried(Event, frozen=True, kw_only=True):
    command_id: str
    node_id: str
    retried_by: str
    reason: str
    command: CommandState


class CommandCancelled(Event, frozen=True, kw_only=True):
    command_id: str
    node_id: str
    cancelled_by: str
    reason: str
    command: CommandState


COMMAND_EVENTS = (
    CommandIssued,
    CommandLeased,
    CommandResultReported,
    CommandFailed,
    CommandExpired,
    CommandRetried,
    CommandCancelled,
)
CommandEvent = (
    CommandIssued
    | CommandLeased
    | CommandResultReported
    | CommandFailed
    | CommandExpired
    | CommandRetried
    | CommandCancelled
)
