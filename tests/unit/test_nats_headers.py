"""Our header parser reads, and our header writer writes, exactly as nats-py's own."""

import asyncio

import nats.aio.client
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.errors import BadHeaderError
from nats.protocol import command as prot_command

from adapters.jetstream.client import Client, header_block

# Names and values drawn from bytes that matter: separators, whitespace of every kind
# (ASCII and the \x1c-\x1f separators str.isspace counts), non-ASCII, CR/LF.
_bytes = st.binary(max_size=12) | st.sampled_from(
    [b"Nats-Msg-Id", b"a b", b"\x1cx", b"x\x1f", b" k ", b"\t", b"\xc3\xa9", b"\xff", b":", b""]
)
_line = st.tuples(_bytes, st.sampled_from([b":", b": ", b":\t", b"", b"::"]), _bytes).map(b"".join)


@given(st.lists(_line, max_size=6), st.sampled_from([b"\r\n", b"\r\n\r\n"]))
def test_same_headers_as_nats_py(lines: list[bytes], end: bytes) -> None:
    raw = b"\r\n".join(lines) + end
    assert Client._parse_header_lines(raw) == nats.aio.client.Client._parse_header_lines(raw)


def test_a_stored_message_header_block() -> None:
    raw = b"Nats-Msg-Id: 0192abc\r\nNats-Expected-Last-Subject-Sequence: 41\r\n\r\n"
    assert Client._parse_header_lines(raw) == {
        "Nats-Msg-Id": "0192abc",
        "Nats-Expected-Last-Subject-Sequence": "41",
    }


_name = st.text(max_size=12) | st.sampled_from(["Nats-Msg-Id", " k ", "a b", "x:y", ""])
_value = st.text(max_size=12) | st.sampled_from(["41", " v ", "a\r\nb", "\n", "é"])


@given(st.dictionaries(_name, _value, max_size=5))
def test_header_blocks_are_written_as_nats_py_writes_them(headers: dict[str, str]) -> None:
    """What publish_now sends with headers is byte for byte nats-py's HPUB."""
    sent: list[bytes] = []

    async def capture(command: bytes, priority: bool = False) -> None:
        sent.append(command)

    theirs = nats.aio.client.Client()
    theirs._send_command = capture  # type: ignore[method-assign]
    theirs._flush_queue = None
    try:
        asyncio.run(theirs._send_publish("s", "r", b"data", 4, headers))
    except BadHeaderError:
        with pytest.raises(BadHeaderError):
            header_block(headers)
        return
    assert sent == [prot_command.hpub_cmd("s", "r", header_block(headers), b"data")]
