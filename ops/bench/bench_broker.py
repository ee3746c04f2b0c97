"""Commands and the broker route: command round trips, routed-request overhead, idle nodes.

    .venv/bin/python ops/bench/bench_broker.py [--quick] [--round-trips N] [--calls N]
        [--nodes N] [--clients K] [--no-deflate]

Starts its own nats-server and PostgreSQL in a temp dir (or uses the servers
B3IQ_NATS_URL / B3IQ_DATABASE_URL name: streams with a random prefix, a fresh database),
then everything else as real processes: three `b3iq serve` API processes sharing one data
dir (A holds the real node's connection, B does not, C only holds the idle fleet),
`b3iq projector`, and a real node (`b3iq-host init / keys create / enroll / run`) serving
the tiny model, enrolled in A, with its model made network-eligible by its owner.

1. Command round trip: an operator issues `runtime_probe` (POST /v1/commands on A); the
   node's long-poll leases it, the node runs it and uploads the signed result; the clock
   stops when GET /v1/commands/{id} (a read model, so the projector's work counts) says
   succeeded. One command at a time.
2. Broker added latency: the same chat request (tiny model, temperature 0, 8 tokens) sent
   by the same client to the node's own API (direct), to A's operator route (the node's
   WebSocket is held there) and to B's (B relays to A over NATS), interleaved in a
   shuffled order every round after a warm-up.
3. Idle node connections: N nodes enrolled through A, then one signed WebSocket per node
   to C's /v1/broker/connect from separate client processes (`ops/bench/broker_load.py`,
   which answer C's pings), so C's RSS (/proc/PID/status) is C's alone.

Prints one table; the exit status is 1 if a target failed. --no-deflate (a diagnostic) has
the idle clients offer no permessage-deflate, unlike real nodes, to show what it costs.
"""

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import httpx
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from adapters.postgres import migrate
from adapters.settings import Settings
from domain.canonical import b64encode
from domain.enrollment import IssuedChallenge, answer_challenge
from domain.signing import Signer
from ops.bench.bench_heartbeats import CpuMeter, Env, servers
from ops.bench.http_load import percentile, request_bytes
from ops.devstack.nats_server import free_port

console = Console(width=140)

HOST = "127.0.0.1"
ADDED_P50_TARGET_S = 0.001
CONNECTIONS_TARGET = 10_000
RSS_TARGET_KIB = 1024 * 1024
MODEL = "tiny"
CHAT = msgspec.json.encode(
    {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello there, node"}],
        "max_tokens": 8,
        "temperature": 0,
        "seed": 1,
    }
)
PROBE_INTERVAL_S = Settings().route_probe_interval_s
"""C keeps the deployed probe schedule: idle connections are pinged this often."""


class Sizes(NamedTuple):
    round_trips: int
    """Commands issued one after another (after a few warm-up ones)."""
    calls: int
    """Chat requests per target (direct, routed via A, routed via B)."""
    nodes: int
    """Idle node connections C is asked to hold."""
    clients: int
    """Load processes the idle connections are spread over."""
    idle_s: float
    """How long C holds them idle (at least one probe round) before RSS is read."""


FULL = Sizes(round_trips=200, calls=500, nodes=10_000, clients=2, idle_s=2 * PROBE_INTERVAL_S + 5)
QUICK = Sizes(round_trips=50, calls=100, nodes=1_000, clients=2, idle_s=PROBE_INTERVAL_S + 5)


# --- the table --------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    count: int | None
    result: str
    target: str = ""
    ok: bool | None = None
    """PASS / FAIL against the target; None: information only."""
    broken: str = ""
    """Why the measurement itself is not to be trusted (counts as FAIL)."""

    def verdict(self) -> str:
        if self.broken or self.ok is False:
            return "FAIL"
        return "info" if self.ok is None else "PASS"

    def cells(self) -> list[str]:
        verdict = {"PASS": "[green]PASS[/]", "FAIL": "[bold red]FAIL[/]", "info": "[dim]info[/]"}
        text = verdict[self.verdict()]
        if self.broken:
            text += f" [red]({escape(self.broken)})[/]"
        count = "" if self.count is None else f"{self.count:,}"
        return [self.label, count, self.result, self.target, text]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.2f} ms"


def p50_p99(values: Sequence[float]) -> str:
    return f"{ms(percentile(values, 0.5))} / {ms(percentile(values, 0.99))}"


def mib(kib: float) -> str:
    return f"{kib / 1024:,.0f} MiB"


def render(rows: Sequence[Row], caption: str) -> Table:
    table = Table(title="B3IQ commands and broker route", caption=caption, caption_justify="left")
    for name, justify in (
        ("Measurement", "left"),
        ("N", "right"),
        ("Result", "right"),
        ("Target", "left"),
        ("Verdict", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*row.cells())
    return table


# --- processes --------------------------------------------------------------------------


def raise_fd_limit() -> int:
    """Children inherit it: the API process holding the fleet needs a socket per node."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def memory_kib(pid: int, field_name: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise LookupError(field_name)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://{HOST}:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class Processes:
    """The control plane as deployed, and the node: every part a process of its own."""

    def __init__(self, env: Env, workdir: Path) -> None:
        self.workdir = workdir
        self.environ = {
            **os.environ,
            "B3IQ_NATS_URL": env.nats_url,
            "B3IQ_DATABASE_URL": env.dsn,
            "B3IQ_STREAM_PREFIX": env.prefix,
            # One data dir for every API process: the same signing key and admin token.
            "B3IQ_DATA_DIR": str(workdir / "control-plane"),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def spawn(self, name: str, args: Sequence[str], environ: dict[str, str] | None = None) -> None:
        with (self.workdir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                args, env=environ or self.environ, stdout=log, stderr=subprocess.STDOUT
            )

    def start_api(self, name: str) -> int:
        """One `b3iq serve` (a single process, so its pid is the server's) once healthy."""
        port = free_port()
        self.spawn(name, [_bin("b3iq"), "serve", "--port", str(port)])
        self.wait_until(name, lambda: _healthy(port))
        self.ports[name] = port
        return port

    def wait_until(self, name: str, ready: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not come up:\n{self.log_tail(name)}")
            time.sleep(0.1)

    def log_tail(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    @property
    def admin_token(self) -> str:
        return (self.workdir / "control-plane" / "admin-token").read_text().strip()

    def dead(self) -> str | None:
        return next((n for n, p in self.procs.items() if p.poll() is not None), None)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class HostAgent:
    """A real node set up the way its owner would, enrolled in one API process."""

    def __init__(self, workdir: Path) -> None:
        self.home = workdir / "node"
        self.model = workdir / "models" / f"{MODEL}.gguf"
        self.key_file = workdir / "local-api-key"
        self.port = free_port()
        self.node_id = ""

    def _host(self, *args: str) -> str:
        command = [_bin("b3iq-host"), "--home", str(self.home), *args]
        done = subprocess.run(
            command, check=True, capture_output=True, text=True, env=_node_environ()
        )
        return done.stdout

    def prepare(self, control_plane: str, *, paid: bool = False) -> None:
        """``paid``: offer the model for paid work too, not only network-eligible."""
        self._host("init")
        self._host("keys", "create", "--name", "bench", "--out", str(self.key_file))
        self._host("enroll", "--control-plane", control_plane)
        self.model.parent.mkdir(parents=True, exist_ok=True)
        self._host("models", "make-tiny", str(self.model))
        # The owner's consent (as set_profile_policy would): without it the node refuses
        # routed requests for the model.
        self._host("models", "offer", MODEL, *([] if paid else ["--unpaid"]))
        self.node_id = self._host("id").strip()

    def start(self, processes: Processes) -> None:
        # One llama.cpp thread: two shared cores also run the control plane and the client.
        run = ["run", "--port", str(self.port), "--model", str(self.model), "--n-threads", "1"]
        processes.spawn(
            "node", [_bin("b3iq-host"), "--home", str(self.home), *run], _node_environ()
        )
        processes.wait_until("node", lambda: _healthy(self.port))

    @property
    def api_key(self) -> str:
        return self.key_file.read_text().strip()


def _node_environ() -> dict[str, str]:
    """The node's environment has none of the control plane's B3IQ_ settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("B3IQ_")}


# --- a lean client ----------------------------------------------------------------------

_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


class KeepAlive:
    """One persistent HTTP/1.1 connection, blocking: the least client work per request,
    and the same work whichever server answers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((HOST, self.port), timeout=60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def request(self, raw: bytes) -> tuple[int, bytes]:
        """The status and body. A connection the server closed while idle (keep-alive
        timeout) is dialled again once; the requests sent here are safe to repeat."""
        for attempt in range(2):
            if self._sock is None:
                self._sock = self._connect()
            try:
                return self._exchange(self._sock, raw)
            except ConnectionError:
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _exchange(sock: socket.socket, raw: bytes) -> tuple[int, bytes]:
        sock.sendall(raw)
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("closed before the answer")
            buffer += chunk
        head, _, body = buffer.partition(b"\r\n\r\n")
        length = _LENGTH.search(head)
        if length is None:
            raise RuntimeError(f"no content-length in {head[:200]!r}")
        need = int(length.group(1))
        while len(body) < need:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("closed mid-body")
            body += chunk
        return int(head[9:12]), body[:need]


def get(path: str, admin: str) -> bytes:
    return request_bytes("GET", path, headers={"x-b3iq-admin-token": admin})


def post(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    return request_bytes(
        "POST", path, headers={"content-type": "application/json", **headers}, body=body
    )


def wait_for_route(api: KeepAlive, node_id: str, admin: str, timeout: float = 60) -> None:
    """Until the holder reports the node's route connected (projected) and held there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = api.request(get(f"/v1/nodes/{node_id}/route", admin))
        view = msgspec.json.decode(body) if status == 200 else {}
        if view.get("connected") and view.get("held_here"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the node's route never came up: {status} {body[:300]!r}")


# --- 1. command round trips ---------------------------------------------------------------


@dataclass
class RoundTrips:
    total: list[float] = field(default_factory=list)
    """Issue sent → GET /v1/commands/{id} answers state succeeded."""
    recorded: list[float] = field(default_factory=list)
    """Issue sent → the node's signed result appended (the event's own timestamp)."""
    visible: list[float] = field(default_factory=list)
    """That append → the read model shows it to the operator."""
    problems: list[str] = field(default_factory=list)


POLL_S = 0.002
"""Between GETs of the command: the round trip is read to within about this much."""


def round_trip(api: KeepAlive, node_id: str, admin: str, out: RoundTrips) -> None:
    command_id = "bench-" + secrets.token_hex(8)
    issue = msgspec.json.encode(
        {
            "node_id": node_id,
            "command": {"kind": "runtime_probe"},
            "reason": "bench",
            "command_id": command_id,  # a repeated issue (after a reconnect) is the same one
        }
    )
    wall, started = time.time(), time.perf_counter()
    status, body = api.request(post("/v1/commands", issue, {"x-b3iq-admin-token": admin}))
    if status != 201:
        out.problems.append(f"issue answered {status} {body[:200]!r}")
        return
    show = get(f"/v1/commands/{command_id}", admin)
    while time.perf_counter() - started < 30:
        status, body = api.request(show)
        view = msgspec.json.decode(body) if status == 200 else {}
        state = view.get("state")
        if state == "succeeded":
            seen, seen_wall = time.perf_counter(), time.time()
            recorded = datetime.fromisoformat(view["updated_at"]).timestamp()
            out.total.append(seen - started)
            out.recorded.append(recorded - wall)
            out.visible.append(seen_wall - recorded)
            return
        if state in ("failed", "refused", "expired", "cancelled"):
            out.problems.append(f"{command_id} ended {state}: {view.get('outcome_code')}")
            return
        time.sleep(POLL_S)
    out.problems.append(f"{command_id} not succeeded after 30 s")


def command_round_trips(api: KeepAlive, node_id: str, admin: str, count: int) -> list[Row]:
    for _ in range(5):  # warm-up: the first lease, the first projector batch
        round_trip(api, node_id, admin, RoundTrips())
    trips = RoundTrips()
    for _ in range(count):
        round_trip(api, node_id, admin, trips)
    broken = f"{len(trips.problems)} failed: {trips.problems[0]}" if trips.problems else ""
    n = len(trips.total)
    return [
        Row("command round trip p50 (issue → node result projected)", n,
            ms(percentile(trips.total, 0.5)), broken=broken),
        Row("command round trip p99", n, ms(percentile(trips.total, 0.99))),
        Row("  issue → signed result appended, p50 / p99", n, p50_p99(trips.recorded)),
        Row("  appended → in GET /v1/commands/{id}, p50 / p99", n, p50_p99(trips.visible)),
    ]  # fmt: skip


# --- 2. broker added latency ----------------------------------------------------------------


class Target(NamedTuple):
    name: str
    client: KeepAlive
    request: bytes


def content_of(body: bytes) -> str:
    message: str = msgspec.json.decode(body)["choices"][0]["message"]["content"]
    return message


def interleaved(targets: Sequence[Target], calls: int) -> tuple[dict[str, list[float]], str]:
    """Latencies per target; every round calls each target once, in a shuffled order."""
    order = random.Random(5)  # noqa: S311 - an order, not a secret
    latencies: dict[str, list[float]] = {t.name: [] for t in targets}
    answers: dict[str, str] = {}
    problem = ""
    round_ = list(targets)
    gc.collect()
    gc.disable()  # the client's own pauses must not land on one target
    try:
        for _ in range(calls):
            order.shuffle(round_)
            for target in round_:
                started = time.perf_counter()
                status, body = target.client.request(target.request)
                latencies[target.name].append(time.perf_counter() - started)
                if status != 200:
                    problem = problem or f"{target.name} answered {status} {body[:200]!r}"
                else:
                    answers.setdefault(target.name, content_of(body))
    finally:
        gc.enable()
    if not problem and len(set(answers.values())) != 1:
        problem = f"answers differ: {answers}"  # temperature 0: every path must agree
    return latencies, problem


def broker_latency(
    processes: Processes, env: Env, node: HostAgent, admin: str, calls: int
) -> tuple[list[Row], str]:
    """The rows, and a note of the CPU each process spent per round (a call on each path)."""
    names = {"api-a": "A", "api-b": "B", "node": "node", "projector": "projector"}
    meter = CpuMeter(
        {
            **{label: processes.pid(name) for name, label in names.items()},
            "client": os.getpid(),
            **env.server_pids,
        }
    )
    route = f"/v1/nodes/{node.node_id}/route/chat/completions"
    operator = {"x-b3iq-admin-token": admin}
    targets = [
        Target("direct", KeepAlive(node.port), post("/v1/chat/completions", CHAT,
               {"authorization": f"Bearer {node.api_key}"})),
        Target("holder", KeepAlive(processes.ports["api-a"]), post(route, CHAT, operator)),
        Target("relay", KeepAlive(processes.ports["api-b"]), post(route, CHAT, operator)),
    ]  # fmt: skip
    interleaved(targets, max(20, calls // 10))  # warm-up: connections, caches, the model
    started = time.perf_counter()
    with meter.measure():
        latencies, problem = interleaved(targets, calls)
    per_round_ms = (time.perf_counter() - started) / calls * 1000
    cpu = ", ".join(f"{name} {cores * per_round_ms:.2f}" for name, cores in meter.cores.items())
    note = (
        "Latency: one blocking keep-alive HTTP/1.1 connection per target, requests built once;"
        " direct (node API key) and routed (admin token) calls alternate in a shuffled order,"
        f" {max(20, calls // 10)} rounds of warm-up first; tiny model, llama.cpp 1 thread,"
        " max_tokens 8, temperature 0, all answers identical. CPU ms per round (one call on"
        f" each of the three paths): {cpu}."
    )
    # What an HTTP hop costs on A without the broker: bare, and as an operator request.
    floor_client = KeepAlive(processes.ports["api-a"])
    health = request_bytes("GET", "/health")
    view = get(f"/v1/nodes/{node.node_id}/route", admin)
    floor = [_timed(floor_client, health) for _ in range(calls)]
    operator_floor = [_timed(floor_client, view) for _ in range(calls)]
    for target in [*targets, Target("floor", floor_client, b"")]:
        target.client.close()

    direct = percentile(latencies["direct"], 0.5)
    rows = [
        Row("direct: the node's /v1/chat/completions, p50 / p99", calls,
            p50_p99(latencies["direct"]), broken=problem),
        Row("routed via the holder (A, WebSocket), p50 / p99", calls,
            p50_p99(latencies["holder"])),
        Row("routed via another process (B → NATS → A), p50 / p99", calls,
            p50_p99(latencies["relay"])),
    ]  # fmt: skip
    for name, label in (("holder", "holder"), ("relay", "via NATS relay")):
        routed = percentile(latencies[name], 0.5)
        rows.append(
            Row(
                f"broker added latency p50, {label}: routed - direct",
                calls,
                f"{ms(routed - direct)} (x{routed / direct:.2f})",
                f"< {ms(ADDED_P50_TARGET_S)}",
                ok=routed - direct < ADDED_P50_TARGET_S,
            )
        )
    rows.append(Row("  one HTTP hop alone: GET /health on A, p50 / p99", calls, p50_p99(floor)))
    rows.append(
        Row(
            "  an operator request on A: GET /v1/nodes/{id}/route (token check + 1 read)",
            calls,
            p50_p99(operator_floor),
        )
    )
    return rows, note


def _timed(client: KeepAlive, request: bytes) -> float:
    started = time.perf_counter()
    client.request(request)
    return time.perf_counter() - started


# --- 3. idle node connections held by one process -----------------------------------------


async def enroll(port: int, count: int) -> list[tuple[str, Signer]]:
    """Nodes enrolled through the API (challenge, then the signed answer)."""
    nodes = [(f"idle-{i:06d}", Signer.generate()) for i in range(count)]
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(
        base_url=f"http://{HOST}:{port}", limits=limits, timeout=60
    ) as client:
        gate = asyncio.Semaphore(32)

        async def one(node_id: str, signer: Signer) -> None:
            async with gate:
                for attempt in range(3):
                    try:
                        await _enroll_one(client, node_id, signer)
                        break
                    except httpx.TransportError:
                        # A pooled connection the server closed as idle: a fresh challenge
                        # and answer (the same key) enroll the node again, harmlessly.
                        if attempt == 2:
                            raise

        await asyncio.gather(*(one(n, s) for n, s in nodes))
    return nodes


async def _enroll_one(client: httpx.AsyncClient, node_id: str, signer: Signer) -> None:
    issued = await client.post(
        "/v1/enrollment/challenges",
        json={"node_id": node_id, "public_key": b64encode(signer.public_key)},
    )
    body = issued.json()
    challenge = IssuedChallenge(body["challenge"], body["signature"])
    done = await client.post(
        "/v1/enrollments",
        json={
            "challenge": challenge.challenge,
            "signature": challenge.signature,
            "answer": answer_challenge(signer, challenge),
            "agent_version": "0.1.0",
        },
    )
    if done.status_code != 201:
        raise RuntimeError(f"enrollment of {node_id}: {done.text}")


@dataclass
class FleetCounts:
    open: int = 0
    failed: int = 0
    closed: int = 0
    pongs: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class LoadClients:
    """The `broker_load` processes; each prints its counts once a second."""

    def __init__(self) -> None:
        self._procs: list[asyncio.subprocess.Process] = []
        self._latest: list[dict[str, Any]] = []
        self._readers: list[asyncio.Task[None]] = []

    async def start(self, url: str, keys: Path, clients: int, log: Path, deflate: bool) -> None:
        for part in range(clients):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ops.bench.broker_load", "--url", url,
                "--keys", str(keys), "--part", f"{part}/{clients}",
                *([] if deflate else ["--no-deflate"]),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=log.open("ab"),
            )  # fmt: skip
            self._procs.append(proc)
            self._latest.append({})
            self._readers.append(asyncio.create_task(self._follow(part, proc)))

    async def _follow(self, part: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            self._latest[part] = json.loads(line)

    def totals(self) -> FleetCounts:
        total = FleetCounts()
        for counts in self._latest:
            total.open += counts.get("open", 0)
            total.failed += counts.get("failed", 0)
            total.closed += counts.get("closed", 0)
            total.pongs += counts.get("pongs", 0)
            for reason, n in counts.get("errors", {}).items():
                total.errors[reason] = total.errors.get(reason, 0) + n
        return total

    def dead(self) -> bool:
        return any(p.returncode is not None for p in self._procs)

    @property
    def pids(self) -> dict[str, int]:
        return {f"client {n + 1}": p.pid for n, p in enumerate(self._procs)}

    async def stop(self) -> None:
        for proc in self._procs:
            if proc.stdin is not None:
                proc.stdin.close()  # end of stdin: the client closes its connections
        for proc in self._procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for reader in self._readers:
            reader.cancel()


STALL_S = 60.0
"""No new connection for this long ends the connect phase: report what was reached."""


async def connect_fleet(
    clients: LoadClients, processes: Processes, wanted: int
) -> tuple[float, str]:
    """Seconds until the fleet was up (or stalled), and why it stopped short, if it did."""
    started = last_progress = time.perf_counter()
    best = 0
    with console.status("") as status:
        while True:
            await asyncio.sleep(0.5)
            now, counts = time.perf_counter(), clients.totals()
            status.update(
                f"idle connections: {counts.open:,} of {wanted:,} open, {counts.failed:,}"
                f" failed; API RSS {mib(memory_kib(processes.pid('api-c')))}"
            )
            if counts.open > best:
                best, last_progress = counts.open, now
            if counts.open + counts.failed >= wanted:
                return last_progress - started, _shortfall(counts, wanted)
            if dead := processes.dead():
                return last_progress - started, f"{dead} exited"
            if clients.dead():
                return last_progress - started, "a load client exited (see broker_load.log)"
            if now - last_progress > STALL_S:
                return last_progress - started, f"no new connection for {STALL_S:.0f} s"


def _shortfall(counts: FleetCounts, wanted: int) -> str:
    if counts.open >= wanted:
        return ""
    return f"{counts.failed:,} dials failed: {counts.errors}"


async def _routes_of(dsn: str, pid: int, since: datetime | None) -> tuple[int, int]:
    """(Routes the read model shows connected to C, of those the ones whose latest probe
    passed after ``since``). C's process_id is host:pid:suffix."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS connected, count(*) FILTER (WHERE q.ok"
            " AND q.session_id = r.session_id AND q.probed_at > $2) AS probed"
            " FROM node_routes r LEFT JOIN node_route_probes q USING (node_id)"
            " WHERE r.connected AND r.process_id LIKE $1",
            f"%:{pid}:%",
            since or datetime.fromtimestamp(0, UTC),
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row["connected"]), int(row["probed"])


async def projected(
    dsn: str, pid: int, wanted: int, since: datetime | None = None, timeout: float = 120
) -> tuple[int, int]:
    """The read model's counts once ``wanted`` routes are connected (or, with ``since``,
    probed since then), or when the projector has not got there in ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        connected, probed = await _routes_of(dsn, pid, since)
        if (probed if since else connected) >= wanted or time.monotonic() > deadline:
            return connected, probed
        await asyncio.sleep(1)


async def _sample_views(port: int, admin: str, node_ids: Sequence[str]) -> int:
    """How many sampled nodes C reports connected, held by C, last probe passed."""
    held = 0
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as http:
        for node_id in node_ids:
            response = await http.get(
                f"/v1/nodes/{node_id}/route", headers={"x-b3iq-admin-token": admin}
            )
            view = response.json() if response.status_code == 200 else {}
            held += bool(view.get("connected") and view.get("held_here"))
            held -= bool(view.get("last_probe_ok") is False)
    return held


@dataclass
class Capacity:
    wanted: int
    enroll_s: float = 0.0
    connect_s: float = 0.0
    shortfall: str = ""
    rss_before: int = 0
    rss_after: int = 0
    rss_peak: int = 0
    open: int = 0
    recorded: int = 0
    """Connections the read model shows held by C (RouteConnected, projected)."""
    probed: int = 0
    """Of those, how many had a passing probe during the idle window (RouteProbed)."""
    pongs: int = 0
    idle_cores: float = 0.0
    health: list[float] = field(default_factory=list)
    """GET /health on C during the idle window."""
    connect_cpu: str = ""
    """Cores each process kept busy while the fleet connected."""
    sampled: int = 0
    sample_held: int = 0


async def hold_idle_fleet(
    processes: Processes, env: Env, admin: str, sizes: Sizes, deflate: bool
) -> Capacity:
    result = Capacity(wanted=sizes.nodes)
    with console.status(f"enrolling {sizes.nodes:,} nodes through A…"):
        started = time.perf_counter()
        nodes = await enroll(processes.ports["api-a"], sizes.nodes)
        result.enroll_s = time.perf_counter() - started
    keys = processes.workdir / "fleet-keys.jsonl"
    keys.touch(mode=0o600)
    keys.write_text(
        "".join(json.dumps({"node_id": n, "seed": b64encode(s.seed)}) + "\n" for n, s in nodes)
    )
    pid = processes.pid("api-c")
    await asyncio.sleep(2)  # enrollment news reaches C over NATS too: let it settle
    result.rss_before = memory_kib(pid)
    clients = LoadClients()
    url = f"ws://{HOST}:{processes.ports['api-c']}/v1/broker/connect"
    await clients.start(url, keys, sizes.clients, processes.workdir / "broker_load.log", deflate)
    names = {"api-c": "C", "api-a": "A", "api-b": "B", "projector": "projector", "node": "node"}
    meter = CpuMeter(
        {
            **{label: processes.pid(name) for name, label in names.items()},
            **clients.pids,
            **env.server_pids,
        }
    )
    try:
        with meter.measure():
            result.connect_s, result.shortfall = await connect_fleet(
                clients, processes, sizes.nodes
            )
        result.connect_cpu = meter.text()
        result.open = clients.totals().open
        with console.status("waiting for RouteConnected in the read model…"):
            result.recorded, _ = await projected(env.dsn, pid, result.open)
        with console.status(f"holding {result.open:,} idle connections for {sizes.idle_s:.0f} s…"):
            await _idle_window(result, clients, env, (pid, processes.ports["api-c"]), sizes.idle_s)
        sample = random.Random(3).sample([n for n, _ in nodes], min(20, len(nodes)))  # noqa: S311
        result.sampled = len(sample)
        result.sample_held = await _sample_views(processes.ports["api-c"], admin, sample)
    finally:
        with console.status("closing the idle connections…"):
            await clients.stop()
    return result


async def _idle_window(
    result: Capacity, clients: LoadClients, env: Env, c: tuple[int, int], idle_s: float
) -> None:
    """Nothing but C's own probes (and a GET /health every 50 ms): C's CPU, memory and
    responsiveness while it holds the fleet."""
    pid, port = c
    window_start = datetime.now(UTC)
    pongs, cpu, started = clients.totals().pongs, cpu_seconds(pid), time.perf_counter()
    result.health = await _health_latencies(port, idle_s)
    result.idle_cores = (cpu_seconds(pid) - cpu) / (time.perf_counter() - started)
    result.rss_after = memory_kib(pid)
    result.rss_peak = memory_kib(pid, "VmHWM")
    result.pongs = clients.totals().pongs - pongs

    # The projector may still be folding the last probe round in.
    _, result.probed = await projected(env.dsn, pid, result.open, since=window_start)


async def _health_latencies(port: int, seconds: float, every_s: float = 0.05) -> list[float]:
    """GET /health once every ``every_s``: a probe round that holds the event loop shows."""
    latencies = []
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as http:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await http.get("/health")
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(every_s)
    return latencies


def capacity_rows(c: Capacity) -> list[Row]:
    per_conn = (c.rss_after - c.rss_before) / c.open if c.open else float("nan")
    full_size = c.wanted >= CONNECTIONS_TARGET
    # Within 1 GiB at every moment: the peak (VmHWM) decides, not only the RSS at the end.
    held_ok = c.open >= CONNECTIONS_TARGET and c.rss_peak <= RSS_TARGET_KIB
    projected = c.rss_before + per_conn * CONNECTIONS_TARGET
    broken = c.shortfall or (
        "" if c.recorded >= c.open else f"only {c.recorded:,} RouteConnected in the read model"
    )
    return [
        Row("idle node connections held by one API process (C)", c.wanted, f"{c.open:,} open",
            f"≥ {CONNECTIONS_TARGET:,} within 1 GiB", ok=held_ok if full_size else None,
            broken=broken),
        Row("  C's RSS before → after (VmRSS)", c.open,
            f"{mib(c.rss_before)} → {mib(c.rss_after)}", "≤ 1,024 MiB",
            ok=c.rss_after <= RSS_TARGET_KIB),
        Row("  RSS per connection", c.open, f"{per_conn:,.1f} KiB"),
        *(
            []
            if full_size
            else [Row(f"  RSS at {CONNECTIONS_TARGET:,}, extrapolated (before + per conn. x N)",
                      None, mib(projected), "≤ 1,024 MiB", ok=projected <= RSS_TARGET_KIB)]
        ),
        Row("  C's peak RSS (VmHWM)", None, mib(c.rss_peak), "≤ 1,024 MiB",
            ok=c.rss_peak <= RSS_TARGET_KIB),
        Row("  held, per the read model (RouteConnected by C)", c.open, f"{c.recorded:,}"),
        Row("  probes passed during the idle window (RouteProbed ok)", c.open,
            f"{c.probed:,} ({c.pongs:,} pongs sent)",
            ok=None, broken="" if c.probed >= c.open else "some probes did not pass"),
        Row("  sampled GET /v1/nodes/{id}/route on C: connected, held here", c.sampled,
            f"{c.sample_held} of {c.sampled}",
            broken="" if c.sample_held == c.sampled else "not all held"),
        Row(f"  C's CPU while idle (a probe round every {PROBE_INTERVAL_S:.0f} s)", None,
            f"{c.idle_cores * 100:.1f}% of a core"),
        Row("  GET /health on C while idle, p50 / max (a probe round holds its loop)",
            len(c.health), f"{ms(percentile(c.health, 0.5))} / {ms(max(c.health, default=0))}"),
        Row("  connect rate (signed upgrade, probe, RouteConnected)", c.open,
            f"{c.open / c.connect_s if c.connect_s else 0:,.0f}/s"),
        Row("  enrollment rate through A (setup)", c.wanted, f"{c.wanted / c.enroll_s:,.0f}/s"),
    ]  # fmt: skip


# --- running it ---------------------------------------------------------------------------


def start_everything(processes: Processes, node: HostAgent) -> None:
    # A first: it writes the signing key and the admin token the others read.
    a = processes.start_api("api-a")
    processes.start_api("api-b")
    processes.start_api("api-c")
    processes.spawn("projector", [_bin("b3iq"), "projector"])
    node.prepare(f"http://{HOST}:{a}")
    node.start(processes)


def bench(
    processes: Processes, env: Env, node: HostAgent, sizes: Sizes, deflate: bool
) -> tuple[list[Row], list[str]]:
    """The rows, and notes on how each part was measured (for the caption)."""
    admin = processes.admin_token
    holder = KeepAlive(processes.ports["api-a"])
    with console.status("waiting for the node's broker route…"):
        wait_for_route(holder, node.node_id, admin)
    with console.status(f"{sizes.round_trips} command round trips…"):
        rows = command_round_trips(holder, node.node_id, admin, sizes.round_trips)
    holder.close()
    with console.status(f"{sizes.calls} chat requests on each path, interleaved…"):
        latency_rows, latency_note = broker_latency(processes, env, node, admin, sizes.calls)
    import uvloop

    capacity = uvloop.run(hold_idle_fleet(processes, env, admin, sizes, deflate))
    rows += latency_rows + capacity_rows(capacity)
    if dead := processes.dead():
        rows[0].broken = f"{dead} exited"
    compression = "permessage-deflate offered" if deflate else "--no-deflate: NOT as nodes do"
    return rows, [
        "Round trip: issue (POST /v1/commands, A) → the node's long-poll (on A) leases it"
        " → runtime_probe → signed result upload → projector → GET /v1/commands/{id} says"
        f" succeeded (polled every {POLL_S * 1000:.0f} ms). Split by the result event's"
        " timestamp (same host clock).",
        latency_note,
        f"Idle connections: {sizes.clients} `ops/bench/broker_load.py` processes dial C with"
        f" the node's own connect options (node/managed/route.py, {compression}), answer"
        f" C's pings; C keeps the deployed {PROBE_INTERVAL_S:.0f} s probe interval; RSS read"
        f" after {sizes.idle_s:.0f} s idle. Cores busy while the fleet connected:"
        f" {capacity.connect_cpu}.",
    ]


def caption(notes: Sequence[str], fd_limit: int, seconds: float) -> str:
    return "\n".join(
        [
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs shared by everything"
            " (NATS, PostgreSQL, 3 API processes, the projector, the node, the clients);"
            f" RLIMIT_NOFILE {fd_limit:,}.",
            *notes,
            f"Whole run {seconds:.0f} s.",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    parser.add_argument("--round-trips", type=int)
    parser.add_argument("--calls", type=int, help="chat requests per path")
    parser.add_argument("--nodes", type=int, help="idle node connections (default 10,000)")
    parser.add_argument("--clients", type=int, help="load processes for the idle connections")
    parser.add_argument(
        "--no-deflate",
        action="store_true",
        help="diagnostic: idle clients offer no permessage-deflate (real nodes do)",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    overrides = {
        "round_trips": args.round_trips,
        "calls": args.calls,
        "nodes": args.nodes,
        "clients": args.clients,
    }
    sizes = sizes._replace(**{k: v for k, v in overrides.items() if v})
    fd_limit = raise_fd_limit()

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="b3iq-bench-broker-"))
    try:
        with servers(workdir) as env:
            asyncio.run(migrate(env.dsn))
            processes = Processes(env, workdir)
            node = HostAgent(workdir)
            try:
                with console.status("starting the control plane and the node…"):
                    start_everything(processes, node)
                rows, notes = bench(processes, env, node, sizes, not args.no_deflate)
            except BaseException:
                for name in [*processes.procs, "broker_load"]:
                    with contextlib.suppress(OSError):
                        console.print(f"--- {name}.log (tail)\n{processes.log_tail(name)}",
                                      markup=False)  # fmt: skip
                raise
            finally:
                processes.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    console.print(render(rows, caption(notes, fd_limit, time.perf_counter() - started)))
    return 1 if any(row.verdict() == "FAIL" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
