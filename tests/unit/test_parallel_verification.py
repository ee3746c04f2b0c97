"""Checking on worker processes finds exactly what checking in one process finds: the
same problems, in the same order, naming the same events."""

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from adapters.audit_workers import ParallelChecks
from domain.canonical import b64encode
from domain.decoding import stored_hash
from domain.envelope import StoredEvent
from domain.events import NodeKeyRotated, NodeState
from domain.sealing import seal
from domain.signing import Keyring, Signer
from domain.streams import Topology
from domain.verification import LogVerifier, Problem
from ops.bench.billing_workload import Workload, take
from tests.support import evidence, heartbeat
from tests.unit.test_verify_receipts import SIGNER, _stranger, resealed_debit

TOPOLOGY = Topology()
LEDGER, BEATS = TOPOLOGY.ledger.name, TOPOLOGY.heartbeats.name
NOW = datetime(2026, 11, 25, tzinfo=UTC)
NEW_KEY = Signer(b"\x09" * 32)


def forged(sign: Signer, key_id: str) -> Signer:
    """``sign`` posing as ``key_id``: a node signature the control plane then seals."""
    impostor = Signer(sign.seed)
    impostor.key_id = key_id
    return impostor


def build(forge: str = "") -> list[StoredEvent]:
    """Paid work (enrollments, receipts) with node-0's key rotated midway on the ledger,
    then heartbeats signed by each node's current key. ``forge``: "rotation" or "beat",
    that node signature made by another key, yet sealed by the control plane."""
    workload = Workload(TOPOLOGY, SIGNER)
    ledger = list(take(workload.events(), 240))
    (node_id, old), subject = workload.nodes[0], TOPOLOGY.subject("node", "node-0")
    tip = next(s for s in reversed(ledger) if s.subject == subject)
    rotated = NodeKeyRotated(
        node_id=node_id,
        old_key_id=old.key_id,
        key_id=NEW_KEY.key_id,
        public_key=b64encode(NEW_KEY.public_key),
        evidence=evidence(
            forged(NEW_KEY, old.key_id) if forge == "rotation" else old,
            {"rotate_to": NEW_KEY.key_id},
        ),
        node=NodeState(node_id=node_id, key_id=NEW_KEY.key_id, public_key="", status="enrolled"),
    )
    (sealed,) = seal(subject, [rotated], prev_hash=stored_hash(tip), signer=SIGNER, now=NOW)
    ledger.insert(120, StoredEvent(LEDGER, 0, subject, sealed.data))
    ledger = [StoredEvent(LEDGER, i, s.subject, s.data) for i, s in enumerate(ledger, 1)]
    keys = [(n, NEW_KEY if n == "node-0" else k) for n, k in workload.nodes]
    beats = []
    for i in range(60):
        node, key = keys[i % len(keys)]
        if forge == "beat" and i == 40:
            key = forged(SIGNER, key.key_id)
        hb_subject = TOPOLOGY.heartbeat_subject(node)
        (s,) = seal(
            hb_subject,
            [heartbeat(node, i, key)],
            prev_hash=None,
            signer=SIGNER,
            now=NOW,
            chained=False,
        )
        beats.append(StoredEvent(BEATS, 50 + i, hb_subject, s.data))
    return ledger + beats


def verifier() -> LogVerifier:
    return LogVerifier(Keyring([SIGNER.public_key]), unchained_streams=frozenset({BEATS}))


def in_one_process(log: list[StoredEvent]) -> tuple[LogVerifier, list[Problem]]:
    v = verifier()
    return v, [p for e in log for p in v.feed(e)]


def on_workers(log: list[StoredEvent]) -> tuple[LogVerifier, list[Problem]]:
    v = verifier()
    with ParallelChecks(v, 2, chunk=7, depth=2) as checks:
        found = [p for e in log for p in checks.feed(e)]
        return v, found + checks.finish()


def flip(log: list[StoredEvent], index: int, marker: bytes) -> None:
    data = bytearray(log[index].data)
    at = data.index(marker) + len(marker)
    data[at] ^= 0x01
    log[index] = StoredEvent(log[index].stream, log[index].seq, log[index].subject, bytes(data))


TAMPERS: dict[str, Callable[[list[StoredEvent]], None]] = {
    "none": lambda log: None,
    "an envelope signature": lambda log: flip(log, 77, b'"sig":"'),
    "a receipt from a stranger": lambda log: resealed_debit(log, _stranger) and None,
    "a deleted event": lambda log: log.pop(33) and None,
}


@pytest.mark.parametrize("name", [*TAMPERS, "rotation", "beat"])
def test_workers_find_what_one_process_finds(name: str) -> None:
    log = build(name)
    TAMPERS.get(name, lambda _: None)(log)
    alone, expected = in_one_process(log)
    shared, found = on_workers(log)
    assert found == expected
    assert (name == "none") == (expected == [])
    assert (shared.verified, shared.signatures, shared.by_type, shared.checkpoints) == (
        alone.verified,
        alone.signatures,
        alone.by_type,
        alone.checkpoints,
    )
