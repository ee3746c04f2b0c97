"""Support grants on the log: issued, revoked, and every use (never the secret or its hash)."""

from datetime import datetime

from domain.events.base import Event


class SupportGrantIssued(Event, frozen=True, kw_only=True):
    grant_id: str
    node_id: str
    scope: str
    issued_by: str
    reason: str
    expires_at: datetime


class SupportGrantRevoked(Event, frozen=True, kw_only=True):
    grant_id: str
    node_id: str
    revoked_by: str


class SupportGrantUsed(Event, frozen=True, kw_only=True):
    grant_id: str
    node_id: str
    """The node the grant is for."""
    action: str
    target_node_id: str
    """The node the holder asked about."""
    allowed: bool
    refusal: str = ""
    """The stable code of a refused use."""
