"""A replay spread over processes: the projections split into groups, each group caught up
by a ``replay_all`` of its own in a spawned process, reading the streams it needs itself.

One process replaying everything is bound by its own CPU (reading, decoding, building
rows), while PostgreSQL has cores to spare. Billing writes most of the rows: replaying it
takes about as long as the other nine projections together, so two processes cut the
replay nearly in half. Each runner's rows and checkpoint commit together as always, so a
group that fails leaves its projections where they were, and the caller sees the error.
"""

import asyncio
import contextlib
import heapq
import multiprocessing
import queue
import traceback
from collections.abc import Sequence
from typing import Any, NamedTuple

from adapters.audit_workers import main_unseen
from adapters.postgres import DatabaseUnavailable, create_pool
from adapters.projector import ProjectionRunner
from adapters.stream_replay import Progress, replay_all
from domain.partitions import Partition
from domain.ports import EventStore, StoreUnavailable
from domain.streams import Topology

WEIGHTS = {"billing": 9.0}
"""A projection's replay cost against an ordinary one's (1), as bench_audit measures it."""


class ReplayAt(NamedTuple):
    """Where a child reads and writes (no secrets beyond what the URLs carry)."""

    nats_url: str
    topology: Topology
    """Whole: connecting declares the streams, so a default heartbeat retention would
    reset the deployment's."""
    replicas: int
    dsn: str
    schema: str
    batch_size: int


class _Runner(NamedTuple):
    projection: str
    partition: Partition
    target: int


class ReplayFailed(Exception):
    pass


def groups_of(targets: Sequence[tuple[ProjectionRunner, int]], jobs: int) -> list[list[_Runner]]:
    """At most ``jobs`` groups of about equal weight, heaviest first (greedy)."""
    specs = sorted(
        (_Runner(r.projection.name, r.partition, t) for r, t in targets),
        key=lambda s: -WEIGHTS.get(s.projection, 1.0),
    )
    loads: list[tuple[float, int]] = [(0.0, g) for g in range(max(1, min(jobs, len(specs))))]
    groups: list[list[_Runner]] = [[] for _ in loads]
    for spec in specs:
        load, g = heapq.heappop(loads)
        groups[g].append(spec)
        heapq.heappush(loads, (load + WEIGHTS.get(spec.projection, 1.0), g))
    return [g for g in groups if g]


def _child(
    at: ReplayAt, g: int, group: list[_Runner], out: "multiprocessing.Queue[tuple[Any, ...]]"
) -> None:
    # Imported here: the parent needs none of it to hand out the work.
    from adapters.jetstream import JetStreamEventStore
    from projections.catalog import all_projections

    async def run() -> int:
        store = await JetStreamEventStore.connect(
            at.nats_url, at.topology, replicas=at.replicas, name="b3iq-replay"
        )
        pool = await create_pool(at.dsn, schema=at.schema, max_size=len(group) + 1)
        try:
            by_name = {p.name: p for p in all_projections()}
            runners = [
                (
                    ProjectionRunner(
                        pool,
                        store,
                        at.topology,
                        by_name[r.projection],
                        batch_size=at.batch_size,
                        partition=r.partition,
                    ),
                    r.target,
                )
                for r in group
            ]
            return await replay_all(
                store,
                runners,
                at.batch_size,
                lambda what, done, total: out.put(("progress", g, what, done, total)),
            )
        finally:
            await pool.close()
            await store.close()

    try:
        out.put(("done", asyncio.run(run())))
    except (StoreUnavailable, DatabaseUnavailable) as exc:
        out.put(("failed", exc))  # raised again as itself: the CLI says which server is away
    except BaseException:
        out.put(("failed", ReplayFailed(traceback.format_exc())))


async def replay_in_processes(
    store: EventStore,
    at: ReplayAt,
    targets: Sequence[tuple[ProjectionRunner, int]],
    jobs: int,
    progress: Progress | None = None,
) -> int:
    """Catch every runner's projection up to its target (into ``at.schema``), ``jobs``
    processes at once (one: the runners themselves, here); returns how many events were
    read, all processes together."""
    if jobs <= 1:
        return await replay_all(store, targets, at.batch_size, progress)
    context = multiprocessing.get_context("spawn")  # no fork of a process holding threads
    out: multiprocessing.Queue[tuple[Any, ...]] = context.Queue()
    children = [
        context.Process(target=_child, args=(at, g, group, out), daemon=True)
        for g, group in enumerate(groups_of(targets, jobs))
    ]
    with main_unseen():
        for child in children:
            child.start()
    read, running = 0, len(children)
    positions: dict[str, dict[int, int]] = {}
    try:
        while running:
            message = await asyncio.to_thread(_next, out, children)
            if message[0] == "progress":
                _, g, what, done, total = message
                # Each group reads its streams itself: a stream is as far as its slowest.
                positions.setdefault(what, {})[g] = done
                if progress:
                    progress(what, min(positions[what].values()), total)
            elif message[0] == "done":
                read, running = read + message[1], running - 1
            else:
                raise message[1]
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
            child.join()
        out.close()
    return read


def _next(out: "multiprocessing.Queue[tuple[Any, ...]]", children: list[Any]) -> tuple[Any, ...]:
    while True:
        with contextlib.suppress(queue.Empty):
            return out.get(timeout=1.0)
        if not any(c.is_alive() for c in children) and out.empty():
            codes = [c.exitcode for c in children]
            return ("failed", ReplayFailed(f"replay processes exited with {codes} early"))
