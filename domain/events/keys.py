from domain.events.base import Event


class SignerKeyPublished(Event, frozen=True, kw_only=True):
    """The control plane announces a public key it signs envelopes with."""

    key_id: str
    public_key: str
    """URL-safe base64 of the raw 32-byte Ed25519 public key."""
    purpose: str = "envelope"
