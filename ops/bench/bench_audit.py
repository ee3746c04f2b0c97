"""Auditing a large mixed log: verify on one core and on all, replay, reconcile.

    .venv/bin/python ops/bench/bench_audit.py [--events N] [--quick] [--jobs J]

Writes a signed, chained, checkpointed log of ``--events`` messages (default 1,000,000)
straight into JetStream: node enrollments, heartbeats on the heartbeat stream, commands
(issued, leased and reported with the node's signatures), observed benchmarks, paid work
by the real billing decisions (customers, grants, keys, reservations, settlements with
node-signed receipts, releases) and a signed checkpoint every 1,000 ledger messages. It
is generated streaming, by two processes at once (ledger, heartbeats), and never held in
memory. Then each measurement runs in its own child process, so that its peak RSS is its
own: the baseline (raw nacl verifies of the log's own signatures, one core), `audit
verify` in one process and with ``--jobs``, the replay into PostgreSQL through every
projection, and the billing reconciliation. Servers as in bench_event_log (started here
unless B3IQ_NATS_URL / B3IQ_DATABASE_URL name them). Exit status 1 if a target failed.
"""

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from resource import RUSAGE_CHILDREN, RUSAGE_SELF
from typing import Any, NamedTuple, TypeVar

import asyncpg
import msgspec
import nacl.signing
from rich.table import Table

from adapters.audit import read_log, verify_log
from adapters.checkpoints import Checkpointer
from adapters.jetstream import JetStreamEventStore
from adapters.postgres import create_pool, migrate
from adapters.projector import ProjectionRunner
from adapters.reconciliation import reconcile
from adapters.recorder import Recorder
from adapters.replay_processes import ReplayAt, replay_in_processes
from adapters.settings import Settings
from domain.canonical import b64decode, canonical_bytes
from domain.decoding import decode_stored
from domain.envelope import StoredEvent, split_wire
from domain.events import (
    CustomerDebited,
    NodeEvidence,
)
from domain.signing import Keyring, Signer
from domain.streams import Topology
from ops.bench.bench_event_log import Env, console, servers
from ops.bench.billing_workload import Workload
from ops.bench.mixed_log import (
    CHECKPOINT_EVERY,
    NODES,
    MixedLedger,
    heartbeat_messages,
    node_key,
    whole_appends,
)
from projections.catalog import all_projections

T = TypeVar("T")
VERIFY_MIN_RATIO = 0.8
"""Of the two-core Ed25519 limit (twice the baseline measured in the same run)."""
REPLAY_TARGET = 50_000.0
RECONCILE_TARGET = 100_000.0
HEARTBEAT_SHARE = 0.45
BATCH = 2000
SAMPLE = 60_000
"""Events whose signatures the baseline verifies (the log's first, in both streams)."""


class Plan(msgspec.Struct, frozen=True):
    """What every phase's child process is told on stdin (the signing seed included)."""

    nats_url: str
    dsn: str
    schema: str
    prefix: str
    seed: bytes
    ledger: int
    heartbeats: int
    jobs: int


# --- writing the log (a child per stream, at once) -------------------------------------


def batched(items: Iterator[T], size: int) -> Iterator[list[T]]:
    while batch := list(islice(items, size)):
        yield batch


async def write(plan: Plan, which: str) -> dict[str, Any]:
    topology = Topology(prefix=plan.prefix)
    store = await JetStreamEventStore.connect(plan.nats_url, topology, name="b3iq-bench")
    signer = Signer(plan.seed)
    if which == "ledger":
        messages = whole_appends(MixedLedger(topology, signer).appends(), plan.ledger)
    else:
        messages = islice(heartbeat_messages(topology, signer), plan.heartbeats)
    try:
        written, size = 0, 0
        for batch in batched(messages, BATCH):
            results = await store.append_many(batch)
            if sum(1 for r in results if not r.duplicate) != len(batch):
                raise RuntimeError(f"{which}: an append was a duplicate")
            written += len(batch)
            size += sum(len(sealed.data) for _, sealed in batch)
        return {"events": written, "bytes": size}
    finally:
        await store.close()


# --- the measured phases (each in a child) -------------------------------------------


async def baseline(plan: Plan) -> dict[str, Any]:
    """Raw nacl verifies, one core, of every signature in the log's first SAMPLE events:
    the control plane's over each body, the nodes' inside (evidence, receipts)."""
    topology = Topology(prefix=plan.prefix)
    signer = Signer(plan.seed)
    nodes = [node_key(n) for n in range(NODES)] + [k for _, k in Workload(topology, signer).nodes]
    keys = {k.key_id: nacl.signing.VerifyKey(k.public_key) for k in [signer, *nodes]}
    share = plan.ledger / (plan.ledger + plan.heartbeats)
    store = await JetStreamEventStore.connect(plan.nats_url, topology, name="b3iq-bench")
    signed: list[tuple[nacl.signing.VerifyKey, bytes, bytes]] = []
    events = 0
    try:
        for spec, count in (
            (topology.ledger, int(SAMPLE * share)),
            (topology.heartbeats, SAMPLE - int(SAMPLE * share)),
        ):
            async for stored in _first(store, spec.name, count):
                signed.extend(_signatures(stored, keys))
                events += 1
    finally:
        await store.close()
    with _measured() as took:
        for key, message, signature in signed:
            key.verify(message, signature)
    return {"events": events, "sigs": len(signed), **took}


async def _first(store: JetStreamEventStore, stream: str, count: int) -> AsyncIterator[StoredEvent]:
    count = min(count, (await store.bounds(stream))[1])
    reader = await store.reader(stream, 1)
    seen = 0
    try:
        while seen < count:
            batch = await reader.next_batch(min(5000, count - seen), 2.0)
            if not batch:
                raise RuntimeError(f"{stream} ended at {seen} of {count}")
            for stored in batch:
                yield stored
            seen += len(batch)
    finally:
        await reader.close()


def _signatures(
    stored: StoredEvent, keys: dict[str, nacl.signing.VerifyKey]
) -> Iterator[tuple[nacl.signing.VerifyKey, bytes, bytes]]:
    wire = split_wire(stored.data)
    decoded = decode_stored(stored)
    yield keys[decoded.body.signer], bytes(wire.body), b64decode(wire.sig)
    proof = getattr(decoded.event, "evidence", None)
    if isinstance(proof, NodeEvidence):
        yield keys[proof.key_id], proof.body.encode(), b64decode(proof.sig)
    if isinstance(decoded.event, CustomerDebited):
        receipt = decoded.event.receipt
        message = canonical_bytes(receipt.body)
        yield keys[receipt.body.key_id], message, b64decode(receipt.signature)


async def verify(plan: Plan, jobs: int, every_signature: bool = False) -> dict[str, Any]:
    """`audit verify` as the CLI runs it. ``sigs``: every signature settled, whether
    checked here or vouched for by a checkpoint whose own signature was (``vouched``)."""
    topology = Topology(prefix=plan.prefix)
    store = await JetStreamEventStore.connect(plan.nats_url, topology, name="b3iq-bench")
    try:
        keyring = Keyring([Signer(plan.seed).public_key])
        with _measured() as took:
            verifier, problems = await verify_log(
                read_log(store, topology),
                topology,
                keyring,
                jobs=jobs,
                every_signature=every_signature,
            )
    finally:
        await store.close()
    for problem in problems[:5]:
        print(problem, file=sys.stderr)
    return {
        "events": verifier.verified,
        "sigs": verifier.signatures + verifier.vouched,
        "vouched": verifier.vouched,
        "checkpoints": verifier.checkpoints,
        "broken": f"{len(problems)} problems" if problems else "",
        **took,
    }


async def checkpointer(plan: Plan) -> dict[str, Any]:
    """What vouching costs the control plane: its checkpointer reading the whole ledger,
    checking each message's signature before it becomes a leaf (live, this is spread
    over the ledger's arrival)."""
    topology = Topology(prefix=plan.prefix)
    store = await JetStreamEventStore.connect(plan.nats_url, topology, name="b3iq-bench")
    try:
        signer = Signer(plan.seed)
        reading = Checkpointer(store, Recorder(store, signer, topology), topology)
        with _measured() as took:
            await reading.catch_up()
    finally:
        await store.close()
    return {"events": reading.tree.size, **took}


async def replay(plan: Plan) -> dict[str, Any]:
    """Every projection from sequence 1 into a fresh schema, as `b3iq audit replay`
    rebuilds: one read of each stream feeding all of its projections."""
    topology = Topology(prefix=plan.prefix)
    store = await JetStreamEventStore.connect(plan.nats_url, topology, name="b3iq-bench")
    projections = all_projections()
    await migrate(plan.dsn, plan.schema)
    pool = await create_pool(plan.dsn, schema=plan.schema, max_size=len(projections) + 1)
    try:
        lasts = {spec.name: (await store.bounds(spec.name))[1] for spec in topology.streams}
        runners = [ProjectionRunner(pool, store, topology, p) for p in projections]
        # Batches as `b3iq audit replay` reads them by default.
        batch = Settings().projection_batch
        at = ReplayAt(plan.nats_url, topology, 1, plan.dsn, plan.schema, batch)
        with _measured() as took:
            await replay_in_processes(store, at, [(r, lasts[r.stream]) for r in runners], plan.jobs)
    finally:
        await pool.close()
        await store.close()
    return {"events": sum(lasts.values()), "projections": len(projections), **took}


async def reconciliation(plan: Plan, against_read_models: bool) -> dict[str, Any]:
    """`billing reconcile`: the fold over the log, alone or held against the read models
    the replay built."""
    topology = Topology(prefix=plan.prefix)
    store = await JetStreamEventStore.connect(plan.nats_url, topology, name="b3iq-bench")
    pool = (
        await create_pool(plan.dsn, schema=plan.schema, max_size=2) if against_read_models else None
    )
    try:
        with _measured() as took:
            report = await reconcile(read_log(store, topology, ledger_only=True), topology, pool)
    finally:
        await store.close()
        if pool is not None:
            await pool.close()
    broken = "" if report.ok else f"{len(report.discrepancies)} discrepancies {report.by_code}"
    return {"events": report.events, "broken": broken, **took}


@contextmanager
def _measured() -> Iterator[dict[str, float]]:
    """Wall and CPU seconds of the block: this process, and with its reaped children
    (the verifier's workers)."""
    took: dict[str, float] = {}
    start, own, children = time.perf_counter(), _cpu(RUSAGE_SELF), _cpu(RUSAGE_CHILDREN)
    try:
        yield took
    finally:
        took["seconds"] = time.perf_counter() - start
        took["main_cpu_s"] = _cpu(RUSAGE_SELF) - own
        took["cpu_s"] = took["main_cpu_s"] + _cpu(RUSAGE_CHILDREN) - children


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def child(phase: str) -> int:
    plan = msgspec.json.decode(sys.stdin.buffer.read(), type=Plan)
    work: dict[str, Callable[[], Any]] = {
        "write-ledger": lambda: write(plan, "ledger"),
        "write-heartbeats": lambda: write(plan, "heartbeats"),
        "baseline": lambda: baseline(plan),
        "verify-1": lambda: verify(plan, 1),
        "verify-jobs": lambda: verify(plan, plan.jobs),
        "verify-every": lambda: verify(plan, plan.jobs, every_signature=True),
        "replay": lambda: replay(plan),
        "checkpointer": lambda: checkpointer(plan),
        "reconcile": lambda: reconciliation(plan, False),
        "reconcile-read-models": lambda: reconciliation(plan, True),
    }
    result = asyncio.run(work[phase]())
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({**result, "rss_mib": own, "child_rss_mib": workers}))
    return 0


# --- the parent: servers, phases, table -----------------------------------------------


class Phase(NamedTuple):
    name: str
    result: dict[str, Any]


def start(phase: str, plan: Plan) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.bench.bench_audit", "--phase", phase],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(msgspec.json.encode(plan))
    proc.stdin.close()
    return proc


def finish(phase: str, proc: subprocess.Popen[bytes]) -> Phase:
    assert proc.stdout is not None
    out = proc.stdout.read()
    if proc.wait() != 0:
        raise RuntimeError(f"phase {phase} failed with {proc.returncode}")
    return Phase(phase, json.loads(out.decode().strip().splitlines()[-1]))


def run_phase(phase: str, plan: Plan) -> Phase:
    with console.status(f"{phase}…"):
        return finish(phase, start(phase, plan))


def generate(plan: Plan) -> float:
    started = time.perf_counter()
    with console.status(
        f"writing {plan.ledger:,} ledger and {plan.heartbeats:,} heartbeat messages…"
    ):
        procs = {p: start(p, plan) for p in ("write-ledger", "write-heartbeats")}
        done = [finish(p, proc) for p, proc in procs.items()]
    seconds = time.perf_counter() - started
    total = sum(d.result["events"] for d in done)
    size = sum(d.result["bytes"] for d in done)
    console.print(
        f"[dim]wrote {total:,} messages ({size / total:,.0f} B mean, {size / 2**20:,.0f} MiB)"
        f" in {seconds:.0f} s ({total / seconds:,.0f}/s)[/dim]"
    )
    return seconds


def render(phases: dict[str, Phase], jobs: int, caption: str) -> tuple[Table, bool]:
    table = Table(title="B3IQ audit over a mixed log", caption=caption, caption_justify="left")
    for column in (
        "Measurement",
        "Events",
        "Sigs",
        "Seconds",
        "CPU s",
        "Events/s",
        "Sigs/s",
        "vs 2-core limit",
        "Sigs per CPU s vs baseline",
        "Target",
        "Peak RSS MiB",
        "Result",
    ):
        table.add_column(
            column, justify="left" if column in ("Measurement", "Target", "Result") else "right"
        )
    failed = False

    def row(
        label: str, r: dict[str, Any], *, vs: bool = False, target: float | None = None
    ) -> None:
        nonlocal failed
        rate = r["events"] / r["seconds"]
        sig_rate = r.get("sigs", 0) / r["seconds"]
        ratio = per_cpu = None
        if "sigs" in r:  # verify rows come with their baseline
            base = phases["baseline"].result
            ratio = sig_rate / (2 * base["sigs"] / base["seconds"]) if vs else None
            per_cpu = (r["sigs"] / r["cpu_s"]) / (base["sigs"] / base["cpu_s"])
        ok = None
        if target is not None:
            ok = (ratio if vs and ratio is not None else rate) >= target
        if r.get("broken"):
            ok = False
        failed = failed or ok is False
        verdict = {True: "[green]PASS[/]", False: "[bold red]FAIL[/]", None: "[dim]info[/]"}[ok]
        if r.get("broken"):
            verdict += f" [red]({r['broken']})[/]"
        rss = f"{r['rss_mib']:,.0f}"
        if r.get("child_rss_mib"):
            rss += f" (+{r['child_rss_mib']:,.0f} each)"
        table.add_row(
            label,
            f"{r['events']:,}",
            (f"{r['sigs']:,}" if "sigs" in r else "")
            + (f" ({r['vouched']:,} vouched)" if r.get("vouched") else ""),
            f"{r['seconds']:.1f}",
            f"{r['cpu_s']:.1f}"
            + (f" (main {r['main_cpu_s']:.1f})" if r["cpu_s"] - r["main_cpu_s"] > 0.5 else ""),
            f"{rate:,.0f}",
            f"{sig_rate:,.0f}" if sig_rate else "",
            f"{ratio:.2f}" if ratio is not None else "",
            f"{per_cpu:.2f}" if per_cpu is not None else "",
            "" if target is None else (f"≥ {target:.2f}" if vs else f"≥ {target:,.0f}/s"),
            rss,
            verdict,
        )

    if "baseline" in phases:
        base = phases["baseline"].result
        row("raw nacl verify, 1 core (baseline)", base)
        limit = 2 * base["sigs"] / base["seconds"]
        table.add_row("  x2: the 2-core limit", "", "", "", "", "", f"{limit:,.0f}", "1.00")
        row("audit verify, 1 process", phases["verify-1"].result, vs=True)
        row(
            f"audit verify --jobs {jobs}",
            phases["verify-jobs"].result,
            vs=True,
            target=VERIFY_MIN_RATIO,
        )
        row(
            "  … --every-signature (checkpoints vouch for none)",
            phases["verify-every"].result,
            vs=True,
        )
    if "replay" in phases:
        row("replay → PostgreSQL, all projections", phases["replay"].result, target=REPLAY_TARGET)
    if "reconcile" in phases:
        row("billing reconcile (log only)", phases["reconcile"].result, target=RECONCILE_TARGET)
    if "reconcile-read-models" in phases:
        row("billing reconcile vs read models", phases["reconcile-read-models"].result)
    return table, failed


PHASES = {
    "verify": ("baseline", "verify-1", "verify-jobs", "verify-every", "checkpointer"),
    "replay": ("replay",),
    "reconcile": ("reconcile",),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, help="messages in the log (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="100,000 messages")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--only",
        choices=sorted(PHASES),
        action="append",
        help="measure only this (repeatable); default: verify, replay, reconcile",
    )
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        return child(args.phase)
    events = args.events or (100_000 if args.quick else 1_000_000)
    heartbeats = int(events * HEARTBEAT_SHARE)
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="b3iq-bench-audit-"))
    try:
        with servers(workdir) as env:
            chosen = [p for group in args.only or PHASES for p in PHASES[group]]
            if "replay" in chosen and "reconcile" in chosen:
                chosen.append("reconcile-read-models")  # against what the replay built
            plan = planned(env, events - heartbeats, heartbeats, args.jobs)
            phases, generated = measure(env, plan, chosen)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load = os.getloadavg()
    caption = "\n".join(
        [
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average"
            f" {load[0]:.1f} at the end (other work on the machine takes CPU too); {env.where}.",
            f"Log: {events:,} messages written in {generated:.0f} s, {heartbeats:,} of them"
            f" heartbeats; checkpoint every {CHECKPOINT_EVERY:,} ledger messages.",
            "Baseline: nacl VerifyKey.verify of every signature (envelope, node evidence,"
            f" receipt) in the first {SAMPLE:,} messages, one core; the 2-core limit is twice it.",
            "Verify: `audit verify` as the CLI runs it, from JetStream; Sigs = Ed25519"
            " signatures settled (the control plane's on every event, the nodes' inside):"
            " checked, or vouched for by a signed checkpoint whose checkpointer checked them"
            " and whose root pins their bytes; --every-signature checks each.",
            "CPU s: this process and its workers, user + system; sigs per CPU s vs baseline"
            " is the share of the limit its processes would reach with both cores to"
            " themselves (nats-server not counted; other work on the machine slows the wall"
            " clock, not this). Peak RSS: each phase's own child process (+ its largest"
            " worker).",
            "Replay: every projection from sequence 1 into a fresh schema, both streams."
            " Reconcile: the ledger stream alone, read and folded.",
            f"Whole run {time.perf_counter() - started:.0f} s.",
        ]
    )
    table, failed = render(phases, args.jobs, caption)
    console.print(table)
    return 1 if failed else 0


def planned(env: Env, ledger: int, heartbeats: int, jobs: int) -> Plan:
    return Plan(
        nats_url=env.nats_url,
        dsn=env.dsn,
        schema=env.schema if env.schema != "public" else "bench_audit",
        prefix=env.prefix + "audit",
        seed=Signer.generate().seed,
        ledger=ledger,
        heartbeats=heartbeats,
        jobs=jobs,
    )


def measure(env: Env, plan: Plan, chosen: list[str]) -> tuple[dict[str, Phase], float]:
    asyncio.run(declare(plan))  # once, before two writers would race to
    generated = generate(plan)
    phases: dict[str, Phase] = {}
    for name in chosen:
        phases[name] = run_phase(name, plan)
        r = phases[name].result
        console.print(f"[dim]{name}: {r['events']:,} events in {r['seconds']:.1f} s[/dim]")
    asyncio.run(clean_up(plan, streams=env.prefix != "bench", schema=env.schema != "public"))
    return phases, generated


async def declare(plan: Plan) -> None:
    store = await JetStreamEventStore.connect(plan.nats_url, Topology(prefix=plan.prefix))
    await store.close()


async def clean_up(plan: Plan, *, streams: bool, schema: bool) -> None:
    """On servers we did not start, leave nothing behind."""
    if streams:
        store = await JetStreamEventStore.connect(plan.nats_url, Topology(prefix=plan.prefix))
        for spec in store.topology.streams:
            await store.js.delete_stream(spec.name)
        await store.close()
    if not schema:
        return
    conn = await asyncpg.connect(plan.dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{plan.schema}" CASCADE')
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
