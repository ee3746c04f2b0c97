"""The node's local state: one SQLite file under the home directory."""

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    public_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    models TEXT NOT NULL,
    endpoints TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    last_used_at REAL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS receipts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    receipt_hash TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL,
    signature TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    runtime_kind TEXT NOT NULL,
    source TEXT NOT NULL,
    upstream_model TEXT,
    added_at REAL NOT NULL
);
"""


CHECKPOINT_EVERY_WRITES = 200
"""Commits between two WAL checkpoints (SQLite's own default is every ~1000 WAL pages; a
receipt commit writes a few)."""


class _Checkpointer:
    """Copies the WAL back into the database file on its own thread and connection.

    SQLite would otherwise run that copy, and its fsync, inside whichever commit crosses the
    threshold: a receipt insert that usually takes ~15 µs then takes milliseconds, on the
    request path. Commits stay synchronous (a receipt is in the WAL before its response is
    sent); only the copy moves here.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._closing:
                    return
                # PASSIVE: never waits for, nor blocks, the writers and readers.
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join()


class Database:
    """A connection shared by the event loop and inference threads, one statement at a time."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._writes = 0
        self._checkpointer: _Checkpointer | None = None
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._conn.execute("PRAGMA wal_autocheckpoint=0")  # see _Checkpointer
            self._conn.executescript(SCHEMA)
        path.chmod(0o600)

    def _wrote(self) -> None:
        """Count a commit (under the lock); every so often, hand a checkpoint to the thread."""
        self._writes += 1
        if self._writes % CHECKPOINT_EVERY_WRITES == 0:
            if self._checkpointer is None:  # started on first need: most CLI runs never do
                self._checkpointer = _Checkpointer(self.path)
            self._checkpointer.request()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write; return the number of rows changed."""
        with self._lock:
            changed: int = self._conn.execute(sql, params).rowcount
            self._wrote()
            return changed

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
            return row

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            self._wrote()

    def get_meta(self, key: str) -> str | None:
        row = self.one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        self.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def delete_meta(self, key: str) -> None:
        self.execute("DELETE FROM meta WHERE key = ?", (key,))

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        with self._lock:
            self._conn.close()  # the last connection to close checkpoints what is left
