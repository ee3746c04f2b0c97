"""Gateway key secrets: ``b3iq_gateway_`` + a random token, shown once, kept only as a
SHA-256 hash in Postgres (hashes are secret, so never on the log; the key's policy and
lifecycle are events on its customer's subject)."""

import secrets
from datetime import datetime

import asyncpg
import msgspec

from domain.canonical import sha256_hex
from domain.ids import uuid7

PREFIX = "b3iq_gateway_"


class KeyOwner(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    customer_id: str
    expires_at: datetime | None
    revoked_at: datetime | None


def _hash(secret: str) -> str:
    return sha256_hex(secret.encode())


def new_key() -> tuple[str, str]:
    """A fresh key id and secret."""
    return "gk_" + uuid7().replace("-", ""), PREFIX + secrets.token_urlsafe(32)


class GatewayKeySecrets:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def store(
        self, key_id: str, customer_id: str, secret: str, expires_at: datetime | None
    ) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO gateway_key_secrets (key_id, customer_id, token_hash, expires_at)"
                " VALUES ($1, $2, $3, $4)",
                key_id,
                customer_id,
                _hash(secret),
                expires_at,
            )

    async def owner(self, key_id: str) -> KeyOwner | None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {_FIELDS} FROM gateway_key_secrets WHERE key_id = $1", key_id
            )
        return None if row is None else KeyOwner(**dict(row))

    async def revoke(self, key_id: str, now: datetime) -> KeyOwner | None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "UPDATE gateway_key_secrets SET revoked_at = coalesce(revoked_at, $2)"
                f" WHERE key_id = $1 RETURNING {_FIELDS}",
                key_id,
                now,
            )
        return None if row is None else KeyOwner(**dict(row))

    async def lookup(self, secret: str, now: datetime) -> KeyOwner | None:
        """The live key this secret belongs to; None for anything else (no timing hints:
        the lookup is by hash)."""
        if not secret.startswith(PREFIX):
            return None
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {_FIELDS} FROM gateway_key_secrets WHERE token_hash = $1"
                " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
                _hash(secret),
                now,
            )
        return None if row is None else KeyOwner(**dict(row))


_FIELDS = "key_id, customer_id, expires_at, revoked_at"
