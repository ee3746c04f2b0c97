"""Where each projection partition stands in its stream, moved in the same transaction as
its rows. The rows also record how many partitions the projection is split into."""

from domain.partitions import Partition
from projections.db import Database


class PartitionsChanged(Exception):
    """The checkpoints split the projection another way than the caller: its events would
    land in the wrong partition's rows. Every process must run with the same count; to
    change it, rebuild the read models with the new count and swap them in."""

    def __init__(self, projection: str, found: int | None, wanted: int) -> None:
        if found is None:
            where = f"has no such partition of {wanted} in this database"
            fix = "start every projector with the count in use"
        else:
            where = f"is split into {found} partition(s) in this database, not {wanted}"
            fix = f"start every projector with --partitions {found}"
        super().__init__(
            f"projection {projection!r} {where}: {fix}, or rebuild with"
            f" `b3iq audit replay --swap --partitions {wanted}`"
        )
        self.found = found


async def claim_layout(db: Database, projection: str, stream: str, count: int) -> None:
    """Create the projection's checkpoints split into ``count`` partitions, or check that
    they already are (inside the caller's transaction)."""
    # Two first processes with different counts: the second waits, then sees the first's.
    await db.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"b3iq.layout.{projection}")
    rows = await db.fetch(
        "SELECT partitions FROM projection_checkpoints WHERE projection = $1 AND stream = $2",
        projection,
        stream,
    )
    if not rows:
        await db.execute(
            "INSERT INTO projection_checkpoints (projection, stream, partition, partitions)"
            " SELECT $1, $2, p, $3 FROM generate_series(0, $3 - 1) AS p",
            projection,
            stream,
            count,
        )
    elif len(rows) != count or any(r["partitions"] != count for r in rows):
        raise PartitionsChanged(projection, rows[0]["partitions"], count)


async def lock_checkpoint(db: Database, projection: str, stream: str, partition: Partition) -> int:
    """The partition's last applied sequence, row-locked until the transaction ends, so
    two runners can never apply the same batch."""
    row = await db.fetchrow(
        "SELECT last_seq, partitions FROM projection_checkpoints"
        " WHERE projection = $1 AND stream = $2 AND partition = $3 FOR UPDATE",
        projection,
        stream,
        partition.index,
    )
    if row is None or row["partitions"] != partition.count:
        raise PartitionsChanged(
            projection, None if row is None else row["partitions"], partition.count
        )
    seq: int = row["last_seq"]
    return seq


async def move_checkpoint(
    db: Database, projection: str, stream: str, partition: Partition, last_seq: int
) -> None:
    await db.execute(
        "UPDATE projection_checkpoints SET last_seq = $4, updated_at = now()"
        " WHERE projection = $1 AND stream = $2 AND partition = $3",
        projection,
        stream,
        partition.index,
        last_seq,
    )


async def committed_checkpoint(
    db: Database, projection: str, stream: str, partition: Partition
) -> int:
    seq = await db.fetchval(
        "SELECT last_seq FROM projection_checkpoints"
        " WHERE projection = $1 AND stream = $2 AND partition = $3",
        projection,
        stream,
        partition.index,
    )
    return int(seq or 0)


async def checkpoints(db: Database) -> dict[tuple[str, str], int]:
    """How far each projection has applied its whole stream: its slowest partition."""
    rows = await db.fetch(
        "SELECT projection, stream, min(last_seq) AS last_seq FROM projection_checkpoints"
        " GROUP BY projection, stream"
    )
    return {(r["projection"], r["stream"]): r["last_seq"] for r in rows}


async def partition_checkpoints(db: Database) -> dict[tuple[str, str, Partition], int]:
    rows = await db.fetch(
        "SELECT projection, stream, partition, partitions, last_seq FROM projection_checkpoints"
    )
    return {
        (r["projection"], r["stream"], Partition(r["partition"], r["partitions"])): r["last_seq"]
        for r in rows
    }
