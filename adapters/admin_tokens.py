"""Admin tokens: random secrets stored only as SHA-256 hashes, each with one role.

The first start writes a bootstrap admin token to a 0600 file; it is never logged.
"""

import os
import secrets
import time
from datetime import datetime
from pathlib import Path

import asyncpg
import msgspec

from domain.canonical import sha256_hex
from domain.ids import uuid7

ROLES = ("viewer", "operator", "admin")
"""Each role can do everything the ones before it can."""
PREFIX = "b3iq_admin_"


class AdminSession(msgspec.Struct, frozen=True, kw_only=True):
    token_id: str
    name: str
    role: str
    created_at: datetime

    def allows(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def _hash(secret: str) -> str:
    return sha256_hex(secret.encode())


class AdminTokens:
    CACHE_S = 1.0
    """A valid token is trusted this long without asking Postgres again (a revocation
    takes effect within it): the lookup cost more than the rest of a diagnostic call."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._valid: dict[str, tuple[float, AdminSession]] = {}

    async def authenticate(self, secret: str) -> AdminSession | None:
        if not secret.startswith(PREFIX):
            return None
        digest = _hash(secret)
        cached = self._valid.get(digest)
        if cached is not None and time.monotonic() - cached[0] < self.CACHE_S:
            return cached[1]
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT token_id, name, role, created_at FROM admin_tokens"
                " WHERE token_hash = $1 AND revoked_at IS NULL",
                digest,
            )
        if row is None:
            self._valid.pop(digest, None)
            return None
        if len(self._valid) > 1000:
            self._valid.clear()
        session = AdminSession(**dict(row))
        self._valid[digest] = (time.monotonic(), session)
        return session

    async def create(self, name: str, role: str) -> tuple[AdminSession, str]:
        """A new token; its secret is returned once and kept nowhere."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        secret = PREFIX + secrets.token_urlsafe(32)
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "INSERT INTO admin_tokens (token_id, name, role, token_hash)"
                " VALUES ($1, $2, $3, $4) RETURNING token_id, name, role, created_at",
                uuid7(),
                name,
                role,
                _hash(secret),
            )
        return AdminSession(**dict(row)), secret

    async def ensure_bootstrap(self, path: Path) -> bool:
        """On a database without tokens, create an admin token and write it to ``path``
        (0600). Returns True when it did. An advisory lock keeps concurrent starts to one."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('b3iq_admin_bootstrap'))")
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM admin_tokens)"):
                return False
            secret = PREFIX + secrets.token_urlsafe(32)
            write_secret(path, secret)
            await conn.execute(
                "INSERT INTO admin_tokens (token_id, name, role, token_hash)"
                " VALUES ($1, 'bootstrap', 'admin', $2)",
                uuid7(),
                _hash(secret),
            )
        return True


def write_secret(path: Path, secret: str) -> None:
    """Write atomically with mode 0600 from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    temporary.replace(path)
