"""Local inference on the tiny model: in-process llama_cpp vs our node's HTTP API vs the peer.

The peer is llama-cpp-python's own OpenAI server (`python -m llama_cpp.server`), measured
when its extra dependencies are installed. HTTP targets are called with the official `openai`
client, as users would, and every target samples alike (see SAMPLING). The floor row is that
client against an endpoint that does no work (ops/bench/noop_openai_server.py): what one call
costs before any server does anything.

The targets take turns in slices of 0.2 s until each has run its share, so that load from
other processes, which shifts over seconds, falls on all of them alike; non-streamed and
streamed calls take turns the same way. Figures are medians over rounds. Run:
`.venv/bin/python -m ops.bench.bench_local_inference [--rounds 3] [--seconds 2]`.
"""

import argparse
import asyncio
import gc
import importlib.util
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import llama_cpp
import openai
from rich.console import Console
from rich.table import Table

EOS_ID, IM_END_ID = 2, 260
"""The tiny model's end tokens (see node/tiny_model.py); biased away so runs hit max_tokens."""
NO_END = {str(EOS_ID): -100, str(IM_END_ID): -100}
MESSAGES: Any = [{"role": "user", "content": "hello there, node"}]
SAMPLING: Any = {"temperature": 1.0, "top_p": 1.0}
"""OpenAI's defaults, sent explicitly: every target samples alike, whatever its own defaults."""
LLAMA_CPP_ONLY: Any = {"top_k": 0, "min_p": 0.0}
"""Samplers llama-cpp-python adds by default (top_k 40, min_p 0.05) and the node has no
equivalent of: switched off in-process and on the peer, so that all do the same work."""
IN_PROCESS, OURS, PEER, FLOOR = (
    "in-process llama_cpp",
    "b3iq-host HTTP",
    "llama_cpp.server",
    "floor: no-op HTTP",
)

Call = Callable[[], int]
"""One call; returns what it produced: 1 (a call) or its completion tokens."""


@dataclass
class Target:
    short: Call
    """One 16-token call."""
    long: Call | None = None
    streamed: Call | None = None
    calls: list[float] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)
    stream_tokens: list[float] = field(default_factory=list)
    stream_ratio: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    """Seconds to the first content of each streamed call."""
    usage_chunk: str = "-"
    broken: str = "-"
    node_ms: list[float] = field(default_factory=list)
    """Our node's own b3iq.latency_ms of each 16-token call: handler to last token."""
    client: Callable[[], Call] | None = None
    """Makes a 16-token call with a client of its own, for clients calling at once (an
    HTTP server overlaps one request's parsing and answering with another's generation;
    in-process llama_cpp has one context and nothing to overlap, so it has none)."""
    concurrent: list[float] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _host_cli(home: Path, *args: str) -> str:
    command = [sys.executable, "-m", "node.cli", "--home", str(home), *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


@contextmanager
def _serving(command: list[str], health_url: str) -> Iterator[None]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(health_url, timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{command[2]} did not start")
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(10)


def _interleaved(calls: list[Call], seconds: float, slice_s: float = 0.2) -> list[float]:
    """What each call produces per second, the calls taking turns in slices of slice_s, in a
    fresh random order each turn (no call always follows the same one), until each has run
    for `seconds`."""
    for call in calls:
        call()  # warm-up
    produced, spent = [0] * len(calls), [0.0] * len(calls)
    order, shuffle = list(range(len(calls))), random.Random(0).shuffle  # noqa: S311 (no secret)
    # As timeit does: no collection inside a measurement, where it would land on whichever
    # call happens to run (in-process llama_cpp leaves plenty of garbage).
    gc.collect()
    gc.disable()
    try:
        while min(spent) < seconds:
            shuffle(order)
            for i in order:
                started = time.perf_counter()
                while (elapsed := time.perf_counter() - started) < slice_s:
                    produced[i] += calls[i]()
                spent[i] += elapsed
    finally:
        gc.enable()
    return [n / t for n, t in zip(produced, spent, strict=True)]


def _round(targets: dict[str, Target], seconds: float, clients: int) -> None:
    shorts = list(targets.values())
    for target, rate in zip(shorts, _interleaved([t.short for t in shorts], seconds), strict=True):
        target.calls.append(rate)
    for target in shorts:  # in-process has one context: its sequential rate is its best
        make = target.client
        at_once = _concurrently([make() for _ in range(clients)], seconds) if make else None
        target.concurrent.append(at_once or target.calls[-1])
    both = [(t, long, streamed) for t in shorts if (long := t.long) and (streamed := t.streamed)]
    rates = _interleaved([call for _, *pair in both for call in pair], seconds)
    for i, (target, _, _) in enumerate(both):
        plain, streamed_rate = rates[2 * i], rates[2 * i + 1]
        target.tokens.append(plain)
        target.stream_tokens.append(streamed_rate)
        target.stream_ratio.append(streamed_rate / plain)


def in_process(llm: llama_cpp.Llama, long_tokens: int) -> Target:
    bias = {int(k): float(v) for k, v in NO_END.items()}

    def call(max_tokens: int, stream: bool = False) -> Any:
        return llm.create_chat_completion(
            MESSAGES,
            max_tokens=max_tokens,
            logit_bias=bias,
            stream=stream,
            **SAMPLING,
            **LLAMA_CPP_ONLY,
        )

    def short() -> int:
        call(16)
        return 1

    def long() -> int:
        call(long_tokens)
        return long_tokens

    ttfts: list[float] = []

    def streamed() -> int:
        started, first, n = time.perf_counter(), 0.0, 0
        for chunk in call(long_tokens, stream=True):
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = first or time.perf_counter() - started
                n += 1
        ttfts.append(first)
        return n  # content chunks: llama-cpp-python sends one per token

    return Target(short, long, streamed, ttfts=ttfts)


def over_http(base_url: str, key: str, model: str, long_tokens: int, extra: Any = None) -> Target:
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    args: Any = {"model": model, "messages": MESSAGES, "logit_bias": NO_END, "extra_body": extra}
    args |= SAMPLING
    node_ms: list[float] = []

    def own_client() -> Call:
        mine = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)

        def short() -> int:
            mine.chat.completions.create(max_tokens=16, **args)
            return 1

        return short

    def short() -> int:
        completion = client.chat.completions.create(max_tokens=16, **args)
        info = (completion.model_extra or {}).get("b3iq")
        if info:
            node_ms.append(info["latency_ms"])
        return 1

    def long() -> int:
        client.chat.completions.create(max_tokens=long_tokens, **args)
        return long_tokens

    ttfts: list[float] = []

    def streamed() -> int:
        started, first, chunks, usage = time.perf_counter(), 0.0, 0, None
        for chunk in client.chat.completions.create(
            max_tokens=long_tokens,
            stream=True,
            stream_options={"include_usage": True},
            **args,
        ):
            if chunk.usage is not None:
                usage = chunk.usage.completion_tokens
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter() - started
                chunks += 1
        ttfts.append(first)
        if usage is None:
            target.usage_chunk = "no"
        return usage if usage is not None else chunks

    target = Target(
        short, long, streamed, ttfts=ttfts, usage_chunk="yes", node_ms=node_ms, client=own_client
    )
    target.broken = str(asyncio.run(_broken_streams(base_url, key, args, 8, long_tokens)))
    return target


def floor(base_url: str) -> Target:
    def own_client() -> Call:
        client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0)

        def short() -> int:
            client.chat.completions.create(
                model="tiny", messages=MESSAGES, max_tokens=16, logit_bias=NO_END, **SAMPLING
            )
            return 1

        return short

    return Target(own_client(), client=own_client)


def _concurrently(calls: list[Call], seconds: float) -> float:
    """Calls per second with each call made back to back in a thread of its own."""
    for call in calls:
        call()  # warm-up: connect
    counts = [0] * len(calls)
    deadline = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < deadline:
            counts[i] += calls[i]()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(calls))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


async def _broken_streams(base_url: str, key: str, args: Any, concurrency: int, n: int) -> int:
    """Streams at this concurrency that fail or end without their finish chunk."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)

    async def one() -> bool:
        try:
            stream = await client.chat.completions.create(max_tokens=n, stream=True, **args)
            finished = [c async for c in stream if c.choices and c.choices[0].finish_reason]
            return len(finished) != 1
        except (openai.APIError, httpx.HTTPError):
            return True

    results = await asyncio.gather(*(one() for _ in range(concurrency)))
    await client.close()
    return sum(results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="per call kind and round")
    parser.add_argument("--long-tokens", type=int, default=128)
    parser.add_argument("--clients", type=int, default=4, help="for calls at once")
    args = parser.parse_args()
    targets: dict[str, Target] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as servers:
        home, model = Path(tmp) / "home", Path(tmp) / "tiny.gguf"
        _host_cli(home, "models", "make-tiny", str(model))
        _host_cli(home, "init")
        _host_cli(home, "keys", "create", "--name", "bench", "--out", str(home / "key"))
        key = (home / "key").read_text().strip()

        llm = llama_cpp.Llama(str(model), n_ctx=0, verbose=False)
        servers.callback(llm.close)
        targets[IN_PROCESS] = in_process(llm, args.long_tokens)

        port = _free_port()
        ours = [sys.executable, "-m", "node.cli", "--home", str(home), "run"]
        ours += ["--port", str(port), "--model", str(model)]
        servers.enter_context(_serving(ours, f"http://127.0.0.1:{port}/health"))
        targets[OURS] = over_http(f"http://127.0.0.1:{port}/v1", key, "tiny", args.long_tokens)

        if importlib.util.find_spec("sse_starlette") and importlib.util.find_spec("fastapi"):
            port = _free_port()
            peer = [sys.executable, "-m", "llama_cpp.server", "--model", str(model)]
            peer += ["--port", str(port), "--model_alias", "tiny"]
            servers.enter_context(_serving(peer, f"http://127.0.0.1:{port}/v1/models"))
            targets[PEER] = over_http(
                f"http://127.0.0.1:{port}/v1", "none", "tiny", args.long_tokens, LLAMA_CPP_ONLY
            )
        else:
            print("peer skipped: llama_cpp.server needs llama-cpp-python[server] (fastapi, ...)")

        port = _free_port()
        noop = [sys.executable, "-m", "ops.bench.noop_openai_server", "--port", str(port)]
        servers.enter_context(_serving(noop, f"http://127.0.0.1:{port}/"))
        targets[FLOOR] = floor(f"http://127.0.0.1:{port}/v1")

        for _ in range(args.rounds):
            _round(targets, args.seconds, args.clients)
    _print(targets, args)
    return 0


def _median(values: list[float], fmt: str) -> str:
    return format(statistics.median(values), fmt) if values else "-"


def _ratio(a: list[float], b: list[float]) -> float:
    """The median over rounds of a/b within each round."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def _print(targets: dict[str, Target], args: argparse.Namespace) -> None:
    table = Table(
        title=f"tiny model, {os.cpu_count()} CPUs, openai client for HTTP targets, "
        f"median of {args.rounds} rounds, {args.seconds:g} s per call kind"
    )
    for column in (
        "target",
        "16-tok calls/s",
        f"calls/s, {args.clients} clients",
        f"{args.long_tokens}-tok tokens/s",
        "stream tokens/s",
        "stream/non-stream",
        "TTFT p50 ms",
        "broken @8",
        "usage chunk",
    ):
        table.add_column(column, justify="right")
    for name, t in targets.items():
        table.add_row(
            name,
            _median(t.calls, ".0f"),
            _median(t.concurrent, ".0f"),
            _median(t.tokens, ".0f"),
            _median(t.stream_tokens, ".0f"),
            _median(t.stream_ratio, ".2f"),
            _median([s * 1000 for s in t.ttfts], ".2f"),
            t.broken,
            t.usage_chunk,
        )
    console = Console(width=150)  # a table in a log or CI output must not be squeezed
    console.print(table)
    base, ours, noop = targets[IN_PROCESS], targets[OURS], targets[FLOOR]
    console.print(
        f"ours/in-process 16-token calls/s: {_ratio(ours.calls, base.calls):.2f} one at a time, "
        f"{_ratio(ours.concurrent, base.concurrent):.2f} with {args.clients} clients at once "
        "(target ≥ 0.75)"
        f"; ours stream/non-stream tokens/s: {statistics.median(ours.stream_ratio):.2f}"
        " (target ≥ 0.9)"
    )
    # A server that generated exactly as fast as in-process llama_cpp, with no overhead of its
    # own, would still pay the floor on every call: this is its best ratio.
    bound = [1 / (1 + b / f) for b, f in zip(base.calls, noop.calls, strict=True)]
    floor_ms, base_ms = 1000 / statistics.median(noop.calls), 1000 / statistics.median(base.calls)
    console.print(
        f"floor: openai client + one HTTP exchange, no work: {floor_ms:.2f} ms/call; "
        f"in-process 16-token call {base_ms:.2f} ms; a server generating as fast as in-process "
        f"with zero overhead of its own reaches {statistics.median(bound):.2f} of in-process "
        "calls/s"
    )
    if ours.node_ms:
        ours_ms, node_ms = 1000 / statistics.median(ours.calls), statistics.median(ours.node_ms)
        console.print(
            f"ours 16-token call: {ours_ms:.2f} ms = floor {floor_ms:.2f} + {node_ms:.2f} in the "
            "node from handler to last token (median b3iq.latency_ms, the hand-off to the "
            f"model's thread included) + {ours_ms - floor_ms - node_ms:.2f} the rest (routing, "
            "key check, receipt, response, the hand-back, the client waiting longer); with no "
            f"rest at all: {base_ms / (floor_ms + node_ms):.2f} of in-process calls/s"
        )


if __name__ == "__main__":
    sys.exit(main())
