"""The fold's views of events: decoded with the envelope, they say what the events say."""

from typing import Any

import msgspec
import pytest

from domain.billing.fold_views import VIEWS, CustomerView, decode_body, view_of
from domain.billing.reconcile import LedgerFold
from domain.decoding import decode_stored
from domain.envelope import StoredEvent
from domain.events import CustomerEvent, SchemaMismatch
from domain.signing import Signer
from domain.streams import Topology
from ops.bench.billing_workload import Workload, take

SIGNER = Signer(b"\x0a" * 32)


def stored_ledger(count: int = 400) -> list[StoredEvent]:
    return list(take(Workload(Topology(), SIGNER).events(), count))


def _fields_agree(view: Any, whole: Any) -> None:
    """Each field of ``view`` is the same-named field of ``whole``, nested views too."""
    for name in view.__struct_fields__:
        mine, theirs = getattr(view, name), getattr(whole, name)
        if isinstance(mine, msgspec.Struct) and not isinstance(theirs, type(mine)):
            _fields_agree(mine, theirs)
        else:
            assert mine == theirs, name


def test_every_customer_event_type_has_a_view() -> None:
    assert set(VIEWS) == {cls.__name__ for cls in CustomerEvent.__subclasses__()}


def test_a_view_decoded_with_its_envelope_says_what_the_whole_event_says() -> None:
    seen = set()
    for stored in stored_ledger():
        whole = decode_stored(stored)
        body = decode_body(stored.data)
        assert (body.type_name, body.event_id, body.occurred_at) == (
            whole.body.type,
            whole.body.event_id,
            whole.body.occurred_at,
        )
        if isinstance(body.payload, CustomerView):
            seen.add(body.type_name)
            _fields_agree(body.payload, whole.event)
            assert body.payload == view_of(whole.event)
        else:
            assert isinstance(body.payload, msgspec.Raw)
    assert {"ReservationCreated", "CustomerDebited", "NodePayoutCreated"} <= seen


def _retyped(stored: StoredEvent, old: str, new: str) -> StoredEvent:
    data = stored.data.replace(f'"type":"{old}"'.encode(), f'"type":"{new}"'.encode())
    return StoredEvent(stored.stream, stored.seq, stored.subject, data)


def test_a_type_the_fold_does_not_know_is_counted_and_passed_over() -> None:
    log = stored_ledger()
    i = next(i for i, s in enumerate(log) if b'"type":"ReservationClaimed"' in s.data)
    log[i] = _retyped(log[i], "ReservationClaimed", "SomethingFromTheFuture")
    fold = LedgerFold()
    for stored in log:
        fold.feed_stored(stored)
    assert (fold.events, fold.up_to_seq) == (len(log), log[-1].seq)
    assert "SomethingFromTheFuture" not in fold.by_type


def test_a_known_type_whose_payload_is_not_its_own_fails_the_fold() -> None:
    log = stored_ledger()
    i = next(i for i, s in enumerate(log) if b'"type":"ReservationCreated"' in s.data)
    broken = log[i].data.replace(b'"balance_after_wei":', b'"balance_after":')
    with pytest.raises(SchemaMismatch, match="balance_after_wei"):
        LedgerFold().feed_stored(StoredEvent(log[i].stream, log[i].seq, log[i].subject, broken))
