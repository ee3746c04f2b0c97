"""Many idle managed nodes on the broker route: the load side of `bench_broker.py`.

    .venv/bin/python -m ops.bench.broker_load --url ws://127.0.0.1:PORT/v1/broker/connect
        --keys FILE [--part I/K] [--concurrency N] [--no-deflate]

Runs as a process of its own, so the control plane's memory is measured alone. Each line
of FILE is a node (``{"node_id": …, "seed": base64}``); this process takes every K-th one
starting at I, dials the broker exactly as `node/managed/route.py` does (a signed GET
upgrade, the same connect options), then stays idle, answering the control plane's
``ping`` frames with ``pong`` so its probes pass. Once a second it prints one JSON line of
counts to stdout; it closes every connection and exits when stdin reaches its end.
"""

import argparse
import asyncio
import contextlib
import json
import resource
import secrets
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from domain.broker_frames import BROKER_PATH, Ping, Pong, encode, to_node
from domain.canonical import b64decode
from domain.node_requests import sign_request
from domain.signing import Signer

ATTEMPTS = 4
"""Dials per node before it counts as failed (a busy server may answer 503)."""


class NodeKey(msgspec.Struct, frozen=True):
    node_id: str
    seed: str
    """The Ed25519 seed, base64: the benchmark made these nodes and enrolled them."""


@dataclass
class Counts:
    open: int = 0
    failed: int = 0
    closed: int = 0
    """Connections the server ended after they were open."""
    pongs: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        return json.dumps(
            {
                "open": self.open,
                "failed": self.failed,
                "closed": self.closed,
                "pongs": self.pongs,
                "errors": dict(self.errors.most_common(5)),
            }
        )


def raise_fd_limit() -> int:
    """As many descriptors as the hard limit allows: one socket per node."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Fleet:
    def __init__(self, url: str, concurrency: int, *, deflate: bool = True) -> None:
        self._url = url
        self._compression: str | None = "deflate" if deflate else None
        self._dialling = asyncio.Semaphore(concurrency)
        self.counts = Counts()
        self._sessions: list[asyncio.Task[None]] = []

    def start(self, keys: Sequence[NodeKey]) -> None:
        self._sessions = [asyncio.create_task(self._node(k)) for k in keys]

    async def close(self) -> None:
        for task in self._sessions:
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)

    async def _dial(self, key: NodeKey, signer: Signer) -> ClientConnection | None:
        for attempt in range(ATTEMPTS):
            # Signed just before the dial: the timestamp must be inside the server's skew.
            headers = sign_request(
                signer,
                key.node_id,
                method="GET",
                path=BROKER_PATH,
                body=b"",
                timestamp=int(time.time()),
                nonce=secrets.token_urlsafe(18),
            )
            try:
                async with self._dialling:
                    # The options node/managed/route.py uses (permessage-deflate offered, the
                    # websockets default): what real nodes cost the server.
                    return await connect(
                        self._url,
                        additional_headers=headers,
                        max_size=16 * 2**20,
                        open_timeout=30,
                        compression=self._compression,
                    )
            except InvalidStatus as exc:
                self.counts.errors[f"HTTP {exc.response.status_code}"] += 1
            except (OSError, TimeoutError, ConnectionClosed) as exc:
                self.counts.errors[type(exc).__name__] += 1
            await asyncio.sleep(0.5 * 2**attempt)
        self.counts.failed += 1
        return None

    async def _node(self, key: NodeKey) -> None:
        ws = await self._dial(key, Signer(b64decode(key.seed)))
        if ws is None:
            return
        self.counts.open += 1
        try:
            async for message in ws:
                try:
                    frame = to_node.decode(message)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    self.counts.errors["undecodable frame"] += 1
                    continue
                if isinstance(frame, Ping):
                    await ws.send(encode(Pong(frame.id)))
                    self.counts.pongs += 1
        except ConnectionClosed:
            pass
        finally:
            self.counts.open -= 1
        self.counts.closed += 1  # the server (not us) ended it: we only ever cancel


async def _stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def run(url: str, keys: Sequence[NodeKey], concurrency: int, deflate: bool) -> None:
    fleet = Fleet(url, concurrency, deflate=deflate)
    fleet.start(keys)
    done = asyncio.create_task(_stdin_closed())
    try:
        while not done.done():
            print(fleet.counts.line(), flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(done), 1.0)
    finally:
        await fleet.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", required=True)
    parser.add_argument("--keys", type=Path, required=True)
    parser.add_argument("--part", default="0/1", help="I/K: every K-th node from the I-th")
    parser.add_argument("--concurrency", type=int, default=64, help="dials in flight")
    parser.add_argument(
        "--no-deflate", action="store_true", help="offer no permessage-deflate (unlike nodes)"
    )
    args = parser.parse_args(argv)
    first, _, step = args.part.partition("/")
    decoder = msgspec.json.Decoder(NodeKey)
    lines = args.keys.read_bytes().splitlines()
    keys = [decoder.decode(line) for line in lines[int(first) :: int(step)]]
    raise_fd_limit()

    import uvloop

    uvloop.run(run(args.url, keys, args.concurrency, not args.no_deflate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
