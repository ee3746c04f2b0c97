"""Our header parser gives exactly what nats-py's own gives."""

import nats.aio.client
from hypothesis import given
from hypothesis import strategies as st

from adapters.jetstream.client import Client

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
