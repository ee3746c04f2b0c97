"""Auditing the log with nothing but the log and the public keys: verify, export, prove."""

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import msgspec

from adapters.audit_workers import ParallelChecks
from adapters.outages import next_batch_through_outages
from domain.canonical import b64decode
from domain.decoding import decode_stored
from domain.envelope import StoredEvent
from domain.events import LedgerCheckpointed
from domain.merkle import MerkleTree, leaf_hash
from domain.ports import EventStore
from domain.proofs import InclusionProof, as_proven
from domain.signing import Keyring
from domain.streams import Topology
from domain.verification import LogVerifier, Problem, Reason


class _Key(msgspec.Struct):
    key_id: str
    public_key: str


class _Keys(msgspec.Struct):
    keys: list[_Key]


def keyring_from_file(path: Path) -> Keyring:
    """Keys as published by ``GET /v1/keys``; each must match its stated id."""
    keyring = Keyring()
    for key in msgspec.json.decode(path.read_bytes(), type=_Keys).keys:
        if keyring.add(b64decode(key.public_key)) != key.key_id:
            raise ValueError(f"{path}: public key does not match key id {key.key_id}")
    return keyring


class ExportedEvent(msgspec.Struct, frozen=True):
    stream: str
    seq: int
    subject: str
    data: msgspec.Raw
    """The stored envelope verbatim (compact JSON, so one line holds it)."""


_export_line = msgspec.json.Decoder(ExportedEvent)
_encoder = msgspec.json.Encoder()

Progress = Callable[[str, int, int], None]


async def read_log(
    store: EventStore,
    topology: Topology,
    progress: Progress | None = None,
    *,
    ledger_only: bool = False,
) -> AsyncIterator[StoredEvent]:
    """Every message of every stream (or of the ledger alone), in stream order."""
    for spec in (topology.ledger,) if ledger_only else topology.streams:
        first, last = await store.bounds(spec.name)
        if last == 0:
            continue
        reader = await store.reader(spec.name, first)
        seen = first - 1
        try:
            while seen < last:
                batch = await next_batch_through_outages(reader, min(5000, last - seen), 2.0)
                for stored in batch:
                    yield stored
                seen = batch[-1].seq
                if progress:
                    progress(spec.name, seen - first + 1, last - first + 1)
        finally:
            await reader.close()


async def read_export(path: Path) -> AsyncIterator[StoredEvent]:
    with path.open("rb") as lines:
        for line in lines:
            e = _export_line.decode(line)
            yield StoredEvent(e.stream, e.seq, e.subject, bytes(e.data))


async def export_log(events: AsyncIterator[StoredEvent], path: Path) -> int:
    count = 0
    with path.open("wb") as out:
        async for e in events:
            out.write(
                _encoder.encode(ExportedEvent(e.stream, e.seq, e.subject, msgspec.Raw(e.data)))
            )
            out.write(b"\n")
            count += 1
    return count


class Checks(Protocol):
    def feed(self, stored: StoredEvent) -> list[Problem]: ...

    def finish(self) -> list[Problem]: ...


class _InProcess:
    def __init__(self, verifier: LogVerifier) -> None:
        self.feed = verifier.feed
        self.finish = verifier.finish


@contextmanager
def checks(verifier: LogVerifier, jobs: int) -> Iterator[Checks]:
    """``verifier``'s checks in this process (``jobs`` 1), or on ``jobs`` worker processes."""
    if jobs <= 1:
        yield _InProcess(verifier)
        return
    with ParallelChecks(verifier, jobs) as parallel:
        yield parallel


async def verify_log(
    events: AsyncIterator[StoredEvent],
    topology: Topology,
    keyring: Keyring,
    *,
    pinned: StoredEvent | None = None,
    jobs: int = 1,
    every_signature: bool = False,
) -> tuple[LogVerifier, list[Problem]]:
    """Verify a whole log, the signatures on ``jobs`` processes.
    ``pinned``: a checkpoint obtained independently (GET /v1/audit/checkpoint); the log
    must hold it byte for byte, so a log cut short before it, or rewritten, cannot pass.
    ``every_signature``: check each ledger signature too, rather than take a vouching
    checkpoint's word for those it covers (see ``domain.verification``)."""
    verifier = LogVerifier(
        keyring,
        unchained_streams=frozenset(s.name for s in topology.streams if not s.chained),
        every_signature=every_signature,
    )
    problems: list[Problem] = []
    found: StoredEvent | None = None
    last: dict[str, int] = {}
    with checks(verifier, jobs) as check:
        async for stored in events:
            problems.extend(check.feed(stored))
            last[stored.stream] = stored.seq
            if pinned is not None and (stored.stream, stored.seq) == (pinned.stream, pinned.seq):
                found = stored
        problems.extend(check.finish())
    if pinned is not None and (found is None or found.data != pinned.data):
        reason, detail = (
            (Reason.TRUNCATED, f"the log ends at {last.get(pinned.stream, 0)}")
            if found is None
            else (Reason.CHECKPOINT_MISMATCH, "the log holds different bytes there")
        )
        detail += f"; the pinned checkpoint is {pinned.stream}#{pinned.seq}"
        problems.append(Problem(reason, detail, pinned.stream, pinned.seq, pinned.subject))
    return verifier, problems


class NoCheckpoint(Exception):
    pass


async def prove(events: AsyncIterator[StoredEvent], topology: Topology, seq: int) -> InclusionProof:
    """An inclusion proof of ledger event ``seq`` under the first checkpoint that covers it."""
    tree, target = MerkleTree(), None
    async for stored in events:
        if stored.stream != topology.ledger.name:
            continue
        if stored.seq == seq:
            target = stored
        head = decode_stored(stored).event if stored.subject == _checkpoints(topology) else None
        if target is not None and isinstance(head, LedgerCheckpointed) and head.tree_size >= seq:
            path = tree.inclusion_proof(seq - 1, head.tree_size)
            return InclusionProof(
                event=as_proven(target),
                tree_size=head.tree_size,
                root=head.root,
                audit_path=[p.hex() for p in path],
                checkpoint=as_proven(stored),
            )
        tree.append(leaf_hash(stored.data))
    raise NoCheckpoint(f"no checkpoint covers ledger sequence {seq} yet")


async def latest_checkpoint(store: EventStore, topology: Topology) -> StoredEvent | None:
    return await store.last(_checkpoints(topology))


def _checkpoints(topology: Topology) -> str:
    return topology.subject("checkpoint", "ledger")
