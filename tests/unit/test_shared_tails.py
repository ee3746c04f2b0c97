"""A tail notice is believed with a MAC only a holder of the control plane's signing key can
make, else with its event's signature; a forged one is ignored."""

import msgspec
import pytest

from adapters import shared_tails
from adapters.memory_store import InMemoryEventStore
from adapters.recorder import Recorder
from adapters.shared_tails import SharedTails, TailNotice, notice_key, notice_mac
from domain.decoding import Decoded
from domain.envelope import StoredEvent
from domain.events import Event
from domain.signing import Keyring, Signer
from domain.streams import Topology
from tests.support import heartbeat

SIGNER = Signer.generate()
NODE = Signer.generate()


async def two_writers() -> tuple[SharedTails, Recorder, StoredEvent]:
    """A process whose recorder remembers a subject, and a later tail another appended."""
    topology = Topology()
    store = InMemoryEventStore(topology)
    ours, theirs = Recorder(store, SIGNER, topology), Recorder(store, SIGNER, topology)
    subject = topology.subject("node", "n1")

    def next_beat(tail: Decoded | None) -> list[Event]:
        seq = 0 if tail is None else tail.event.heartbeat_seq + 1  # type: ignore[attr-defined]
        return [heartbeat("n1", seq, NODE)]

    await ours.record(subject, next_beat)
    await theirs.record(subject, next_beat)
    later = await store.last(subject)
    assert later is not None and ours.behind(subject, later.seq)
    return SharedTails(ours, Keyring([SIGNER.public_key])), ours, later


def deliver(tails: SharedTails, tail: StoredEvent, mac: bytes = b"") -> None:
    notice = TailNotice(tail.stream, tail.seq, tail.subject, tail.data, mac)
    tails._on_notice(b"", b"", msgspec.msgpack.encode(notice), None)


async def test_a_notice_with_the_control_planes_mac_is_believed_without_a_signature_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tails, recorder, later = await two_writers()

    def not_needed(*_: object) -> None:
        raise AssertionError("the MAC vouches for it")

    monkeypatch.setattr(shared_tails, "verify_event", not_needed)
    key = notice_key(Signer(SIGNER.seed))  # another process with the same key derives it
    deliver(tails, later, notice_mac(key, later.stream, later.seq, later.subject, later.data))
    assert not recorder.behind(later.subject, later.seq)


async def test_without_a_valid_mac_the_events_signature_decides() -> None:
    tails, recorder, later = await two_writers()
    other_key = notice_key(Signer.generate())
    deliver(tails, later, notice_mac(other_key, later.stream, later.seq, later.subject, later.data))
    assert not recorder.behind(later.subject, later.seq)  # a genuine event: believed


async def test_a_forged_notice_is_ignored() -> None:
    tails, recorder, later = await two_writers()
    forger = Recorder(InMemoryEventStore(Topology()), Signer.generate(), Topology())
    await forger.record(later.subject, lambda _: [heartbeat("n1", 9, NODE)])
    forged = await forger.store.last(later.subject)
    assert forged is not None
    fake = StoredEvent(later.stream, later.seq + 1, later.subject, forged.data)
    stolen_mac = notice_mac(notice_key(SIGNER), later.stream, later.seq, later.subject, later.data)
    deliver(tails, fake, stolen_mac)  # a MAC of another notice does not fit this one
    deliver(tails, fake)
    assert recorder.behind(later.subject, later.seq)  # still deciding on its own tail
