"""Verifying the whole log, straight from JetStream, with nothing but public keys."""

from collections.abc import Callable
from pathlib import Path

import msgspec

from domain.canonical import b64decode
from domain.ports import EventStore
from domain.signing import Keyring
from domain.streams import Topology
from domain.verification import LogVerifier, Problem


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


async def verify_log(
    store: EventStore,
    topology: Topology,
    keyring: Keyring,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[LogVerifier, list[Problem]]:
    verifier = LogVerifier(
        keyring, unchained_streams=frozenset(s.name for s in topology.streams if not s.chained)
    )
    problems: list[Problem] = []
    for spec in topology.streams:
        first, last = await store.bounds(spec.name)
        if last == 0:
            continue
        reader = await store.reader(spec.name, first)
        seen = first - 1
        try:
            while seen < last:
                batch = await reader.next_batch(min(5000, last - seen), 2.0)
                if not batch:
                    break
                for stored in batch:
                    problems.extend(verifier.feed(stored))
                seen = batch[-1].seq
                if progress:
                    progress(spec.name, seen - first + 1, last - first + 1)
        finally:
            await reader.close()
    return verifier, problems
