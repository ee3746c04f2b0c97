"""Tails of hot subjects shared between API processes, so each decides on the others'
appends instead of learning of them from a refused append.

A recorder remembers the last event it appended to each subject; its next decision there
starts from it, and the conditional append proves it still the last. When another API
process appended in between (requests of one customer through two processes), the append
is refused, the tail read and the decision made and signed again: two more round trips to
NATS on a paid request's critical path. Here each recorder publishes every tail it appends
on core NATS, and the others take it in before their next decision.

Nothing depends on it. A lost or late notice leaves the old refusal and retry. A notice is
believed only for a sequence after the tail already remembered, and only from a process
holding the control plane's signing key: it carries a MAC under a key derived from that
key, checked in ~3 µs where the event's Ed25519 signature took ~46 µs (in the read loop,
ahead of whatever arrived with it, such as a relayed request's reply). A notice without a
valid MAC (a process still on another signing key) is believed if its event's signature
is one of the keyring's, for the subject it names.
"""

import contextlib
import hashlib
import hmac
import logging

import msgspec
from nats.aio.subscription import Subscription

from adapters.jetstream.client import Client
from adapters.recorder import Recorder
from domain.envelope import StoredEvent
from domain.signing import Keyring, Signer
from domain.streams import Topology
from domain.verification import Verified, verify_event

log = logging.getLogger("b3iq.shared_tails")


class TailNotice(msgspec.Struct, array_like=True, frozen=True):
    stream: str
    seq: int
    subject: str
    data: bytes
    mac: bytes = b""


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(TailNotice).decode


def notice_key(signer: Signer) -> bytes:
    """The MAC key of tail notices: every process holding ``signer`` derives the same one."""
    return hashlib.blake2b(b"b3iq tail notices", key=signer.seed, digest_size=32).digest()


def notice_mac(key: bytes, stream: str, seq: int, subject: str, data: bytes) -> bytes:
    # Stream and subject names hold no newline: the fields cannot run into each other.
    mac = hashlib.blake2b(f"{stream}\n{seq}\n{subject}\n".encode(), key=key, digest_size=16)
    mac.update(data)
    return mac.digest()


class SharedTails:
    def __init__(self, recorder: Recorder, keyring: Keyring) -> None:
        self._recorder = recorder
        self._keyring = keyring
        self._key = notice_key(recorder.signer)
        self._nc: Client | None = None
        self._subject = ""
        self._sub: Subscription | None = None

    async def start(self, nc: Client, topology: Topology) -> None:
        self._nc, self._subject = nc, f"{topology.prefix}.tails"
        self._sub = await nc.subscribe_raw(self._subject, self._on_notice)
        self._recorder.announce = self._announce

    async def close(self) -> None:
        self._recorder.announce = None
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _announce(self, tail: StoredEvent) -> None:
        if self._nc is not None:
            mac = notice_mac(self._key, tail.stream, tail.seq, tail.subject, tail.data)
            notice = TailNotice(tail.stream, tail.seq, tail.subject, tail.data, mac)
            self._nc.publish_now(self._subject, _encode(notice))

    def _on_notice(self, _subject: bytes, _reply: bytes, data: bytes, _h: bytes | None) -> None:
        try:
            notice = _decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("an undecodable tail notice was ignored")
            return
        if not self._recorder.behind(notice.subject, notice.seq):
            return  # our own append's echo, an old one, or a subject we do not write
        tail = StoredEvent(notice.stream, notice.seq, notice.subject, notice.data)
        mac = notice_mac(self._key, tail.stream, tail.seq, tail.subject, tail.data)
        if not hmac.compare_digest(notice.mac, mac) and not isinstance(
            verify_event(tail, self._keyring), Verified
        ):
            log.warning("a tail notice for %s without a valid signature was ignored", tail.subject)
            return
        self._recorder.observe(tail)
