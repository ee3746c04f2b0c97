"""Benchmarks the control plane ran itself through a node's broker route."""

from datetime import datetime

import msgspec

from domain.events.base import Event


class BenchmarkRun(msgspec.Struct, frozen=True, kw_only=True):
    prompt_id: str
    ttft_ms: float
    latency_ms: float
    completion_tokens: int
    output_sha256: str
    receipt_hash: str
    """The node's signed receipt for this run (usage and timings, no content)."""


class BenchmarkObserved(Event, frozen=True, kw_only=True):
    """Signed by the control plane (the envelope): what it measured, not what the node said."""

    node_id: str
    model: str
    set_id: str
    """The fixed benchmark set: its prompts, temperature 0 and seed."""
    runtime_kind: str
    ttft_ms: float
    """Median time to first token over the runs, as the control plane saw it."""
    tokens_per_s: float
    """Completion tokens over generation time, summed over the runs."""
    output_sha256: str
    """Over every run's output in order: a node that answers differently shows up."""
    runs: list[BenchmarkRun]
    observed_at: datetime
    requested_by: str
