"""Schemathesis against the node's own OpenAPI schema, with a local key allowed
everything (ops/fuzz.py --target node is the longer run of the same code): no 5xx, every
answer documented (status, content type, body), a request that breaks the schema refused
with a 4xx."""

import os

from ops.fuzz import fuzz, report, summary
from ops.fuzz import node as node_api
from tests.e2e.node.conftest import Node

EXAMPLES = int(os.environ.get("B3IQ_FUZZ_EXAMPLES", "8"))
SEED = int(os.environ.get("B3IQ_FUZZ_SEED", "0"))


def test_the_node_answers_fuzzed_requests_as_its_schema_says(node: Node) -> None:
    results = fuzz(node_api(node.url, node.key), examples=EXAMPLES, run_seed=SEED)
    cases, failures = summary(results)
    assert failures == 0, report(results)
    assert {r.label for r in results} >= {"POST /v1/chat/completions", "GET /v1/receipts"}
    assert cases > 5 * len(results)
