"""Signed heartbeats end to end, and operator queries over 100,000 nodes.

    .venv/bin/python ops/bench/bench_heartbeats.py [--quick] [--nodes N] [--heartbeats N]
        [--connections N] [--read-nodes N] [--api-workers N] [--profile DIR]

Starts its own nats-server and PostgreSQL (fsync on) in a temp dir (or uses the servers
B3IQ_NATS_URL / B3IQ_DATABASE_URL name: streams with a random prefix, a fresh database),
then the control plane as real processes, `b3iq serve` and `b3iq projector`. The load
generator runs in this process on its own event loop: it enrolls the nodes through the
API, signs every heartbeat request (fresh nonce, timestamp now) before the clock starts,
then only writes bytes and reads answers. Every measurement is printed beside a baseline
from the same run; the exit status is 1 if a target failed.

--profile DIR records py-spy profiles (raw, collapsed stacks) of the API and the
projector during the timed heartbeat run.
"""

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import os
import platform
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import asyncpg
import httpx
import msgspec
import nacl.signing
from rich.console import Console
from rich.table import Table

from adapters.jetstream import JetStreamEventStore
from adapters.postgres import migrate
from adapters.urls import redact
from domain.canonical import b64decode, b64encode, canonical_bytes
from domain.enrollment import IssuedChallenge, answer_challenge
from domain.events import HeartbeatRecorded, NodeEvidence
from domain.heartbeat_report import (
    GpuReport,
    HeartbeatReport,
    InventoryReport,
    ProfileReport,
    RuntimeReport,
)
from domain.node_requests import canonical_request, sign_request
from domain.sealing import Sealed, seal
from domain.signing import Signer
from domain.streams import Topology
from ops.bench.http_load import Exchanges, drive, percentile, request_bytes
from ops.devstack.nats_server import NatsServer, free_port
from ops.devstack.postgres_server import PostgresServer

console = Console(width=140)

INGEST_TARGET = 5_000.0
LAG_P99_TARGET_S = 1.0
READINESS_P99_TARGET_S = 0.005
LIST_P99_TARGET_S = 0.050
MODELS = ("llama-3.1-8b", "qwen2.5-7b", "mistral-7b")
TIERS = ("network_beta", "portable_local", "local_convenience", "unknown")
HOST = "127.0.0.1"


class Sizes(NamedTuple):
    nodes: int
    """Nodes enrolled through the API and heartbeating."""
    heartbeats: int
    """Heartbeats in the timed run (after one warm-up heartbeat per node)."""
    connections: int
    """Concurrent keep-alive connections of the load generator."""
    read_nodes: int
    """Nodes seeded straight into the read models for the query measurements."""
    queries: int
    """Requests per latency measurement."""
    api_workers: int
    """`b3iq serve --workers`: API processes sharing the port."""


CORES = os.cpu_count() or 1
FULL = Sizes(
    nodes=10_000,
    heartbeats=60_000,
    connections=128,
    read_nodes=100_000,
    queries=2000,
    api_workers=CORES,
)
QUICK = FULL._replace(nodes=2_000, heartbeats=12_000, read_nodes=20_000, queries=500)


@dataclass
class Row:
    label: str
    count: int
    value: float
    unit: str
    """"/s" (a rate: higher is better) or "ms" (a latency: lower is better)."""
    baseline: str = ""
    baseline_value: float | None = None
    target: float | None = None
    broken: str = ""

    def _text(self, value: float) -> str:
        if self.unit == "ms":
            return f"{value * 1000:,.2f} ms"
        return f"{value:,.0f}/s"

    def verdict(self) -> str | None:
        if self.broken:
            return "FAIL"
        if self.target is None:
            return None
        ok = self.value >= self.target if self.unit == "/s" else self.value < self.target
        return "PASS" if ok else "FAIL"

    def cells(self) -> list[str]:
        verdict = self.verdict()
        result = {"PASS": "[green]PASS[/]", "FAIL": "[bold red]FAIL[/]", None: "[dim]info[/]"}[
            verdict
        ]
        if self.broken:
            result += f" [red]({self.broken})[/]"
        target = ""
        if self.target is not None:
            target = ("≥ " if self.unit == "/s" else "< ") + self._text(self.target)
        return [
            self.label,
            f"{self.count:,}",
            self._text(self.value),
            self.baseline,
            "" if self.baseline_value is None else self._text(self.baseline_value),
            target,
            result,
        ]


class Env(NamedTuple):
    nats_url: str
    dsn: str
    prefix: str
    where: str
    server_pids: dict[str, int]
    """nats-server and the postmaster, when the benchmark started them."""


@contextlib.contextmanager
def servers(workdir: Path) -> Iterator[Env]:
    nats_url = os.environ.get("B3IQ_NATS_URL")
    admin_dsn = os.environ.get("B3IQ_DATABASE_URL")
    nats = postgres = None
    database = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        with console.status("starting NATS and PostgreSQL…"):
            if not nats_url:
                nats = NatsServer(workdir / "nats", port=None)
                nats.start()
                nats_url = nats.url
            if not admin_dsn:
                if os.geteuid() == 0:
                    workdir.chmod(0o711)  # PostgreSQL runs as nobody, who must reach its data
                postgres = PostgresServer(workdir / "pg", port=None)
                postgres.start()
                admin_dsn = postgres.dsn()
            asyncio.run(_create_database(admin_dsn, database))
        base, _, _ = admin_dsn.rpartition("/")
        shared = nats is None or postgres is None
        pids = {
            "nats-server": nats.pid if nats else None,
            "postgres": postgres.pid if postgres else None,
        }
        yield Env(
            nats_url=nats_url,
            dsn=f"{base}/{database}",
            prefix=f"bench{uuid.uuid4().hex[:8]}",
            where=(
                "servers started by the benchmark"
                if not shared
                else f"NATS {nats_url}, PostgreSQL {redact(admin_dsn)}"
            ),
            server_pids={k: v for k, v in pids.items() if v is not None},
        )
    finally:
        if postgres is not None:
            postgres.stop()
        elif admin_dsn:
            asyncio.run(_drop_database(admin_dsn, database))
        if nats is not None:
            nats.stop()


async def _create_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# --- the control plane, as deployed ---------------------------------------------------


class ControlPlaneProcesses:
    """`b3iq serve` and `b3iq projector` (one or more), each a process of its own."""

    def __init__(self, env: Env, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.data_dir = workdir / "control-plane"
        self.environ = {
            **os.environ,
            "B3IQ_NATS_URL": env.nats_url,
            "B3IQ_DATABASE_URL": env.dsn,
            "B3IQ_STREAM_PREFIX": env.prefix,
            "B3IQ_DATA_DIR": str(self.data_dir),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, workers: int, projectors: int = 1, partitions: int = 1) -> None:
        """``projectors`` processes share the projections, split ``partitions`` ways."""
        b3iq = str(Path(sys.executable).parent / "b3iq")
        self._spawn("serve", b3iq, "serve", "--port", str(self.port), "--workers", str(workers))
        deadline = time.monotonic() + 60
        while not self._healthy():
            if self.procs["serve"].poll() is not None or time.monotonic() > deadline:
                log = (self.workdir / "serve.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the API did not come up:\n{log}")
            time.sleep(0.1)
        for n in range(projectors):
            name = "projector" if n == 0 else f"projector-{n + 1}"
            self._spawn(name, b3iq, "projector", "--partitions", str(partitions))

    def _spawn(self, name: str, *args: str) -> None:
        with (self.workdir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                args, env=self.environ, stdout=log, stderr=subprocess.STDOUT
            )

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"http://{HOST}:{self.port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    def dead(self) -> str | None:
        return next((n for n, p in self.procs.items() if p.poll() is not None), None)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def profiled(plane: ControlPlaneProcesses, directory: Path | None) -> Iterator[None]:
    """py-spy on the API and the projector while the block runs (when asked for)."""
    if directory is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    spies = [
        subprocess.Popen(
            ["py-spy", "record", "-p", str(plane.pid(name)), "--subprocesses", "--nonblocking",
             "-f", "raw", "-r", "100", "-o", str(directory / f"{name}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in ("serve", "projector")
    ]  # fmt: skip
    time.sleep(0.5)  # py-spy attaches before the load starts
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            spy.wait(timeout=30)


class CpuMeter:
    """How many cores each part of the system kept busy while a block ran (from /proc)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self.cores: dict[str, float] = {}

    def _seconds(self) -> dict[str, float]:
        children: dict[int, list[int]] = {}
        ticks: dict[int, int] = {}
        reaped: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            pid = int(entry.name)
            children.setdefault(int(fields[1]), []).append(pid)
            own = int(fields[11]) + int(fields[12])
            ticks[pid] = own
            reaped[pid] = own + int(fields[13]) + int(fields[14])

        def tree(pid: int) -> int:
            # With the children it has reaped: backends come and go during the run.
            return reaped.get(pid, 0) + sum(tree(c) for c in children.get(pid, []))

        # PostgreSQL and the API work in child processes; the servers are children of
        # this one, so its own tree would count them twice.
        hz = os.sysconf("SC_CLK_TCK")
        return {
            name: (tree(pid) if name in ("postgres", "API") else ticks.get(pid, 0)) / hz
            for name, pid in self._pids.items()
        }

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        before, started = self._seconds(), time.perf_counter()
        try:
            yield
        finally:
            after, took = self._seconds(), time.perf_counter() - started
            self.cores = {name: (after[name] - before[name]) / took for name in after}

    def text(self) -> str:
        parts = [f"{name} {cores:.2f}" for name, cores in self.cores.items()]
        return f"{', '.join(parts)}; total {sum(self.cores.values()):.2f} of {os.cpu_count()}"


# --- nodes and their requests ---------------------------------------------------------


class BenchNode(NamedTuple):
    number: int
    node_id: str
    signer: Signer


def report_body(node_id: str, seq: int, now: datetime) -> bytes:
    """A realistic report: a GPU box with two models, one installed."""
    return canonical_bytes(
        HeartbeatReport(
            node_id=node_id,
            heartbeat_seq=seq,
            sent_at=now,
            agent_version="0.1.0",
            inventory=InventoryReport(
                os="Linux",
                os_release="6.8.0",
                arch="x86_64",
                cpu_model="AMD EPYC 7763 64-Core Processor",
                cpu_count=16,
                ram_total_mib=128_000,
                ram_available_mib=96_000,
                disk_total_gib=1800.0,
                disk_free_gib=950.5,
                gpus=[GpuReport(name="NVIDIA H100 80GB HBM3", memory_mib=81_559, driver="550")],
            ),
            runtimes=[
                RuntimeReport(model=MODELS[0], runtime_kind="vllm", reachable=True),
                RuntimeReport(model=MODELS[1], runtime_kind="llama_cpp", reachable=False),
            ],
            profiles=[
                ProfileReport(
                    profile_id=f"{node_id}-{MODELS[0]}",
                    model=MODELS[0],
                    status="installed",
                    runtime_kind="vllm",
                    route_tier="network_beta",
                    network_eligible=True,
                    benchmark_verified=True,
                    paid_route_eligible=True,
                    queue_health="healthy",
                    context_length=8192,
                ),
                ProfileReport(
                    profile_id=f"{node_id}-{MODELS[1]}",
                    model=MODELS[1],
                    status="ready_to_install",
                    runtime_kind="llama_cpp",
                ),
            ],
        )
    )


class Signed(NamedTuple):
    request: bytes
    node: BenchNode
    lane: int
    """The node's own connection: a node keeps one to the control plane."""
    text: bytes
    """The canonical request text the node signed (for the verify baseline)."""
    signature: str


def signed_heartbeat(node: BenchNode, seq: int, now: datetime) -> Signed:
    path = f"/v1/nodes/{node.node_id}/heartbeats"
    body = report_body(node.node_id, seq, now)
    timestamp, nonce = int(now.timestamp()), secrets.token_urlsafe(18)
    headers = sign_request(
        node.signer,
        node.node_id,
        method="POST",
        path=path,
        body=body,
        timestamp=timestamp,
        nonce=nonce,
    )
    text = canonical_request(
        method="POST",
        path=path,
        body=body,
        timestamp=timestamp,
        nonce=nonce,
        node_id=node.node_id,
        key_id=node.signer.key_id,
    )
    request = request_bytes(
        "POST", path, headers={"content-type": "application/json", **headers}, body=body
    )
    return Signed(request, node, node.number, text, headers["x-b3iq-signature"])


async def enroll_all(port: int, count: int) -> tuple[list[BenchNode], float]:
    nodes = [BenchNode(i, f"hb-{i:06d}", Signer.generate()) for i in range(count)]
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(
        base_url=f"http://{HOST}:{port}", limits=limits, timeout=60
    ) as client:
        semaphore = asyncio.Semaphore(32)

        async def enroll(node: BenchNode) -> None:
            async with semaphore:
                issued = await client.post(
                    "/v1/enrollment/challenges",
                    json={"node_id": node.node_id, "public_key": b64encode(node.signer.public_key)},
                )
                body = issued.json()
                challenge = IssuedChallenge(body["challenge"], body["signature"])
                done = await client.post(
                    "/v1/enrollments",
                    json={
                        "challenge": challenge.challenge,
                        "signature": challenge.signature,
                        "answer": answer_challenge(node.signer, challenge),
                    },
                )
                if done.status_code != 201:
                    raise RuntimeError(f"enrollment of {node.node_id}: {done.text}")

        started = time.perf_counter()
        await asyncio.gather(*(enroll(n) for n in nodes))
        return nodes, time.perf_counter() - started


# --- ingestion ------------------------------------------------------------------------


class LagMonitor:
    """Polls the heartbeat projection's checkpoints (one per partition): when did each
    stream sequence land in the read model of the partition that holds it?"""

    def __init__(self, dsn: str, stream: str, partitions: int = 1) -> None:
        self._dsn = dsn
        self._stream = stream
        self._partitions = partitions
        self.polls: list[tuple[float, tuple[int, ...]]] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def position(self, conn: asyncpg.Connection) -> tuple[int, ...]:
        rows = await conn.fetch(
            "SELECT partition, last_seq FROM projection_checkpoints"
            " WHERE projection = 'heartbeats' AND stream = $1",
            self._stream,
        )
        found = {r["partition"]: int(r["last_seq"]) for r in rows}
        return tuple(found.get(p, 0) for p in range(self._partitions))

    async def start(self) -> None:
        conn = await asyncpg.connect(self._dsn)

        async def poll() -> None:
            try:
                while not self._stop.is_set():
                    self.polls.append((time.perf_counter(), await self.position(conn)))
                    await asyncio.sleep(0.01)
            finally:
                await conn.close()

        self._task = asyncio.create_task(poll())

    async def wait_for(self, seq: int, timeout: float, partition: int = 0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.polls and self.polls[-1][1][partition] >= seq:
                return True
            await asyncio.sleep(0.01)
        return False

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def landed_at(self, seq: int, partition: int = 0) -> float | None:
        # Polls are in time order and positions only grow: binary search the first >= seq.
        low, high = 0, len(self.polls)
        while low < high:
            middle = (low + high) // 2
            if self.polls[middle][1][partition] >= seq:
                high = middle
            else:
                low = middle + 1
        return self.polls[low][0] if low < len(self.polls) else None


_STREAM_SEQ = re.compile(rb'"stream_seq":(\d+)')


def _statuses(exchanges: Exchanges, expected: int) -> str:
    wrong: dict[int, int] = {}
    for status in exchanges.status:
        if status != expected:
            wrong[status] = wrong.get(status, 0) + 1
    if exchanges.errors:
        return f"{len(exchanges.errors)} errors: {exchanges.errors[0]}"
    return ", ".join(f"{n} answered {s}" for s, n in sorted(wrong.items()))


async def ingestion(
    env: Env,
    plane: ControlPlaneProcesses,
    nodes: Sequence[BenchNode],
    sizes: Sizes,
    profile: Path | None,
) -> tuple[list[Row], str]:
    """The rows, and how busy each process was during the timed run."""
    topology = Topology(prefix=env.prefix)
    rounds = max(1, sizes.heartbeats // len(nodes))

    health = [request_bytes("GET", "/health")] * min(sizes.heartbeats, 30_000)
    floor = await drive(HOST, plane.port, health, connections=sizes.connections)

    gc.collect()
    with console.status(f"signing {(rounds + 1) * len(nodes):,} heartbeat requests…"):
        started = time.perf_counter()
        now = datetime.now(UTC)
        # Each node on a connection of its own, and one heartbeat each first, over the
        # same connections: the clock starts once every node has been seen.
        warmup = [signed_heartbeat(n, 1, now) for n in nodes]
        load = [signed_heartbeat(n, 2 + r, now) for r in range(rounds) for n in nodes]
        signing_s = time.perf_counter() - started

    monitor = LagMonitor(env.dsn, topology.heartbeats.name)
    await monitor.start()
    meter = CpuMeter(
        {
            "API": plane.pid("serve"),
            "projector": plane.pid("projector"),
            **env.server_pids,
            "generator": os.getpid(),
        }
    )
    everything = [*warmup, *load]
    gc.collect()
    gc.disable()  # the generator's own pauses must not count against the server
    try:
        with profiled(plane, profile), meter.measure():
            run = await drive(
                HOST,
                plane.port,
                [s.request for s in everything],
                connections=sizes.connections,
                keep_bodies=True,
                lane_of=[s.lane for s in everything],
            )
    finally:
        gc.enable()
    stream_seqs = [_stream_seq(b) for b in run.bodies]
    projected = await monitor.wait_for(max(stream_seqs, default=0), timeout=120)
    await monitor.stop()

    warm = len(warmup)
    clock_starts = max(run.done[:warm])
    timed = [i for i in range(warm, len(everything)) if run.done[i] >= clock_starts]
    sustained = len(timed) / (max(run.done[warm:]) - clock_starts)
    broken = _statuses(run, 201) or ("" if projected else "projection did not catch up")
    lags = [
        landed - run.sent[i]
        for i in range(warm, len(everything))
        if stream_seqs[i] and (landed := monitor.landed_at(stream_seqs[i])) is not None
    ]
    latencies = [run.done[i] - run.sent[i] for i in range(warm, len(everything))]
    if not broken:
        broken = await _read_model_problem(env.dsn, nodes, rounds)
    replays = load[:200]
    replay_problem = await _replays_refused(env, plane.port, replays)

    sample = load[: min(len(load), 20_000)]
    rows = [
        Row(
            f"signed heartbeats ingested, {len(nodes):,} nodes",
            len(timed),
            sustained,
            "/s",
            "GET /health, same generator",
            len(health) / floor.seconds,
            target=INGEST_TARGET,
            broken=broken,
        ),
        Row("  Ed25519 verify alone, 1 core", len(sample), _raw_verify_rate(sample), "/s"),
        Row(
            "  append_many alone, events pre-sealed",
            len(sample),
            await _raw_append_rate(env, sample),
            "/s",
        ),
        Row("  signing the load (before the clock)", len(load), len(load) / signing_s, "/s"),
        Row(
            "projection lag p99 (request sent → in read model)",
            len(lags),
            percentile(lags, 0.99),
            "ms",
            "HTTP latency p99 (sent → 201)",
            percentile(latencies, 0.99),
            target=LAG_P99_TARGET_S,
            broken="" if len(lags) == len(load) else f"{len(load) - len(lags)} never seen",
        ),
        Row(
            "  replayed requests refused: 401, nothing appended",
            len(replays),
            1.0,
            "ok",
            broken=replay_problem,
        ),
    ]
    return rows, meter.text()


def _stream_seq(body: bytes) -> int:
    found = _STREAM_SEQ.search(body)
    return int(found.group(1)) if found else 0


async def _read_model_problem(dsn: str, nodes: Sequence[BenchNode], rounds: int) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, sum(heartbeat_count) AS beats,"
            " count(*) FILTER (WHERE heartbeat_seq = $2) AS latest"
            " FROM node_heartbeats WHERE node_id LIKE 'hb-%' AND $1::int IS NOT NULL",
            len(nodes),
            rounds + 1,
        )
    finally:
        await conn.close()
    found = (row["n"], row["beats"], row["latest"])
    expected = (len(nodes), len(nodes) * (rounds + 1), len(nodes))
    if found == expected:
        return ""
    return f"read model holds (nodes, heartbeats, at last seq) {found}, not {expected}"


async def _replays_refused(env: Env, port: int, sample: Sequence[Signed]) -> str:
    topology = Topology(prefix=env.prefix)
    store = await JetStreamEventStore.connect(env.nats_url, topology, name="b3iq-bench")
    try:
        before = await store.bounds(topology.heartbeats.name)
        replayed = await drive(HOST, port, [s.request for s in sample], connections=16)
        after = await store.bounds(topology.heartbeats.name)
    finally:
        await store.close()
    problem = _statuses(replayed, 401)
    if not problem and after != before:
        problem = f"the heartbeat stream moved from {before} to {after}"
    return problem


def _raw_verify_rate(sample: Sequence[Signed]) -> float:
    keys = {s.node.node_id: nacl.signing.VerifyKey(s.node.signer.public_key) for s in sample}
    work = [(keys[s.node.node_id], s.text, b64decode(s.signature)) for s in sample]
    gc.collect()
    started = time.perf_counter()
    for key, text, signature in work:
        key.verify(text, signature)
    return len(work) / (time.perf_counter() - started)


async def _raw_append_rate(env: Env, sample: Sequence[Signed]) -> float:
    """The log's own ceiling: the same heartbeat events, sealed beforehand, appended."""
    topology = Topology(prefix=env.prefix + "raw")
    store = await JetStreamEventStore.connect(env.nats_url, topology, name="b3iq-bench")
    signer = Signer.generate()
    now = datetime.now(UTC)
    try:
        sealed: list[tuple[str, Sealed]] = []
        for s in sample:
            body = s.request.split(b"\r\n\r\n", 1)[1]
            event = HeartbeatRecorded(
                node_id=s.node.node_id,
                heartbeat_seq=1,
                sent_at=now,
                agent_version="0.1.0",
                evidence=NodeEvidence(
                    key_id=s.node.signer.key_id,
                    body=s.text.decode(),
                    sig=s.signature,
                    request_body=body.decode(),
                ),
            )
            subject = topology.heartbeat_subject(s.node.node_id)
            [one] = seal(subject, [event], prev_hash=None, signer=signer, now=now, chained=False)
            sealed.append((subject, one))
        gc.collect()
        started = time.perf_counter()
        for at in range(0, len(sealed), 1000):
            await store.append_many(sealed[at : at + 1000])
        return len(sealed) / (time.perf_counter() - started)
    finally:
        for spec in topology.streams:
            await store.js.delete_stream(spec.name)
        await store.close()


# --- queries over 100,000 nodes -------------------------------------------------------


async def seed_read_models(dsn: str, count: int) -> list[str]:
    """Nodes straight into the read models with COPY: a mix of fresh, stale and silent
    heartbeats, pending and revoked enrollments, profiles and protocol observations."""
    rng = random.Random(7)  # noqa: S311 - sample data, not secrets
    now = datetime.now(UTC)
    ids = [f"rm-{i:07d}" for i in range(count)]
    nodes, beats, profiles, protocol = [], [], [], []
    inventory = msgspec.json.encode(InventoryReport(os="Linux", cpu_count=16)).decode()
    for n, node_id in enumerate(ids):
        status = rng.choices(("enrolled", "pending", "revoked"), (93, 5, 2))[0]
        enrolled_at = now - timedelta(days=rng.randint(1, 300))
        nodes.append(
            (node_id, f"ed25519:{n:016x}", b64encode(n.to_bytes(32, "big")), status, "0.1.0",
             enrolled_at, n + 1, str(uuid.uuid4()), n + 1,
             enrolled_at if status == "enrolled" else None,
             now if status == "revoked" else None, "lost" if status == "revoked" else None)
        )  # fmt: skip
        kind = rng.random()
        if kind < 0.10:
            continue  # never heartbeated
        age = rng.uniform(0, 60) if kind < 0.75 else rng.uniform(120, 86_400)
        at = now - timedelta(seconds=age)
        seq = rng.randint(1, 10_000)
        beats.append(
            (node_id, seq, at, at, "0.1.0", seq, n + 1, str(uuid.uuid4()), inventory, "[]")
        )
        for model in rng.sample(MODELS, rng.randint(1, 2)):
            profiles.append(
                (node_id, model, f"{node_id}-{model}",
                 rng.choices(("installed", "ready_to_install", "runtime_missing"), (8, 1, 1))[0],
                 "vllm", rng.choice(TIERS), True, True, rng.random() < 0.7,
                 rng.choices(("healthy", "degraded", "blocked"), (90, 7, 3))[0], 0, 8192, seq, at)
            )  # fmt: skip
        if rng.random() < 0.5:
            protocol.append(
                (node_id, True, rng.random() < 0.9, Decimal(rng.randint(0, 10) * 10**18),
                 "seed", at, "bench", str(uuid.uuid4()), n + 1)
            )  # fmt: skip
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "nodes",
            records=nodes,
            columns=["node_id", "key_id", "public_key", "status", "agent_version", "enrolled_at",
                     "enrolled_seq", "enrollment_event_id", "last_seq", "approved_at",
                     "revoked_at", "revoked_reason"],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "node_heartbeats",
            records=beats,
            columns=["node_id", "heartbeat_seq", "sent_at", "recorded_at", "agent_version",
                     "heartbeat_count", "stream_seq", "event_id", "inventory", "runtimes"],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "model_profiles",
            records=profiles,
            columns=["node_id", "model", "profile_id", "status", "runtime_kind", "route_tier",
                     "network_eligible", "benchmark_verified", "paid_route_eligible",
                     "queue_health", "queue_depth", "context_length", "heartbeat_seq",
                     "reported_at"],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "node_protocol",
            records=protocol,
            columns=["node_id", "registered", "active", "stake_wei", "source", "observed_at",
                     "recorded_by", "event_id", "seq"],
        )  # fmt: skip
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return ids


LIST_FILTERS: tuple[dict[str, str], ...] = (
    {},
    {"claim": "local-ready"},
    {"claim": "managed-enrolled"},
    {"claim": "local-ready", "model": MODELS[0]},
    {"blocker": "heartbeat"},
    {"blocker": "enrollment"},
    {"blocker": "protocol_stake"},
    {"blocker": "runtime", "model": MODELS[1]},
    {"blocker": "queue_health"},
    {"model": MODELS[2]},
    {"tier": "network_beta", "model": MODELS[0]},
    {"status": "pending"},
)


async def queries(plane: ControlPlaneProcesses, ids: Sequence[str], sizes: Sizes) -> list[Row]:
    rng = random.Random(11)  # noqa: S311 - sample data, not secrets
    admin = {"x-b3iq-admin-token": plane.admin_token}
    readiness = [
        request_bytes(
            "GET", f"/v1/nodes/{rng.choice(ids)}/readiness?model={rng.choice(MODELS)}",
            headers=admin,
        )
        for _ in range(sizes.queries)
    ]  # fmt: skip
    listing, by_filter = [], []
    for n in range(sizes.queries):
        where = dict(LIST_FILTERS[n % len(LIST_FILTERS)])
        if rng.random() < 0.5:
            where["cursor"] = b64encode(rng.choice(ids).encode())
        query = str(httpx.QueryParams({**where, "limit": "50"}))
        listing.append(request_bytes("GET", f"/v1/nodes?{query}", headers=admin))
        by_filter.append(n % len(LIST_FILTERS))
    health = [request_bytes("GET", "/health")] * sizes.queries

    # One request at a time: latency, not throughput. Warm the connection pool first.
    await drive(HOST, plane.port, readiness[:50] + listing[:50], connections=1)
    floor = await drive(HOST, plane.port, health, connections=1)
    ready = await drive(HOST, plane.port, readiness, connections=1)
    pages = await drive(HOST, plane.port, listing, connections=1)
    slowest = max(
        range(len(LIST_FILTERS)),
        key=lambda f: percentile(
            [lat for lat, g in zip(pages.latencies(), by_filter, strict=True) if g == f], 0.99
        ),
    )
    floor_p99 = percentile(floor.latencies(), 0.99)
    return [
        Row(
            f"readiness query p99, {len(ids):,} nodes",
            len(readiness),
            percentile(ready.latencies(), 0.99),
            "ms",
            "GET /health p99",
            floor_p99,
            target=READINESS_P99_TARGET_S,
            broken=_statuses(ready, 200),
        ),
        Row(
            f"node list page p99 (50 rows), {len(LIST_FILTERS)} filters",
            len(listing),
            percentile(pages.latencies(), 0.99),
            "ms",
            "GET /health p99",
            floor_p99,
            target=LIST_P99_TARGET_S,
            broken=_statuses(pages, 200),
        ),
        Row(
            f"  slowest filter: {LIST_FILTERS[slowest] or 'none'}",
            by_filter.count(slowest),
            percentile(
                [lat for lat, g in zip(pages.latencies(), by_filter, strict=True) if g == slowest],
                0.99,
            ),
            "ms",
        ),
    ]


# --- running it -----------------------------------------------------------------------


async def bench(
    env: Env, plane: ControlPlaneProcesses, sizes: Sizes, profile: Path | None
) -> tuple[list[Row], str]:
    with console.status(f"enrolling {sizes.nodes:,} nodes through the API…"):
        nodes, enroll_s = await enroll_all(plane.port, sizes.nodes)
    enrolled = Row(
        "  enrollments (challenge + signed answer)", len(nodes), len(nodes) / enroll_s, "/s"
    )
    with console.status("timed heartbeat run…"):
        ingest, cpu = await ingestion(env, plane, nodes, sizes, profile)
    rows = [*ingest, enrolled]
    with console.status(f"seeding {sizes.read_nodes:,} nodes into the read models…"):
        ids = await seed_read_models(env.dsn, sizes.read_nodes)
    with console.status("operator queries…"):
        rows += await queries(plane, ids, sizes)
    if dead := plane.dead():
        rows[0].broken = f"{dead} exited"
    return rows, cpu


def render(rows: Sequence[Row], caption: str) -> Table:
    table = Table(
        title="B3IQ Managed Mode: heartbeat ingestion and operator queries",
        caption=caption,
        caption_justify="left",
    )
    for name, justify in (
        ("Measurement", "left"),
        ("N", "right"),
        ("Result", "right"),
        ("Baseline (same run)", "left"),
        ("Baseline", "right"),
        ("Target", "left"),
        ("Verdict", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        cells = row.cells()
        if row.unit == "ok":
            cells[2] = "all" if not row.broken else "no"
        table.add_row(*cells)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes: about a minute")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--heartbeats", type=int)
    parser.add_argument("--connections", type=int)
    parser.add_argument("--read-nodes", type=int)
    parser.add_argument("--api-workers", type=int, help=f"API processes (default {CORES})")
    parser.add_argument("--profile", type=Path, help="write py-spy profiles here")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    overrides = {
        k: v
        for k, v in {
            "nodes": args.nodes,
            "heartbeats": args.heartbeats,
            "connections": args.connections,
            "read_nodes": args.read_nodes,
            "api_workers": args.api_workers,
        }.items()
        if v
    }
    sizes = sizes._replace(**overrides)

    import uvloop

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="b3iq-bench-hb-"))
    try:
        with servers(workdir) as env:
            asyncio.run(migrate(env.dsn))
            plane = ControlPlaneProcesses(env, workdir)
            try:
                plane.start(sizes.api_workers)
                rows, cpu = uvloop.run(bench(env, plane, sizes, args.profile))
            except BaseException:
                for name in plane.procs:
                    log = (workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                    console.print(f"--- {name}.log (tail)\n{log}", markup=False)
                raise
            finally:
                plane.stop()
            versions = asyncio.run(_versions(env))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    caption = "\n".join(
        [
            f"Python {platform.python_version()}, uvloop {importlib.metadata.version('uvloop')},"
            f" {os.cpu_count()} CPUs shared by everything; {versions}; {env.where}.",
            f"Control plane as deployed: `b3iq serve --workers {sizes.api_workers}` and"
            " `b3iq projector`, separate processes."
            " Load generator: this process, raw HTTP/1.1 keep-alive,"
            f" {sizes.connections} connections, requests signed before the clock (fresh"
            " nonce, timestamp inside the skew window).",
            "Ingested: heartbeats answered 201 from the moment every node had sent one"
            " (over the same connections) to the last 201; every heartbeat is also checked in"
            " the read model. Lag: a request's sending until the heartbeat projection's"
            " checkpoint passes its stream_seq (polled every 10 ms).",
            f"Cores busy during the run (warm-up included): {cpu}.",
            "Baselines: the same generator against GET /health (the HTTP ceiling); Ed25519"
            " verify of the same signed texts; append_many of the same events sealed beforehand.",
            f"Queries: {sizes.read_nodes:,} nodes seeded straight into the read models with"
            " COPY (not through the log); one request at a time over HTTP with an admin token.",
            f"Whole run {time.perf_counter() - started:.0f} s.",
        ]
    )
    console.print(render(rows, caption))
    return 1 if any(row.verdict() == "FAIL" for row in rows) else 0


async def _versions(env: Env) -> str:
    import nats

    nc = await nats.connect(env.nats_url)
    try:
        v = nc.connected_server_version
        nats_version = f"nats-server {v.major}.{v.minor}.{v.patch}"
    finally:
        await nc.close()
    conn = await asyncpg.connect(env.dsn)
    try:
        pg = await conn.fetchval("SHOW server_version")
        fsync = await conn.fetchval("SHOW fsync")
    finally:
        await conn.close()
    return f"{nats_version}, PostgreSQL {pg} (fsync {fsync})"


if __name__ == "__main__":
    sys.exit(main())
