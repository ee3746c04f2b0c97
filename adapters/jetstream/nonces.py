"""Replay protection shared by every API process: a NATS KV bucket of nonces seen.

A nonce is recorded with KV ``create`` (succeeds only if the key is absent), which the
server decides atomically, so two API processes can never both accept one request. The
bucket's max age is twice the clock-skew window: by the time a nonce expires, a request
carrying it is refused for its timestamp anyway.
"""

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from domain.ports import StoreUnavailable
from domain.streams import Topology


class JetStreamNonces:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(
        cls, js: JetStreamContext, topology: Topology, window_s: float, replicas: int = 1
    ) -> "JetStreamNonces":
        bucket = bucket_name(topology)
        try:
            kv = await js.key_value(bucket)
        except BucketNotFoundError:
            kv = await js.create_key_value(bucket=bucket, ttl=2 * window_s, replicas=replicas)
        return cls(kv)

    async def first_use(self, scope: str, nonce: str) -> bool:
        try:
            await self._kv.create(f"{scope}.{nonce}", b"")
        except KeyWrongLastSequenceError:
            return False
        except (TimeoutError, nats.errors.Error) as exc:
            raise StoreUnavailable(f"nonce registry: {type(exc).__name__}") from exc
        return True


def bucket_name(topology: Topology) -> str:
    return f"{topology.prefix}_nonces"
