"""What a projection is: a fold of one stream's events into tables it alone owns."""

from collections.abc import Sequence
from typing import Protocol

from domain.decoding import Decoded
from domain.events import Event
from projections.db import Database


class Projection(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def stream(self) -> str:
        """Which stream of the topology it reads: "ledger" or "heartbeats"."""
        ...

    @property
    def tables(self) -> tuple[str, ...]: ...

    @property
    def handles(self) -> tuple[type[Event], ...]:
        """The events it applies (and their subclasses); the runner passes it no others,
        and a batch with none of them costs it no transaction."""
        ...

    async def apply(self, db: Database, batch: Sequence[Decoded]) -> None:
        """Apply a batch inside the caller's transaction, in as few round trips as it can."""
        ...
