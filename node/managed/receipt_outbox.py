"""Receipts waiting for the control plane, in the node's SQLite file.

A receipt is queued once (a row here) and leaves the queue only when the control plane
has accepted it, or has refused it by name for a reason that will not change; after any
other failure it is sent again. So nothing is lost while offline, and since the control
plane records each receipt once however often it arrives, a resend is harmless. The
table is Managed Mode's own, made here on first use.
"""

import sqlite3
import time
from collections.abc import Sequence

import msgspec

from domain.receipts import Receipt, ReceiptBody
from node.state import Database

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS receipt_submissions (
        receipt_hash TEXT PRIMARY KEY,
        queued_at REAL NOT NULL,
        submitted_at REAL,
        refused TEXT
    )""",
    """CREATE INDEX IF NOT EXISTS receipt_submissions_waiting ON receipt_submissions (queued_at)
        WHERE submitted_at IS NULL AND refused IS NULL""",
)
QUEUED_THROUGH = "receipts_queued_through"
"""Meta key: every receipt up to this local sequence has been considered (has a row)."""
OTHER_KEY = "other_key"
"""Refusal of a receipt signed with a key this node no longer holds: the control plane
checks receipts against the node's current key."""
MAX_PER_CALL = 1000


class Queued(msgspec.Struct, frozen=True, kw_only=True):
    queued: int
    """Receipts this call put in the queue."""
    already_queued: int
    already_submitted: int
    """The control plane has them."""
    not_submittable: int
    """Signed with a key this node no longer uses, or refused by the control plane."""
    remaining: int
    """Receipts this call did not reach (over its bound): ask again."""
    waiting: int
    """Receipts in the queue now that the control plane has not accepted yet."""


class UnknownReceipt(Exception):
    def __init__(self, receipt_hash: str) -> None:
        super().__init__(receipt_hash)
        self.receipt_hash = receipt_hash


class _KeyOnly(msgspec.Struct):
    key_id: str


_key_of = msgspec.json.Decoder(_KeyOnly)
_body = msgspec.json.Decoder(ReceiptBody)
_ROW = """SELECT r.seq, r.receipt_hash, r.body, s.receipt_hash IS NOT NULL AS known,
    s.submitted_at, s.refused
FROM receipts r LEFT JOIN receipt_submissions s ON s.receipt_hash = r.receipt_hash"""
_WAITING = "SELECT count(*) FROM receipt_submissions WHERE submitted_at IS NULL AND refused IS NULL"


class ReceiptOutbox:
    def __init__(self, db: Database, key_id: str) -> None:
        self._db = db
        self._key_id = key_id
        for statement in SCHEMA:
            db.execute(statement)

    def queue_new(self, limit: int = MAX_PER_CALL) -> Queued:
        """Queue receipts not considered yet, oldest first, at most ``limit``."""
        counts = dict.fromkeys(("queued", "already_queued", "already_submitted"), 0)
        counts["not_submittable"] = 0
        with self._db.transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (QUEUED_THROUGH,)).fetchone()
            through = int(row[0]) if row else 0
            rows = conn.execute(
                f"{_ROW} WHERE r.seq > ? ORDER BY r.seq LIMIT ?", (through, limit)
            ).fetchall()
            now = time.time()
            for r in rows:
                counts[self._classify(conn, r, now)] += 1
            if rows:
                through = rows[-1]["seq"]
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (QUEUED_THROUGH, str(through)),
                )
            remaining = conn.execute(
                "SELECT count(*) FROM receipts WHERE seq > ?", (through,)
            ).fetchone()[0]
            waiting = conn.execute(_WAITING).fetchone()[0]
        return Queued(**counts, remaining=remaining, waiting=waiting)

    def queue(self, hashes: Sequence[str]) -> Queued:
        """Queue these receipts; raises UnknownReceipt (queueing none) for one not here."""
        counts = dict.fromkeys(("queued", "already_queued", "already_submitted"), 0)
        counts["not_submittable"] = 0
        with self._db.transaction() as conn:
            now = time.time()
            for receipt_hash in dict.fromkeys(hashes):
                r = conn.execute(f"{_ROW} WHERE r.receipt_hash = ?", (receipt_hash,)).fetchone()
                if r is None:
                    raise UnknownReceipt(receipt_hash)
                counts[self._classify(conn, r, now)] += 1
            waiting = conn.execute(_WAITING).fetchone()[0]
        return Queued(**counts, remaining=0, waiting=waiting)

    def _classify(self, conn: sqlite3.Connection, r: sqlite3.Row, now: float) -> str:
        if r["known"]:
            if r["submitted_at"] is not None:
                return "already_submitted"
            return "already_queued" if r["refused"] is None else "not_submittable"
        other = _key_of.decode(r["body"]).key_id != self._key_id
        conn.execute(
            "INSERT INTO receipt_submissions (receipt_hash, queued_at, refused) VALUES (?, ?, ?)",
            (r["receipt_hash"], now, OTHER_KEY if other else None),
        )
        return "not_submittable" if other else "queued"

    def waiting(self, limit: int) -> list[Receipt]:
        """The oldest receipts the control plane has not accepted yet."""
        rows = self._db.query(
            "SELECT r.receipt_hash, r.signature, r.body FROM receipt_submissions s"
            " JOIN receipts r ON r.receipt_hash = s.receipt_hash"
            " WHERE s.submitted_at IS NULL AND s.refused IS NULL ORDER BY r.seq LIMIT ?",
            (limit,),
        )
        return [
            Receipt(
                receipt_hash=r["receipt_hash"],
                signature=r["signature"],
                body=_body.decode(r["body"]),
            )
            for r in rows
        ]

    def accepted(self, hashes: Sequence[str]) -> None:
        self._mark(hashes, "submitted_at = ?", time.time())

    def refused(self, hashes: Sequence[str], code: str) -> None:
        self._mark(hashes, "refused = ?", code)

    def _mark(self, hashes: Sequence[str], assignment: str, value: object) -> None:
        with self._db.transaction() as conn:
            conn.executemany(
                f"UPDATE receipt_submissions SET {assignment} WHERE receipt_hash = ?",
                [(value, h) for h in hashes],
            )
