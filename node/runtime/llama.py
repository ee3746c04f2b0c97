"""In-process llama-cpp-python for GGUF files, one request at a time per model."""

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import llama_cpp
from llama_cpp import _internals
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from node.errors import NodeError
from node.runtime.base import Completion, Message, SamplingParams
from node.runtime.queue import QueuedRuntime, QueueGauge
from node.runtime.text import TextAssembler
from node.tiny_model import CHATML_TEMPLATE

STREAM_FLUSH_INTERVAL_S = 0.010
"""After the first token (sent at once, for TTFT), at most one stream event per interval:
a client parses events, not tokens, so batching keeps streams as fast as plain calls.
10 ms is 100 events a second, more than anyone reads; with 5 ms the tiny model's streams
fell to 0.88-0.89 of plain calls' tokens/s on a slower CPU (0.92 at 10 ms)."""


class _Job(NamedTuple):
    messages: list[Message]
    params: SamplingParams
    arrived: float
    cancel: threading.Event
    parts: list[str]
    """The text so far, appended to by the model's thread only: a stream reads it as it grows."""
    on_text: Callable[[], None] | None
    """Called by the model's thread after each append (streams only)."""


class Cancelled(Exception):
    """The client went away; the slot is given back at the next token."""


class LlamaRuntime(QueuedRuntime):
    kind = "llama_cpp"

    def __init__(
        self,
        name: str,
        path: Path,
        *,
        n_ctx: int = 0,
        n_threads: int = 0,
        max_queue: int = 64,
    ) -> None:
        self.name = name
        self.path = path
        self._n_ctx = n_ctx
        self._n_threads = n_threads or None
        self._gauge = QueueGauge(max_queue)
        # One worker thread is the model's slot: requests queue in front of it.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"llama-{name}")
        self._llm: llama_cpp.Llama | None = None
        self._formatter: Jinja2ChatFormatter | None = None
        self._pieces: dict[int, bytes] = {}
        self.failure: str | None = None

    @property
    def context_length(self) -> int:
        return self._llm.n_ctx() if self._llm else 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        if not self.path.is_file():
            self.failure = "model file not present"
            return
        try:
            llm = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=self._n_ctx,
                n_threads=self._n_threads,
                n_threads_batch=self._n_threads,
                verbose=False,
            )
        except (ValueError, OSError, RuntimeError) as exc:
            self.failure = f"model failed to load: {type(exc).__name__}"
            return
        template = llm.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        eos = llm.detokenize([llm.token_eos()], special=True).decode(errors="replace")
        bos = llm.detokenize([llm.token_bos()], special=True).decode(errors="replace")
        self._formatter = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)
        self._llm = llm
        self.failure = None

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._unload)
        self._executor.shutdown(wait=False)

    def _unload(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    async def complete(
        self, messages: list[Message], params: SamplingParams, arrived: float
    ) -> Completion:
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        with self._gauge.slot(self._unavailable):
            job = _Job(messages, params, arrived, cancel, [], None)
            future = loop.run_in_executor(self._executor, self._generate, job)
            try:
                return await future
            finally:
                cancel.set()  # a cancelled await (client gone) stops the thread too

    async def stream(
        self, messages: list[Message], params: SamplingParams, arrived: float
    ) -> AsyncIterator[str | Completion]:
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        parts: list[str] = []
        armed = True  # whether the next append wakes the loop; the GIL orders these accesses

        def on_text() -> None:
            nonlocal armed
            if armed:  # one loop wake-up per batch of tokens, not per token
                armed = False
                loop.call_soon_threadsafe(ready.set)

        with self._gauge.slot(self._unavailable):
            job = _Job(messages, params, arrived, cancel, parts, on_text)
            future = loop.run_in_executor(self._executor, self._generate, job)
            future.add_done_callback(lambda _: ready.set())
            last_sent, sent = 0.0, 0
            try:
                while True:
                    await ready.wait()
                    pause = last_sent + STREAM_FLUSH_INTERVAL_S - loop.time()
                    if last_sent and pause > 0 and not future.done():
                        # Let tokens gather into one event, but the end of the generation
                        # cuts the wait short: its last tokens must not sit out the pause.
                        await asyncio.wait((future,), timeout=pause)
                    ready.clear()
                    if future.done():  # what was not sent yet goes out with the finish
                        yield future.result()
                        return
                    armed = True  # before reading: whatever is appended after the read wakes us
                    end = len(parts)
                    if end > sent:
                        yield "".join(parts[sent:end])
                        sent, last_sent = end, loop.time()
            finally:
                cancel.set()
                future.add_done_callback(_retrieve)

    def _unavailable(self) -> NodeError | None:
        if self.failure or self._llm is None:
            return NodeError(
                503,
                "runtime_unavailable",
                f"model {self.name!r} is not available: {self.failure or 'not loaded'}",
            )
        return None

    def _generate(self, job: _Job) -> Completion:
        started = time.perf_counter()
        llm, formatter = self._llm, self._formatter
        if llm is None or formatter is None:
            raise NodeError(503, "runtime_unavailable", f"model {self.name!r} is not loaded")
        try:
            return self._run(llm, formatter, job, started)
        except (NodeError, Cancelled):
            raise
        except Exception as exc:  # a crash inside llama.cpp must not take the daemon down
            self.failure = f"runtime error: {type(exc).__name__}"
            raise NodeError(503, "runtime_failed", f"model {self.name!r} failed") from None

    def _run(
        self, llm: llama_cpp.Llama, formatter: Jinja2ChatFormatter, job: _Job, started: float
    ) -> Completion:
        params, arrived, parts, on_text = job.params, job.arrived, job.parts, job.on_text
        messages: Any = [{"role": m.role, "content": m.content} for m in job.messages]
        prompt = formatter(messages=messages)
        tokens = llm.tokenize(
            prompt.prompt.encode(), add_bos=not prompt.added_special, special=True
        )
        n_ctx = llm.n_ctx()
        if len(tokens) >= n_ctx:
            raise NodeError(
                400,
                "context_length_exceeded",
                f"the prompt has {len(tokens)} tokens; this model's context is {n_ctx}",
                param="messages",
            )
        budget = n_ctx - len(tokens)
        max_tokens = budget if params.max_tokens is None else min(params.max_tokens, budget)
        sampler = _sampler(llm, params)
        vocab = llm._model.vocab
        assembler = TextAssembler(params.stop)
        self._eval_prompt(llm, tokens)
        ttft = 0.0
        produced = 0
        finish = "length"
        try:
            while produced < max_tokens:
                if job.cancel.is_set():
                    raise Cancelled
                token = sampler.sample(llm._ctx, -1)
                if produced == 0:
                    ttft = (time.perf_counter() - arrived) * 1000
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish = "stop"
                    break
                produced += 1
                text = assembler.feed(self._piece(llm, token))
                if text:
                    parts.append(text)
                    if on_text is not None:
                        on_text()
                if assembler.stopped:
                    finish = "stop"
                    break
                if produced < max_tokens:
                    llm.eval([token])
        finally:
            sampler.close()
        rest = assembler.finish()
        if rest:
            parts.append(rest)
        return Completion(
            text="".join(parts),
            finish_reason=finish,
            prompt_tokens=len(tokens),
            completion_tokens=produced,
            queue_ms=(started - arrived) * 1000,
            ttft_ms=ttft,
            latency_ms=(time.perf_counter() - arrived) * 1000,
        )

    @staticmethod
    def _eval_prompt(llm: llama_cpp.Llama, tokens: list[int]) -> None:
        # Reuse the KV cache for the prefix shared with the previous request (same system
        # prompt, a growing conversation); at least one token is re-evaluated for logits.
        cached = llm.input_ids[: llm.n_tokens]
        shared = 0
        for a, b in zip(cached, tokens, strict=False):
            if a != b:
                break
            shared += 1
        shared = min(shared, len(tokens) - 1)
        if shared > 0 and llm._ctx.kv_cache_seq_rm(-1, shared, -1):
            llm.n_tokens = shared
        else:
            llm.reset()  # type: ignore[no-untyped-call]
        llm.eval(tokens[llm.n_tokens :])

    def _piece(self, llm: llama_cpp.Llama, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = llm.detokenize([token])
        return piece


def _retrieve(future: "asyncio.Future[Completion]") -> None:
    # An abandoned stream's Cancelled outcome is expected; asyncio must not report it.
    if not future.cancelled():
        future.exception()


def _sampler(llm: llama_cpp.Llama, params: SamplingParams) -> Any:
    sampler = _internals.LlamaSampler()  # type: ignore[no-untyped-call]
    if params.logit_bias:
        sampler.add_logit_bias(llm.n_vocab(), params.logit_bias)
    if params.presence_penalty or params.frequency_penalty:
        sampler.add_penalties(
            llm.n_vocab(), 64, 1.0, params.frequency_penalty, params.presence_penalty
        )
    if params.temperature <= 0:
        sampler.add_greedy()  # type: ignore[no-untyped-call]
        return sampler
    if params.top_p < 1.0:
        sampler.add_top_p(params.top_p, 1)
    sampler.add_temp(params.temperature)
    # Unseeded, llama.cpp would draw a seed from std::random_device: a syscall that costs
    # more than building the rest of the chain. Sampling needs no cryptographic seed.
    seed = random.getrandbits(32) if params.seed is None else params.seed & 0xFFFFFFFF
    sampler.add_dist(seed)
    return sampler
