import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.keyfile import KeyFileError, load_or_create_signer
from adapters.settings import Settings
from domain.canonical import canonical_bytes
from domain.ids import uuid7
from domain.streams import Topology
from tests.support import heartbeat


def test_uuid7_sorts_in_creation_order() -> None:
    ids = [uuid7() for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 2000
    assert {i[14] for i in ids} == {"7"}


def test_canonical_bytes_are_stable_and_sorted() -> None:
    from domain.signing import Signer

    event = heartbeat("n1", 3, Signer.generate())
    assert canonical_bytes(event) == canonical_bytes(event)
    assert canonical_bytes({"b": 1, "a": datetime(2026, 1, 1, tzinfo=UTC)}) == (
        b'{"a":"2026-01-01T00:00:00Z","b":1}'
    )


@pytest.mark.parametrize("bad", ["", "a.b", "a*", ">", "a b", "x" * 200])
def test_aggregate_ids_cannot_escape_their_subject(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid aggregate id"):
        Topology().subject("node", bad)


def test_subjects_map_to_their_streams() -> None:
    t = Topology(prefix="x")
    assert t.stream_of(t.subject("node", "n")).name == "X_LEDGER"
    assert t.stream_of(t.heartbeat_subject("n")).name == "X_HEARTBEATS"
    with pytest.raises(ValueError, match="no stream"):
        t.stream_of("y.ev.node.n")


def test_settings_come_from_the_environment() -> None:
    s = Settings.from_env({"B3IQ_PORT": "9000", "B3IQ_NATS_URL": "nats://h:1"}, host="0.0.0.0")
    assert (s.port, s.nats_url, s.host) == (9000, "nats://h:1", "0.0.0.0")
    with pytest.raises(SystemExit, match="invalid setting"):
        Settings.from_env({"B3IQ_PORT": "many"})


def test_signing_key_file_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "cp.ed25519"
    first = load_or_create_signer(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_signer(path).key_id == first.key_id
    assert first.key_id not in repr(path.read_bytes())
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        load_or_create_signer(path)


def test_a_key_file_appears_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process starting beside the one creating the key (two projectors at once) finds
    no key or a whole one, never an empty file mid-write."""
    path = tmp_path / "keys" / "cp.ed25519"
    real_fdopen = os.fdopen

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        assert not path.exists(), "the key's path exists before its seed is written"
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", fdopen)
    signer = load_or_create_signer(path)
    assert path.read_bytes() == signer.seed
    assert list(path.parent.iterdir()) == [path]  # nothing left aside
