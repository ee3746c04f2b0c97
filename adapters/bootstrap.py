"""The composition root: settings in, a wired control plane out (real or fake adapters)."""

from dataclasses import dataclass, field

import asyncpg

from adapters.keyfile import load_or_create_signer
from adapters.memory_store import InMemoryEventStore
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
    pool: asyncpg.Pool | None
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
        if self.pool is not None:
            await self.pool.close()


def topology_for(settings: Settings) -> Topology:
    return Topology(settings.stream_prefix, settings.heartbeat_retention_s)


async def bootstrap(
    settings: Settings,
    *,
    store: EventStore | None = None,
    pool: asyncpg.Pool | None = None,
    signer: Signer | None = None,
    with_database: bool = True,
) -> ControlPlane:
    """Connect everything; raises StoreUnavailable / DatabaseUnavailable naming the URL."""
    from adapters.jetstream import JetStreamEventStore

    topology = topology_for(settings)
    signer = signer or load_or_create_signer(settings.key_path)
    if store is None:
        store = await JetStreamEventStore.connect(
            settings.nats_url, topology, replicas=settings.stream_replicas
        )
    if pool is None and with_database:
        pool = await create_pool(settings.database_url)
        await require_migrated(pool)
    keyring = Keyring()
    keyring.add(signer.public_key)
    plane = ControlPlane(
        settings, topology, signer, store, pool, Recorder(store, signer, topology), keyring
    )
    await plane.publish_signing_key()
    return plane


def in_memory(settings: Settings | None = None) -> ControlPlane:
    """A control plane on the in-memory store and no database, for unit tests."""
    settings = settings or Settings()
    topology = topology_for(settings)
    signer = Signer.generate()
    store = InMemoryEventStore(topology)
    keyring = Keyring()
    keyring.add(signer.public_key)
    return ControlPlane(
        settings, topology, signer, store, None, Recorder(store, signer, topology), keyring
    )
