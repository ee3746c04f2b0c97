"""The composition root: settings in, a wired control plane out (real or fake adapters)."""

from dataclasses import dataclass, field

import asyncpg

from adapters.jetstream import JetStreamEventStore
from adapters.keyfile import load_or_create_signer
from adapters.postgres import create_pool, require_migrated
from adapters.recorder import Recorder
from adapters.settings import Settings
from domain.canonical import b64encode
from domain.decoding import Decoded
from domain.events import Event, SignerKeyPublished
from domain.ports import EventStore
from domain.signing import Keyring, Signer
from domain.streams import Topology


@dataclass
class ControlPlane:
    settings: Settings
    topology: Topology
    signer: Signer
    store: EventStore
    pool: asyncpg.Pool
    recorder: Recorder
    keyring: Keyring = field(default_factory=Keyring)

    async def publish_signing_key(self) -> None:
        """Put our public key on the ledger once, so the log names every key that signs it."""
        key = SignerKeyPublished(
            key_id=self.signer.key_id, public_key=b64encode(self.signer.public_key)
        )

        def decide(tail: Decoded | None) -> list[Event]:
            return [] if tail is not None else [key]

        await self.recorder.record(self.topology.subject("key", self.signer.key_id), decide)

    async def close(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            await close()
        await self.pool.close()


def topology_for(settings: Settings) -> Topology:
    return Topology(settings.stream_prefix, settings.heartbeat_retention_s)


async def bootstrap(
    settings: Settings,
    *,
    store: EventStore | None = None,
    pool: asyncpg.Pool | None = None,
    signer: Signer | None = None,
) -> ControlPlane:
    """Connect everything; raises StoreUnavailable / DatabaseUnavailable naming the URL."""
    topology = topology_for(settings)
    signer = signer or load_or_create_signer(settings.key_path)
    if store is None:
        store = await JetStreamEventStore.connect(
            settings.nats_url, topology, replicas=settings.stream_replicas
        )
    if pool is None:
        pool = await create_pool(settings.database_url)
        await require_migrated(pool)
    plane = ControlPlane(
        settings,
        topology,
        signer,
        store,
        pool,
        Recorder(store, signer, topology),
        Keyring([signer.public_key]),
    )
    await plane.publish_signing_key()
    return plane
