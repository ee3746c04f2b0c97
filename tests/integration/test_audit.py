"""Auditing real JetStream logs: verify, checkpoints, export, inclusion proofs, the CLI."""

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from adapters.audit import (
    ExportedEvent,
    export_log,
    keyring_from_file,
    latest_checkpoint,
    prove,
    read_export,
    read_log,
    verify_log,
)
from adapters.checkpoints import Checkpointer, InconsistentLog, UnverifiedMessage
from adapters.jetstream import JetStreamEventStore
from adapters.recorder import Recorder
from domain.billing.state import Policy
from domain.canonical import b64encode, canonical_bytes
from domain.decoding import Decoded
from domain.envelope import StoredEvent, decode_body, split_wire, wire_bytes
from domain.events import CustomerCreated, Event, LedgerCheckpointed
from domain.merkle import Frontier, leaf_hash
from domain.proofs import InclusionProof, check_proof
from domain.sealing import seal
from domain.signing import Keyring, Signer
from domain.streams import Topology
from domain.verification import Reason
from tests.conftest import Servers
from tests.integration.test_projector import fill
from tests.support import enrolled

B3IQ = str(Path(sys.executable).parent / "b3iq")


async def test_verify_reads_the_whole_log_and_counts_it(
    js_store: JetStreamEventStore, topology: Topology, signer: Signer
) -> None:
    await fill(js_store, topology, signer, beats=300)
    keyring = Keyring([signer.public_key])
    verifier, problems = await verify_log(read_log(js_store, topology), topology, keyring)
    assert problems == []
    assert verifier.by_type == {"NodeEnrolled": 20, "HeartbeatRecorded": 300}
    stranger = Keyring([Signer.generate().public_key])
    _, problems = await verify_log(read_log(js_store, topology), topology, stranger)
    assert {p.reason for p in problems} == {Reason.UNKNOWN_KEY}


async def add_nodes(recorder: Recorder, topology: Topology, signer: Signer, ids: range) -> None:
    for n in ids:
        event = enrolled(f"x{n}", signer)

        def decide(_: Decoded | None, e: Event = event) -> list[Event]:
            return [e]

        await recorder.record(topology.subject("node", f"x{n}"), decide)


async def test_checkpoints_cover_everything_before_them_and_chain_consistently(
    js_store: JetStreamEventStore, topology: Topology, signer: Signer
) -> None:
    recorder = Recorder(js_store, signer, topology)
    checkpointer = Checkpointer(js_store, recorder, topology)
    await add_nodes(recorder, topology, signer, range(5))
    first = await checkpointer.checkpoint()
    assert first is not None
    assert first.tree_size == 5
    assert await checkpointer.checkpoint() is None  # nothing new since
    await add_nodes(recorder, topology, signer, range(5, 12))
    second = await checkpointer.checkpoint()
    assert second is not None
    assert (second.tree_size, second.previous_size) == (13, 5)  # 12 nodes + 1 checkpoint
    restarted = Checkpointer(js_store, recorder, topology)  # keeps no leaf before 13
    await add_nodes(recorder, topology, signer, range(12, 15))
    third = await restarted.checkpoint()
    assert third is not None and (third.tree_size, third.previous_size) == (17, 13)
    assert restarted.tree.base.size == 13 and len(restarted.tree.since) == 4
    verifier, problems = await verify_log(
        read_log(js_store, topology), topology, Keyring([signer.public_key])
    )
    assert problems == []
    assert verifier.checkpoints == 3


async def test_a_checkpoint_over_a_different_log_is_named(
    js_store: JetStreamEventStore, topology: Topology, signer: Signer
) -> None:
    recorder = Recorder(js_store, signer, topology)
    await add_nodes(recorder, topology, signer, range(3))
    forged = LedgerCheckpointed(tree_size=3, root="00" * 32)

    def decide(_: Decoded | None) -> list[Event]:
        return [forged]

    await recorder.record(topology.subject("checkpoint", "ledger"), decide)
    _, problems = await verify_log(
        read_log(js_store, topology), topology, Keyring([signer.public_key])
    )
    assert [(p.reason, p.seq) for p in problems] == [(Reason.CHECKPOINT_MISMATCH, 4)]
    with pytest.raises(InconsistentLog, match="no longer have the root"):
        await Checkpointer(js_store, recorder, topology).checkpoint()


async def test_a_racing_writer_cannot_slip_under_a_checkpoint(
    js_store: JetStreamEventStore, topology: Topology, signer: Signer
) -> None:
    recorder = Recorder(js_store, signer, topology)
    checkpointer = Checkpointer(js_store, recorder, topology)
    await add_nodes(recorder, topology, signer, range(3))
    await checkpointer.catch_up()
    await add_nodes(recorder, topology, signer, range(3, 4))  # lands after the tree was read
    made = await checkpointer.checkpoint()
    assert made is not None
    assert made.tree_size == 4
    _, problems = await verify_log(
        read_log(js_store, topology), topology, Keyring([signer.public_key])
    )
    assert problems == []


async def test_what_lands_while_a_checkpoint_is_signed_goes_under_the_next(
    js_store: JetStreamEventStore, topology: Topology, signer: Signer
) -> None:
    """On a busy ledger other writers always land between reading and appending: the
    checkpoint covers what was read, the next one the rest (in the soak, demanding to land
    right after the last leaf meant no checkpoint landed at all)."""
    recorder = Recorder(js_store, signer, topology)
    checkpointer = Checkpointer(js_store, recorder, topology)
    await add_nodes(recorder, topology, signer, range(3))
    await checkpointer.catch_up()
    await add_customers(recorder, topology, range(2))  # at 4 and 5, after the tree was read
    read_so_far = checkpointer.catch_up

    async def not_again() -> None:
        pass

    checkpointer.catch_up = not_again  # type: ignore[method-assign]
    first = await checkpointer.checkpoint()
    assert first is not None and first.tree_size == 3  # it lands at 6
    checkpointer.catch_up = read_so_far  # type: ignore[method-assign]
    second = await checkpointer.checkpoint()
    assert second is not None and (second.tree_size, second.previous_size) == (6, 3)
    assert await checkpointer.checkpoint() is None  # nothing new but that checkpoint
    for every_signature in (False, True):
        verifier, problems = await verify_log(
            read_log(js_store, topology),
            topology,
            Keyring([signer.public_key]),
            every_signature=every_signature,
        )
        assert problems == []
        assert verifier.vouched == (0 if every_signature else 2)  # the customers, by the second


async def test_exported_logs_verify_and_prove_offline(
    js_store: JetStreamEventStore, topology: Topology, signer: Signer, tmp_path: Path
) -> None:
    recorder = Recorder(js_store, signer, topology)
    await add_nodes(recorder, topology, signer, range(9))
    await Checkpointer(js_store, recorder, topology).checkpoint()
    path = tmp_path / "log.jsonl"
    assert await export_log(read_log(js_store, topology), path) == 10
    keyring = Keyring([signer.public_key])
    verifier, problems = await verify_log(read_export(path), topology, keyring)
    assert (problems, verifier.checkpoints) == ([], 1)
    proof = await prove(read_export(path), topology, 4)
    assert check_proof(proof, keyring) == []
    other = msgspec.structs.replace(proof.event, data=msgspec.Raw(b'{"body":{},"sig":"x"}'))
    assert check_proof(msgspec.structs.replace(proof, event=other), keyring)
    assert check_proof(proof, Keyring([Signer.generate().public_key]))


async def test_the_cli_verifies_and_proves_with_published_keys(
    js_store: JetStreamEventStore, topology: Topology, servers: Servers, tmp_path: Path
) -> None:
    signer = Signer.generate()
    await fill(js_store, topology, signer, beats=10)
    await Checkpointer(js_store, Recorder(js_store, signer, topology), topology).checkpoint()
    keys = tmp_path / "keys.json"
    keys.write_text(
        json.dumps(
            {"keys": [{"key_id": signer.key_id, "public_key": b64encode(signer.public_key)}]}
        )
    )
    assert keyring_from_file(keys).public_keys()[0].key_id == signer.key_id
    env = {**os.environ, "B3IQ_NATS_URL": servers.nats_url, "B3IQ_STREAM_PREFIX": topology.prefix}

    def b3iq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [B3IQ, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    # Each event's envelope signature, and the node's inside every heartbeat and enrollment:
    # 61. (Enrollments give keys, so the checkpoint is not taken at its word for them.)
    runs = [("1", []), ("2", []), ("2", ["--every-signature"])]
    for jobs, every in runs:
        result = await asyncio.to_thread(
            b3iq, "audit", "verify", "--keys", str(keys), "--json", "--jobs", jobs, *every
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert (report["ok"], report["verified"], report["checkpoints"]) == (True, 31, 1)
        assert (report["signatures"], report["vouched_by_checkpoints"]) == (61, 0)
    proved = await asyncio.to_thread(b3iq, "audit", "prove", "7")
    assert proved.returncode == 0, proved.stderr
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(proved.stdout)
    msgspec.json.decode(proved.stdout, type=InclusionProof)
    checked = await asyncio.to_thread(
        b3iq, "audit", "check-proof", "--keys", str(keys), str(proof_file)
    )
    assert checked.returncode == 0, checked.stderr


async def test_the_checkpointer_signs_periodically_but_never_only_itself(
    js_store: JetStreamEventStore, topology: Topology, signer: Signer
) -> None:
    recorder = Recorder(js_store, signer, topology)
    checkpointer = Checkpointer(js_store, recorder, topology, every_events=5, every_s=0.3)
    stop = asyncio.Event()
    task = asyncio.create_task(checkpointer.run(stop))
    await add_nodes(recorder, topology, signer, range(7))
    await asyncio.sleep(2.5)  # several periods: one checkpoint, not one per period
    stop.set()
    await asyncio.wait_for(task, 5)
    verifier, problems = await verify_log(
        read_log(js_store, topology), topology, Keyring([signer.public_key])
    )
    assert problems == []
    assert verifier.checkpoints == 1


@pytest.fixture
async def exported(
    js_store: JetStreamEventStore, topology: Topology, signer: Signer, tmp_path: Path
) -> tuple[list[bytes], StoredEvent]:
    """A real log (enrollments, heartbeats, two checkpoints) exported to JSON lines."""
    recorder = Recorder(js_store, signer, topology)
    checkpointer = Checkpointer(js_store, recorder, topology)
    await add_nodes(recorder, topology, signer, range(6))
    await checkpointer.checkpoint()
    await add_nodes(recorder, topology, signer, range(6, 10))
    await checkpointer.checkpoint()
    await fill(js_store, topology, signer, beats=20)
    path = tmp_path / "log.jsonl"
    await export_log(read_log(js_store, topology), path)
    head = await latest_checkpoint(js_store, topology)
    assert head is not None
    return path.read_bytes().splitlines(keepends=True), head


def edit(line: bytes, old: bytes, new: bytes) -> bytes:
    assert old in line
    return line.replace(old, new, 1)


def swap_field(line: bytes, field: bytes) -> bytes:
    start = line.index(field) + len(field)
    return line[:start] + bytes([line[start] ^ 0x01]) + line[start + 1 :]


def swap_last(line: bytes, field: bytes) -> bytes:
    start = line.rindex(field) + len(field)
    return line[:start] + bytes([line[start] ^ 0x01]) + line[start + 1 :]


TAMPERS = {
    # name: (what is done to the exported lines, the (reason, seq) reported first)
    "a payload byte": (
        lambda ls: [*ls[:2], swap_field(ls[2], b'"agent_version":"'), *ls[3:]],
        (Reason.BAD_SIGNATURE, 3),
    ),
    "a signature byte": (
        lambda ls: [*ls[:4], swap_field(ls[4], b'"sig":"'), *ls[5:]],
        (Reason.BAD_SIGNATURE, 5),
    ),
    "the envelope's signature (no field inside it fails)": (
        lambda ls: [*ls[:3], swap_last(ls[3], b'"sig":"'), *ls[4:]],
        (Reason.BAD_SIGNATURE, 4),
    ),
    "a header (the stored subject)": (
        lambda ls: [*ls[:5], edit(ls[5], b".ev.node.x", b".ev.node.y"), *ls[6:]],
        (Reason.SUBJECT_MISMATCH, 6),
    ),
    "a deleted event": (
        lambda ls: [*ls[:3], *ls[4:]],
        (Reason.SEQUENCE_GAP, 5),
    ),
    "two swapped events": (
        lambda ls: [*ls[:8], ls[9], ls[8], *ls[10:]],
        (Reason.SEQUENCE_GAP, 10),
    ),
}


@pytest.mark.parametrize(("jobs", "every_signature"), [(1, False), (2, False), (2, True)])
@pytest.mark.parametrize("name", TAMPERS)
async def test_every_tamper_with_an_exported_log_is_pinpointed(
    exported: tuple[list[bytes], StoredEvent],
    topology: Topology,
    signer: Signer,
    tmp_path: Path,
    name: str,
    jobs: int,
    every_signature: bool,
) -> None:
    """Whether each signature is checked, or those a checkpoint vouches for are taken on
    its word (the tampered bytes no longer match its root, so it vouches for nothing)."""
    lines, _ = exported
    change, first = TAMPERS[name]
    path = tmp_path / "tampered.jsonl"
    path.write_bytes(b"".join(change(lines)))
    keyring = Keyring([signer.public_key])
    _, problems = await verify_log(
        read_export(path), topology, keyring, jobs=jobs, every_signature=every_signature
    )
    assert [(p.reason, p.seq) for p in problems][:1] == [first]


async def test_a_truncated_export_fails_against_a_pinned_checkpoint(
    exported: tuple[list[bytes], StoredEvent], topology: Topology, signer: Signer, tmp_path: Path
) -> None:
    lines, head = exported
    ledger = [line for line in lines if b'"stream":"' + topology.ledger.name.encode() in line]
    path = tmp_path / "short.jsonl"
    path.write_bytes(b"".join(ledger[: head.seq - 1]))  # cut just before the latest checkpoint
    keyring = Keyring([signer.public_key])
    _, clean = await verify_log(read_export(path), topology, keyring)
    assert clean == []  # a clean cut looks whole on its own...
    _, problems = await verify_log(read_export(path), topology, keyring, pinned=head)
    assert [(p.reason, p.seq) for p in problems] == [(Reason.TRUNCATED, head.seq)]  # ...not pinned


async def test_a_forged_checkpoint_in_an_export_is_pinpointed(
    exported: tuple[list[bytes], StoredEvent], topology: Topology, signer: Signer, tmp_path: Path
) -> None:
    lines, head = exported
    body = decode_body(split_wire(head.data).body)
    forged_event = LedgerCheckpointed(tree_size=head.seq - 1, root="ab" * 32)
    forger = Signer.generate()
    forged_body = canonical_bytes(
        msgspec.structs.replace(
            body, signer=forger.key_id, payload=msgspec.Raw(canonical_bytes(forged_event))
        )
    )
    index = next(i for i, line in enumerate(lines) if f'"seq":{head.seq},'.encode() in line)
    line = ExportedEvent(
        head.stream,
        head.seq,
        head.subject,
        msgspec.Raw(wire_bytes(forged_body, forger.sign(forged_body))),
    )
    lines[index] = msgspec.json.encode(line) + b"\n"
    path = tmp_path / "forged.jsonl"
    path.write_bytes(b"".join(lines))
    _, problems = await verify_log(read_export(path), topology, Keyring([signer.public_key]))
    assert [(p.reason, p.seq) for p in problems][:1] == [(Reason.UNKNOWN_KEY, head.seq)]
    _, problems = await verify_log(
        read_export(path), topology, Keyring([signer.public_key, forger.public_key])
    )
    assert [(p.reason, p.seq) for p in problems][:1] == [(Reason.CHECKPOINT_MISMATCH, head.seq)]


async def test_a_forged_ledger_message_stops_checkpoints_and_is_named(
    js_store: JetStreamEventStore, topology: Topology, signer: Signer
) -> None:
    """Someone who can write to the stream but lacks the key: the checkpointer will not
    vouch for the message, so the auditor checks it, and everything after, itself."""
    recorder = Recorder(js_store, signer, topology)
    checkpointer = Checkpointer(js_store, recorder, topology)
    await add_nodes(recorder, topology, signer, range(3))
    assert await checkpointer.checkpoint() is not None  # at 4, over 1..3
    subject = topology.subject("customer", "c1")
    [sealed] = seal(
        subject,
        [customer("c1")],
        prev_hash=None,
        signer=signer,
        now=datetime.now(UTC),
    )
    body = bytes(split_wire(sealed.data).body)
    forged = sealed._replace(data=wire_bytes(body, signer.sign(b"something else")))
    await js_store.append(subject, [forged], None)  # at 5
    await add_nodes(recorder, topology, signer, range(3, 5))
    with pytest.raises(UnverifiedMessage, match="bad_signature"):
        await checkpointer.checkpoint()
    keyring = Keyring([signer.public_key])
    for every_signature in (False, True):
        _, problems = await verify_log(
            read_log(js_store, topology), topology, keyring, every_signature=every_signature
        )
        assert [(p.reason, p.seq) for p in problems] == [(Reason.BAD_SIGNATURE, 5)]


async def test_only_a_checkpoint_that_verified_what_it_covers_vouches_for_it(
    js_store: JetStreamEventStore, topology: Topology, signer: Signer
) -> None:
    recorder = Recorder(js_store, signer, topology)
    await add_customers(recorder, topology, range(4))
    older = LedgerCheckpointed(tree_size=4, root=(await tree_of(js_store, topology, 4)).hex())

    def decide(_: Decoded | None) -> list[Event]:
        return [older]  # as checkpoints were signed before they verified: no vouching

    await recorder.record(topology.subject("checkpoint", "ledger"), decide)
    await add_customers(recorder, topology, range(4, 7))
    checkpoint = await Checkpointer(js_store, recorder, topology).checkpoint()
    assert checkpoint is not None and checkpoint.signatures_verified
    verifier, problems = await verify_log(
        read_log(js_store, topology), topology, Keyring([signer.public_key])
    )
    assert problems == []
    # 1..4 checked one by one under the old checkpoint; 6..8 vouched for by the new one.
    assert (verifier.vouched, verifier.signatures, verifier.checkpoints) == (3, 4 + 2, 2)


async def add_customers(recorder: Recorder, topology: Topology, ids: range) -> None:
    for n in ids:
        event = customer(f"c{n}")

        def decide(_: Decoded | None, e: Event = event) -> list[Event]:
            return [e]

        await recorder.record(topology.subject("customer", f"c{n}"), decide)


async def tree_of(js_store: JetStreamEventStore, topology: Topology, size: int) -> bytes:
    tree = Frontier()
    async for stored in read_log(js_store, topology, ledger_only=True):
        if stored.seq <= size:
            tree.append(leaf_hash(stored.data))
    return tree.root()


def customer(customer_id: str) -> CustomerCreated:
    return CustomerCreated(
        customer_id=customer_id,
        balance_after_wei="0",
        reserved_after_wei="0",
        name=customer_id,
        policy=Policy(),
        created_by="admin",
    )
