"""How a replay's projections are shared among processes, and what a failing one says."""

from types import SimpleNamespace
from typing import Any

import pytest

from adapters.replay_processes import ReplayAt, groups_of, replay_in_processes
from domain.partitions import WHOLE, Partition
from domain.ports import StoreUnavailable
from domain.streams import Topology
from ops.devstack.nats_server import free_port


def _runner(name: str, partition: Partition = WHOLE) -> Any:
    return SimpleNamespace(projection=SimpleNamespace(name=name), partition=partition)


NAMES = ["signer_keys", "nodes", "heartbeats", "protocol", "commands", "routes",
         "route_probes", "benchmarks", "billing", "node_receipts"]  # fmt: skip


def test_billing_replays_alone_and_the_rest_together() -> None:
    first, second = groups_of([(_runner(n), 100) for n in NAMES], jobs=2)
    assert [r.projection for r in first] == ["billing"]
    assert sorted(r.projection for r in second) == sorted(set(NAMES) - {"billing"})
    assert all(r.target == 100 for r in (*first, *second))


def test_no_more_groups_than_runners_and_every_runner_once() -> None:
    runners = [(_runner("heartbeats", Partition(i, 3)), 7) for i in range(3)]
    groups = groups_of(runners, jobs=8)
    assert len(groups) == 3
    assert sorted(r.partition.index for g in groups for r in g) == [0, 1, 2]
    assert len(groups_of(runners, jobs=1)) == 1


async def test_a_group_that_cannot_reach_nats_says_so_as_itself() -> None:
    """The CLI answers StoreUnavailable with a one-line error and its exit code; a child's
    failure must reach it as that, not as a traceback."""
    away = f"nats://127.0.0.1:{free_port()}"
    at = ReplayAt(away, Topology("t"), 1, f"postgresql://x@127.0.0.1:{free_port()}/x", "s", 100)
    runners = [(_runner(n), 1) for n in ("billing", "nodes")]
    with pytest.raises(StoreUnavailable):
        await replay_in_processes(None, at, runners, jobs=2)  # type: ignore[arg-type]
