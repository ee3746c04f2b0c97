"""Benchmark evidence per node and model: observed by the control plane, or self-reported."""

from collections.abc import Sequence
from typing import Any

import msgspec

from domain.command_messages import CommandResult
from domain.command_specs import BenchmarkSmoke
from domain.decoding import Decoded
from domain.events import BenchmarkObserved, CommandResultReported
from projections.db import Database

OBSERVED, SELF_REPORTED = "observed", "self_reported"

_UPSERT = """
INSERT INTO node_benchmarks (node_id, model, source, observed_at, runtime_kind, ttft_ms,
    tokens_per_s, output_sha256, set_id, event_id, seq)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (node_id, model, source) DO UPDATE SET
    observed_at = EXCLUDED.observed_at, runtime_kind = EXCLUDED.runtime_kind,
    ttft_ms = EXCLUDED.ttft_ms, tokens_per_s = EXCLUDED.tokens_per_s,
    output_sha256 = EXCLUDED.output_sha256, set_id = EXCLUDED.set_id,
    event_id = EXCLUDED.event_id, seq = EXCLUDED.seq
"""


class _Smoke(msgspec.Struct, frozen=True):
    """The fields of a benchmark_smoke result this projection reads."""

    model: str
    runtime_kind: str
    ttft_ms: float
    tokens_per_s: float
    output_sha256: str


_result = msgspec.json.Decoder(CommandResult)


class BenchmarksProjection:
    name = "benchmarks"
    stream = "ledger"
    handles = (BenchmarkObserved, CommandResultReported)
    tables = ("node_benchmarks",)

    async def apply(self, db: Database, batch: Sequence[Decoded]) -> None:
        rows: list[tuple[Any, ...]] = []
        for p in batch:
            e = p.event
            if isinstance(e, BenchmarkObserved):
                rows.append(
                    (
                        e.node_id,
                        e.model,
                        OBSERVED,
                        e.observed_at,
                        e.runtime_kind,
                        e.ttft_ms,
                        e.tokens_per_s,
                        e.output_sha256,
                        e.set_id,
                        p.body.event_id,
                        p.seq,
                    )
                )
            elif isinstance(e, CommandResultReported) and isinstance(
                e.command.spec, BenchmarkSmoke
            ):
                smoke = _smoke(e)
                if smoke is not None:
                    rows.append(
                        (
                            e.node_id,
                            smoke.model,
                            SELF_REPORTED,
                            p.body.occurred_at,
                            smoke.runtime_kind,
                            smoke.ttft_ms,
                            smoke.tokens_per_s,
                            smoke.output_sha256,
                            None,
                            p.body.event_id,
                            p.seq,
                        )
                    )
        if rows:
            await db.executemany(_UPSERT, rows)


def _smoke(event: CommandResultReported) -> _Smoke | None:
    """The node's own numbers, when its upload holds them (it is the node's word only)."""
    if event.evidence.request_body is None:
        return None
    try:
        result = _result.decode(event.evidence.request_body)
        return msgspec.convert(result.output, _Smoke) if result.outcome == "succeeded" else None
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


async def benchmarks_of(db: Database, node_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT model, source, observed_at, ttft_ms, tokens_per_s, output_sha256"
        " FROM node_benchmarks WHERE node_id = $1 ORDER BY model, source",
        node_id,
    )
    return [dict(r) for r in rows]
