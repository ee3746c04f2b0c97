"""Throughput of the event log: signed appends, pipelined evidence, replay, verification.

    .venv/bin/python ops/bench/bench_event_log.py [--events N] [--quick] [--no-uvloop]

Starts its own nats-server and PostgreSQL (fsync on) in a temp dir, unless
B3IQ_NATS_URL / B3IQ_DATABASE_URL name servers to use (then it works on streams with a
random prefix and in a fresh schema, and removes both afterwards). Every measurement is
printed next to a baseline measured in the same run; the exit status is 1 if a target
failed.
"""

import argparse
import asyncio
import gc
import importlib.metadata
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import asyncpg
import nacl.signing
import nats
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adapters.jetstream import JetStreamEventStore
from adapters.postgres import create_pool, migrate
from adapters.projector import ProjectionRunner
from adapters.recorder import Decide, Recorder
from adapters.urls import redact
from domain.canonical import b64decode, b64encode, canonical_bytes
from domain.decoding import Decoded, decode_stored
from domain.envelope import StoredEvent, split_wire
from domain.events import Event, HeartbeatRecorded, NodeEnrolled, NodeEvidence, SignerKeyPublished
from domain.sealing import Sealed, seal
from domain.signing import Keyring, Signer
from domain.streams import Topology
from domain.verification import LogVerifier
from ops.devstack.nats_server import NatsServer
from ops.devstack.postgres_server import PostgresServer
from projections.catalog import all_projections

T = TypeVar("T")
# Piped output would wrap the table at 80 columns.
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 150)

PIPELINED_TARGET = 15_000.0
REPLAY_TARGET = 50_000.0
VERIFY_TARGET = 10_000.0
# A conditional record costs two round trips (read the subject's tail, then the
# conditional publish) where the baseline costs one, so half its rate is the ceiling; we
# allow one more publish's worth for decoding the tail, sealing and signing.
RECORD_MIN_RATIO = 0.33
READ_BATCH = 5000


class Sizes(NamedTuple):
    sequential: int
    """Recorder.record calls in each sequential variant."""
    subjects: int
    """Subjects the multi-subject sequential variant cycles through."""
    pipelined: int
    """Heartbeats sealed and appended in the pipelined measurement."""
    nodes: int
    """Node ids the heartbeats are spread over (and NodeEnrolled events on the ledger)."""
    heartbeats: int
    """Heartbeats on the stream the projections replay."""
    chunk: int
    """Heartbeats per Recorder.record_evidence / append_many call."""
    rounds: int
    """Rounds the sequential measurement alternates its variants and baseline in."""


FULL = Sizes(
    sequential=3000,
    subjects=8,
    pipelined=20_000,
    nodes=200,
    heartbeats=100_000,
    chunk=1000,
    rounds=5,
)
QUICK = Sizes(
    sequential=600,
    subjects=8,
    pipelined=5_000,
    nodes=200,
    heartbeats=10_000,
    chunk=1000,
    rounds=5,
)
WARMUP = 50


@dataclass
class Row:
    label: str
    events: int
    seconds: float
    baseline: str
    baseline_events: int
    baseline_seconds: float
    size: int = 0
    """Mean envelope size in bytes."""
    target: float | None = None
    """Events per second to reach."""
    min_ratio: float | None = None
    """Fraction of the baseline's rate to reach."""
    broken: str = ""
    """A correctness problem seen while measuring: FAIL, however fast it was."""

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def baseline_rate(self) -> float:
        return self.baseline_events / self.baseline_seconds

    @property
    def ratio(self) -> float:
        return self.rate / self.baseline_rate

    def target_text(self) -> str:
        if self.target is not None:
            return f"≥ {self.target:,.0f}/s"
        if self.min_ratio is not None:
            return f"≥ {self.min_ratio:.2f}x baseline"
        return "—"

    def verdict(self) -> str | None:
        """PASS / FAIL, or None for a row shown only to explain another."""
        if self.broken:
            return "FAIL"
        if self.target is not None:
            return "PASS" if self.rate >= self.target else "FAIL"
        if self.min_ratio is not None:
            return "PASS" if self.ratio >= self.min_ratio else "FAIL"
        return None


class Env(NamedTuple):
    nats_url: str
    dsn: str
    schema: str
    prefix: str
    """Starts the prefix of every topology we create; unique when the servers are shared."""
    where: str


# --- realistic events (the pattern of tests/support.py) -------------------------------


def evidence(node: Signer, body: object) -> NodeEvidence:
    text = canonical_bytes(body)
    return NodeEvidence(key_id=node.key_id, body=text.decode(), sig=node.sign(text))


def enrolled(node_id: str, node: Signer, challenge: int = 0) -> NodeEnrolled:
    return NodeEnrolled(
        node_id=node_id,
        key_id=node.key_id,
        public_key=b64encode(node.public_key),
        agent_version="0.1.0",
        evidence=evidence(node, {"challenge": f"n-{node_id}-{challenge}"}),
    )


def heartbeat(node_id: str, seq: int, node: Signer) -> HeartbeatRecorded:
    return HeartbeatRecorded(
        node_id=node_id,
        heartbeat_seq=seq,
        sent_at=datetime(2026, 11, 25, 12, 0, seq % 60, tzinfo=UTC),
        agent_version="0.1.0",
        evidence=evidence(node, {"node_id": node_id, "seq": seq, "ready": True}),
    )


def node_keys(count: int) -> list[tuple[str, Signer]]:
    return [(f"node-{i:04d}", Signer.generate()) for i in range(count)]


def heartbeats(
    topology: Topology, nodes: Sequence[tuple[str, Signer]], start: int, count: int
) -> list[tuple[str, Event]]:
    """Heartbeats number ``start`` .. ``start + count - 1``, round-robin over the nodes."""
    items: list[tuple[str, Event]] = []
    for n in range(start, start + count):
        node_id, key = nodes[n % len(nodes)]
        items.append(
            (topology.heartbeat_subject(node_id), heartbeat(node_id, n // len(nodes), key))
        )
    return items


def seal_unchained(
    items: Sequence[tuple[str, Event]], signer: Signer, now: datetime
) -> list[tuple[str, Sealed]]:
    return [
        (subject, seal(subject, [event], prev_hash=None, signer=signer, now=now, chained=False)[0])
        for subject, event in items
    ]


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """Yields a one-item list that holds the elapsed seconds once the block is done."""
    gc.collect()  # garbage from setup must not be collected on the timed path
    elapsed = [0.0]
    start = time.perf_counter()
    try:
        yield elapsed
    finally:
        elapsed[0] = time.perf_counter() - start


async def open_store(env: Env, name: str) -> tuple[JetStreamEventStore, Topology]:
    topology = Topology(prefix=env.prefix + name)
    return await JetStreamEventStore.connect(env.nats_url, topology, name="b3iq-bench"), topology


async def close_store(store: JetStreamEventStore) -> None:
    for spec in store.topology.streams:
        await store.js.delete_stream(spec.name)
    await store.close()


# --- 1. sequential conditional appends ------------------------------------------------


def appending(plan: Iterator[list[Event]]) -> Decide:
    """A decision that appends the plan's next events together, whatever the tail holds."""

    def decide(_tail: Decoded | None) -> list[Event]:
        return next(plan)

    return decide


def replaying(plan: Iterator[Event]) -> Decide:
    """A decision that appends the plan's next event."""
    return appending([event] for event in plan)


async def sequential_appends(env: Env, signer: Signer, sizes: Sizes) -> list[Row]:
    store, topology = await open_store(env, "seq")
    try:
        node = Signer.generate()
        variants = {
            "1 subject": [topology.subject("node", "one")],
            f"{sizes.subjects} subjects": [
                topology.subject("node", f"few-{i}") for i in range(sizes.subjects)
            ],
        }
        recorder = Recorder(store, signer, topology)
        warmup = topology.subject("node", "warmup")
        decide = replaying(iter([enrolled("warmup", node, n) for n in range(WARMUP)]))
        for _ in range(WARMUP):
            await recorder.record(warmup, decide)
        tail = await store.last(warmup)
        size = len(tail.data) if tail else 0

        payload = b"x" * size
        for _ in range(WARMUP):
            await store.js.publish(topology.subject("raw", "warmup"), payload)

        # Rounds alternate the variants with the baseline, so that drift in the machine's
        # load hits all of them alike.
        per_round = max(sizes.sequential // sizes.rounds, 1)
        raw_seconds = batch_seconds = 0.0
        seconds = dict.fromkeys(variants, 0.0)
        batched = topology.subject("node", "batched")
        for round_ in range(sizes.rounds):
            raw = [(topology.subject("raw", f"r{n % sizes.subjects}"), uuid.uuid4().hex)
                   for n in range(per_round)]  # fmt: skip
            with stopwatch() as took:
                for subject, msg_id in raw:
                    await store.js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
            raw_seconds += took[0]
            for label, subjects in variants.items():
                plan = [subjects[n % len(subjects)] for n in range(per_round)]
                events = [
                    enrolled(subject.rsplit(".", 1)[1], node, round_ * per_round + n)
                    for n, subject in enumerate(plan)
                ]
                decide = replaying(iter(events))
                with stopwatch() as took:
                    for subject in plan:
                        await recorder.record(subject, decide)
                seconds[label] += took[0]
            # Three events in one append (a settlement's debit, payout and release) go as a
            # JetStream atomic batch, which the server syncs to disk before it answers.
            rounds_of_3: list[list[Event]] = [
                [enrolled("batched", node, 3 * (round_ * per_round + n) + k) for k in range(3)]
                for n in range(per_round // 3)
            ]
            decide_3 = appending(iter(rounds_of_3))
            with stopwatch() as took:
                for _ in rounds_of_3:
                    await recorder.record(batched, decide_3)
            batch_seconds += took[0]

        total = per_round * sizes.rounds
        return [
            *(
                Row(
                    f"1 record(), conditional, {label}",
                    total,
                    took_s,
                    "js.publish, same size",
                    total,
                    raw_seconds,
                    size=size,
                    min_ratio=RECORD_MIN_RATIO,
                )
                for label, took_s in seconds.items()
            ),
            Row(
                "1 record() of 3 events (an atomic batch: appends/s)",
                per_round // 3 * sizes.rounds,
                batch_seconds,
                "js.publish, same size",
                total,
                raw_seconds,
                size=size,
            ),
        ]
    finally:
        await close_store(store)


# --- 2. pipelined unconditional appends -----------------------------------------------


async def pipelined_appends(env: Env, signer: Signer, sizes: Sizes) -> list[Row]:
    store, topology = await open_store(env, "hb")
    try:
        with console.status(f"building {sizes.pipelined:,} node-signed heartbeats…"):
            items = heartbeats(topology, node_keys(sizes.nodes), 0, sizes.pipelined)
        recorder = Recorder(store, signer, topology)

        with stopwatch() as signed:
            results = [
                r for c in chunks(items, sizes.chunk) for r in await recorder.record_evidence(c)
            ]
        broken = _appends_problem(results, len(items))

        now = datetime.now(UTC)
        with stopwatch() as sealing:
            sealed = seal_unchained(items, signer, now)

        with stopwatch() as presealed:
            results = [r for c in chunks(sealed, sizes.chunk) for r in await store.append_many(c)]
        broken = broken or _appends_problem(results, len(items))

        key = nacl.signing.SigningKey(signer.seed)
        bodies = [bytes(split_wire(s.data).body) for _, s in sealed]
        with stopwatch() as raw_sign:
            for body in bodies:
                key.sign(body)

        size = sum(len(s.data) for _, s in sealed) // len(sealed)
        return [
            Row(
                f"2 seal + append_many, {sizes.nodes} nodes",
                len(items),
                signed[0],
                "append_many, pre-sealed",
                len(sealed),
                presealed[0],
                size=size,
                target=PIPELINED_TARGET,
                broken=broken,
            ),
            Row(
                "  seal only (encode + sign, no I/O)",
                len(items),
                sealing[0],
                "nacl sign, same bodies",
                len(bodies),
                raw_sign[0],
                size=size,
            ),
        ]
    finally:
        await close_store(store)


def _appends_problem(results: Sequence[Any], expected: int) -> str:
    fresh = sum(1 for r in results if not r.duplicate and r.first_seq > 0)
    return "" if fresh == expected else f"{fresh} of {expected} appends landed"


# --- 3. replay into Postgres, 4. verification -----------------------------------------


async def fill(
    store: JetStreamEventStore, topology: Topology, signer: Signer, sizes: Sizes
) -> tuple[int, int]:
    """A signing key and one NodeEnrolled per node on the ledger, heartbeats on theirs."""
    nodes = node_keys(sizes.nodes)
    now = datetime.now(UTC)
    ledger: list[tuple[str, Event]] = [
        (topology.subject("key", signer.key_id),
         SignerKeyPublished(key_id=signer.key_id, public_key=b64encode(signer.public_key))),
        *((topology.subject("node", node_id), enrolled(node_id, key)) for node_id, key in nodes),
    ]  # fmt: skip
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("filling the ledger", total=len(ledger))
        sealed = [
            (subject, seal(subject, [event], prev_hash=None, signer=signer, now=now)[0])
            for subject, event in ledger
        ]
        await store.append_many(sealed)
        progress.update(task, completed=len(ledger))
        task = progress.add_task("filling the heartbeat stream", total=sizes.heartbeats)
        for start in range(0, sizes.heartbeats, READ_BATCH):
            count = min(READ_BATCH, sizes.heartbeats - start)
            batch = seal_unchained(heartbeats(topology, nodes, start, count), signer, now)
            await store.append_many(batch)
            progress.advance(task, count)
    _, ledger_last = await store.bounds(topology.ledger.name)
    _, heartbeats_last = await store.bounds(topology.heartbeats.name)
    return ledger_last, heartbeats_last


async def read_stream(
    store: JetStreamEventStore, stream: str, last: int, *, decode: bool = False
) -> list[StoredEvent]:
    # Stop at the known last sequence: an empty fetch at the end waits out its timeout.
    reader = await store.reader(stream, 1)
    events: list[StoredEvent] = []
    try:
        while not events or events[-1].seq < last:
            batch = await reader.next_batch(READ_BATCH, 1.0)
            if not batch:
                raise RuntimeError(f"{stream} ended at {len(events)} of {last} events")
            if decode:
                for stored in batch:
                    decode_stored(stored)
            events.extend(batch)
    finally:
        await reader.close()
    return events


async def replay_and_verify(env: Env, signer: Signer, sizes: Sizes) -> list[Row]:
    store, topology = await open_store(env, "")
    try:
        started = time.perf_counter()
        ledger_last, heartbeats_last = await fill(store, topology, signer, sizes)
        total = ledger_last + heartbeats_last
        console.print(
            f"[dim]filled {heartbeats_last:,} heartbeats and {ledger_last:,} ledger events"
            f" in {time.perf_counter() - started:.1f} s[/dim]"
        )
        lasts = {topology.ledger.name: ledger_last, topology.heartbeats.name: heartbeats_last}

        with stopwatch() as reading:
            ledger, beats = await asyncio.gather(
                *(read_stream(store, name, last) for name, last in lasts.items())
            )
        with stopwatch() as decoding:
            await asyncio.gather(
                *(read_stream(store, name, last, decode=True) for name, last in lasts.items())
            )

        await migrate(env.dsn, env.schema)
        pool = await create_pool(env.dsn, schema=env.schema, max_size=4)
        try:
            runners = [ProjectionRunner(pool, store, topology, p) for p in all_projections()]
            with stopwatch() as replay:
                await asyncio.gather(*(r.catch_up(lasts[r.stream], timeout=600) for r in runners))
            for runner in runners:
                await runner.reset()
            broken = await _read_models_problem(pool, sizes, heartbeats_last)
        finally:
            await pool.close()

        size = sum(len(e.data) for e in (*ledger, *beats)) // total
        rows = [
            Row(
                f"3 replay → PostgreSQL, {len(runners)} projections",
                total,
                replay[0],
                "store reader only",
                total,
                reading[0],
                size=size,
                target=REPLAY_TARGET,
                broken=broken,
            ),
            Row(
                "  reader + decode_stored only",
                total,
                decoding[0],
                "store reader only",
                total,
                reading[0],
                size=size,
            ),
        ]
        rows.append(verification(signer, topology, [*ledger, *beats]))
        return rows
    finally:
        await close_store(store)


async def _read_models_problem(pool: asyncpg.Pool, sizes: Sizes, heartbeats_last: int) -> str:
    async with pool.acquire() as conn:
        nodes = await conn.fetchval("SELECT count(*) FROM nodes")
        row = await conn.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(heartbeat_count), 0) AS beats FROM node_heartbeats"
        )
        keys = await conn.fetchval("SELECT count(*) FROM signer_keys")
    found = (nodes, row["n"], row["beats"], keys)
    expected = (sizes.nodes, min(sizes.nodes, heartbeats_last), heartbeats_last, 1)
    if found == expected:
        return ""
    return f"read models hold (nodes, heartbeat rows, heartbeats, keys) {found}, not {expected}"


def verification(signer: Signer, topology: Topology, events: Sequence[StoredEvent]) -> Row:
    verifier = LogVerifier(
        Keyring([signer.public_key]),
        unchained_streams=frozenset({topology.heartbeats.name}),
    )
    problems = 0
    with stopwatch() as verifying:
        for stored in events:
            problems += len(verifier.feed(stored))

    verify_key = nacl.signing.VerifyKey(signer.public_key)
    signed = [(bytes(w.body), b64decode(w.sig)) for w in (split_wire(e.data) for e in events)]
    with stopwatch() as raw:
        for body, signature in signed:
            verify_key.verify(body, signature)
    return Row(
        "4 LogVerifier.feed, 1 core",
        len(events),
        verifying[0],
        "nacl verify, same bodies",
        len(signed),
        raw[0],
        size=sum(len(e.data) for e in events) // len(events),
        target=VERIFY_TARGET,
        broken=f"{problems} problems reported" if problems else "",
    )


# --- running it -----------------------------------------------------------------------


async def run_all(env: Env, sizes: Sizes) -> tuple[list[Row], str]:
    signer = Signer.generate()
    rows: list[Row] = []
    with console.status("1/3 sequential conditional appends…"):
        rows += await sequential_appends(env, signer, sizes)
    with console.status("2/3 pipelined unconditional appends…"):
        rows += await pipelined_appends(env, signer, sizes)
    rows += await replay_and_verify(env, signer, sizes)
    return rows, await server_versions(env)


async def server_versions(env: Env) -> str:
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
        commit = await conn.fetchval("SHOW synchronous_commit")
    finally:
        await conn.close()
    return (
        f"{nats_version} (file storage), PostgreSQL {pg}"
        f" (fsync {fsync}, synchronous_commit {commit})"
    )


def render(rows: Sequence[Row], caption: str) -> Table:
    table = Table(title="B3IQ event log throughput", caption=caption, caption_justify="left")
    table.add_column("Measurement")
    table.add_column("Bytes", justify="right")
    table.add_column("Events", justify="right")
    table.add_column("Events/s", justify="right")
    table.add_column("Baseline (same run)")
    table.add_column("Baseline/s", justify="right")
    table.add_column("Ratio", justify="right")
    table.add_column("Target")
    table.add_column("Result")
    for row in rows:
        verdict = row.verdict()
        result = {"PASS": "[green]PASS[/]", "FAIL": "[bold red]FAIL[/]", None: "[dim]info[/]"}[
            verdict
        ]
        if row.broken:
            result += f" [red]({row.broken})[/]"
        table.add_row(
            row.label,
            f"{row.size:,}",
            f"{row.events:,}",
            f"{row.rate:,.0f}",
            row.baseline,
            f"{row.baseline_rate:,.0f}",
            f"{row.ratio:.2f}x",
            row.target_text(),
            result,
        )
    return table


def run(main: Coroutine[Any, Any, T], use_uvloop: bool) -> tuple[T, str]:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main), f"uvloop {importlib.metadata.version('uvloop')}"
    return asyncio.run(main), "asyncio (default loop)"


@contextmanager
def servers(workdir: Path) -> Iterator[Env]:
    nats_url = os.environ.get("B3IQ_NATS_URL")
    dsn = os.environ.get("B3IQ_DATABASE_URL")
    nats = postgres = None
    try:
        with console.status("starting NATS and PostgreSQL…"):
            if not nats_url:
                nats = NatsServer(workdir / "nats", port=None)
                nats.start()
                nats_url = nats.url
            if not dsn:
                if os.geteuid() == 0:
                    workdir.chmod(0o711)  # PostgreSQL runs as nobody, who must reach its data
                postgres = PostgresServer(workdir / "pg", port=None)
                postgres.start()
                postgres.create_database("bench")
                dsn = postgres.dsn("bench")
        shared = nats is None or postgres is None
        suffix = uuid.uuid4().hex[:8]
        yield Env(
            nats_url=nats_url,
            dsn=dsn,
            schema=f"bench_{suffix}" if postgres is None else "public",
            prefix=f"bench{suffix}" if nats is None else "bench",
            where=(
                "servers started by the benchmark"
                if not shared
                else f"NATS {nats_url}, PostgreSQL {redact(dsn)}"
            ),
        )
    finally:
        if postgres is not None:
            postgres.stop()
        if nats is not None:
            nats.stop()


async def drop_schema(env: Env) -> None:
    if env.schema == "public":
        return
    conn = await asyncpg.connect(env.dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{env.schema}" CASCADE')
    finally:
        await conn.close()


async def bench(env: Env, sizes: Sizes) -> tuple[list[Row], str]:
    try:
        return await run_all(env, sizes)
    finally:
        await drop_schema(env)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--events",
        type=int,
        help="heartbeats to replay and verify (default 100,000; --quick 10,000)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: under 30 s")
    parser.add_argument("--no-uvloop", action="store_true", help="use asyncio's own loop")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.events:
        sizes = sizes._replace(heartbeats=args.events, pipelined=min(sizes.pipelined, args.events))

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="b3iq-bench-"))
    try:
        with servers(workdir) as env:
            (rows, versions), loop = run(bench(env, sizes), use_uvloop=not args.no_uvloop)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    caption = "\n".join(
        [
            f"Event loop: {loop}. Python {platform.python_version()}, {os.cpu_count()} CPUs;"
            f" {versions}; {env.where}.",
            "1: read the subject's tail, decide, seal, append with"
            " Nats-Expected-Last-Subject-Sequence, one event at a time; baseline: awaited"
            " js.publish of as many bytes (with Nats-Msg-Id).",
            f"2: Recorder.record_evidence, {sizes.chunk:,} heartbeats a call; seal only: the"
            " same events sealed again, which the pre-sealed baseline then appends.",
            "3: events in both streams / time until every projection has caught up, from"
            " sequence 1, on a fresh schema; baselines read both streams concurrently.",
            "4: the ledger and heartbeat events read back in 3, each checked for the"
            " control plane's envelope signature and the node's own signature inside (two"
            " Ed25519 verifies per heartbeat); the baseline verifies one signature per event"
            " (no decoding, hashing or chain checks).",
            f"Whole run {time.perf_counter() - started:.0f} s.",
        ]
    )
    console.print(render(rows, caption))
    return 1 if any(row.verdict() == "FAIL" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
