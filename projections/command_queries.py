"""Read-side queries over commands: plain SQL, lease expiry judged at query time."""

from datetime import datetime
from typing import Any

import msgspec

from projections.db import Database

# Mirrors domain.commands.due_expiry, so a lapsed lease reads as what it has become.
STATE_NOW = """CASE
    WHEN c.state = 'leased' AND c.lease_expires_at <= $1 THEN
        CASE WHEN c.expires_at <= $1 OR c.attempt >= c.max_attempts
             THEN 'expired' ELSE 'queued' END
    WHEN c.state = 'queued' AND c.expires_at <= $1 THEN 'expired'
    ELSE c.state END"""


class CommandView(msgspec.Struct, frozen=True, kw_only=True):
    command_id: str
    node_id: str
    kind: str
    spec: dict[str, Any]
    state: str
    """As of the query: a lapsed lease shows as queued again (or expired)."""
    recorded_state: str
    """As the last event left it."""
    attempt: int
    max_attempts: int
    lease_expires_at: datetime | None
    issued_at: datetime
    expires_at: datetime
    issued_by: str
    reason: str
    outcome_code: str | None
    result: Any
    """The node's signed result body, decoded (its signature is on the log)."""
    updated_at: datetime
    last_seq: int


class CommandFilter(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str | None = None
    states: tuple[str, ...] = ()
    kind: str | None = None


_SELECT = f"""
SELECT c.command_id, c.node_id, c.kind, c.spec::text AS spec, {STATE_NOW} AS state,
       c.state AS recorded_state, c.attempt, c.max_attempts, c.lease_expires_at, c.issued_at,
       c.expires_at, c.issued_by, c.reason, c.outcome_code, c.result, c.updated_at, c.last_seq
FROM commands c
"""
_any = msgspec.json.Decoder()


def _view(row: Any) -> CommandView:
    values = dict(row)
    values["spec"] = _any.decode(values["spec"])
    values["result"] = _any.decode(values["result"]) if values["result"] else None
    return CommandView(**values)


async def command(db: Database, command_id: str, now: datetime) -> CommandView | None:
    row = await db.fetchrow(f"{_SELECT} WHERE c.command_id = $2", now, command_id)
    return None if row is None else _view(row)


async def list_commands(
    db: Database, where: CommandFilter, *, after: str | None, limit: int, now: datetime
) -> list[CommandView]:
    """Newest first (command ids are UUIDv7), after the cursor ``after``."""
    args: list[object] = [now]

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    clauses = ["$1::timestamptz IS NOT NULL"]
    if where.node_id:
        clauses.append(f"c.node_id = {arg(where.node_id)}")
    if where.kind:
        clauses.append(f"c.kind = {arg(where.kind)}")
    if where.states:
        clauses.append(f"({STATE_NOW}) = ANY({arg(list(where.states))}::text[])")
    if after is not None:
        clauses.append(f"c.command_id < {arg(after)}")
    sql = f"{_SELECT} WHERE {' AND '.join(clauses)} ORDER BY c.command_id DESC LIMIT {arg(limit)}"
    return [_view(r) for r in await db.fetch(sql, *args)]


async def waiting_for(db: Database, node_id: str, now: datetime, limit: int) -> list[str]:
    """Ids of the node's commands that a poll may lease now, oldest first."""
    rows = await db.fetch(
        f"SELECT c.command_id FROM commands c WHERE c.node_id = $2"
        f" AND c.state IN ('queued', 'leased') AND ({STATE_NOW}) = 'queued'"
        " ORDER BY c.command_id LIMIT $3",
        now,
        node_id,
        limit,
    )
    return [r["command_id"] for r in rows]
