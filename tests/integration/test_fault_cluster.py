"""A 3-server JetStream cluster (R3 streams) loses a member (kill -9) while writers
append: the one the client is connected to and that leads both streams, the worst case.
Every acknowledged event is still there once, the hash chains and sequences verify, and
appends carry on."""

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

from adapters.audit import read_log, verify_log
from adapters.jetstream import JetStreamEventStore
from adapters.recorder import Recorder
from domain.decoding import Decoded, decode_stored
from domain.events import Event, HeartbeatRecorded
from domain.ports import ConcurrencyConflict, StoreUnavailable
from domain.sealing import Sealed, seal
from domain.signing import Keyring, Signer
from domain.streams import Topology
from ops.devstack.nats_cluster import NatsCluster
from tests.fault_support import FaultCounts, count
from tests.support import enrolled, heartbeat

WRITERS = 4
BATCH = 20
AFTER_RECOVERY = 20
"""Appends each chained writer (a quarter of that in batches, the evidence writer) must
make after the kill: the service continues."""

Key = tuple[str, str, int]
"""(stream, node id, heartbeat sequence): one logical event."""


class Load:
    def __init__(self, store: JetStreamEventStore, topology: Topology, signer: Signer) -> None:
        self.store, self.topology, self.signer = store, topology, signer
        self.recorder = Recorder(store, signer, topology)
        self.nodes = {f"w{w}": Signer.generate() for w in range(WRITERS)}
        self.accepted: list[Key] = []
        self.acked: list[tuple[float, int]] = []
        """When each append was acknowledged, and how many events it held."""
        self.unavailable = 0
        self.killed_at = float("inf")
        self.stop = asyncio.Event()

    def _ack(self, keys: list[Key]) -> None:
        self.accepted.extend(keys)
        self.acked.append((time.monotonic(), len(keys)))

    def after_kill(self) -> int:
        return sum(n for t, n in self.acked if t > self.killed_at)

    async def enroll(self) -> None:
        for node_id, node in self.nodes.items():
            subject = self.topology.subject("node", node_id)
            await self.recorder.record(subject, lambda _, n=node_id, k=node: [enrolled(n, k)])

    async def chained(self, node_id: str) -> None:
        """The ledger's path: conditional, hash-chained appends; a lost ack is settled by
        deciding again on the real tail, as the API's recorder does."""
        subject = self.topology.subject("node", node_id)
        node, seq, after = self.nodes[node_id], 0, 0
        while not self.stop.is_set() or after < AFTER_RECOVERY:
            seq += 1

            def decide(tail: Decoded | None, seq: int = seq) -> list[Event]:
                last = tail.event if tail is not None else None
                done = last.heartbeat_seq if isinstance(last, HeartbeatRecorded) else 0
                return [heartbeat(node_id, seq, node)] if done < seq else []

            while True:
                try:
                    result = await self.recorder.record(subject, decide)
                except (StoreUnavailable, ConcurrencyConflict):
                    self.unavailable += 1
                    self.recorder.forget(subject)
                    await asyncio.sleep(0.05)
                    continue
                break
            if result is not None:  # None: an earlier try landed, its ack was lost
                self._ack([(self.topology.ledger.name, node_id, seq)])
                after += time.monotonic() > self.killed_at

    async def evidence(self) -> None:
        """The heartbeat path: pipelined batches, retried as the same sealed messages
        (their ids dedupe a batch that partly landed)."""
        stream, seq, after = self.topology.heartbeats.name, 0, 0
        while not self.stop.is_set() or after < AFTER_RECOVERY // 4:
            items: list[tuple[str, Sealed]] = []
            keys: list[Key] = []
            for _ in range(BATCH):
                seq += 1
                node_id = f"w{seq % WRITERS}"
                subject = self.topology.heartbeat_subject(node_id)
                event = heartbeat(node_id, seq, self.nodes[node_id])
                sealed = seal(
                    subject,
                    [event],
                    prev_hash=None,
                    signer=self.signer,
                    now=self.recorder.clock(),
                    chained=False,
                )
                items.append((subject, sealed[0]))
                keys.append((stream, node_id, seq))
            while True:
                try:
                    await self.store.append_many(items)
                except StoreUnavailable:
                    self.unavailable += 1
                    await asyncio.sleep(0.05)
                    continue
                break
            self._ack(keys)
            after += time.monotonic() > self.killed_at
            await asyncio.sleep(0.05)


def stored_key(stream: str, data: Decoded) -> Key | None:
    event = data.event
    if isinstance(event, HeartbeatRecorded):
        return (stream, event.node_id, event.heartbeat_seq)
    return None


async def lead_from(store: JetStreamEventStore, stream: str, member: str) -> None:
    """Move the stream's leadership to ``member`` (a stepdown with a preferred successor)."""
    for _ in range(100):
        info = await store.js.stream_info(stream)
        if info.cluster and info.cluster.leader == member:
            return
        if info.cluster and info.cluster.leader:
            request = json.dumps({"placement": {"preferred": member}}).encode()
            await store.nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", request, timeout=5)
        await asyncio.sleep(0.1)
    raise AssertionError(f"{stream} is not led by {member}")


async def test_killing_the_member_that_leads_under_load_loses_nothing(
    tmp_path: Path, record_counts: Callable[[FaultCounts], None]
) -> None:
    topology = Topology()
    signer = Signer.generate()
    with NatsCluster(tmp_path / "cluster") as cluster:
        store = await JetStreamEventStore.connect(cluster.url, topology, replicas=3)
        try:
            ledger = await store.js.stream_info(topology.ledger.name)
            assert ledger.config.num_replicas == 3
            victim = next(
                i
                for i, m in enumerate(cluster.members)
                if m.client_port == store.nc.connected_url.port
            )
            for spec in topology.streams:
                await lead_from(store, spec.name, cluster.members[victim].name)
            load = Load(store, topology, signer)
            await load.enroll()
            writers = [asyncio.create_task(load.chained(n)) for n in load.nodes]
            writers.append(asyncio.create_task(load.evidence()))
            await asyncio.sleep(1.0)
            before = len(load.accepted)
            assert before > 0

            load.killed_at = time.monotonic()
            await asyncio.to_thread(cluster.servers[victim].kill)
            await asyncio.sleep(1.0)
            load.stop.set()  # the chained writers go on until each has appended after it
            await asyncio.wait_for(asyncio.gather(*writers), 30)
            assert load.after_kill() >= WRITERS * AFTER_RECOVERY + BATCH * AFTER_RECOVERY // 4
            times = [t for t, _ in load.acked]
            gaps = [b - a for a, b in itertools.pairwise(times)]

            await asyncio.to_thread(cluster.servers[victim].start)  # it rejoins and catches up
            await asyncio.to_thread(cluster.wait_ready)

            stored: list[Key] = []
            verifier, problems = await verify_log(
                read_log(store, topology), topology, Keyring([signer.public_key])
            )
            async for event in read_log(store, topology):
                key = stored_key(event.stream, decode_stored(event))
                if key is not None:
                    stored.append(key)
            result = count(
                "3-server R3 cluster, member kill -9",
                load.accepted,
                stored,
                note=f"the client's server, leading both streams; {before} before the kill, "
                f"{load.after_kill()} after it; "
                f"{load.unavailable} refused while the leader moved (longest gap "
                f"{max(gaps):.1f} s); audit verify: {verifier.verified} events, "
                f"{len(problems)} problems",
            )
            record_counts(result)
            assert result.lost == 0
            assert result.duplicated == 0
            assert problems == []
        finally:
            await store.close()
