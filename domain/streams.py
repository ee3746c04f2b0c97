"""Which streams exist, which subjects they hold, and how each is kept (pure data)."""

from typing import NamedTuple


class StreamSpec(NamedTuple):
    name: str
    subjects: str
    """The wildcard subject the stream captures."""
    chained: bool
    """Per-subject hash chains and never-deleted history (the ledger), or a window."""
    max_age_s: float = 0.0
    """0 keeps forever."""


class Topology(NamedTuple):
    """The ledger and the heartbeat stream for one deployment (a prefix isolates several)."""

    prefix: str = "b3iq"
    heartbeat_max_age_s: float = 7 * 24 * 3600.0

    @property
    def ledger(self) -> StreamSpec:
        return StreamSpec(f"{self.prefix.upper()}_LEDGER", f"{self.prefix}.ev.>", chained=True)

    @property
    def heartbeats(self) -> StreamSpec:
        return StreamSpec(
            f"{self.prefix.upper()}_HEARTBEATS",
            f"{self.prefix}.hb.>",
            chained=False,
            max_age_s=self.heartbeat_max_age_s,
        )

    @property
    def streams(self) -> tuple[StreamSpec, StreamSpec]:
        return (self.ledger, self.heartbeats)

    def subject(self, aggregate: str, aggregate_id: str) -> str:
        """The ledger subject of one aggregate instance, e.g. ``b3iq.ev.node.<id>``."""
        _check_token(aggregate_id)
        return f"{self.prefix}.ev.{aggregate}.{aggregate_id}"

    def heartbeat_subject(self, node_id: str) -> str:
        _check_token(node_id)
        return f"{self.prefix}.hb.node.{node_id}"

    def route_probe_subject(self, node_id: str) -> str:
        """Route probes: evidence beside heartbeats, only the latest of which matters."""
        _check_token(node_id)
        return f"{self.prefix}.hb.route.{node_id}"

    def route_subject(self, node_id: str) -> str:
        """Core NATS (not stored): requests for the process holding a node's connection."""
        _check_token(node_id)
        return f"{self.prefix}.route.{node_id}"

    def stream_of(self, subject: str) -> StreamSpec:
        for spec in self.streams:
            if subject.startswith(spec.subjects[:-1]):
                return spec
        raise ValueError(f"subject {subject!r} belongs to no stream of {self.prefix!r}")


_FORBIDDEN = frozenset(" .*>\t\r\n")


def _check_token(token: str) -> None:
    # One subject token: a dot or wildcard would let an id escape its aggregate.
    if not token or _FORBIDDEN.intersection(token) or len(token) > 128:
        raise ValueError(f"invalid aggregate id {token!r}")
