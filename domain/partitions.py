"""Splitting a stream by subject: each aggregate's events all land in one partition.

A partition's runner applies the events of its own subjects in stream order, so a
projection whose rows are keyed by the subject's aggregate id sees each row's events in
the same order as one runner would. The split is a stable hash of the aggregate id (the
subject's last token), never Python's per-process ``hash()``: every process must agree.
"""

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, order=True, slots=True)
class Partition:
    index: int = 0
    count: int = 1

    def holds(self, subject: str) -> bool:
        return self.count == 1 or partition_of(subject, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"


WHOLE = Partition()
"""The whole stream: the default, and the only split of a cross-aggregate projection."""


def partition_of(subject: str, count: int) -> int:
    """Which of ``count`` partitions holds ``subject``'s aggregate."""
    aggregate_id = subject.rpartition(".")[2]
    return zlib.crc32(aggregate_id.encode()) % count


def split(count: int) -> list[Partition]:
    if count < 1:
        raise ValueError(f"a stream splits into at least one partition, not {count}")
    return [Partition(index, count) for index in range(count)]


def assign(work: Mapping[str, str], members: Sequence[int]) -> dict[str, int]:
    """Which member runs each piece of work (``name → group``, a group being the
    partitions of one projection): a group's partitions spread over as many members as
    there are, and each member's count as even as that allows. Every member computes the
    same answer from the same member list, so none has to tell the others."""
    ordered = sorted(set(members))
    if not ordered:
        return {}
    sizes: dict[str, int] = {}
    for group in work.values():
        sizes[group] = sizes.get(group, 0) + 1
    load = dict.fromkeys(ordered, 0)
    in_group: dict[tuple[str, int], int] = {}
    owner: dict[str, int] = {}
    # The widest groups first, so the single pieces even out the counts at the end.
    for name in sorted(work, key=lambda n: (-sizes[work[n]], work[n], n)):
        group = work[name]
        chosen = min(ordered, key=lambda m: (in_group.get((group, m), 0), load[m]))
        owner[name] = chosen
        load[chosen] += 1
        in_group[group, chosen] = in_group.get((group, chosen), 0) + 1
    return owner
