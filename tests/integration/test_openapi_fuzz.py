"""Schemathesis against the control plane's own OpenAPI schema, every operation reached
with the credential its caller holds (ops/fuzz.py is the longer run of the same code).

Over real sockets, with a real node on its broker route, paid-route eligible, a customer
with a gateway key and a support grant: no answer may be a 5xx, and every answer must
have a documented status, content type and body shape; a request that breaks the schema
must be refused with a 4xx.
"""

import asyncio
import os
from pathlib import Path

import httpx

from domain.streams import Topology
from ops.fuzz import ControlPlaneAccess, control_plane, fuzz, report, summary
from tests.billing_support import customer
from tests.conftest import Servers
from tests.route_support import make_paid, open_world

EXAMPLES = int(os.environ.get("B3IQ_FUZZ_EXAMPLES", "8"))
"""Per operation and mode (positive, negative): enough to reach every documented answer
in a few seconds; `ops/fuzz.py` runs many more."""
SEED = int(os.environ.get("B3IQ_FUZZ_SEED", "0"))


async def test_the_control_plane_answers_fuzzed_requests_as_its_schema_says(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path, tiny: Path
) -> None:
    # The node long-polls for commands: a fuzzed `wait` holds a request at most 0.5 s.
    async with open_world(
        servers, database_url, topology, tmp_path, tiny, command_max_wait_s=0.5
    ) as world:
        await make_paid(world)
        plane = world.one.plane
        customer_id, gateway_key = await customer(plane, 10**15)
        async with httpx.AsyncClient(base_url=world.one.url) as http:
            grant = await http.post(
                f"/v1/nodes/{world.node_id}/support-grants",
                json={"reason": "fuzz"},
                headers=world.admin(),
            )
            assert grant.status_code == 201, grant.text
        access = ControlPlaneAccess(
            admin_token=world.cp.admin,
            node_id=world.node_id,
            node_signer=world.node.identity.signer,
            gateway_key=gateway_key,
            support_grant=grant.json()["grant"],
            pinned={"customer_id": customer_id},
        )
        target = control_plane(world.one.url, access)
        # Schemathesis is synchronous: off the loop, which keeps serving it (and the node).
        results = await asyncio.to_thread(fuzz, target, examples=EXAMPLES, run_seed=SEED)

    cases, failures = summary(results)
    assert failures == 0, report(results)
    assert len(results) >= 50  # every operation in the schema but /metrics
    assert cases > 10 * len(results)
