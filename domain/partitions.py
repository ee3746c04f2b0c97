"""Splitting a stream by subject: each aggregate's events all land in one partition.

A partition's runner applies the events of its own subjects in stream order, so a
projection whose rows are keyed by the subject's aggregate id sees each row's events in
the same order as one runner would. The split is a stable hash of the aggregate id (the
subject's last token), never Python's per-process ``hash()``: every process must agree.
"""

import zlib
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
