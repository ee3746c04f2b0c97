"""The event catalogue: every payload type the log may hold, and how to decode one."""

from functools import cache

import msgspec

from domain.events.base import Event, NodeEvidence
from domain.events.benchmark import BenchmarkObserved, BenchmarkRun
from domain.events.billing import (
    BILLING_EVENTS,
    CreditAdjusted,
    CreditGranted,
    CustomerCreated,
    CustomerDebited,
    CustomerEvent,
    CustomerPolicySet,
    GatewayKeyIssued,
    GatewayKeyPolicySet,
    GatewayKeyRevoked,
    ModelPriceSet,
    NodePayoutCreated,
    PriceEntry,
    ReservationAwaitingReceipt,
    ReservationClaimed,
    ReservationCreated,
    ReservationReleased,
)
from domain.events.checkpoint import LedgerCheckpointed
from domain.events.command import (
    COMMAND_EVENTS,
    CommandCancelled,
    CommandEvent,
    CommandExpired,
    CommandFailed,
    CommandIssued,
    CommandLeased,
    CommandResultReported,
    CommandRetried,
    CommandState,
)
from domain.events.grant import SupportGrantIssued, SupportGrantRevoked, SupportGrantUsed
from domain.events.keys import SignerKeyPublished
from domain.events.node import (
    HeartbeatRecorded,
    NodeApproved,
    NodeEnrolled,
    NodeKeyRotated,
    NodeRevoked,
    NodeState,
)
from domain.events.node_receipts import NodeReceiptsReported
from domain.events.payouts import (
    PAYOUT_EVENTS,
    PayoutBatchCreated,
    PayoutBatchEvent,
    PayoutBatchFinalized,
    PayoutBatchPreviewed,
    PayoutBatchSubmitted,
    PayoutRow,
    SettlementAnchored,
)
from domain.events.protocol import ProtocolObserved
from domain.events.reconciliation import ReconciliationCompleted
from domain.events.route import (
    ROUTE_EVENTS,
    RouteConnected,
    RouteDisconnected,
    RoutePolicySet,
    RouteProbed,
    RouteState,
)

EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        SignerKeyPublished,
        NodeEnrolled,
        HeartbeatRecorded,
        NodeApproved,
        NodeRevoked,
        NodeKeyRotated,
        NodeReceiptsReported,
        ProtocolObserved,
        LedgerCheckpointed,
        *COMMAND_EVENTS,
        SupportGrantIssued,
        SupportGrantRevoked,
        SupportGrantUsed,
        *ROUTE_EVENTS,
        BenchmarkObserved,
        *BILLING_EVENTS,
        *PAYOUT_EVENTS,
        ReconciliationCompleted,
    )
}


class UnknownEventType(ValueError):
    pass


class SchemaMismatch(ValueError):
    pass


@cache
def _decoder(cls: type[Event]) -> msgspec.json.Decoder[Event]:
    return msgspec.json.Decoder(cls)


def decode_payload(event_type: str, schema_version: int, payload: bytes | msgspec.Raw) -> Event:
    """Decode a payload by its envelope type; raises UnknownEventType or SchemaMismatch."""
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise UnknownEventType(f"unknown event type {event_type!r}")
    if not 1 <= schema_version <= cls.SCHEMA_VERSION:
        raise SchemaMismatch(
            f"{event_type} schema version {schema_version} is not in 1..{cls.SCHEMA_VERSION}"
        )
    try:
        return _decoder(cls).decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise SchemaMismatch(f"{event_type} v{schema_version}: {exc}") from None


def type_name(event: Event) -> str:
    return type(event).__name__


def type_names(*classes: type[Event]) -> frozenset[str]:
    """The envelope types of every event that is an instance of one of ``classes``."""
    return frozenset(name for name, cls in EVENT_TYPES.items() if issubclass(cls, classes))


__all__ = [
    "EVENT_TYPES",
    "BenchmarkObserved",
    "BenchmarkRun",
    "CommandCancelled",
    "CommandEvent",
    "CommandExpired",
    "CommandFailed",
    "CommandIssued",
    "CommandLeased",
    "CommandResultReported",
    "CommandRetried",
    "CommandState",
    "CreditAdjusted",
    "CreditGranted",
    "CustomerCreated",
    "CustomerDebited",
    "CustomerEvent",
    "CustomerPolicySet",
    "Event",
    "GatewayKeyIssued",
    "GatewayKeyPolicySet",
    "GatewayKeyRevoked",
    "HeartbeatRecorded",
    "LedgerCheckpointed",
    "ModelPriceSet",
    "NodeApproved",
    "NodeEnrolled",
    "NodeEvidence",
    "NodeKeyRotated",
    "NodePayoutCreated",
    "NodeReceiptsReported",
    "NodeRevoked",
    "NodeState",
    "PayoutBatchCreated",
    "PayoutBatchEvent",
    "PayoutBatchFinalized",
    "PayoutBatchPreviewed",
    "PayoutBatchSubmitted",
    "PayoutRow",
    "PriceEntry",
    "ProtocolObserved",
    "ReconciliationCompleted",
    "ReservationAwaitingReceipt",
    "ReservationClaimed",
    "ReservationCreated",
    "ReservationReleased",
    "RouteConnected",
    "RouteDisconnected",
    "RoutePolicySet",
    "RouteProbed",
    "RouteState",
    "SchemaMismatch",
    "SettlementAnchored",
    "SignerKeyPublished",
    "SupportGrantIssued",
    "SupportGrantRevoked",
    "SupportGrantUsed",
    "UnknownEventType",
    "decode_payload",
    "type_name",
    "type_names",
]
