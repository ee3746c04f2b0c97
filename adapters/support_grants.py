"""Support grants: a diagnostics-only, expiring, revocable secret for one node.

The secret is shown once and kept only as a SHA-256 hash, in Postgres beside the admin
tokens (hashes are secret, so never on the log). Issue, revocation and every use — allowed
or refused — are events on the grant's ledger subject.
"""

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

import asyncpg
import msgspec

from adapters.http.problems import ApiError
from adapters.recorder import Recorder
from domain.canonical import sha256_hex
from domain.decoding import Decoded
from domain.events import Event, SupportGrantIssued, SupportGrantRevoked, SupportGrantUsed
from domain.ids import uuid7

PREFIX = "b3iq_support_"
SCOPE = "diagnostics"


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    grant_id: str
    node_id: str
    scope: str
    issued_by: str
    reason: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


class IssuedGrant(msgspec.Struct, frozen=True, kw_only=True):
    grant: Grant
    secret: str
    """Shown once; only its hash is kept."""


def _hash(secret: str) -> str:
    return sha256_hex(secret.encode())


class SupportGrants:
    def __init__(
        self,
        pool: asyncpg.Pool,
        recorder: Recorder,
        *,
        ttl_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._pool = pool
        self._recorder = recorder
        self.ttl_s = ttl_s
        self._clock = clock

    async def _append(self, grant_id: str, event: Event) -> None:
        def decide(_: Decoded | None) -> list[Event]:
            return [event]

        await self._recorder.record(self._recorder.topology.subject("grant", grant_id), decide)

    async def issue(self, node_id: str, by: str, reason: str, ttl_s: float | None) -> IssuedGrant:
        now = self._clock()
        grant = Grant(
            grant_id=uuid7(),
            node_id=node_id,
            scope=SCOPE,
            issued_by=by,
            reason=reason,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_s or self.ttl_s),
            revoked_at=None,
        )
        secret = PREFIX + secrets.token_urlsafe(32)
        # The event first: a grant the log does not know of must never work.
        await self._append(
            grant.grant_id,
            SupportGrantIssued(
                grant_id=grant.grant_id,
                node_id=node_id,
                scope=SCOPE,
                issued_by=by,
                reason=reason,
                expires_at=grant.expires_at,
            ),
        )
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO support_grants (grant_id, node_id, scope, token_hash, issued_by,"
                " reason, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                grant.grant_id,
                node_id,
                SCOPE,
                _hash(secret),
                by,
                reason,
                now,
                grant.expires_at,
            )
        return IssuedGrant(grant=grant, secret=secret)

    async def revoke(self, grant_id: str, by: str) -> Grant:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "UPDATE support_grants SET revoked_at = coalesce(revoked_at, $2)"
                f" WHERE grant_id = $1 RETURNING {_FIELDS}",
                grant_id,
                self._clock(),
            )
        if row is None:
            raise ApiError(404, "not_found", "Not Found", "no such support grant")
        grant = Grant(**dict(row))
        await self._append(
            grant_id,
            SupportGrantRevoked(grant_id=grant_id, node_id=grant.node_id, revoked_by=by),
        )
        return grant

    async def of_node(self, node_id: str) -> list[Grant]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_FIELDS} FROM support_grants WHERE node_id = $1"
                " ORDER BY created_at DESC LIMIT 100",
                node_id,
            )
        return [Grant(**dict(r)) for r in rows]

    async def authorize(self, secret: str | None, node_id: str, action: str) -> Grant:
        """The grant, if it may do ``action`` on ``node_id`` now; each decision is an event."""
        grant = None
        if secret and secret.startswith(PREFIX):
            async with self._pool.acquire() as conn:
                row = await conn.fetchrow(
                    f"SELECT {_FIELDS} FROM support_grants WHERE token_hash = $1", _hash(secret)
                )
            grant = None if row is None else Grant(**dict(row))
        if grant is None:
            raise ApiError(401, "unauthorized", "Unauthorized", "a valid support grant is required")
        refusal = None
        if grant.revoked_at is not None:
            refusal = ApiError(401, "support_grant_revoked", "Unauthorized", "grant revoked")
        elif self._clock() >= grant.expires_at:
            refusal = ApiError(401, "support_grant_expired", "Unauthorized", "grant expired")
        elif grant.node_id != node_id:
            refusal = ApiError(
                403, "support_grant_scope_denied", "Forbidden", "the grant is for another node"
            )
        await self._append(
            grant.grant_id,
            SupportGrantUsed(
                grant_id=grant.grant_id,
                node_id=grant.node_id,
                action=action,
                target_node_id=node_id,
                allowed=refusal is None,
                refusal="" if refusal is None else refusal.code,
            ),
        )
        if refusal is not None:
            raise refusal
        return grant


_FIELDS = "grant_id, node_id, scope, issued_by, reason, created_at, expires_at, revoked_at"
