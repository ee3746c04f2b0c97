"""The fixed benchmark set the control plane runs through a route (pure).

Greedy decoding with a fixed seed: the same model on the same runtime answers the same
way every time, so the outputs' hash is comparable across runs and nodes.
"""

import hashlib
import statistics

import msgspec

from domain.events import BenchmarkRun

SET_ID = "b3iq-bench-v1"
SEED = 1234
MAX_TOKENS = 32
PROMPTS = (
    ("count", "Count from one to ten, in words."),
    ("capital", "What is the capital of France? Answer in one sentence."),
    ("haiku", "Write a haiku about the sea."),
)


def request_body(model: str, prompt: str) -> bytes:
    return msgspec.json.encode(
        {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "seed": SEED,
            "max_tokens": MAX_TOKENS,
            "stream": True,
        }
    )


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    ttft_ms: float
    tokens_per_s: float
    output_sha256: str


def summarize(runs: list[BenchmarkRun]) -> Summary:
    """Median TTFT; tokens over generation time summed over the runs; one output hash."""
    generating_s = sum(max(r.latency_ms - r.ttft_ms, 1e-3) for r in runs) / 1000
    combined = hashlib.sha256("".join(r.output_sha256 for r in runs).encode()).hexdigest()
    return Summary(
        ttft_ms=round(statistics.median(r.ttft_ms for r in runs), 3),
        tokens_per_s=round(sum(r.completion_tokens for r in runs) / generating_s, 3),
        output_sha256=combined,
    )
