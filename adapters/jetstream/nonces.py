"""Replay protection shared by every API process: a NATS KV bucket of nonces seen.

A nonce is recorded like KV ``create`` (a write that succeeds only if the key is absent),
which the server decides atomically, so two API processes can never both accept one
request. The bucket's max age is twice the clock-skew window: by the time a nonce
expires, a request carrying it is refused for its timestamp anyway.

Claims that arrive together go out together, pipelined: under load this is one write
per request on the server but a fraction of the client's cost of a ``kv.create`` each.
"""

import nats.errors
from nats.js.errors import BucketNotFoundError

from adapters.coalescer import Coalescer
from adapters.jetstream.acks import WRONG_LAST_SEQUENCE, Ack, NoStreamResponders, PublishRejected
from adapters.jetstream.client import Client
from adapters.jetstream.pipeline import Pipeline
from domain.ports import StoreUnavailable
from domain.streams import Topology

_ABSENT = {"Nats-Expected-Last-Subject-Sequence": "0"}


class JetStreamNonces:
    def __init__(self, nc: Client, bucket: str, timeout: float = 5.0) -> None:
        self._subject = f"$KV.{bucket}."
        self._pipeline = Pipeline(nc, timeout)
        self._claims: Coalescer[str, bool] = Coalescer(self._claim)

    @classmethod
    async def open(
        cls, nc: Client, topology: Topology, window_s: float, replicas: int = 1
    ) -> "JetStreamNonces":
        bucket = bucket_name(topology)
        js = nc.jetstream()
        try:
            await js.key_value(bucket)
        except BucketNotFoundError:
            await js.create_key_value(bucket=bucket, ttl=2 * window_s, replicas=replicas)
        return cls(nc, bucket)

    async def first_use(self, scope: str, nonce: str) -> bool:
        return await self._claims.submit(f"{scope}.{nonce}")

    async def _claim(self, keys: list[str]) -> list[bool | Exception]:
        try:
            acks = await self._pipeline.publish_each(
                [(self._subject + key, b"", _ABSENT) for key in keys]
            )
        except (TimeoutError, nats.errors.Error) as exc:
            raise StoreUnavailable(f"nonce registry: {type(exc).__name__}") from exc
        return [_first_use(ack) for ack in acks]


def _first_use(ack: Ack | Exception) -> bool | Exception:
    if isinstance(ack, Ack):
        return True
    if isinstance(ack, PublishRejected) and ack.err_code == WRONG_LAST_SEQUENCE:
        return False
    if isinstance(ack, TimeoutError | NoStreamResponders | PublishRejected | nats.errors.Error):
        return StoreUnavailable(f"nonce registry: {type(ack).__name__}")
    return ack


def bucket_name(topology: Topology) -> str:
    return f"{topology.prefix}_nonces"
