"""Every projection the control plane runs."""

from projections.benchmarks import BenchmarksProjection
from projections.billing import BillingProjection
from projections.commands import CommandsProjection
from projections.heartbeats import HeartbeatsProjection
from projections.node_receipts import NodeReceiptsProjection
from projections.nodes import NodesProjection
from projections.projection import Projection
from projections.protocol import ProtocolProjection
from projections.routes import RouteProbesProjection, RoutesProjection
from projections.signer_keys import SignerKeysProjection


def all_projections() -> list[Projection]:
    return [
        SignerKeysProjection(),
        NodesProjection(),
        HeartbeatsProjection(),
        ProtocolProjection(),
        CommandsProjection(),
        RoutesProjection(),
        RouteProbesProjection(),
        BenchmarksProjection(),
        BillingProjection(),
        NodeReceiptsProjection(),
    ]


PARTITIONED = frozenset({"heartbeats", "route_probes", "nodes", "protocol", "routes", "commands"})
"""Projections that may be split by subject: every row they keep is keyed by the aggregate
id of the one subject whose events write it (a node's heartbeats, probes, enrollment,
protocol observations and route; a command's own events), so partitions never touch each
other's rows and each row sees its events in log order.

Not split: billing (a payout batch claims payout rows that customer subjects wrote),
benchmarks (a node's self-reported rows come from its commands' subjects, its observed
rows from its benchmark subject), signer_keys (a handful of rows), node_receipts (few,
batched events; its intake reads its checkpoint as one row). A projection added later
stays whole until it is checked and listed here."""
