"""Owner of the setup page: one-time setup token, owner password, HttpOnly sessions."""

import hashlib
import hmac
import secrets
import time

from node.state import Database

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    derived = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${salt.hex()}${derived.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_hex, _ = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt_hex)), stored)


class OwnerStore:
    def __init__(self, db: Database, session_ttl_s: int = 12 * 3600) -> None:
        self._db = db
        self._ttl = session_ttl_s

    def issue_setup_token(self) -> str:
        """A new one-time token (replacing any earlier one); only its hash is kept."""
        token = "b3iq_setup_" + secrets.token_urlsafe(24)
        self._db.set_meta("setup_token_hash", _digest(token))
        return token

    @property
    def claimed(self) -> bool:
        return self._db.get_meta("owner_password") is not None

    def claim(self, setup_token: str, password: str) -> bool:
        """Set the owner password if the setup token matches; the token is then spent."""
        expected = self._db.get_meta("setup_token_hash")
        if expected is None or not hmac.compare_digest(expected, _digest(setup_token)):
            return False
        self._db.set_meta("owner_password", hash_password(password))
        self._db.delete_meta("setup_token_hash")
        # Recovery with a fresh token must end every session opened with the old password.
        self._db.execute("DELETE FROM sessions")
        return True

    def login(self, password: str) -> bool:
        stored = self._db.get_meta("owner_password")
        return stored is not None and check_password(password, stored)

    def open_session(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        token = secrets.token_urlsafe(32)
        self._db.execute(
            "INSERT INTO sessions (token_hash, created_at, expires_at) VALUES (?, ?, ?)",
            (_digest(token), now, now + self._ttl),
        )
        return token

    def session_valid(self, token: str | None, now: float | None = None) -> bool:
        if not token:
            return False
        row = self._db.one(
            "SELECT expires_at FROM sessions WHERE token_hash = ?", (_digest(token),)
        )
        return row is not None and float(row["expires_at"]) > (time.time() if now is None else now)

    def close_session(self, token: str) -> None:
        self._db.execute("DELETE FROM sessions WHERE token_hash = ?", (_digest(token),))

    @staticmethod
    def csrf_token(session_token: str) -> str:
        """A per-session value every setup form echoes back."""
        return hmac.new(session_token.encode(), b"b3iq-setup-csrf", "sha256").hexdigest()
