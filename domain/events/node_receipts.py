from domain.events.base import Event
from domain.receipts import Receipt


class NodeReceiptsReported(Event, frozen=True, kw_only=True):
    """Receipts a node submitted (Managed Mode), on its ``receipts.<node_id>`` subject.

    Evidence of work done, not paid work: billing settles routed requests from the
    receipt inside ``CustomerDebited`` and never reads these."""

    node_id: str
    receipts: list[Receipt]
    """The node's signed receipts, verbatim (usage and digests, never content), each new
    to the ledger when appended."""
