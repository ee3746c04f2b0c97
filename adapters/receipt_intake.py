"""Signed receipt batches in: authenticate the node, verify every receipt with its current
key, append the ones the ledger lacks as one ``NodeReceiptsReported``.

Idempotent without a lock: the read model says which receipts are recorded up to its
checkpoint, the subject's events after the checkpoint (few: the projector is seconds
behind at most) say the rest, and the append is conditional on the subject's tail being
one of those, so two uploads of one batch, in any API processes, record it once.
"""

import asyncio
from collections.abc import Mapping

import asyncpg
import msgspec

from adapters.http.problems import ApiError
from adapters.node_auth import NodeAuthenticator
from adapters.recorder import Recorder
from adapters.subject_history import MAX_EVENTS, subject_history
from domain.canonical import b64decode
from domain.decoding import Decoded
from domain.envelope import body_of
from domain.events import Event, NodeReceiptsReported, type_names
from domain.nodes import ENROLLED
from domain.receipt_reports import ReceiptBatch, first_bad_receipt, new_receipts
from domain.receipts import Receipt
from domain.signing import Keyring
from projections.node_receipt_queries import recorded_receipts

_batch = msgspec.json.Decoder(ReceiptBatch)


class _Hash(msgspec.Struct):
    receipt_hash: str


class _Hashes(msgspec.Struct):
    """What an earlier report tells this one: its receipts' hashes, nothing else. A node
    sends its backlog in back-to-back batches of a hundred, each checked against the
    reports the read model has not caught up with yet: decoded whole, they held this
    process's event loop ~0.7 ms apiece, inside the gateway's requests."""

    receipts: list[_Hash]


_hashes = msgspec.json.Decoder(_Hashes)
_REPORTED = type_names(NodeReceiptsReported)


class ReceiptsAccepted(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    received: int
    recorded: int
    """Receipts new to the ledger with this request."""
    duplicates: int
    """Receipts the ledger already held (an upload retried), or repeated in the batch."""
    seq: int | None
    """Where the report landed on the ledger; None when nothing in it was new."""


class _Moved(Exception):
    """The subject gained events after the ones the batch was judged against."""


class ReceiptIntake:
    MAX_ATTEMPTS = 4

    def __init__(self, pool: asyncpg.Pool, recorder: Recorder, auth: NodeAuthenticator) -> None:
        self._pool = pool
        self._recorder = recorder
        self._auth = auth

    async def accept(
        self, node_id: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> ReceiptsAccepted:
        request = await self._auth.authenticate(node_id, "POST", path, headers, body)
        if request.state.status != ENROLLED:
            raise ApiError(
                409, "node_pending", "Conflict", "the node awaits an operator's approval"
            )
        try:
            receipts = _batch.decode(body).receipts
        except (UnicodeDecodeError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ApiError(400, "invalid_request", "Bad Request", str(exc)) from None
        keys = Keyring([b64decode(request.state.public_key)])
        # Off the event loop: a batch of a hundred signatures is ~7 ms of verifying that
        # would hold up every request this process serves (nacl lets go of the GIL).
        bad = await asyncio.to_thread(first_bad_receipt, receipts, keys, node_id)
        if bad is not None:
            raise ApiError(422, bad.code, "Unprocessable Content", bad.describe())
        for _ in range(self.MAX_ATTEMPTS):
            try:
                return await self._record(node_id, receipts)
            except _Moved:
                continue
        raise ApiError(409, "concurrency_conflict", "Conflict", "receipt uploads raced; retry")

    async def _record(self, node_id: str, receipts: list[Receipt]) -> ReceiptsAccepted:
        topology = self._recorder.topology
        subject = topology.subject("receipts", node_id)
        async with self._pool.acquire() as conn:
            recorded, upto = await recorded_receipts(
                conn, node_id, [r.receipt_hash for r in receipts], topology.ledger.name
            )
        later = await subject_history(self._recorder.store, subject, after_seq=upto)
        if len(later) >= MAX_EVENTS:
            raise ApiError(503, "service_unavailable", "Service Unavailable", "read models behind")
        for stored in later:
            body = body_of(stored.data)
            if body.type in _REPORTED:
                recorded.update(r.receipt_hash for r in _hashes.decode(body.payload).receipts)
        horizon = max(upto, later[-1].seq if later else 0)
        fresh = new_receipts(receipts, recorded)

        def decide(tail: Decoded | None) -> list[Event]:
            if tail is not None and tail.seq > horizon:
                raise _Moved
            return [NodeReceiptsReported(node_id=node_id, receipts=fresh)]

        result = await self._recorder.record(subject, decide) if fresh else None
        return ReceiptsAccepted(
            node_id=node_id,
            received=len(receipts),
            recorded=len(fresh),
            duplicates=len(receipts) - len(fresh),
            seq=None if result is None else result.last_seq,
        )
