"""`audit verify` checks the node's receipt inside every debit against the node's key
from the log, and names the debit whose receipt was tampered with."""

from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
import pytest

from domain.decoding import decode_stored
from domain.envelope import StoredEvent
from domain.events import CustomerDebited, NodeReceiptsReported
from domain.receipts import Receipt, Usage, sign_receipt
from domain.sealing import seal
from domain.signing import Keyring, Signer
from domain.streams import Topology
from domain.verification import LogVerifier, Reason
from ops.bench.billing_workload import Workload, take
from tests.billing_support import receipt
from tests.support import enrolled

SIGNER = Signer(b"\x05" * 32)
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
Change = Callable[[Receipt], Receipt]


def workload() -> list[StoredEvent]:
    return list(take(Workload(Topology(), SIGNER).events(), 400))


def verify(log: list[StoredEvent]) -> list[tuple[Reason, int, str | None]]:
    verifier = LogVerifier(Keyring([SIGNER.public_key]))
    return [(p.reason, p.seq, p.event_id) for e in log for p in verifier.feed(e)]


def resealed_debit(log: list[StoredEvent], change: Change) -> tuple[int, str]:
    """The first debit, re-signed by the control plane with ``change(receipt)`` inside."""
    i = next(i for i, s in enumerate(log) if b'"CustomerDebited"' in s.data)
    d = decode_stored(log[i])
    assert isinstance(d.event, CustomerDebited)
    event = msgspec.structs.replace(d.event, receipt=change(d.event.receipt))
    (sealed,) = seal(
        d.subject, [event], prev_hash=d.body.prev_hash, signer=SIGNER, now=d.body.occurred_at
    )
    log[i] = StoredEvent(log[i].stream, log[i].seq, log[i].subject, sealed.data)
    return log[i].seq, sealed.event_id


def test_every_receipt_in_a_generated_ledger_verifies() -> None:
    assert verify(workload()) == []


def _usage(r: Receipt) -> Receipt:
    return msgspec.structs.replace(r, body=msgspec.structs.replace(r.body, usage=Usage(0, 0, 0)))


def _stranger(r: Receipt) -> Receipt:
    stranger = Signer(b"\x06" * 32)
    body = msgspec.structs.replace(r.body, key_id=stranger.key_id)
    return sign_receipt(stranger, body)


def _signature(r: Receipt) -> Receipt:
    sig = ("A" if r.signature[0] != "A" else "B") + r.signature[1:]
    return msgspec.structs.replace(r, signature=sig)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_usage, Reason.BAD_RECEIPT),
        (_signature, Reason.BAD_RECEIPT),
        (_stranger, Reason.UNKNOWN_NODE_KEY),
    ],
)
def test_a_tampered_receipt_names_its_debit(change: Change, reason: Reason) -> None:
    log = workload()
    seq, event_id = resealed_debit(log, change)
    found = verify(log)
    assert found[0] == (reason, seq, event_id)


def reported(receipts: list[Receipt]) -> list[StoredEvent]:
    """Node n1's enrollment, then its report of ``receipts``, as a ledger holds them."""
    node = Signer(b"\x07" * 32)
    log: list[StoredEvent] = []
    for subject, event in (
        ("b3iq.ev.node.n1", enrolled("n1", node)),
        ("b3iq.ev.receipts.n1", NodeReceiptsReported(node_id="n1", receipts=receipts)),
    ):
        (sealed,) = seal(subject, [event], prev_hash=None, signer=SIGNER, now=NOW)
        log.append(StoredEvent("LEDGER", len(log) + 1, subject, sealed.data))
    return log


def node_receipt(node_id: str = "n1", signer: Signer | None = None) -> Receipt:
    return receipt(signer or Signer(b"\x07" * 32), node_id, 3, 4, NOW, dispatch_id="d1")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda r: r, None),
        (_usage, Reason.BAD_RECEIPT),
        (_signature, Reason.BAD_RECEIPT),
        (_stranger, Reason.UNKNOWN_NODE_KEY),
        (lambda _: node_receipt("n2", Signer(b"\x08" * 32)), Reason.BAD_RECEIPT),
    ],
)
def test_a_nodes_report_verifies_every_receipt_in_it(change: Change, reason: Reason | None) -> None:
    log = reported([node_receipt(), change(node_receipt())])
    found = verify(log)
    assert [r for r, _, _ in found] == ([] if reason is None else [reason])
    if reason is not None:
        assert found[0][1] == 2  # the report, not the enrollment
