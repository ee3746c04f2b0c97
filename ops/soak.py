"""Soak: mixed load for a while, then throughput, p99 latencies, projection lag and memory
over time, and each process's memory growth per hour.

    .venv/bin/python ops/soak.py [--minutes M] [--sample-s S] [--nodes N]
                                 [--heartbeats-per-s R] [--paid-clients C] [--json FILE]

Starts NATS and PostgreSQL (or uses B3IQ_NATS_URL / B3IQ_DATABASE_URL), two `b3iq serve`
processes, the projector and a real node serving the tiny model, made paid-route eligible
on real evidence. Then, at once and until the time is up:

- heartbeats: N simulated nodes (enrolled for real) post signed heartbeats at R/s in all,
  alternating between the two API processes;
- commands: an operator issues `runtime_probe` commands to the real node and waits for
  each signed result (one at a time);
- paid requests: C clients send chat completions through the gateway (A and B).

Every ``--sample-s`` seconds it records each kind's rate and p99, the largest projection
lag /ready reports, and the RSS of every process. Growth per hour is the least-squares
slope of RSS over the samples after the first fifth (start-up and warm caches excluded).
Exit status 1 when any request failed or a process died.
"""

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from rich.table import Table

from adapters.postgres import migrate
from ops.bench.bench_broker import (
    CHAT,
    HostAgent,
    KeepAlive,
    Processes,
    RoundTrips,
    console,
    get,
    memory_kib,
    post,
    round_trip,
)
from ops.bench.bench_gateway import start_paid_stack
from ops.bench.bench_heartbeats import BenchNode, enroll_all, servers, signed_heartbeat
from ops.bench.http_load import percentile

WARM_UP_SHARE = 0.2


@dataclass
class Kind:
    """One kind of load: latencies and failures since the last sample."""

    name: str
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    total: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, seconds: float) -> None:
        with self.lock:
            self.latencies.append(seconds)
            self.total += 1

    def fail(self, why: str) -> None:
        with self.lock:
            self.failures.append(why)

    def take(self) -> list[float]:
        with self.lock:
            taken, self.latencies = self.latencies, []
            return taken


@dataclass
class Sample:
    at_s: float
    rates: dict[str, float]
    p99_ms: dict[str, float]
    lag: int
    rss_mib: dict[str, float]


def _loop(stop: threading.Event, every_s: float, step: Callable[[], None]) -> None:
    """Call ``step`` about every ``every_s`` (0: back to back) until ``stop``."""
    next_at = time.perf_counter()
    while not stop.is_set():
        step()
        if every_s:
            next_at += every_s
            time.sleep(max(0.0, next_at - time.perf_counter()))


def heartbeat_load(
    stop: threading.Event, kind: Kind, ports: Sequence[int], nodes: Sequence[BenchNode], rate: float
) -> list[threading.Thread]:
    """Two senders, one per API process, each at half the rate, cycling through the nodes."""
    threads = []
    for lane, port in enumerate(ports):
        mine = nodes[lane :: len(ports)]
        seqs = dict.fromkeys((n.node_id for n in mine), 0)
        client = KeepAlive(port)
        turn = [0]

        def step(mine: Sequence[BenchNode] = mine, seqs: dict[str, int] = seqs,
                 client: KeepAlive = client, turn: list[int] = turn) -> None:  # fmt: skip
            node = mine[turn[0] % len(mine)]
            turn[0] += 1
            seqs[node.node_id] += 1
            signed = signed_heartbeat(node, seqs[node.node_id], datetime.now(UTC))
            started = time.perf_counter()
            status, body = client.request(signed.request)
            if status in (200, 201):
                kind.record(time.perf_counter() - started)
            else:
                kind.fail(f"heartbeat {status} {body[:120]!r}")

        every = len(ports) / rate
        threads.append(threading.Thread(target=_loop, args=(stop, every, step), daemon=True))
    return threads


def command_load(
    stop: threading.Event, kind: Kind, port: int, node_id: str, admin: str
) -> threading.Thread:
    client = KeepAlive(port)

    def step() -> None:
        trips = RoundTrips()
        round_trip(client, node_id, admin, trips)
        if trips.total:
            kind.record(trips.total[0])
        for problem in trips.problems:
            kind.fail(problem)

    return threading.Thread(target=_loop, args=(stop, 0.0, step), daemon=True)


def paid_load(
    stop: threading.Event, kind: Kind, ports: Sequence[int], secret: str, clients: int
) -> list[threading.Thread]:
    request = post("/v1/chat/completions", CHAT, {"authorization": f"Bearer {secret}"})
    threads = []
    for i in range(clients):
        client = KeepAlive(ports[i % len(ports)])

        def step(client: KeepAlive = client) -> None:
            started = time.perf_counter()
            status, body = client.request(request)
            if status == 200:
                kind.record(time.perf_counter() - started)
            else:
                kind.fail(f"paid {status} {body[:120]!r}")

        threads.append(threading.Thread(target=_loop, args=(stop, 0.0, step), daemon=True))
    return threads


def _p99_ms(latencies: Sequence[float]) -> float:
    return percentile(latencies, 0.99) * 1000 if latencies else 0.0


def projection_lag(client: KeepAlive, admin: str) -> int:
    status, body = client.request(get("/ready", admin))
    if status not in (200, 503):
        return -1
    lags = msgspec.json.decode(body).get("projections", [])
    return max((int(p["lag"]) for p in lags), default=0)


def growth_per_hour(samples: Sequence[Sample], name: str) -> float:
    """MiB per hour: the least-squares slope of RSS after the warm-up share."""
    kept = samples[int(len(samples) * WARM_UP_SHARE) :]
    if len(kept) < 2:
        return 0.0
    xs = [s.at_s for s in kept]
    ys = [s.rss_mib[name] for s in kept]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / spread
    return slope * 3600


def samples_table(samples: Sequence[Sample], kinds: Sequence[str], procs: Sequence[str]) -> Table:
    table = Table(title="B3IQ soak: every sample", caption_justify="left")
    table.add_column("t (s)", justify="right")
    for k in kinds:
        table.add_column(f"{k}/s", justify="right")
        table.add_column(f"{k} p99 ms", justify="right")
    table.add_column("max lag", justify="right")
    for p in procs:
        table.add_column(f"{p} MiB", justify="right")
    for s in samples:
        table.add_row(
            f"{s.at_s:.0f}",
            *(cell for k in kinds for cell in (f"{s.rates[k]:,.1f}", f"{s.p99_ms[k]:,.1f}")),
            str(s.lag),
            *(f"{s.rss_mib[p]:,.1f}" for p in procs),
        )
    return table


def summary_table(
    samples: Sequence[Sample], kinds: Sequence[Kind], procs: Sequence[str], seconds: float
) -> Table:
    table = Table(title="B3IQ soak: summary", caption_justify="left")
    for column in ("Measurement", "Result"):
        table.add_column(column, justify="left" if column == "Measurement" else "right")
    for k in kinds:
        p99s = [s.p99_ms[k.name] for s in samples if s.rates[k.name]]
        worst = max(p99s, default=0.0)
        table.add_row(f"{k.name}: done, failed", f"{k.total:,}, {len(k.failures):,}")
        table.add_row(f"{k.name}: mean rate", f"{k.total / max(seconds, 1e-9):,.1f}/s")
        table.add_row(f"{k.name}: worst sample p99", f"{worst:,.1f} ms")
    table.add_row("largest projection lag", f"{max((s.lag for s in samples), default=0):,}")
    for p in procs:
        first, last = samples[0].rss_mib[p], samples[-1].rss_mib[p]
        table.add_row(
            f"{p}: RSS first → last, growth",
            f"{first:,.1f} → {last:,.1f} MiB, {growth_per_hour(samples, p):+,.1f} MiB/h",
        )
    return table


def soak(args: argparse.Namespace, workdir: Path) -> int:
    with servers(workdir) as env:
        asyncio.run(migrate(env.dsn))
        processes = Processes(env, workdir)
        node = HostAgent(workdir)
        try:
            secret = start_paid_stack(processes, node)
            a, b = processes.ports["api-a"], processes.ports["api-b"]
            admin = processes.admin_token
            holder = KeepAlive(a)
            with console.status(f"enrolling {args.nodes} simulated nodes…"):
                fleet, _ = asyncio.run(enroll_all(a, args.nodes))

            kinds = [Kind("beats"), Kind("cmds"), Kind("paid")]
            stop = threading.Event()
            threads = [
                *heartbeat_load(stop, kinds[0], (a, b), fleet, args.heartbeats_per_s),
                command_load(stop, kinds[1], a, node.node_id, admin),
                *paid_load(stop, kinds[2], (a, b), secret, args.paid_clients),
            ]
            pids = {name: processes.pid(name) for name in processes.procs}
            pids.update(env.server_pids)
            samples: list[Sample] = []
            started = time.perf_counter()
            deadline = started + args.minutes * 60
            for thread in threads:
                thread.start()
            with console.status("soaking…") as status:
                last = started
                while time.perf_counter() < deadline and processes.dead() is None:
                    time.sleep(min(args.sample_s, max(0.0, deadline - time.perf_counter())))
                    now = time.perf_counter()
                    taken = {k.name: k.take() for k in kinds}
                    samples.append(
                        Sample(
                            at_s=now - started,
                            rates={n: len(v) / (now - last) for n, v in taken.items()},
                            p99_ms={n: _p99_ms(v) for n, v in taken.items()},
                            lag=projection_lag(holder, admin),
                            rss_mib={n: memory_kib(pid) / 1024 for n, pid in pids.items()},
                        )
                    )
                    last = now
                    status.update(f"soaking… {now - started:,.0f} s of {args.minutes * 60:,.0f}")
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
            elapsed = samples[-1].at_s if samples else 0.0
            died = processes.dead()
        finally:
            processes.stop()
    procs = list(pids)
    console.print(samples_table(samples, [k.name for k in kinds], procs))
    console.print(summary_table(samples, kinds, procs, elapsed))
    failures = [f for k in kinds for f in k.failures]
    for failure in failures[:10]:
        console.print(f"[red]{failure}[/]", markup=True)
    if died:
        console.print(f"[bold red]{died} died[/]")
    if args.json:
        report = {
            "seconds": elapsed,
            "samples": [msgspec.to_builtins(s) for s in samples],
            "totals": {k.name: {"done": k.total, "failed": len(k.failures)} for k in kinds},
            "growth_mib_per_hour": {p: growth_per_hour(samples, p) for p in procs},
        }
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 1 if failures or died else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    parser.add_argument("--sample-s", type=float, default=15.0, help="between samples")
    parser.add_argument("--nodes", type=int, default=200, help="simulated heartbeat nodes")
    parser.add_argument("--heartbeats-per-s", type=float, default=100.0, help="all nodes")
    parser.add_argument("--paid-clients", type=int, default=2, help="gateway clients")
    parser.add_argument("--json", help="also write the samples and summary to this file")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="b3iq-soak-"))
    try:
        return soak(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
