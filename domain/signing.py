"""Ed25519 keys, key ids and detached signatures (pure: no files, no clocks)."""

from collections.abc import Iterable
from typing import NamedTuple

import nacl.exceptions
import nacl.signing

from domain.canonical import b64decode, b64encode, sha256_hex


def key_id_for(public_key: bytes) -> str:
    """A short, stable name for a public key: the first 16 hex digits of its SHA-256."""
    return "ed25519:" + sha256_hex(public_key)[:16]


class Signer:
    """Holds a private key in memory and signs bytes with it."""

    __slots__ = ("_key", "key_id", "public_key")

    def __init__(self, seed: bytes) -> None:
        self._key = nacl.signing.SigningKey(seed)
        self.public_key = bytes(self._key.verify_key)
        self.key_id = key_id_for(self.public_key)

    @classmethod
    def generate(cls) -> "Signer":
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def seed(self) -> bytes:
        return bytes(self._key)

    def sign(self, message: bytes) -> str:
        """The detached signature, URL-safe base64 without padding."""
        return b64encode(self._key.sign(message).signature)

    def __repr__(self) -> str:  # never show the seed, not even in a traceback
        return f"Signer(key_id={self.key_id!r})"


class PublicKey(NamedTuple):
    key_id: str
    public_key: bytes


class Keyring:
    """Public keys by key id; verification never needs anything else."""

    def __init__(self, public_keys: Iterable[bytes] = ()) -> None:
        self._verifiers: dict[str, nacl.signing.VerifyKey] = {}
        for public_key in public_keys:
            self.add(public_key)

    def add(self, public_key: bytes) -> str:
        key_id = key_id_for(public_key)
        self._verifiers[key_id] = nacl.signing.VerifyKey(public_key)
        return key_id

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._verifiers

    def public_key(self, key_id: str) -> bytes | None:
        verifier = self._verifiers.get(key_id)
        return None if verifier is None else bytes(verifier)

    def public_keys(self) -> list[PublicKey]:
        return [PublicKey(k, bytes(v)) for k, v in self._verifiers.items()]

    def verify(self, key_id: str, message: bytes, signature: str) -> bool:
        """True only for a known key and a valid signature over exactly these bytes."""
        verifier = self._verifiers.get(key_id)
        if verifier is None:
            return False
        try:
            raw = b64decode(signature)
            verifier.verify(message, raw)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            return False
        # Base64 has spare bits in its last character: only our own encoding of these
        # bytes counts, or one signature would have many spellings (and envelopes too).
        return b64encode(raw) == signature
