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
