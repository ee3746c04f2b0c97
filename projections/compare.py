"""Comparing two schemas' read models: row counts and an order-independent checksum."""

from typing import NamedTuple

from projections.db import Database


class TableDigest(NamedTuple):
    rows: int
    checksum: str


class TableDifference(NamedTuple):
    table: str
    live: TableDigest
    rebuilt: TableDigest
    sample: list[str]
    """A few rows present on one side only, prefixed '-' (live) or '+' (rebuilt)."""


def _quote(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"unsafe identifier {name!r}")
    return f'"{name}"'


async def digest(db: Database, schema: str, table: str) -> TableDigest:
    # A sum of per-row hashes doesn't depend on row order, and unlike XOR, duplicates count.
    row = await db.fetchrow(
        "SELECT count(*) AS n, coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)"
        f"::bigint::numeric), 0)::text AS s FROM {_quote(schema)}.{_quote(table)} t"
    )
    return TableDigest(row["n"], row["s"])


async def compare_table(
    db: Database, live_schema: str, rebuilt_schema: str, table: str, sample: int = 5
) -> TableDifference | None:
    live = await digest(db, live_schema, table)
    rebuilt = await digest(db, rebuilt_schema, table)
    if live == rebuilt:
        return None
    a, b, t = _quote(live_schema), _quote(rebuilt_schema), _quote(table)
    rows = await db.fetch(
        f"(SELECT '-' || x::text AS r FROM (SELECT * FROM {a}.{t} EXCEPT ALL"
        f" SELECT * FROM {b}.{t}) x LIMIT $1) UNION ALL"
        f" (SELECT '+' || y::text FROM (SELECT * FROM {b}.{t} EXCEPT ALL"
        f" SELECT * FROM {a}.{t}) y LIMIT $1)",
        sample,
    )
    return TableDifference(table, live, rebuilt, [r["r"] for r in rows])
