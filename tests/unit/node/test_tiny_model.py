import time
from pathlib import Path

import llama_cpp

from node.tiny_model import BOS_ID, EOS_ID, IM_END_ID, write_tiny_model


def test_tiny_model_is_small_deterministic_and_loads_fast(tmp_path: Path) -> None:
    first = write_tiny_model(tmp_path / "a.gguf")
    second = write_tiny_model(tmp_path / "b.gguf")
    assert first.read_bytes() == second.read_bytes()
    assert first.stat().st_size < 2_000_000
    started = time.perf_counter()
    llm = llama_cpp.Llama(str(first), verbose=False)
    assert time.perf_counter() - started < 2.0
    assert llm.token_bos() == BOS_ID
    assert llm.token_eos() == EOS_ID
    assert 256 < llm.n_vocab() < 1000
    assert "<|im_start|>" in llm.metadata["tokenizer.chat_template"]
    assert int(llm.metadata["tokenizer.ggml.eot_token_id"]) == IM_END_ID
    assert llm.metadata["general.architecture"] == "llama"
    assert int(llm.metadata["llama.block_count"]) == 2
    assert int(llm.metadata["llama.embedding_length"]) == 64
    text = "hello node, ünïcode 日本 ✓".encode()
    tokens = llm.tokenize(text, add_bos=False)
    assert llm.detokenize(tokens).lstrip(b" ") == text  # SentencePiece adds a space prefix
    llm.close()


def test_a_different_seed_gives_different_weights(tmp_path: Path) -> None:
    a = write_tiny_model(tmp_path / "a.gguf", seed=1).read_bytes()
    b = write_tiny_model(tmp_path / "b.gguf", seed=2).read_bytes()
    assert a != b
