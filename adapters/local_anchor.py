"""The shipped settlement target: a signed ``SettlementAnchored`` event on our own ledger.

NOT ON-CHAIN. This adapter records a payout batch's Merkle root (with its count and total)
in the control plane's own signed, hash-chained log, on ``settlement_anchor.<batch_id>``.
It moves no funds and writes to no blockchain: no on-chain settlement adapter is included
in B3IQ. A chain adapter would implement ``domain.ports.SettlementTarget`` the same way
(submit the root in a transaction, finalize once it is confirmed deep enough).

The reference it returns is ``<event id>@<ledger seq>`` of the anchor event: anyone holding
the log (or an export) finds the signed anchor there and checks it against the batch.
"""

from adapters.recorder import Recorder
from adapters.subject_history import subject_history
from domain.decoding import Decoded, decode_stored
from domain.events import Event, SettlementAnchored
from domain.nodes import Refused
from domain.payout_batches import FINALIZED, SUBMITTED, BatchHead

NOT_ON_CHAIN = (
    "local anchor: the batch root is recorded in the control plane's own signed log; "
    "no on-chain settlement adapter is included and no funds moved"
)


def reference_of(d: Decoded) -> str:
    return f"{d.body.event_id}@{d.seq}"


class LocalAnchor:
    """``SettlementTarget`` that anchors batch roots in the local signed ledger."""

    name = "local-anchor"

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def subject(self, batch_id: str) -> str:
        return self.recorder.topology.subject("settlement_anchor", batch_id)

    async def submit(self, batch: BatchHead) -> str:
        return await self._anchor(batch, SUBMITTED, None)

    async def finalize(self, batch: BatchHead, reference: str) -> str:
        return await self._anchor(batch, FINALIZED, reference)

    async def _anchor(self, batch: BatchHead, stage: str, submitted_as: str | None) -> str:
        """Append the anchor of ``stage`` unless it is there already (idempotent): the
        subject holds at most a ``submitted`` anchor and then a ``finalized`` one."""
        subject = self.subject(batch.batch_id)
        anchor = SettlementAnchored(
            batch_id=batch.batch_id,
            merkle_root=batch.merkle_root,
            payout_count=batch.payout_count,
            total_amount_wei=batch.total_amount_wei,
            stage=stage,
        )

        def decide(tail: Decoded | None) -> list[Event]:
            last = None if tail is None else tail.event
            if last is not None and not isinstance(last, SettlementAnchored):
                raise Refused("conflict", f"{subject} holds a {type(last).__name__}")
            if last is not None and last.merkle_root != batch.merkle_root:
                raise Refused("conflict", "an anchor with another root is on this batch")
            have = None if last is None else last.stage
            if have == stage or (stage == SUBMITTED and have == FINALIZED):
                return []  # already anchored: the retry returns the first reference
            if stage == FINALIZED:
                if have != SUBMITTED or tail is None:
                    raise Refused("conflict", "the batch was not anchored as submitted")
                if reference_of(tail) != submitted_as:
                    raise Refused("conflict", f"submitted as {reference_of(tail)}, not here")
            return [anchor]

        await self.recorder.record(subject, decide)
        for stored in reversed(await subject_history(self.recorder.store, subject)):
            found = decode_stored(stored)
            if isinstance(found.event, SettlementAnchored) and found.event.stage == stage:
                return reference_of(found)
        raise Refused("conflict", f"no {stage} anchor on {subject} after appending it")
