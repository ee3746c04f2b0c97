"""Our protocol parser delivers exactly what nats-py's delivers, however the bytes are
split across reads: raw subscriptions straight to their handler, the rest as nats-py."""

from typing import Any

import nats.protocol.parser
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.jetstream.client import RawParser, status_of

RAW_SID = 7


class Recorder:
    """The client side of a parser: what reached it, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []
        self.raw_handlers = {RAW_SID: self._raw}
        self.stats = {"in_msgs": 0, "in_bytes": 0}

    def _raw(self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        self.seen.append(("msg", RAW_SID, subject, reply, data, headers))

    def count_in(self, payload: bytes) -> None:
        self.stats["in_msgs"] += 1

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        self.seen.append(("msg", sid, subject, reply, data, headers))

    async def _process_ping(self) -> None:
        self.seen.append(("ping",))

    async def _process_pong(self) -> None:
        self.seen.append(("pong",))

    async def _process_info(self, info: dict[str, Any]) -> None:
        self.seen.append(("info", info))

    async def _process_err(self, err: str) -> None:
        self.seen.append(("err", err))


def _msg(sid: int, reply: bytes, headers: bytes | None, payload: bytes) -> bytes:
    reply_part = b" " + reply if reply else b""
    if headers is None:
        return b"MSG s.%d %d%s %d\r\n%s\r\n" % (sid, sid, reply_part, len(payload), payload)
    size = len(headers) + len(payload)
    return b"HMSG s.%d %d%s %d %d\r\n%s%s\r\n" % (
        sid, sid, reply_part, len(headers), size, headers, payload
    )  # fmt: skip


_payload = st.binary(max_size=40) | st.sampled_from([b"", b"\r\n", b"MSG x 1 3\r\n", b"PING\r\n"])
_headers = st.none() | st.sampled_from(
    [b"NATS/1.0\r\n\r\n", b"NATS/1.0 404 No Messages\r\n\r\n", b"NATS/1.0\r\nA: b\r\n\r\n"]
)
_op = st.one_of(
    st.builds(_msg, st.sampled_from([RAW_SID, 3]), st.sampled_from([b"", b"_INBOX.r"]), _headers,
              _payload),
    st.sampled_from([b"PING\r\n", b"PONG\r\n", b"+OK\r\n", b'INFO {"a":1}\r\n',
                     b"-ERR 'Stale Connection'\r\n"]),
)  # fmt: skip


async def _parse(parser: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        await parser.parse(chunk)


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


@given(st.lists(_op, min_size=1, max_size=12), st.lists(st.integers(0, 10_000), max_size=8))
@pytest.mark.asyncio
async def test_the_same_deliveries_as_nats_py(ops: list[bytes], cuts: list[int]) -> None:
    chunks = _split(b"".join(ops), cuts)
    ours, theirs = Recorder(), Recorder()
    await _parse(RawParser(ours), chunks)
    await _parse(nats.protocol.parser.Parser(theirs), chunks)
    assert ours.seen == theirs.seen


@pytest.mark.asyncio
async def test_a_large_read_of_stored_messages() -> None:
    ops = [_msg(RAW_SID, b"$JS.ACK.L.c.1.%d.%d.0.0" % (n, n), None, b"x" * n) for n in range(500)]
    got = Recorder()
    parser = RawParser(got)
    await parser.parse(b"".join(ops))
    assert [s[4] for s in got.seen] == [b"x" * n for n in range(500)]
    assert not parser.buf


def test_status_of_a_status_message() -> None:
    assert status_of(b"NATS/1.0 408 Request Timeout\r\n\r\n") == "408"
    assert status_of(b"NATS/1.0\r\nNats-Msg-Id: 1\r\n\r\n") is None
    assert status_of(None) is None
