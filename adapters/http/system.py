"""Liveness, readiness and the published signing keys."""

import asyncio

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec

from adapters.audit import latest_checkpoint
from adapters.bootstrap import ControlPlane
from adapters.http.problems import ApiError, problems
from adapters.postgres import current_revision, head_revision
from domain.canonical import b64encode
from domain.proofs import ProvenEvent, as_proven
from projections.catalog import all_projections
from projections.checkpoints import checkpoints


class Health(msgspec.Struct):
    status: str


class Check(msgspec.Struct):
    ok: bool
    detail: str = ""


class ProjectionLag(msgspec.Struct):
    projection: str
    stream: str
    applied_seq: int
    stream_seq: int
    lag: int


class Readiness(msgspec.Struct):
    status: str
    nats: Check
    postgres: Check
    migrations: Check
    projections: list[ProjectionLag]


class PublicKey(msgspec.Struct):
    key_id: str
    public_key: str
    algorithm: str = "ed25519"
    current: bool = True


class PublicKeys(msgspec.Struct):
    keys: list[PublicKey]


class SystemController(Controller):
    tags = ["system"]

    @get("/health", summary="The process is up")
    async def health(self) -> Health:
        return Health("ok")

    @get(
        "/ready",
        summary="NATS and Postgres reachable, schema current, projection lag",
        responses={503: ResponseSpec(Readiness, description="Not ready (with Retry-After)")},
    )
    async def ready(self, plane: NamedDependency[ControlPlane]) -> Response[Readiness]:
        nats, heads = await _nats_check(plane)
        postgres, migrations, lags = await _postgres_check(plane, heads)
        ok = nats.ok and postgres.ok and migrations.ok
        body = Readiness("ready" if ok else "not_ready", nats, postgres, migrations, lags)
        headers = {} if ok else {"Retry-After": str(plane.settings.retry_after_s)}
        return Response(body, status_code=200 if ok else 503, headers=headers)

    @get(
        "/v1/audit/checkpoint",
        summary="The latest signed ledger checkpoint, to pin for `b3iq audit verify --head`",
        responses=problems(404),
    )
    async def checkpoint(self, plane: NamedDependency[ControlPlane]) -> ProvenEvent:
        stored = await latest_checkpoint(plane.store, plane.topology)
        if stored is None:
            raise ApiError(404, "not_found", "Not Found", "no checkpoint has been signed yet")
        return as_proven(stored)

    @get("/v1/keys", summary="Public keys that sign the log's envelopes, for offline audit")
    async def keys(self, plane: NamedDependency[ControlPlane]) -> PublicKeys:
        return PublicKeys(
            [
                PublicKey(
                    k.key_id, b64encode(k.public_key), current=k.key_id == plane.signer.key_id
                )
                for k in plane.keyring.public_keys()
            ]
        )


async def _nats_check(plane: NamedDependency[ControlPlane]) -> tuple[Check, dict[str, int]]:
    heads: dict[str, int] = {}
    try:
        for spec in plane.topology.streams:
            _, heads[spec.name] = await asyncio.wait_for(plane.store.bounds(spec.name), 2)
    except Exception as exc:
        return Check(False, f"event log unreachable: {type(exc).__name__}"), heads
    return Check(True), heads


async def _postgres_check(
    plane: ControlPlane, heads: dict[str, int]
) -> tuple[Check, Check, list[ProjectionLag]]:
    try:
        async with plane.pool.acquire(timeout=2) as conn:
            revision = await current_revision(conn)
            applied = await checkpoints(conn)
    except Exception as exc:
        return Check(False, f"database unreachable: {type(exc).__name__}"), Check(False), []
    head = head_revision()
    current = revision == head
    migrations = Check(current, "" if current else f"at {revision}, code needs {head}")
    lags = []
    for projection in all_projections():
        stream = (
            plane.topology.ledger if projection.stream == "ledger" else plane.topology.heartbeats
        )
        done = applied.get((projection.name, stream.name), 0)
        top = heads.get(stream.name, done)
        lags.append(ProjectionLag(projection.name, stream.name, done, top, max(top - done, 0)))
    return Check(True), migrations, lags
