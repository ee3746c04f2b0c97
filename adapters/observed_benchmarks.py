"""Benchmarks the control plane runs itself, through the node's broker route.

What the node says about its speed is its own claim; what counts for paid routing is
what the control plane saw: it sends the fixed set, times the first token and the whole
answer on its own clock, checks each signed receipt, and signs the result onto the log.
"""

import hashlib
import time
from collections.abc import Callable
from datetime import datetime

import msgspec

from adapters.broker import Broker, RouteUnavailable
from adapters.http.problems import ApiError
from adapters.node_auth import NodeDirectory, require_receipt
from adapters.recorder import Recorder
from domain import benchmark_set
from domain.broker_frames import Chunk, Done, Failed
from domain.decoding import Decoded
from domain.events import BenchmarkObserved, BenchmarkRun, Event
from domain.ids import uuid7


class _Delta(msgspec.Struct, frozen=True):
    content: str | None = None


class _Choice(msgspec.Struct, frozen=True):
    delta: _Delta


class _Chunk(msgspec.Struct, frozen=True):
    choices: list[_Choice]


_chunk = msgspec.json.Decoder(_Chunk)


class ObservedBenchmarks:
    def __init__(
        self,
        broker: Broker,
        recorder: Recorder,
        directory: NodeDirectory,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self._broker = broker
        self._recorder = recorder
        self._directory = directory
        self._clock = clock

    async def observe(self, node_id: str, model: str, requested_by: str) -> BenchmarkObserved:
        runs = [
            await self._run(node_id, model, prompt_id, prompt)
            for prompt_id, prompt in benchmark_set.PROMPTS
        ]
        summary = benchmark_set.summarize([run for run, _ in runs])
        event = BenchmarkObserved(
            node_id=node_id,
            model=model,
            set_id=benchmark_set.SET_ID,
            runtime_kind=runs[0][1],
            ttft_ms=summary.ttft_ms,
            tokens_per_s=summary.tokens_per_s,
            output_sha256=summary.output_sha256,
            runs=[run for run, _ in runs],
            observed_at=self._clock(),
            requested_by=requested_by,
        )

        def decide(_: Decoded | None) -> list[Event]:
            return [event]

        await self._recorder.record(self._recorder.topology.subject("benchmark", node_id), decide)
        return event

    async def _run(
        self, node_id: str, model: str, prompt_id: str, prompt: str
    ) -> tuple[BenchmarkRun, str]:
        started = time.perf_counter()
        ttft: float | None = None
        text: list[str] = []
        dispatch_id = uuid7()
        try:
            async for frame in self._broker.dispatch(
                node_id, benchmark_set.request_body(model, prompt), dispatch_id
            ):
                if isinstance(frame, Chunk):
                    ttft = ttft if ttft is not None else time.perf_counter() - started
                    text.extend(c.delta.content or "" for c in _chunk.decode(frame.data).choices)
                elif isinstance(frame, Failed):
                    if 400 <= frame.status < 500:  # the node refused: e.g. a model not offered
                        raise ApiError(frame.status, frame.code, "Refused", frame.message)
                    raise ApiError(
                        502,
                        "router_dispatch_failed",
                        "Bad Gateway",
                        f"the node failed the benchmark: {frame.code}",
                    )
                elif isinstance(frame, Done):
                    latency = time.perf_counter() - started
                    receipt = frame.receipt
                    await require_receipt(
                        self._directory,
                        receipt,
                        node_id=node_id,
                        model=model,
                        dispatch_id=dispatch_id,
                    )
                    run = BenchmarkRun(
                        prompt_id=prompt_id,
                        ttft_ms=round((ttft if ttft is not None else latency) * 1000, 3),
                        latency_ms=round(latency * 1000, 3),
                        completion_tokens=receipt.body.usage.completion_tokens,
                        output_sha256=hashlib.sha256("".join(text).encode()).hexdigest(),
                        receipt_hash=receipt.receipt_hash,
                    )
                    return run, receipt.body.runtime_kind
        except RouteUnavailable:
            raise ApiError(
                503, "route_unavailable", "Service Unavailable", "the node's route is down"
            ) from None
        raise ApiError(502, "router_dispatch_failed", "Bad Gateway", "the route closed")
