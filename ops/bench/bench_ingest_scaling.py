"""Heartbeat ingest as the control plane scales out: 1 or 2 API processes x 1 or 2
projector processes (the heartbeat projection split into that many partitions).

    .venv/bin/python ops/bench/bench_ingest_scaling.py [--quick] [--nodes N] [--rounds N]
        [--connections N] [--repeat N]

Starts its own nats-server and PostgreSQL (fsync on), as bench_heartbeats.py does (or
uses B3IQ_NATS_URL / B3IQ_DATABASE_URL), then for each combination a fresh database and
stream prefix, `b3iq serve --workers A` and P processes of `b3iq projector --partitions P`,
waiting until the projectors have shared out the partitions. Then:

- live: every node sends heartbeats over its own keep-alive connection (requests signed
  before the clock) while the projectors keep up. Accepted/s: 201s at the API from the
  moment every node had sent one; projected/s: the same heartbeats until the last of them
  is in its partition's read model; lag p99: a request's sending until its partition's
  checkpoint passes it.
- backlog: the projector processes paused (SIGSTOP) while as many heartbeats again are
  accepted, then resumed (SIGCONT): the rate they catch up at is the projectors' own,
  with the API idle.

On a machine with fewer cores than processes, wall-clock rates measure the contention
for those cores as much as the design. So each phase also counts the CPU seconds of the
busiest API worker (while the projectors are paused) and of the busiest projector
(during the catch-up) per heartbeat: with a core of its own per process, that process is
the limit, and 1 x 1's cost divided by this one's is the capacity ratio.

The combinations run in turns, --repeat times (other load on the machine then falls on
all of them alike); each figure is the median of its turns, and every rate and capacity
is also given as a ratio to 1 API x 1 projector, measured in the same run.
"""

import argparse
import asyncio
import gc
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import asyncpg
from rich.table import Table

from adapters.jetstream import JetStreamEventStore
from adapters.postgres import migrate
from adapters.services import sharing_scope, work_names
from adapters.work_sharing import owners
from domain.partitions import partition_of
from domain.streams import Topology
from ops.bench.bench_heartbeats import (
    HOST,
    BenchNode,
    ControlPlaneProcesses,
    CpuMeter,
    Env,
    LagMonitor,
    Signed,
    _create_database,
    _drop_database,
    _statuses,
    _stream_seq,
    _versions,
    console,
    enroll_all,
    servers,
    signed_heartbeat,
)
from ops.bench.http_load import Exchanges, drive, percentile

COMBINATIONS = ((1, 1), (2, 1), (1, 2), (2, 2))
"""(API processes, projector processes = heartbeat partitions); the first is the baseline."""


class Sizes(NamedTuple):
    nodes: int
    rounds: int
    """Heartbeats per node in each phase (after one warm-up heartbeat per node)."""
    connections: int
    repeat: int
    """Turns of every combination."""


FULL = Sizes(nodes=2_000, rounds=5, connections=128, repeat=3)
QUICK = Sizes(nodes=1_000, rounds=3, connections=64, repeat=1)


@dataclass
class Result:
    api: int
    projectors: int
    accepted: float
    projected: float
    lag_p99: float
    caught_up: float
    api_cpu: float
    """CPU seconds per heartbeat of the busiest API worker, projectors paused."""
    projector_cpu: float
    """CPU seconds per heartbeat of the busiest projector, catching up alone."""
    cores: str
    broken: str = ""


def median(results: Sequence[Result]) -> Result:
    """Each figure the median of its turns (a failed turn makes the whole one fail)."""

    def mid(field: str) -> float:
        return statistics.median(float(getattr(r, field)) for r in results)

    first = results[0]
    return Result(
        first.api, first.projectors, mid("accepted"), mid("projected"), mid("lag_p99"),
        mid("caught_up"), mid("api_cpu"), mid("projector_cpu"), first.cores,
        "; ".join(r.broken for r in results if r.broken),
    )  # fmt: skip


def cpu_seconds(pids: Sequence[int]) -> list[float]:
    """User + system CPU seconds each process has used so far (from /proc)."""
    hz = os.sysconf("SC_CLK_TCK")
    found = []
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        found.append((int(fields[11]) + int(fields[12])) / hz)
    return found


def api_workers(serve_pid: int) -> list[int]:
    """The processes that answer requests: `b3iq serve`'s forked workers, or itself."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == serve_pid:
                children.append(int(entry.name))
    return children or [serve_pid]


async def run_combination(env: Env, home: Path, api: int, parts: int, sizes: Sizes) -> Result:
    database = f"scale_{uuid.uuid4().hex[:8]}"
    admin = env.dsn.rpartition("/")[0] + "/postgres"
    await _create_database(admin, database)
    env = env._replace(
        dsn=f"{env.dsn.rpartition('/')[0]}/{database}", prefix=f"sc{uuid.uuid4().hex[:8]}"
    )
    await migrate(env.dsn)
    home.mkdir()  # noqa: ASYNC240 - between measurements
    plane = ControlPlaneProcesses(env, home)
    projectors = ["projector", *(f"projector-{n + 1}" for n in range(1, parts))]
    try:
        plane.start(api, projectors=parts, partitions=parts)
        await _shared_out(env, parts)
        nodes, _ = await enroll_all(plane.port, sizes.nodes)
        turn = Turn(env, plane, projectors, nodes, sizes)
        live = await turn.live()
        backlog = await turn.backlog()
        broken = live.broken or backlog.broken
        broken = broken or await _read_model_problem(env.dsn, len(nodes), 1 + 2 * sizes.rounds)
        if dead := plane.dead():
            broken = f"{dead} exited"
        return Result(
            api, parts, live.accepted, live.projected, live.lag_p99, backlog.caught_up,
            backlog.api_cpu, backlog.projector_cpu, live.cores, broken,
        )  # fmt: skip
    except BaseException:
        for name in plane.procs:
            log = (home / f"{name}.log").read_text(errors="replace")[-2000:]
            console.print(f"--- {name}.log (tail)\n{log}", markup=False)
        raise
    finally:
        plane.stop()
        await _drop_streams(env)
        await _drop_database(admin, database)


async def _shared_out(env: Env, parts: int, timeout: float = 60.0) -> None:
    """Until every piece of work is held, each heartbeat partition by another process."""
    topology = Topology(prefix=env.prefix)
    names = work_names(parts)
    conn = await asyncpg.connect(env.dsn)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            held = await owners(conn, sharing_scope("public", topology), names)
            spread = {held.get(n) for n in names if n.partition("[")[0] == "heartbeats"}
            if len(held) == len(names) and None not in spread and len(spread) == parts:
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise RuntimeError(f"the projectors did not share out the work in {timeout} s")


class Live(NamedTuple):
    accepted: float
    projected: float
    lag_p99: float
    cores: str
    broken: str


class Backlog(NamedTuple):
    caught_up: float
    api_cpu: float
    projector_cpu: float
    broken: str


class Turn:
    """One combination's control plane, its nodes enrolled, and the two phases."""

    def __init__(
        self,
        env: Env,
        plane: ControlPlaneProcesses,
        projectors: Sequence[str],
        nodes: Sequence[BenchNode],
        sizes: Sizes,
    ) -> None:
        self.env, self.plane, self.nodes, self.sizes = env, plane, nodes, sizes
        self.projectors = [plane.pid(name) for name in projectors]
        self.parts = len(projectors)
        self.topology = Topology(prefix=env.prefix)
        self.part_of = {
            n.node_id: partition_of(self.topology.heartbeat_subject(n.node_id), self.parts)
            for n in nodes
        }
        self.meter = CpuMeter(
            {
                "API": plane.pid("serve"),
                **{name: plane.pid(name) for name in projectors},
                **env.server_pids,
                "generator": os.getpid(),
            }
        )

    def _monitor(self) -> LagMonitor:
        return LagMonitor(self.env.dsn, self.topology.heartbeats.name, self.parts)

    def _last_seqs(self, run: Exchanges, load: Sequence[Signed]) -> tuple[list[int], list[int]]:
        """Each request's stream sequence, and the last one of every partition."""
        seqs = [_stream_seq(b) for b in run.bodies]
        last = [0] * self.parts
        for seq, signed in zip(seqs, load, strict=True):
            part = self.part_of[signed.node.node_id]
            last[part] = max(last[part], seq)
        return seqs, last

    async def live(self) -> Live:
        now = datetime.now(UTC)
        warmup = [signed_heartbeat(n, 1, now) for n in self.nodes]
        load = [
            signed_heartbeat(n, 2 + r, now) for r in range(self.sizes.rounds) for n in self.nodes
        ]
        everything = [*warmup, *load]
        monitor = self._monitor()
        await monitor.start()
        with self.meter.measure():
            run = await _drive(self.plane, everything, self.sizes)
        seqs, last = self._last_seqs(run, everything)
        clock_starts = max(run.done[: len(warmup)])
        timed = [i for i in range(len(warmup), len(everything)) if run.done[i] >= clock_starts]
        accepted = len(timed) / (max(run.done[len(warmup) :]) - clock_starts)
        landed = await _all_landed(monitor, last)
        await monitor.stop()
        broken = _statuses(run, 201)
        if landed is None:
            return Live(accepted, 0.0, 0.0, self.meter.text(), broken or "not projected")
        lags = [
            at - run.sent[i]
            for i in timed
            if seqs[i]
            and (at := monitor.landed_at(seqs[i], self.part_of[everything[i].node.node_id]))
        ]
        projected = len(timed) / (landed - clock_starts)
        return Live(accepted, projected, percentile(lags, 0.99), self.meter.text(), broken)

    async def backlog(self) -> Backlog:
        """As many heartbeats again (the next sequences), the projectors paused."""
        now = datetime.now(UTC)
        first = 2 + self.sizes.rounds
        load = [
            signed_heartbeat(n, first + r, now)
            for r in range(self.sizes.rounds)
            for n in self.nodes
        ]
        workers = api_workers(self.plane.pid("serve"))
        monitor = self._monitor()
        for pid in self.projectors:
            os.kill(pid, signal.SIGSTOP)
        try:
            before = cpu_seconds(workers)
            run = await _drive(self.plane, load, self.sizes)
            api_cpu = _most(before, cpu_seconds(workers))
            _, last = self._last_seqs(run, load)
            await monitor.start()
            before = cpu_seconds(self.projectors)
        finally:
            resumed = time.perf_counter()
            for pid in self.projectors:
                os.kill(pid, signal.SIGCONT)
        caught_up_at = await _all_landed(monitor, last)
        await monitor.stop()
        projector_cpu = _most(before, cpu_seconds(self.projectors))
        broken = _statuses(run, 201) or ("" if caught_up_at else "backlog not projected")
        caught_up = 0.0 if caught_up_at is None else len(load) / (caught_up_at - resumed)
        return Backlog(caught_up, api_cpu / len(load), projector_cpu / len(load), broken)


def _most(before: Sequence[float], after: Sequence[float]) -> float:
    return max(b - a for a, b in zip(before, after, strict=True))


async def _drive(plane: ControlPlaneProcesses, load: Sequence[Signed], sizes: Sizes) -> Exchanges:
    gc.collect()
    gc.disable()  # the generator's own pauses must not count against the server
    try:
        return await drive(
            HOST,
            plane.port,
            [s.request for s in load],
            connections=sizes.connections,
            keep_bodies=True,
            lane_of=[s.lane for s in load],
        )
    finally:
        gc.enable()


async def _all_landed(
    monitor: LagMonitor, last: Sequence[int], timeout: float = 120
) -> float | None:
    """When the last heartbeat of every partition was in its read model (None: never)."""
    for part, seq in enumerate(last):
        if not await monitor.wait_for(seq, timeout, part):
            return None
    times = [monitor.landed_at(seq, part) for part, seq in enumerate(last)]
    return None if None in times else max(t for t in times if t is not None)


async def _read_model_problem(dsn: str, nodes: int, beats: int) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, sum(heartbeat_count) AS beats FROM node_heartbeats"
        )
    finally:
        await conn.close()
    if (row["n"], row["beats"]) == (nodes, nodes * beats):
        return ""
    return f"read model holds {row['n']} nodes, {row['beats']} heartbeats"


async def _drop_streams(env: Env) -> None:
    topology = Topology(prefix=env.prefix)
    store = await JetStreamEventStore.connect(env.nats_url, topology, name="b3iq-bench")
    try:
        for spec in topology.streams:
            await store.js.delete_stream(spec.name)
    finally:
        await store.close()


def render(results: Sequence[Result], caption: str) -> Table:
    base = results[0]
    table = Table(
        title="B3IQ heartbeat ingest: API processes x projector partitions",
        caption=caption,
        caption_justify="left",
    )
    columns = (
        "API x proj.",
        "accepted/s",
        "vs 1x1",
        "projected/s",
        "vs 1x1",
        "lag p99",
        "catch-up/s",
        "vs 1x1",
        "API CPU/10k",
        "API capacity",
        "proj. CPU/10k",
        "proj. capacity",
        "verdict",
    )
    for name in columns:
        justify = "left" if name in ("API x proj.", "verdict") else "right"
        table.add_column(name, justify=justify)  # type: ignore[arg-type]

    def ratio(value: float, baseline: float) -> str:
        return f"{value / baseline:.2f}x" if baseline and value else "-"

    for r in results:
        table.add_row(
            f"{r.api} x {r.projectors}",
            f"{r.accepted:,.0f}",
            ratio(r.accepted, base.accepted),
            f"{r.projected:,.0f}",
            ratio(r.projected, base.projected),
            f"{r.lag_p99 * 1000:,.0f} ms",
            f"{r.caught_up:,.0f}",
            ratio(r.caught_up, base.caught_up),
            f"{r.api_cpu * 10_000:.2f} s",
            ratio(base.api_cpu, r.api_cpu),
            f"{r.projector_cpu * 10_000:.2f} s",
            ratio(base.projector_cpu, r.projector_cpu),
            "[green]ok[/]" if not r.broken else f"[bold red]FAIL[/] [red]({r.broken})[/]",
        )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--rounds", type=int, help="heartbeats per node in each phase")
    parser.add_argument("--connections", type=int)
    parser.add_argument("--repeat", type=int, help="turns of every combination (median)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    sizes = sizes._replace(
        **{
            k: v
            for k, v in {
                "nodes": args.nodes,
                "rounds": args.rounds,
                "connections": args.connections,
                "repeat": args.repeat,
            }.items()
            if v
        }
    )

    import uvloop

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="b3iq-bench-scale-"))
    turns: dict[tuple[int, int], list[Result]] = {c: [] for c in COMBINATIONS}
    try:
        with servers(workdir) as env:
            for turn in range(sizes.repeat):
                for api, parts in COMBINATIONS:
                    with console.status(f"turn {turn + 1}: {api} API x {parts} projector(s)…"):
                        home = workdir / f"turn{turn}-api{api}-proj{parts}"
                        result = uvloop.run(run_combination(env, home, api, parts, sizes))
                    turns[api, parts].append(result)
                    console.print(
                        f"turn {turn + 1}, {api} x {parts}: {result.accepted:,.0f}/s accepted,"
                        f" {result.caught_up:,.0f}/s caught up; cores busy (live): {result.cores}"
                    )
            versions = asyncio.run(_versions(env))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results = [median(turns[c]) for c in COMBINATIONS]
    caption = "\n".join(
        [
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs shared by everything"
            f" (API, projectors, NATS, PostgreSQL and the load generator); {versions};"
            f" {env.where}.",
            f"{sizes.nodes:,} nodes, each on a keep-alive connection of its own"
            f" ({sizes.connections} at a time); per phase {sizes.rounds} heartbeats per node"
            f" ({sizes.nodes * sizes.rounds:,}), signed before the clock.",
            "API x projectors: `b3iq serve --workers A`, and P processes of"
            " `b3iq projector --partitions P` sharing the projections (each heartbeat"
            " partition in another process).",
            "accepted/s, projected/s and lag: live. "
            "Live: accepted/s from the moment every node had sent one heartbeat to the last"
            " 201; projected/s the same heartbeats until the last is in its partition's read"
            " model; lag: sent → its partition's checkpoint passes it (polled every 10 ms).",
            "Backlog: the projectors SIGSTOPped while the API accepts as many again, then"
            " SIGCONTed: catch-up/s is the projectors alone.",
            "CPU/10k: user + system seconds per 10k heartbeats of the busiest API worker"
            " (backlog accepted, projectors paused; the kernel spreads connections over the"
            " workers by hash) and of the busiest projector (catching up). Capacity: 1x1's"
            " CPU/10k over this one's, the throughput ratio with a core per process.",
            f"Median of {sizes.repeat} turn(s), the combinations in turns.",
            f"Whole run {time.perf_counter() - started:.0f} s.",
        ]
    )
    console.print(render(results, caption))
    return 1 if any(r.broken for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
