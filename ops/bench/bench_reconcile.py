"""Reconciliation throughput over a generated, signed ledger of paid work.

    .venv/bin/python ops/bench/bench_reconcile.py [--events N]

The log comes from ``billing_workload`` (real billing decisions, signed receipts), held
as bytes in memory so only decoding and folding are timed. Rows, each over the same
events: the baseline (plain ``decode_stored`` of every event, what any consumer pays),
the pure fold over events decoded beforehand, and decode + fold from bytes (what
``b3iq billing reconcile`` does per event). Peak RSS from getrusage after each row.
"""

import argparse
import resource
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from domain.billing.reconcile import LedgerFold
from domain.decoding import Decoded, decode_stored
from domain.envelope import StoredEvent
from domain.signing import Signer
from domain.streams import Topology
from ops.bench.billing_workload import Workload, take

TARGET = 100_000.0


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    console = Console()
    start = time.perf_counter()
    log: list[StoredEvent] = list(
        take(Workload(Topology(), Signer.generate()).events(), args.events)
    )
    size = sum(len(s.data) for s in log) / len(log)
    console.print(
        f"generated {len(log)} events ({size:.0f} B each) in {time.perf_counter() - start:.1f} s"
    )

    decoded: list[Decoded] = []
    baseline = timed(lambda: decoded.extend(decode_stored(s) for s in log))
    rss_decoded = peak_rss_mib()

    def pure() -> None:
        fold = LedgerFold()
        for d in decoded:
            fold.feed(d)
        assert fold.finish() == []

    def from_bytes() -> None:
        fold = LedgerFold()
        for s in log:
            fold.feed_stored(s)
        assert fold.finish() == []

    rows = [
        ("baseline: decode_stored", baseline, rss_decoded),
        ("pure fold (decoded events)", timed(pure), peak_rss_mib()),
        ("decode + fold from bytes", timed(from_bytes), peak_rss_mib()),
    ]
    table = Table(title=f"reconcile over {len(log)} ledger events (1 core)")
    for column in ("path", "events/s", "x baseline", "target", "peak RSS MiB"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for label, seconds, rss in rows:
        rate = len(log) / seconds
        target = "" if label.startswith("baseline") else ("ok" if rate >= TARGET else "below")
        table.add_row(label, f"{rate:,.0f}", f"{baseline / seconds:.2f}", target, f"{rss:.0f}")
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
