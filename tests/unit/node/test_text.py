from node.runtime.text import TextAssembler


def feed_all(assembler: TextAssembler, pieces: list[bytes]) -> str:
    return "".join(assembler.feed(p) for p in pieces) + assembler.finish()


def test_multibyte_characters_split_across_tokens() -> None:
    data = "日本 ü".encode()
    assert feed_all(TextAssembler(), [data[i : i + 1] for i in range(len(data))]) == "日本 ü"


def test_nothing_is_emitted_twice_or_late() -> None:
    assembler = TextAssembler()
    assert assembler.feed(b"ab") == "ab"
    assert assembler.feed(b"\xe6\x97") == ""
    assert assembler.feed(b"\xa5c") == "日c"


def test_stop_sequence_across_tokens_is_cut_and_held_back() -> None:
    assembler = TextAssembler(("END",))
    out = [assembler.feed(p) for p in (b"hello E", b"N", b"D more")]
    assert "".join(out) == "hello "
    assert assembler.stopped
    assert assembler.finish() == ""


def test_held_text_is_released_when_no_stop_follows() -> None:
    assembler = TextAssembler(("STOP",))
    assert feed_all(assembler, [b"a", b"S", b"T", b"x"]) == "aSTx"
    assert not assembler.stopped


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert feed_all(TextAssembler(), [b"\xff", b"a"]) == "\ufffda"
