"""All configuration, read once from the environment into one typed object."""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import msgspec

S = TypeVar("S", bound=msgspec.Struct)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    nats_url: str = "nats://127.0.0.1:4222"
    """B3IQ_NATS_URL: the NATS server with JetStream that holds the log."""
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    """B3IQ_DATABASE_URL: the PostgreSQL database that holds the read models."""
    host: str = "127.0.0.1"
    """B3IQ_HOST: where the control-plane API listens."""
    port: int = 8830
    """B3IQ_PORT."""
    data_dir: Path = Path(".b3iq")
    """B3IQ_DATA_DIR: keys and local state of this control plane."""
    signing_key_path: Path | None = None
    """B3IQ_SIGNING_KEY_PATH: the control plane's Ed25519 key (default DATA_DIR/keys/...)."""
    stream_prefix: str = "b3iq"
    """B3IQ_STREAM_PREFIX: subject and stream prefix; lets deployments share one NATS."""
    stream_replicas: int = 1
    """B3IQ_STREAM_REPLICAS: 1 on one server, 3 on a cluster."""
    heartbeat_retention_s: float = 7 * 24 * 3600.0
    """B3IQ_HEARTBEAT_RETENTION_S: how long the heartbeat stream keeps evidence."""
    projection_batch: int = 5000
    """B3IQ_PROJECTION_BATCH: most events applied in one Postgres transaction."""
    projection_linger_s: float = 0.05
    """B3IQ_PROJECTION_LINGER_S: after applying less than a whole batch, a projection
    waits this long before reading again, so steady traffic is applied in fewer, larger
    transactions (the first event after a quiet spell is applied at once)."""
    projector_partitions: int = 1
    """B3IQ_PROJECTOR_PARTITIONS: how many partitions each projection keyed by its
    subjects' aggregate is split into, shared by the projector processes; the same in all."""
    retry_after_s: int = 2
    """B3IQ_RETRY_AFTER_S: what a 503 tells clients to wait."""
    request_skew_s: float = 60.0
    """B3IQ_REQUEST_SKEW_S: how far a signed request's timestamp may be from our clock."""
    challenge_ttl_s: float = 300.0
    """B3IQ_CHALLENGE_TTL_S: how long an enrollment challenge can be answered."""
    require_approval: bool = False
    """B3IQ_REQUIRE_APPROVAL: new nodes stay pending until an operator approves them."""
    heartbeat_interval_s: float = 30.0
    """B3IQ_HEARTBEAT_INTERVAL_S: the interval the control plane asks nodes to keep."""
    heartbeat_fresh_s: float = 90.0
    """B3IQ_HEARTBEAT_FRESH_S: a heartbeat older than this fails the Identity gate."""
    benchmark_fresh_s: float = 7 * 24 * 3600.0
    """B3IQ_BENCHMARK_FRESH_S: an observed benchmark older than this fails the Model gate."""
    min_stake_wei: int = 0
    """B3IQ_MIN_STAKE_WEI: the least stake the Protocol gate accepts."""
    checkpoint_every_events: int = 1000
    """B3IQ_CHECKPOINT_EVERY_EVENTS: sign a ledger tree head after this many new events."""
    checkpoint_every_s: float = 60.0
    """B3IQ_CHECKPOINT_EVERY_S: ... or after this long, if anything new arrived."""
    command_lease_s: float = 120.0
    """B3IQ_COMMAND_LEASE_S: how long a node holds a command before it is queued again."""
    command_ttl_s: float = 24 * 3600.0
    """B3IQ_COMMAND_TTL_S: a command not done this long after it was queued expires."""
    command_max_attempts: int = 3
    """B3IQ_COMMAND_MAX_ATTEMPTS: leases that may lapse before a command expires."""
    command_max_wait_s: float = 30.0
    """B3IQ_COMMAND_MAX_WAIT_S: the longest a node's command long-poll is held open."""
    support_grant_ttl_s: float = 3600.0
    """B3IQ_SUPPORT_GRANT_TTL_S: how long a support grant lasts unless asked otherwise."""
    shutdown_grace_s: int = 5
    """B3IQ_SHUTDOWN_GRACE_S: how long a stopping API process lets requests finish."""
    route_probe_interval_s: float = 20.0
    """B3IQ_ROUTE_PROBE_INTERVAL_S: how often the holding process pings each node's route."""
    route_probe_timeout_s: float = 5.0
    """B3IQ_ROUTE_PROBE_TIMEOUT_S: a ping unanswered this long drops the connection."""
    route_fresh_s: float = 60.0
    """B3IQ_ROUTE_FRESH_S: a route probe older than this fails the Route gate."""
    route_reply_timeout_s: float = 120.0
    """B3IQ_ROUTE_REPLY_TIMEOUT_S: the longest wait for a routed request's next reply."""
    gateway_default_max_tokens: int = 256
    """B3IQ_GATEWAY_DEFAULT_MAX_TOKENS: the output cap (and so the quote) of a hosted
    request that names none."""
    billing_fee_bps: int = 500
    """B3IQ_BILLING_FEE_BPS: the protocol's fee on every customer debit, in basis points."""
    billing_spend_window_s: int = 24 * 3600
    """B3IQ_BILLING_SPEND_WINDOW_S: the rolling spend cap's window unless a policy says."""
    billing_max_open_reservations: int = 1000
    """B3IQ_BILLING_MAX_OPEN_RESERVATIONS: requests one customer may have in flight."""
    billing_finished_kept: int = 64
    """B3IQ_BILLING_FINISHED_KEPT: finished reservations an account keeps for retries."""
    billing_stale_after_s: float = 900.0
    """B3IQ_BILLING_STALE_AFTER_S: an open reservation unchanged this long is released."""
    billing_sweep_every_s: float = 60.0
    """B3IQ_BILLING_SWEEP_EVERY_S: how often `b3iq projector` releases stale reservations."""
    billing_max_batch: int = 256
    """B3IQ_BILLING_MAX_BATCH: most decisions of one customer appended together."""

    @property
    def key_path(self) -> Path:
        return self.signing_key_path or self.data_dir / "keys" / "control-plane.ed25519"

    @property
    def admin_token_path(self) -> Path:
        """Where the bootstrap admin token is written (0600) on the first start."""
        return self.data_dir / "admin-token"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> "Settings":
        return read_settings(cls, environ, overrides)


def read_settings(
    cls: type[S],
    environ: Mapping[str, str] | None,
    overrides: Mapping[str, object],
    names: Mapping[str, str] | None = None,
) -> S:
    """Fill a settings Struct from B3IQ_<FIELD> variables (or ``names``), then overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for field in msgspec.structs.fields(cls):
        raw = env.get((names or {}).get(field.name, f"B3IQ_{field.name.upper()}"))
        if raw:
            values[field.name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return msgspec.convert(values, cls, strict=False, dec_hook=_to_path)
    except msgspec.ValidationError as exc:
        raise SystemExit(f"invalid setting: {exc}") from None


def _to_path(kind: type, value: object) -> object:
    if kind is Path and isinstance(value, str | Path):
        return Path(value)
    raise NotImplementedError
