"""Where each projection stands in its stream, moved in the same transaction as its rows."""

from projections.db import Database


async def lock_checkpoint(db: Database, projection: str, stream: str) -> int:
    """The projection's last applied sequence, row-locked until the transaction ends, so
    two runners can never apply the same batch."""
    await db.execute(
        "INSERT INTO projection_checkpoints (projection, stream) VALUES ($1, $2)"
        " ON CONFLICT DO NOTHING",
        projection,
        stream,
    )
    seq: int = await db.fetchval(
        "SELECT last_seq FROM projection_checkpoints"
        " WHERE projection = $1 AND stream = $2 FOR UPDATE",
        projection,
        stream,
    )
    return seq


async def move_checkpoint(db: Database, projection: str, stream: str, last_seq: int) -> None:
    await db.execute(
        "UPDATE projection_checkpoints SET last_seq = $3, updated_at = now()"
        " WHERE projection = $1 AND stream = $2",
        projection,
        stream,
        last_seq,
    )


async def checkpoints(db: Database) -> dict[tuple[str, str], int]:
    rows = await db.fetch("SELECT projection, stream, last_seq FROM projection_checkpoints")
    return {(r["projection"], r["stream"]): r["last_seq"] for r in rows}
