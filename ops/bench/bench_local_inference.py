"""Local inference on the tiny model: in-process llama_cpp vs our node's HTTP API vs the peer.

The peer is llama-cpp-python's own OpenAI server (`python -m llama_cpp.server`), measured
when its extra dependencies are installed. HTTP targets are called with the official `openai`
client, as users would. Run: `.venv/bin/python -m ops.bench.bench_local_inference`.
"""

import argparse
import asyncio
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


class Row(dict[str, Any]):
    pass


def _timed_calls(call: Callable[[], object], seconds: float) -> float:
    call()  # warm-up
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        call()
        n += 1
    return n / (time.perf_counter() - started)


def bench_in_process(model: Path, seconds: float, long_tokens: int) -> Row:
    llm = llama_cpp.Llama(str(model), n_ctx=0, verbose=False)
    bias = {int(k): float(v) for k, v in NO_END.items()}

    def short() -> object:
        return llm.create_chat_completion(MESSAGES, max_tokens=16, logit_bias=bias)

    def long() -> object:
        return llm.create_chat_completion(MESSAGES, max_tokens=long_tokens, logit_bias=bias)

    def streamed() -> tuple[int, float]:
        started, first, n = time.perf_counter(), 0.0, 0
        chunks: Any = llm.create_chat_completion(
            MESSAGES, max_tokens=long_tokens, logit_bias=bias, stream=True
        )
        for chunk in chunks:
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = first or time.perf_counter() - started
                n += 1
        return n, first

    ttfts, tokens, started = [], 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        n, first = streamed()
        tokens += n
        ttfts.append(first)
    stream_rate = tokens / (time.perf_counter() - started)
    calls, long_rate = _timed_calls(short, seconds), _timed_calls(long, seconds) * long_tokens
    llm.close()
    return Row(
        calls=calls,
        tokens=long_rate,
        stream_tokens=stream_rate,
        ttft_ms=statistics.median(ttfts) * 1000,
        broken="-",
        usage_chunk="-",
    )


def bench_http(base_url: str, key: str, model: str, seconds: float, long_tokens: int) -> Row:
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)

    def short() -> object:
        return client.chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=16, logit_bias=NO_END
        )

    def long() -> object:
        return client.chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=long_tokens, logit_bias=NO_END
        )

    def streamed() -> tuple[int, float, bool]:
        started, first, chunks, usage = time.perf_counter(), 0.0, 0, None
        for chunk in client.chat.completions.create(
            model=model,
            messages=MESSAGES,
            max_tokens=long_tokens,
            logit_bias=NO_END,
            stream=True,
            stream_options={"include_usage": True},
        ):
            if chunk.usage is not None:
                usage = chunk.usage.completion_tokens
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter() - started
                chunks += 1
        return (usage if usage is not None else chunks), first, usage is not None

    ttfts, tokens, usage_seen, started = [], 0, True, time.perf_counter()
    while time.perf_counter() - started < seconds:
        n, first, had_usage = streamed()
        tokens += n
        ttfts.append(first)
        usage_seen &= had_usage
    stream_rate = tokens / (time.perf_counter() - started)
    return Row(
        calls=_timed_calls(short, seconds),
        tokens=_timed_calls(long, seconds) * long_tokens,
        stream_tokens=stream_rate,
        ttft_ms=statistics.median(ttfts) * 1000,
        broken=asyncio.run(_broken_streams(base_url, key, model, 8, long_tokens)),
        usage_chunk="yes" if usage_seen else "no",
    )


async def _broken_streams(base_url: str, key: str, model: str, concurrency: int, n: int) -> int:
    """Streams at this concurrency that fail or end without their finish chunk."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)

    async def one() -> bool:
        try:
            stream = await client.chat.completions.create(
                model=model, messages=MESSAGES, max_tokens=n, logit_bias=NO_END, stream=True
            )
            finished = [c async for c in stream if c.choices and c.choices[0].finish_reason]
            return len(finished) != 1
        except (openai.APIError, httpx.HTTPError):
            return True

    results = await asyncio.gather(*(one() for _ in range(concurrency)))
    await client.close()
    return sum(results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--long-tokens", type=int, default=128)
    args = parser.parse_args()
    rows: dict[str, Row] = {}
    with tempfile.TemporaryDirectory() as tmp:
        home, model = Path(tmp) / "home", Path(tmp) / "tiny.gguf"
        _host_cli(home, "models", "make-tiny", str(model))
        _host_cli(home, "init")
        _host_cli(home, "keys", "create", "--name", "bench", "--out", str(home / "key"))
        key = (home / "key").read_text().strip()

        rows["in-process llama_cpp"] = bench_in_process(model, args.seconds, args.long_tokens)
        port = _free_port()
        ours = [sys.executable, "-m", "node.cli", "--home", str(home), "run"]
        ours += ["--port", str(port), "--model", str(model)]
        with _serving(ours, f"http://127.0.0.1:{port}/health"):
            rows["b3iq-host HTTP"] = bench_http(
                f"http://127.0.0.1:{port}/v1", key, "tiny", args.seconds, args.long_tokens
            )
        if importlib.util.find_spec("sse_starlette") and importlib.util.find_spec("fastapi"):
            port = _free_port()
            peer = [sys.executable, "-m", "llama_cpp.server", "--model", str(model)]
            peer += ["--port", str(port), "--model_alias", "tiny"]
            with _serving(peer, f"http://127.0.0.1:{port}/v1/models"):
                rows["llama_cpp.server"] = bench_http(
                    f"http://127.0.0.1:{port}/v1", "none", "tiny", args.seconds, args.long_tokens
                )
        else:
            print("peer skipped: llama_cpp.server needs llama-cpp-python[server] (fastapi, ...)")
    _print(rows, args.long_tokens)
    return 0


def _print(rows: dict[str, Row], long_tokens: int) -> None:
    table = Table(title=f"tiny model, {os.cpu_count()} CPUs, openai client for HTTP targets")
    for column in (
        "target",
        "16-tok calls/s",
        f"{long_tokens}-tok tokens/s",
        "stream tokens/s",
        "stream/non-stream",
        "TTFT p50 ms",
        "broken @8",
        "usage chunk",
    ):
        table.add_column(column, justify="right")
    for name, r in rows.items():
        table.add_row(
            name,
            f"{r['calls']:.0f}",
            f"{r['tokens']:.0f}",
            f"{r['stream_tokens']:.0f}",
            f"{r['stream_tokens'] / r['tokens']:.2f}",
            f"{r['ttft_ms']:.2f}",
            str(r["broken"]),
            r["usage_chunk"],
        )
    console = Console(width=140)  # a table in a log or CI output must not be squeezed
    console.print(table)
    base, ours = rows.get("in-process llama_cpp"), rows.get("b3iq-host HTTP")
    if base and ours:
        console.print(
            f"ours/in-process 16-token calls/s: {ours['calls'] / base['calls']:.2f} (target ≥ 0.75)"
            f"; ours stream/non-stream tokens/s: {ours['stream_tokens'] / ours['tokens']:.2f}"
            " (target ≥ 0.9)"
        )


if __name__ == "__main__":
    sys.exit(main())
