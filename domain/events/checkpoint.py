from domain.events.base import Event


class LedgerCheckpointed(Event, frozen=True, kw_only=True):
    """A signed tree head over the ledger's first ``tree_size`` messages (RFC 6962, each
    leaf the exact bytes of one stored envelope)."""

    tree_size: int
    root: str
    """Hex SHA-256 tree head."""
    previous_size: int = 0
    """The tree size of the checkpoint before this one (0 for the first)."""
    consistency: list[str] = []
    """Hex RFC 6962 consistency proof from the previous checkpoint to this one: two
    checkpoints prove the log only grew, without the log itself."""
    signatures_verified: bool = False
    """The checkpointer checked the control plane's signature on every message it covers
    before signing (see ``domain.verification``): an auditor holding the key may take the
    checkpoint's one signature for all of theirs. Checkpoints from before it did say
    False, and vouch for nothing but the bytes."""
