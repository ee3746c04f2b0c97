"""A mixed log as the control plane writes it: signed, chained, checkpointed, streaming.

The ledger holds node enrollments, commands (issued, then leased and reported with the
node's signatures), observed benchmarks and paid work made by the real billing decisions
(``billing_workload``: customers, grants, keys, reservations, settlements with
node-signed receipts, releases), with a signed checkpoint every ``CHECKPOINT_EVERY``
messages over all before it; the heartbeat stream holds node-signed heartbeats of the
same nodes. Both are generators: nothing is held but chain tips and the Merkle tree.
"""

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from domain.canonical import b64encode
from domain.command_specs import RuntimeProbe
from domain.commands import command_of, decide_issue, decide_lease, decide_result
from domain.envelope import decode_body, split_wire
from domain.events import (
    BenchmarkObserved,
    BenchmarkRun,
    Event,
    LedgerCheckpointed,
    SignerKeyPublished,
)
from domain.merkle import MerkleTree, leaf_hash
from domain.sealing import Sealed, seal, split_event_id
from domain.signing import Signer
from domain.streams import Topology
from ops.bench.bench_event_log import enrolled, evidence, heartbeat
from ops.bench.billing_workload import Workload

NODES = 200
CHECKPOINT_EVERY = 1000
Append = list[tuple[str, Sealed]]
"""Messages appended at once (one seal call, one batch on the log)."""


def node_key(n: int) -> Signer:
    return Signer(hashlib.sha256(b"bench-audit-node-%d" % n).digest())


def node_id(n: int) -> str:
    return f"hb-{n:04d}"


class MixedLedger:
    """The ledger's messages in order, sealed and chained; a checkpoint every
    ``CHECKPOINT_EVERY`` messages over all before it, as the Checkpointer signs them."""

    def __init__(self, topology: Topology, signer: Signer) -> None:
        self.topology = topology
        self.signer = signer
        self.now = datetime(2026, 11, 25, tzinfo=UTC)
        self.tips: dict[str, str] = {}
        self.tree = MerkleTree()
        self.last_checkpoint: LedgerCheckpointed | None = None
        self.billing = Workload(topology, signer).events()
        self.commands: dict[str, Event] = {}

    def _seal(self, subject: str, events: list[Event]) -> Append:
        sealed = seal(
            subject, events, prev_hash=self.tips.get(subject), signer=self.signer, now=self.now
        )
        self.tips[subject] = sealed[-1].hash
        return [(subject, s) for s in sealed]

    def _setup(self) -> Iterator[Append]:
        key = SignerKeyPublished(
            key_id=self.signer.key_id, public_key=b64encode(self.signer.public_key)
        )
        yield self._seal(self.topology.subject("key", self.signer.key_id), [key])
        for n in range(NODES):
            event = enrolled(node_id(n), node_key(n))
            yield self._seal(self.topology.subject("node", node_id(n)), [event])

    def _command(self, n: int) -> Append:
        """Issued, leased by its node (signed request), reported (signed result)."""
        node, key = node_id(n % NODES), node_key(n % NODES)
        command_id, lease_id = f"cmd-{n}", f"lease-{n}"
        subject = self.topology.subject("command", command_id)
        issued = decide_issue(
            None,
            command_id,
            node,
            RuntimeProbe(),
            "bench",
            "bench",
            now=self.now,
            lease_s=60.0,
            ttl_s=600.0,
            max_attempts=3,
        )
        lease_proof = evidence(key, {"command_id": command_id, "lease": lease_id})
        leased = decide_lease(command_of(issued[-1]), node, lease_id, lease_proof, self.now)
        result_proof = evidence(key, {"command_id": command_id, "result": "ok"})
        done = decide_result(
            command_of(leased[-1]),
            node,
            lease_id,
            "succeeded",
            "",
            result_proof,
            "3" * 64,
            self.now,
        )
        return self._seal(subject, [*issued, *leased, *done])

    def _benchmark(self, n: int) -> Append:
        node = node_id(n % NODES)
        runs = [
            BenchmarkRun(
                prompt_id=f"p{i}",
                ttft_ms=20.0 + i,
                latency_ms=300.0 + i,
                completion_tokens=32,
                output_sha256="4" * 64,
                receipt_hash="5" * 64,
            )
            for i in range(4)
        ]
        observed = BenchmarkObserved(
            node_id=node,
            model="tiny",
            set_id="smoke-v1",
            runtime_kind="llama_cpp",
            ttft_ms=21.5,
            tokens_per_s=100.0,
            output_sha256="6" * 64,
            runs=runs,
            observed_at=self.now,
            requested_by="bench",
        )
        return self._seal(self.topology.subject("benchmark", node), [observed])

    def _checkpoint(self) -> Append:
        size, previous = self.tree.size, self.last_checkpoint
        # Everything it covers was signed right here: as the checkpointer does after
        # checking each message (bench_audit measures what that costs it).
        head = LedgerCheckpointed(
            tree_size=size, root=self.tree.root(size).hex(), signatures_verified=True
        )
        if previous is not None:
            proof = self.tree.consistency_proof(previous.tree_size, size)
            head = LedgerCheckpointed(
                tree_size=size,
                root=head.root,
                previous_size=previous.tree_size,
                consistency=[p.hex() for p in proof],
                signatures_verified=True,
            )
        self.last_checkpoint = head
        return self._seal(self.topology.subject("checkpoint", "ledger"), [head])

    def _billing(self) -> Append:
        """The workload's next append: one event, or a settlement (debit, payout, release)."""
        append: Append = []
        while not append or _type(append[-1][1]) in SETTLING:
            stored = next(self.billing)
            append.append((stored.subject, Sealed(split_event_id(stored.data), "", stored.data)))
        return append

    def _mixed(self) -> Iterator[Append]:
        yield from self._setup()
        n = 0
        while True:
            n += 1
            self.now += timedelta(milliseconds=10)
            if n % 40 == 0:
                yield self._command(n)
            elif n % 150 == 0:
                yield self._benchmark(n)
            else:
                yield self._billing()

    def appends(self) -> Iterator[Append]:
        """Checkpoints go between appends, as the Checkpointer's conditional append lands."""
        due = CHECKPOINT_EVERY
        for append in self._mixed():
            yield append
            for _, sealed in append:
                self.tree.append(leaf_hash(sealed.data))
            if self.tree.size + 1 >= due:
                checkpoint = self._checkpoint()
                yield checkpoint
                self.tree.append(leaf_hash(checkpoint[0][1].data))
                due += CHECKPOINT_EVERY


def heartbeat_messages(topology: Topology, signer: Signer) -> Iterator[tuple[str, Sealed]]:
    keys = [node_key(n) for n in range(NODES)]
    now = datetime(2026, 11, 25, tzinfo=UTC)
    n = 0
    while True:
        node = n % NODES
        subject = topology.heartbeat_subject(node_id(node))
        beat = heartbeat(node_id(node), n // NODES, keys[node])
        yield (
            subject,
            seal(subject, [beat], prev_hash=None, signer=signer, now=now, chained=False)[0],
        )
        n += 1


def whole_appends(appends: Iterator[Append], count: int) -> Iterator[tuple[str, Sealed]]:
    """Messages of whole appends, until at least ``count``: a log cut inside one (a debit
    without its release) would be an unfinished settlement."""
    written = 0
    for append in appends:
        yield from append
        written += len(append)
        if written >= count:
            return


SETTLING = frozenset({"CustomerDebited", "NodePayoutCreated"})
"""Types the workload's settlement append goes on after."""


def _type(sealed: Sealed) -> str:
    return decode_body(split_wire(sealed.data).body).type
