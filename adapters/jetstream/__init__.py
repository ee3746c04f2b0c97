"""The event log on NATS JetStream."""

from adapters.jetstream.store import JetStreamEventStore
from adapters.jetstream.topology import ensure_topology

__all__ = ["JetStreamEventStore", "ensure_topology"]
