"""The protocol registry port, backed by admin-recorded observations on the ledger.

Each observation is a `ProtocolObserved` event (who, when, from where) on the node's
protocol subject; the current status is that subject's last event. An on-chain reader
can replace this adapter behind the same `ProtocolRegistry` port.
"""

from datetime import datetime

from adapters.recorder import Recorder
from domain.decoding import Decoded, decode_stored
from domain.events import Event, ProtocolObserved
from domain.ports import AppendResult, EventStore, ProtocolStatus
from domain.streams import Topology


class LedgerProtocolRegistry:
    def __init__(self, store: EventStore, recorder: Recorder, topology: Topology) -> None:
        self._store = store
        self._recorder = recorder
        self._topology = topology

    def _subject(self, node_id: str) -> str:
        return self._topology.subject("protocol", node_id)

    async def status(self, node_id: str) -> ProtocolStatus | None:
        stored = await self._store.last(self._subject(node_id))
        if stored is None:
            return None
        decoded = decode_stored(stored)
        event = decoded.event
        if not isinstance(event, ProtocolObserved):
            return None
        return ProtocolStatus(
            registered=event.registered,
            active=event.active,
            stake_wei=int(event.stake_wei),
            observed_at=event.observed_at,
            source=event.source,
            event_id=decoded.body.event_id,
            seq=decoded.seq,
        )

    async def record(
        self,
        node_id: str,
        *,
        registered: bool,
        active: bool,
        stake_wei: int,
        source: str,
        observed_at: datetime,
        recorded_by: str,
    ) -> AppendResult | None:
        event = ProtocolObserved(
            node_id=node_id,
            registered=registered,
            active=active,
            stake_wei=str(stake_wei),
            source=source,
            observed_at=observed_at,
            recorded_by=recorded_by,
        )

        def decide(_: Decoded | None) -> list[Event]:
            return [event]

        return await self._recorder.record(self._subject(node_id), decide)
