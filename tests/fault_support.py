"""Real processes for the fault tests: the control-plane API, a node daemon, and the
counts of what reached the log."""

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import httpx

from adapters.jetstream import JetStreamEventStore
from adapters.outages import next_batch_through_outages
from domain.decoding import decode_stored
from domain.events import HeartbeatRecorded
from ops.devstack.nats_server import free_port, log_tail

BIN = Path(sys.executable).parent


class Process:
    """A child process with its output in a log file; stopped or killed by the test."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.args, self.env, self.log = name, args, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def tail(self) -> str:
        return log_tail(self.log)


class ApiProcess(Process):
    """`b3iq serve` on a free port of its own."""

    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        self.port = free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        # A node's long-poll would hold a graceful stop for the whole grace period.
        env = {**os.environ, "B3IQ_SHUTDOWN_GRACE_S": "1", **env, "B3IQ_DATA_DIR": str(data_dir)}
        args = [str(BIN / "b3iq"), "serve", "--port", str(self.port)]
        super().__init__("api", args, env, data_dir / "api.log")
        self.data_dir = data_dir

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        wait_until(lambda: _answers(f"{self.url}/health"), 30, f"API up; log:\n{self.tail()}")

    def heartbeats_accepted(self) -> int:
        """This process's count of heartbeats it answered 201 (Prometheus)."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith('b3iq_heartbeats_total{outcome="accepted"}'):
                return int(float(line.split()[-1]))
        return 0


class NodeDaemon(Process):
    """`b3iq-host` with its own home: init, enroll, then `run` as a daemon."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        args = [str(BIN / "b3iq-host"), "--home", str(home), "run", "--port", str(self.port)]
        super().__init__("node", args, dict(os.environ), home.parent / f"{home.name}.log")

    def host(self, *args: str) -> str:
        done = subprocess.run(
            [str(BIN / "b3iq-host"), "--home", str(self.home), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def enroll(self, control_plane: str) -> str:
        self.host("init")
        self.host("enroll", "--control-plane", control_plane)
        return self.host("id").strip()

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.home / 'node.sqlite3'}?mode=ro", uri=True)

    def generated(self) -> int:
        """The last heartbeat sequence the node has made."""
        with self._db() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'heartbeat_seq'").fetchone()
        return int(row[0]) if row else 0

    def queued(self) -> list[int]:
        """Heartbeat sequences still in the outbox (not yet acknowledged)."""
        with self._db() as db:
            rows = db.execute("SELECT body FROM outbox ORDER BY id").fetchall()
        return [int(json.loads(body)["heartbeat_seq"]) for (body,) in rows]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def heartbeat_seqs(store: JetStreamEventStore, stream: str) -> dict[str, list[int]]:
    """Every heartbeat on the stream: node id → its heartbeat sequences, in log order."""
    _, head = await store.bounds(stream)
    found: dict[str, list[int]] = {}
    reader = await store.reader(stream, 1)
    try:
        seen = 0
        while seen < head:
            for stored in await next_batch_through_outages(reader, 1000, timeout=2.0):
                seen = stored.seq
                event = decode_stored(stored).event
                if isinstance(event, HeartbeatRecorded):
                    found.setdefault(event.node_id, []).append(event.heartbeat_seq)
    finally:
        await reader.close()
    return found


class FaultCounts(NamedTuple):
    """What the closing note quotes: accepted, present, lost and duplicated events."""

    scenario: str
    accepted: int
    """Events the writer was told are stored (an ack, a 201, or a stale-sequence refusal)."""
    present: int
    """Distinct accepted events found on the stream afterwards."""
    lost: int
    duplicated: int
    """Extra copies of an event on the stream."""
    note: str = ""


def count(
    scenario: str, accepted: Iterable[object], stored: list[object], note: str = ""
) -> FaultCounts:
    wanted = set(accepted)
    copies = Counter(stored)
    return FaultCounts(
        scenario,
        accepted=len(wanted),
        present=len(wanted & copies.keys()),
        lost=len(wanted - copies.keys()),
        duplicated=sum(n - 1 for n in copies.values()),
        note=note,
    )
