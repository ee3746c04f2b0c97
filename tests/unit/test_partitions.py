"""Splitting a stream by subject: stable across processes, one home per aggregate."""

import subprocess
import sys

import pytest

from domain.partitions import WHOLE, Partition, assign, partition_of, split

SUBJECTS = [f"b3iq.hb.node.n{i}" for i in range(400)]


def test_every_subject_lands_in_exactly_one_partition_and_all_are_used() -> None:
    parts = split(3)
    homes = [[p for p in parts if p.holds(s)] for s in SUBJECTS]
    assert all(len(h) == 1 for h in homes)
    sizes = [sum(1 for h in homes if h == [p]) for p in parts]
    assert min(sizes) > 100  # roughly even


def test_an_aggregate_lands_in_one_partition_whatever_its_stream() -> None:
    # Its heartbeats, probes and ledger events are split by the node id alone.
    for node in ("n1", "n2", "abc"):
        homes = {
            partition_of(f"b3iq.{kind}.{node}", 4) for kind in ("hb.node", "hb.route", "ev.node")
        }
        assert len(homes) == 1


def test_the_split_is_the_same_in_another_process() -> None:
    # Python's own hash() of a str differs per process; the split must not.
    code = (
        "from domain.partitions import partition_of;"
        f"print([partition_of(s, 5) for s in {SUBJECTS[:50]!r}])"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONHASHSEED": "random", "PATH": ""},
    )  # fmt: skip
    assert other.stdout.strip() == str([partition_of(s, 5) for s in SUBJECTS[:50]])


def test_the_whole_stream_holds_everything_and_a_split_needs_one_partition() -> None:
    assert all(WHOLE.holds(s) for s in SUBJECTS)
    assert str(Partition(1, 2)) == "2/2"
    with pytest.raises(ValueError, match="at least one"):
        split(0)


PROJECTOR = {
    **{f"{p}[{i}/2]": p for p in ("heartbeats", "nodes", "routes") for i in (1, 2)},
    **{name: name for name in ("billing", "signer_keys", "checkpointer")},
}


def test_a_projections_partitions_go_to_different_members_and_counts_even_out() -> None:
    owner = assign(PROJECTOR, [812, 97])
    assert owner["heartbeats[1/2]"] != owner["heartbeats[2/2]"]
    assert owner["nodes[1/2]"] != owner["nodes[2/2]"]
    assert sorted(list(owner.values()).count(m) for m in (812, 97)) == [4, 5]
    three = assign(PROJECTOR, [5, 6, 7])
    assert sorted(list(three.values()).count(m) for m in (5, 6, 7)) == [3, 3, 3]


def test_every_member_works_out_the_same_assignment() -> None:
    assert assign(PROJECTOR, [3, 1, 2]) == assign(dict(reversed(PROJECTOR.items())), [2, 3, 1])
    assert set(assign(PROJECTOR, [9]).values()) == {9}
    assert assign(PROJECTOR, []) == {}
