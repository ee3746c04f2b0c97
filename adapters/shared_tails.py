"""Tails of hot subjects shared between API processes, so each decides on the others'
appends instead of learning of them from a refused append.

A recorder remembers the last event it appended to each subject; its next decision there
starts from it, and the conditional append proves it still the last. When another API
process appended in between (requests of one customer through two processes), the append
is refused, the tail read and the decision made and signed again: two more round trips to
NATS on a paid request's critical path. Here each recorder publishes every tail it appends
on core NATS, and the others take it in before their next decision.

Nothing depends on it. A lost or late notice leaves the old refusal and retry; a notice is
believed only with a signature of a key in the control plane's keyring on its event, for
the subject it names, at a sequence after the tail already remembered.
"""

import contextlib
import logging

import msgspec
from nats.aio.subscription import Subscription

from adapters.jetstream.client import Client
from adapters.recorder import Recorder
from domain.envelope import StoredEvent
from domain.signing import Keyring
from domain.streams import Topology
from domain.verification import Verified, verify_event

log = logging.getLogger("b3iq.shared_tails")


class TailNotice(msgspec.Struct, array_like=True, frozen=True):
    stream: str
    seq: int
    subject: str
    data: bytes


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(TailNotice).decode


class SharedTails:
    def __init__(self, recorder: Recorder, keyring: Keyring) -> None:
        self._recorder = recorder
        self._keyring = keyring
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
            notice = TailNotice(tail.stream, tail.seq, tail.subject, tail.data)
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
        if not isinstance(verify_event(tail, self._keyring), Verified):
            log.warning("a tail notice for %s without a valid signature was ignored", tail.subject)
            return
        self._recorder.observe(tail)
