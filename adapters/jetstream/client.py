"""nats-py's client, with a faster way in for bulk readers.

Replaying or auditing the log means taking a million stored messages off one
subscription. nats-py matches every MSG line with regular expressions, copies each
payload twice, parses its headers, builds a ``Msg`` and passes it through an
``asyncio.Queue`` to a task that awaits the callback: about 10 µs a message, more than
half of a billing reconcile. A subscription registered with ``subscribe_raw`` skips all of
that: its messages are cut out of the read buffer in one pass and handed to a plain
function. Every other subscription, and every other protocol line, goes through nats-py as
before. Unit tests hold both the parser and the header parser to nats-py's results.
"""

from collections.abc import Callable, Mapping

import nats.aio.client
from nats.aio.client import _HEADER_KEY_RE, _HEADER_VALUE_NEWLINES
from nats.aio.subscription import Subscription
from nats.errors import (
    BadHeaderError,
    BadSubjectError,
    ConnectionClosedError,
    ConnectionDrainingError,
    MaxPayloadError,
    OutboundBufferLimitError,
    ProtocolError,
)
from nats.protocol import command as prot_command
from nats.protocol import parser as nats_parser

RawHandler = Callable[[bytes, bytes, bytes, bytes | None], None]
"""(subject, reply, payload, header block or None) of one message, as it arrived."""

_CRLF = b"\r\n"


class Client(nats.aio.client.Client):
    def __init__(self) -> None:
        super().__init__()
        self.raw_handlers: dict[int, RawHandler] = {}
        self._ps = RawParser(self)

    async def subscribe_raw(
        self, subject: str, handler: RawHandler, queue: str = ""
    ) -> Subscription:
        """A subscription whose messages go straight to ``handler``, in order, from the
        read loop itself: it must not block, and it sees status messages (no reply, a
        ``NATS/1.0 <code>`` header block) as they are."""
        sub = await self.subscribe(subject, queue=queue, cb=_unused, pending_msgs_limit=-1)
        self.raw_handlers[sub._id] = handler
        return sub

    def publish_now(
        self,
        subject: str,
        payload: bytes,
        reply: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Publish, written to the socket now (behind whatever was queued before it).

        nats-py queues a publish for its flusher task, which writes at its next turn of
        the event loop: after the work queued ahead of it, such as a paid request's
        reservation (deciding and signing, ~0.3 ms). A route's dispatch and its replies,
        and the appends a request waits for, go now. Refused, and queued while
        disconnected, as nats-py's own publish is."""
        if not subject:
            raise BadSubjectError
        if self.is_closed:
            raise ConnectionClosedError
        if self.is_draining_pubs:
            raise ConnectionDrainingError
        if len(payload) > self._max_payload:
            raise MaxPayloadError
        if not self.is_connected and (
            self._max_pending_size <= 0
            or len(payload) + self._pending_data_size > self._max_pending_size
        ):
            raise OutboundBufferLimitError
        if headers is None:
            command = prot_command.pub_cmd(subject, reply, payload)
        else:
            command = prot_command.hpub_cmd(subject, reply, header_block(headers), payload)
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += len(payload)
        self._pending.append(command)
        self._pending_data_size += len(command)
        if self.is_connected and self._transport is not None:
            self._transport.writelines(self._pending)
            self._pending = []
            self._pending_data_size = 0

    def count_in(self, payload: bytes) -> None:
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(payload)

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        handler = self.raw_handlers.get(sid)
        if handler is None:
            await super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]
            return
        self.count_in(data)
        handler(subject, reply, data, headers)

    def _remove_sub(self, sid: int, max_msgs: int = 0) -> None:
        self.raw_handlers.pop(sid, None)
        super()._remove_sub(sid, max_msgs)

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        # nats-py checks each character of each header name for whitespace in a
        # generator; the same result with whole-string operations.
        out: dict[str, str] = {}
        for line in raw.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            try:
                key = name.strip().decode("ascii")
            except UnicodeDecodeError:
                continue  # as nats-py: a name that is not ASCII is skipped
            if key and key.split() != [key]:
                continue  # whitespace inside the name (str.isspace's, as nats-py)
            out[key] = value.strip().decode("utf-8", "replace")
        return out


def header_block(headers: Mapping[str, str]) -> bytes:
    """Headers as nats-py's publish writes them (same checks on names and values)."""
    block = bytearray(b"NATS/1.0\r\n")
    for name, value in headers.items():
        key = name.strip()
        if not key:
            continue
        if not _HEADER_KEY_RE.fullmatch(key):
            raise BadHeaderError(key)
        block += b"%s: %s\r\n" % (
            key.encode(),
            value.strip().translate(_HEADER_VALUE_NEWLINES).encode(),
        )
    block += _CRLF
    return bytes(block)


async def _unused(_msg: object) -> None:
    raise AssertionError("a raw subscription's messages never reach a callback")


def status_of(headers: bytes | None) -> str | None:
    """The status code of a status message's header block (``NATS/1.0 404 ...``)."""
    if not headers:
        return None
    code = headers.split(_CRLF, 1)[0][9:12].strip()
    return code.decode() if code.isdigit() else None


_MSG_OPS = (b"MSG ", b"HMSG ")
_PAYLOAD = nats_parser.AWAITING_MSG_PAYLOAD


class RawParser(nats_parser.Parser):
    """MSG and HMSG are cut out of the buffer by position, not by regular expression;
    anything else (INFO, PING, +OK, -ERR, a split control line) goes to nats-py's parser
    from where it stands."""

    nc: Client

    async def parse(self, data: bytes = b"") -> None:
        ring = self.buf
        ring.extend(data)
        buf = bytes(ring)  # one copy per read; payloads are sliced out of it
        raw = self.nc.raw_handlers
        pos = done = 0  # parsed up to; deleted from the ring up to
        end = len(buf)
        try:
            while pos < end:
                if self.state == _PAYLOAD:  # the rest of a message the last read cut short
                    self.state = nats_parser.AWAITING_CONTROL_LINE
                    arg = self.msg_arg
                    subject, sid, reply = arg["subject"], arg["sid"], arg["reply"]
                    header_size, size = self.header_needed, self.needed
                    self.header_needed = 0
                else:
                    if not buf.startswith(_MSG_OPS, pos):
                        break  # another operation: nats-py's parser takes it from here
                    line_end = buf.find(_CRLF, pos)
                    if line_end < 0:
                        if end - pos > nats_parser.MAX_CONTROL_LINE_SIZE:
                            raise ProtocolError("nats: unknown protocol")
                        break
                    subject, sid, reply, header_size, size = _msg_line(buf[pos:line_end])
                    pos = line_end + 2
                if end - pos < size + 2:  # wait for the rest, in nats-py's own state
                    self.msg_arg.update(subject=subject, sid=sid, reply=reply)
                    self.header_needed, self.needed, self.state = header_size, size, _PAYLOAD
                    break
                split = pos + header_size
                headers = buf[pos:split] if header_size else None
                payload = buf[split : pos + size]
                pos += size + 2
                handler = raw.get(sid)
                if handler is not None:
                    self.nc.count_in(payload)
                    handler(subject, reply, payload, headers)
                    continue
                del ring[: pos - done]  # as nats-py: consumed before the await
                done = pos
                await self.nc._process_msg(sid, subject, reply, payload, headers)
                if self.buf is not ring:  # reset meanwhile (a reconnect)
                    return
        finally:
            if self.buf is ring:
                del ring[: pos - done]
        if ring and not ring.startswith(_MSG_OPS):
            await super().parse()


def _msg_line(line: bytes) -> tuple[bytes, int, bytes, int, int]:
    """(subject, sid, reply, header size, total size) of a MSG or HMSG control line."""
    parts = line.split()
    try:
        if parts[0] == b"HMSG":
            if len(parts) == 6:
                _, subject, sid, reply, header_size, size = parts
            elif len(parts) == 5:
                _, subject, sid, header_size, size = parts
                reply = b""
            else:
                raise ValueError(parts)
            return subject, int(sid), reply, int(header_size), int(size)
        if len(parts) == 5:
            _, subject, sid, reply, size = parts
        elif len(parts) == 4:
            _, subject, sid, size = parts
            reply = b""
        else:
            raise ValueError(parts)
        return subject, int(sid), reply, 0, int(size)
    except ValueError:
        raise ProtocolError("nats: malformed MSG") from None
