"""Evidence waiting for the control plane, in the node's SQLite file, oldest first.

A row leaves only once the control plane has it (accepted, or refused as already seen),
so nothing is lost while offline and a resend never makes a second copy: the control
plane refuses any heartbeat sequence it has passed. The request signature is made at
send time, because a signed request is only good within the clock-skew window.
"""

import time
from typing import NamedTuple

from node.state import Database


class Pending(NamedTuple):
    id: int
    path: str
    body: bytes


class Outbox:
    MAX_ROWS = 10_000
    """While offline for days, keep the newest evidence rather than fill the disk."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def next_heartbeat_seq(self) -> int:
        with self._db.transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'heartbeat_seq'").fetchone()
            seq = int(row[0]) + 1 if row else 1
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('heartbeat_seq', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(seq),),
            )
        return seq

    def add(self, path: str, body: bytes) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO outbox (path, body, created_at) VALUES (?, ?, ?)",
                (path, body, time.time()),
            )
            conn.execute(
                "DELETE FROM outbox WHERE id <= (SELECT max(id) FROM outbox) - ?",
                (self.MAX_ROWS,),
            )

    def pending(self, limit: int = 100) -> list[Pending]:
        rows = self._db.query("SELECT id, path, body FROM outbox ORDER BY id LIMIT ?", (limit,))
        return [Pending(r["id"], r["path"], bytes(r["body"])) for r in rows]

    def done(self, item_id: int) -> None:
        self._db.execute("DELETE FROM outbox WHERE id = ?", (item_id,))

    def __len__(self) -> int:
        row = self._db.one("SELECT count(*) AS n FROM outbox")
        return 0 if row is None else int(row["n"])
