"""Streams declared as code, created or updated idempotently at start-up."""

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from domain.streams import StreamSpec, Topology

DUPLICATE_WINDOW_S = 120.0


def stream_config(spec: StreamSpec, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        subjects=[spec.subjects],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=spec.max_age_s or None,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        # The ledger is the system of record: nothing may ever remove a message from it.
        deny_delete=spec.chained,
        deny_purge=spec.chained,
        allow_rollup_hdrs=False,
        allow_direct=True,
        allow_atomic=True,
    )


async def ensure_topology(js: JetStreamContext, topology: Topology, replicas: int = 1) -> None:
    for spec in topology.streams:
        config = stream_config(spec, replicas)
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)
