"""Local API keys: `b3iq_local_<public id>_<secret>`, stored only as a hash, scoped, revocable."""

import hashlib
import hmac
import re
import secrets
import time

import msgspec

from node.errors import NodeError, unauthorized
from node.state import Database

KEY_PREFIX = "b3iq_local_"
ANY = "*"
ENDPOINT_SCOPES = ("chat", "models", "profiles", "receipts")
"""What a key may call: chat completions, the model list, model profiles, receipts."""
_KEY_PATTERN = re.compile(rf"^{KEY_PREFIX}([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})$")
LAST_USED_GRANULARITY_S = 5.0


class LocalKey(msgspec.Struct, frozen=True, kw_only=True):
    public_id: str
    name: str
    models: tuple[str, ...] = (ANY,)
    endpoints: tuple[str, ...] = (ANY,)
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None

    def status(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def allows_model(self, model: str) -> bool:
        return ANY in self.models or model in self.models

    def allows_endpoint(self, endpoint: str) -> bool:
        return ANY in self.endpoints or endpoint in self.endpoints


def hash_secret(full_key: str) -> str:
    # The secret carries 256 random bits, so a fast hash cannot be brute-forced.
    return hashlib.sha256(full_key.encode()).hexdigest()


def new_key_material() -> tuple[str, str]:
    """A fresh (public id, full key to show once)."""
    public_id = secrets.token_hex(6)
    return public_id, f"{KEY_PREFIX}{public_id}_{secrets.token_urlsafe(32)}"


def public_id_of(full_key: str) -> str | None:
    match = _KEY_PATTERN.match(full_key)
    return match.group(1) if match else None


def validate_scopes(endpoints: tuple[str, ...]) -> None:
    unknown = [e for e in endpoints if e != ANY and e not in ENDPOINT_SCOPES]
    if unknown:
        raise NodeError(
            400,
            "invalid_scope",
            f"unknown endpoint scope {unknown[0]!r}; use {', '.join(ENDPOINT_SCOPES)} or *",
            param="endpoints",
        )


def _row_to_key(row: object) -> LocalKey:
    r = dict(row)  # type: ignore[call-overload]
    return LocalKey(
        public_id=r["public_id"],
        name=r["name"],
        models=tuple(msgspec.json.decode(r["models"], type=list[str])),
        endpoints=tuple(msgspec.json.decode(r["endpoints"], type=list[str])),
        created_at=r["created_at"],
        expires_at=r["expires_at"],
        revoked_at=r["revoked_at"],
        last_used_at=r["last_used_at"],
    )


class KeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(
        self,
        name: str,
        *,
        models: tuple[str, ...] = (ANY,),
        endpoints: tuple[str, ...] = (ANY,),
        expires_at: float | None = None,
        now: float | None = None,
    ) -> tuple[LocalKey, str]:
        """Store a new key; the returned secret exists nowhere else."""
        validate_scopes(endpoints)
        public_id, full_key = new_key_material()
        key = LocalKey(
            public_id=public_id,
            name=name,
            models=models or (ANY,),
            endpoints=endpoints or (ANY,),
            created_at=time.time() if now is None else now,
            expires_at=expires_at,
        )
        self._db.execute(
            "INSERT INTO api_keys (public_id, name, secret_hash, models, endpoints,"
            " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                key.public_id,
                key.name,
                hash_secret(full_key),
                msgspec.json.encode(list(key.models)).decode(),
                msgspec.json.encode(list(key.endpoints)).decode(),
                key.created_at,
                key.expires_at,
            ),
        )
        return key, full_key

    def list(self) -> list[LocalKey]:
        rows = self._db.query("SELECT * FROM api_keys ORDER BY created_at")
        return [_row_to_key(r) for r in rows]

    def get(self, public_id: str) -> LocalKey | None:
        row = self._db.one("SELECT * FROM api_keys WHERE public_id = ?", (public_id,))
        return None if row is None else _row_to_key(row)

    def revoke(self, public_id: str, *, now: float | None = None) -> bool:
        changed = self._db.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE public_id = ? AND revoked_at IS NULL",
            (time.time() if now is None else now, public_id),
        )
        return changed > 0

    def authenticate(self, full_key: str | None, *, now: float | None = None) -> LocalKey:
        """The active key behind this secret, or a 401 saying why not."""
        if not full_key:
            raise unauthorized("missing_api_key", "missing API key (Authorization: Bearer ...)")
        public_id = public_id_of(full_key)
        row = None
        if public_id is not None:
            row = self._db.one("SELECT * FROM api_keys WHERE public_id = ?", (public_id,))
        if row is None or not hmac.compare_digest(row["secret_hash"], hash_secret(full_key)):
            raise unauthorized("invalid_api_key", "invalid API key")
        key = _row_to_key(row)
        now = time.time() if now is None else now
        status = key.status(now)
        if status != "active":
            raise unauthorized(f"api_key_{status}", f"API key is {status}")
        if key.last_used_at is None or now - key.last_used_at >= LAST_USED_GRANULARITY_S:
            self._db.execute(
                "UPDATE api_keys SET last_used_at = ? WHERE public_id = ?", (now, public_id)
            )
        return key


def require_scope(key: LocalKey, endpoint: str, model: str | None = None) -> None:
    if not key.allows_endpoint(endpoint):
        raise NodeError(
            403,
            "local_api_key_scope_denied",
            f"this key may not call the {endpoint!r} endpoint",
        )
    if model is not None and not key.allows_model(model):
        raise NodeError(
            403,
            "local_api_key_scope_denied",
            f"this key may not use model {model!r}",
            param="model",
        )
