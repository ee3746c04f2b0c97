from datetime import datetime

from domain.events.base import Event


class ProtocolObserved(Event, frozen=True, kw_only=True):
    """What the protocol registry said about a node, who recorded it, and from where."""

    node_id: str
    registered: bool
    active: bool
    stake_wei: str
    """An integer amount in wei, as a string."""
    source: str
    """Where the observation came from (a registry name, a transaction, a URL)."""
    observed_at: datetime
    recorded_by: str
    """The admin token id that recorded it."""
