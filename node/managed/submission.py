"""`POST /v1/receipts/submit`: the owner's request to send receipts to the control plane."""

from dataclasses import dataclass
from typing import Annotated

import msgspec
from litestar.openapi.spec import Operation, RequestBody
from msgspec import Meta

from node.errors import NodeError
from node.managed.receipt_outbox import MAX_PER_CALL, Queued, ReceiptOutbox, UnknownReceipt
from node.services import NodeServices

ReceiptHash = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]


class SubmitReceipts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    receipt_hashes: Annotated[list[ReceiptHash], Meta(max_length=MAX_PER_CALL)] | None = None
    """These receipts; without it, receipts not queued yet, oldest first (up to 1000)."""


@dataclass
class OptionalBody(Operation):
    """The OpenAPI operation of a route whose body may be left out (Litestar marks every
    body required)."""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False


def queue_for_control_plane(services: NodeServices, request: SubmitReceipts | None) -> Queued:
    if not services.enrolled:
        raise NodeError(
            409,
            "not_enrolled",
            "this node is in Local Mode; receipts are kept locally until it is enrolled "
            "with a control plane (Managed Mode)",
        )
    outbox = ReceiptOutbox(services.db, services.identity.signer.key_id)
    hashes = None if request is None else request.receipt_hashes
    try:
        queued = outbox.queue_new() if hashes is None else outbox.queue(hashes)
    except UnknownReceipt as exc:
        raise NodeError(
            404, "receipt_not_found", f"no receipt {exc.receipt_hash} on this node"
        ) from None
    if queued.waiting:
        services.receipts_queued.set()
    return queued
