"""A tiny llama GGUF with random weights, written here so tests never download a model.

The vocabulary is SentencePiece-style (`llama` tokenizer): control tokens, the 256 byte
tokens so that any text tokenizes through byte fallback, ChatML markers and a few hundred
ordinary pieces.
"""

from pathlib import Path

import gguf
import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
_BYTES_START = 3
IM_START_ID = _BYTES_START + 256
IM_END_ID = IM_START_ID + 1

_WORD_TEXT = """
the of and to in is it you that was for on are with as be at this have from or by one not
but what all were when we there can an your which their said if do will each about how up
out them then many some so would other into has more two like time could no make than first
been who now people my over did down only way find hello model local node host token
"""
_WORDS = _WORD_TEXT.split()


def _vocab() -> tuple[list[str], list[int], list[float]]:
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    tokens += ["<|im_start|>", "<|im_end|>"]
    types += [gguf.TokenType.CONTROL] * 2
    pieces = ["▁", *(chr(c) for c in range(ord("a"), ord("z") + 1))]
    pieces += [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    pieces += list("0123456789.,!?'-:;()")
    # Every prefix of "▁word" is a piece, so pair merges can build whole words.
    pieces += [f"▁{w[:n]}" for w in _WORDS for n in range(1, len(w) + 1)]
    unique = list(dict.fromkeys(pieces))
    tokens += unique
    types += [gguf.TokenType.NORMAL] * len(unique)
    # SentencePiece merges the highest-scoring pair first: longer pieces score higher.
    scores = [0.0] * (len(tokens) - len(unique)) + [float(len(p)) for p in unique]
    return tokens, [int(t) for t in types], scores


def write_tiny_model(
    path: Path,
    *,
    n_layers: int = 2,
    n_embd: int = 64,
    n_heads: int = 4,
    n_ff: int = 128,
    context_length: int = 512,
    seed: int = 0,
) -> Path:
    """Write the model to `path` (same seed, same bytes) and return the path."""
    tokens, types, scores = _vocab()
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("b3iq-tiny")
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(n_heads)
    writer.add_rope_dimension_count(n_embd // n_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(n_vocab)

    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_scores(scores)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_unk_token_id(UNK_ID)
    writer.add_eot_token_id(IM_END_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    ones = np.ones(n_embd, dtype=np.float32)
    # numpy shapes are ggml's reversed: a (rows, cols) array is ggml [cols, rows].
    writer.add_tensor("token_embd.weight", weights(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", weights(n_vocab, n_embd))
    for i in range(n_layers):
        block = f"blk.{i}"
        writer.add_tensor(f"{block}.attn_norm.weight", ones)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", weights(n_embd, n_embd))
        writer.add_tensor(f"{block}.ffn_norm.weight", ones)
        writer.add_tensor(f"{block}.ffn_gate.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(n_embd, n_ff))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
