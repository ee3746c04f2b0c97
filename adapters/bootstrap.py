"""The composition root: settings in, a wired control plane out (real or fake adapters)."""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from adapters.account_lanes import AccountLanes
from adapters.admin_tokens import AdminTokens
from adapters.billing import Billing
from adapters.billing_admin import BillingAdmin
from adapters.broker import Broker
from adapters.command_queue import CommandQueue
from adapters.command_signals import CommandSignals
from adapters.enrollment import Enrollment
from adapters.gateway import Gateway
from adapters.gateway_keys import GatewayKeySecrets
from adapters.heartbeat_intake import HeartbeatIntake
from adapters.jetstream import JetStreamEventStore
from adapters.jetstream.nonces import JetStreamNonces
from adapters.key_rotation import KeyRotation
from adapters.keyfile import load_or_create_signer
from adapters.memory_nonces import InMemoryNonces
from adapters.node_auth import NodeAuthenticator, NodeDirectory
from adapters.node_operations import NodeOperations
from adapters.observed_benchmarks import ObservedBenchmarks
from adapters.postgres import create_pool, require_migrated
from adapters.protocol_registry import LedgerProtocolRegistry
from adapters.receipt_intake import ReceiptIntake
from adapters.recorder import Recorder, utcnow
from adapters.route_operations import RouteOperations
from adapters.settings import Settings
from adapters.shared_tails import SharedTails
from adapters.support_grants import SupportGrants
from domain.billing.books import Rules
from domain.canonical import b64encode
from domain.decoding import Decoded
from domain.events import Event, SignerKeyPublished
from domain.ports import EventStore, NonceRegistry
from domain.readiness import Policy
from domain.signing import Keyring, Signer
from domain.streams import Topology

log = logging.getLogger("b3iq")


@dataclass
class ManagedMode:
    """Enrollment, signed heartbeats, operator actions and readiness."""

    admin_tokens: AdminTokens
    enrollment: Enrollment
    heartbeats: HeartbeatIntake
    nodes: NodeOperations
    protocol: LedgerProtocolRegistry
    directory: NodeDirectory
    key_rotation: KeyRotation
    commands: CommandQueue
    grants: SupportGrants
    broker: Broker
    auth: NodeAuthenticator
    routes: RouteOperations
    benchmarks: ObservedBenchmarks
    billing: Billing
    billing_admin: BillingAdmin
    receipts: ReceiptIntake
    tails: SharedTails
    """Customer tails shared with the other API processes (started with JetStream)."""


@dataclass
class ControlPlane:
    settings: Settings
    topology: Topology
    signer: Signer
    store: EventStore
    pool: asyncpg.Pool
    recorder: Recorder
    managed: ManagedMode
    gateway: Gateway
    keyring: Keyring = field(default_factory=Keyring)
    clock: Callable[[], datetime] = utcnow

    async def publish_signing_key(self) -> None:
        """Put our public key on the ledger once, so the log names every key that signs it."""
        key = SignerKeyPublished(
            key_id=self.signer.key_id, public_key=b64encode(self.signer.public_key)
        )

        def decide(tail: Decoded | None) -> list[Event]:
            return [] if tail is not None else [key]

        await self.recorder.record(self.topology.subject("key", self.signer.key_id), decide)

    async def close(self) -> None:
        await self.gateway.drain()
        await self.managed.broker.close()
        await self.managed.billing.lanes.close()
        await self.managed.tails.close()
        await self.managed.commands.signals.close()
        await self.managed.directory.close()
        close = getattr(self.store, "close", None)
        if close is not None:
            await close()
        await self.pool.close()


def topology_for(settings: Settings) -> Topology:
    return Topology(settings.stream_prefix, settings.heartbeat_retention_s)


def policy_for(settings: Settings) -> Policy:
    return Policy(
        heartbeat_fresh_s=settings.heartbeat_fresh_s,
        route_fresh_s=settings.route_fresh_s,
        min_stake_wei=settings.min_stake_wei,
        benchmark_fresh_s=settings.benchmark_fresh_s,
    )


def managed_mode(
    settings: Settings,
    recorder: Recorder,
    pool: asyncpg.Pool,
    keyring: Keyring,
    *,
    nonces: NonceRegistry,
    clock: Callable[[], datetime],
) -> ManagedMode:
    directory = NodeDirectory(recorder.store, recorder.topology)
    auth = NodeAuthenticator(directory, nonces, skew_s=settings.request_skew_s, clock=clock)
    protocol = LedgerProtocolRegistry(recorder.store, recorder, recorder.topology)
    broker = Broker(
        recorder,
        directory,
        probe_interval_s=settings.route_probe_interval_s,
        probe_timeout_s=settings.route_probe_timeout_s,
        reply_timeout_s=settings.route_reply_timeout_s,
        clock=clock,
    )
    billing = billing_for(settings, recorder, pool, clock=clock)
    return ManagedMode(
        admin_tokens=AdminTokens(pool),
        enrollment=Enrollment(
            recorder.signer,
            keyring,
            recorder,
            directory,
            challenge_ttl_s=settings.challenge_ttl_s,
            require_approval=settings.require_approval,
            heartbeat_interval_s=settings.heartbeat_interval_s,
            clock=clock,
        ),
        heartbeats=HeartbeatIntake(
            auth, recorder, interval_s=settings.heartbeat_interval_s, clock=clock
        ),
        nodes=NodeOperations(
            pool, recorder, directory, protocol, policy=policy_for(settings), clock=clock
        ),
        protocol=protocol,
        directory=directory,
        key_rotation=KeyRotation(auth, recorder, directory),
        commands=CommandQueue(
            pool,
            recorder,
            auth,
            directory,
            CommandSignals(),
            lease_s=settings.command_lease_s,
            ttl_s=settings.command_ttl_s,
            max_attempts=settings.command_max_attempts,
            max_wait_s=settings.command_max_wait_s,
            clock=clock,
        ),
        grants=SupportGrants(pool, recorder, ttl_s=settings.support_grant_ttl_s, clock=clock),
        broker=broker,
        auth=auth,
        routes=RouteOperations(pool, recorder, broker),
        benchmarks=ObservedBenchmarks(broker, recorder, directory, clock=clock),
        billing=billing,
        billing_admin=BillingAdmin(pool, billing, clock=clock),
        receipts=ReceiptIntake(pool, recorder, auth),
        tails=SharedTails(billing.lanes.recorder, keyring),
    )


def billing_for(
    settings: Settings, recorder: Recorder, pool: asyncpg.Pool, *, clock: Callable[[], datetime]
) -> Billing:
    rules = Rules(
        fee_bps=settings.billing_fee_bps,
        max_open=settings.billing_max_open_reservations,
        finished_kept=settings.billing_finished_kept,
    )
    # Its own recorder: customer subjects are hot, their tails are remembered apart.
    own = Recorder(recorder.store, recorder.signer, recorder.topology, clock=clock)
    lanes = AccountLanes(own, rules, clock=clock, max_batch=settings.billing_max_batch)
    return Billing(
        pool,
        lanes,
        GatewayKeySecrets(pool),
        stale_after_s=settings.billing_stale_after_s,
        clock=clock,
    )


async def bootstrap(
    settings: Settings,
    *,
    store: EventStore | None = None,
    pool: asyncpg.Pool | None = None,
    signer: Signer | None = None,
    clock: Callable[[], datetime] = utcnow,
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
    nonces: NonceRegistry
    if isinstance(store, JetStreamEventStore):
        nonces = await JetStreamNonces.open(
            store.nc, topology, settings.request_skew_s, settings.stream_replicas
        )
    else:
        nonces = InMemoryNonces(settings.request_skew_s)
    recorder = Recorder(store, signer, topology, clock=clock)
    keyring = Keyring([signer.public_key])
    managed = managed_mode(settings, recorder, pool, keyring, nonces=nonces, clock=clock)
    plane = ControlPlane(
        settings=settings,
        topology=topology,
        signer=signer,
        store=store,
        pool=pool,
        recorder=recorder,
        managed=managed,
        gateway=Gateway(
            pool,
            managed.billing,
            managed.broker,
            managed.directory,
            policy_for(settings),
            default_max_tokens=settings.gateway_default_max_tokens,
            clock=clock,
        ),
        keyring=keyring,
        clock=clock,
    )
    await plane.publish_signing_key()
    if isinstance(store, JetStreamEventStore):
        await plane.managed.commands.signals.listen(store.nc, topology)
        await plane.managed.directory.follow(store.nc)
        await plane.managed.tails.start(store.nc, topology)
    await plane.managed.broker.start(store.nc if isinstance(store, JetStreamEventStore) else None)
    if await plane.managed.admin_tokens.ensure_bootstrap(settings.admin_token_path):
        log.warning("bootstrap admin token written to %s (mode 0600)", settings.admin_token_path)
    return plane
