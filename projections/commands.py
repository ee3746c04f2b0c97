"""Commands as their latest state, one row each (every command event carries the state)."""

from collections.abc import Sequence
from typing import Any

import msgspec

from domain.decoding import Decoded
from domain.events import CommandFailed, CommandIssued, CommandResultReported
from domain.events.command import COMMAND_EVENTS
from projections.db import Database

_COLUMNS = (
    "command_id",
    "node_id",
    "kind",
    "spec",
    "state",
    "attempt",
    "max_attempts",
    "lease_id",
    "lease_expires_at",
    "issued_at",
    "expires_at",
    "issued_by",
    "reason",
    "outcome_code",
    "result",
    "updated_at",
    "last_event_id",
    "last_seq",
)
_KEEP = ("issued_by", "reason")
"""Only the first event names them; the others keep what is there."""
_UPSERT = (
    f"INSERT INTO commands AS c ({', '.join(_COLUMNS)}) VALUES"
    f" ({', '.join(f'${i}' for i in range(1, len(_COLUMNS) + 1))})"
    " ON CONFLICT (command_id) DO UPDATE SET "
    + ", ".join(
        f"{c} = coalesce(EXCLUDED.{c}, c.{c})" if c in _KEEP else f"{c} = EXCLUDED.{c}"
        for c in _COLUMNS[1:]
    )
)
_json = msgspec.json.Encoder()


class CommandsProjection:
    name = "commands"
    stream = "ledger"
    handles = COMMAND_EVENTS
    tables = ("commands",)

    async def apply(self, db: Database, batch: Sequence[Decoded]) -> None:
        rows: dict[str, dict[str, Any]] = {}
        for p in batch:
            e = p.event
            if not isinstance(e, COMMAND_EVENTS):
                continue
            s = e.command
            row = rows.setdefault(s.command_id, {"issued_by": None, "reason": None})
            row.update(
                command_id=s.command_id,
                node_id=s.node_id,
                kind=type(s.spec).__struct_config__.tag,
                spec=_json.encode(s.spec).decode(),
                state=s.state,
                attempt=s.attempt,
                max_attempts=s.max_attempts,
                lease_id=s.lease_id,
                lease_expires_at=s.lease_expires_at,
                issued_at=s.issued_at,
                expires_at=s.expires_at,
                updated_at=p.body.occurred_at,
                last_event_id=p.body.event_id,
                last_seq=p.seq,
            )
            if isinstance(e, CommandIssued):
                row.update(issued_by=e.issued_by, reason=e.reason)
            reported = isinstance(e, CommandResultReported | CommandFailed)
            row["result"] = e.evidence.request_body if reported else None  # type: ignore[union-attr]
            row["outcome_code"] = e.code if isinstance(e, CommandFailed) else None
        if rows:
            await db.executemany(
                _UPSERT, [tuple(row.get(c) for c in _COLUMNS) for row in rows.values()]
            )
