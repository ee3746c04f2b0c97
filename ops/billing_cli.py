"""`b3iq billing …`: operator tools for the money path."""

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from rich.console import Console
from rich.table import Table

from adapters.audit import read_export, read_log
from adapters.billing import StaleRelease
from adapters.bootstrap import bootstrap, topology_for
from adapters.jetstream import JetStreamEventStore
from adapters.keyfile import load_signer
from adapters.postgres import create_pool
from adapters.reconciliation import Report, every, reconcile, record_summary
from adapters.recorder import Recorder
from adapters.settings import Settings
from ops.cli_support import console, run, settings_from


async def _release_stale(
    settings: Settings, older_than_s: float | None, dry_run: bool
) -> list[StaleRelease]:
    plane = await bootstrap(settings)
    try:
        return await plane.managed.billing.release_stale(older_than_s, dry_run=dry_run)
    finally:
        await plane.close()


def cmd_release_stale(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    older = args.older_than_s or settings.billing_stale_after_s
    found = run(_release_stale(settings, older, args.dry_run))
    verb = "would release" if args.dry_run else "released"
    table = Table(title=f"stale reservations (unchanged for {older:g} s): {verb}")
    for column in ("reservation", "job", "state", "amount_wei", "unchanged since", "released"):
        table.add_column(column, justify="right" if column == "amount_wei" else "left")
    for s in found:
        table.add_row(
            s.reservation_id,
            s.job_id or "",
            s.state,
            str(s.amount_wei),
            s.updated_at.isoformat(timespec="seconds"),
            "yes" if s.released else ("dry run" if args.dry_run else "no (moved on)"),
        )
    Console().print(table)
    total = sum(s.amount_wei for s in found if s.released or args.dry_run)
    console.print(f"{len(found)} stale reservations, {total} wei {verb}")
    return 0


def add_billing_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    billing = sub.add_parser("billing", help="billing operations")
    commands = billing.add_subparsers(dest="billing_command", required=True)
    stale = commands.add_parser(
        "release-stale", help="release reservations left queued, claimed or awaiting a receipt"
    )
    stale.add_argument("--older-than-s", type=float, help="default B3IQ_BILLING_STALE_AFTER_S")
    stale.add_argument("--dry-run", action="store_true", help="list them, release nothing")
    stale.add_argument("--data-dir", type=Path, help="keys (B3IQ_DATA_DIR)")
    stale.set_defaults(func=cmd_release_stale)
    add_reconcile_command(commands)


async def _reconcile_once(
    settings: Settings, source: Path | None, log_only: bool, record: bool
) -> Report:
    topology = topology_for(settings)
    pool = None if log_only else await create_pool(settings.database_url, max_size=2)
    store = None
    try:
        if source is not None:
            report: Report = await reconcile(read_export(source), topology, pool)
        else:
            store = await JetStreamEventStore.connect(
                settings.nats_url, topology, replicas=settings.stream_replicas
            )
            report = await reconcile(read_log(store, topology, ledger_only=True), topology, pool)
            if record:
                recorder = Recorder(store, load_signer(settings.key_path), topology)
                await record_summary(recorder, report, datetime.now(UTC))
        return report
    finally:
        if store is not None:
            await store.close()
        if pool is not None:
            await pool.close()


def _print_report(report: Report, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
        return
    title = (
        f"ledger up to #{report.up_to_seq}: {report.events} events, {report.customers} "
        f"customers, {report.reservations} reservations ({report.open_reservations} open), "
        f"{report.receipts} receipts, {report.payouts} payouts ({report.pending_payouts} "
        f"unbatched, {report.payout_total_wei} wei)"
    )
    if not report.compared_read_models:
        title += "; read models not compared"
    table = Table(title=title)
    for column in ("code", "at fault", "table", "detail", "events (seq type id)"):
        table.add_column(column, overflow="fold")
    for d in report.discrepancies:
        events = "\n".join(str(r) for r in d.events)
        table.add_row(str(d.code), d.subject, d.table or "log", d.detail, events)
    Console().print(table)
    nodes = Table(title="payouts owed per node (from the log)")
    for column in ("node", "payouts", "owed_wei", "fees_wei"):
        nodes.add_column(column, justify="left" if column == "node" else "right")
    for n in report.nodes:
        nodes.add_row(n.node_id, str(n.payouts), n.owed_wei, n.fees_wei)
    Console().print(nodes)
    if report.ok:
        console.print("[green]reconciled: no discrepancies[/green]")
    else:
        console.print(f"[red]{len(report.discrepancies)} discrepancies[/red] {report.by_code}")


def cmd_reconcile(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.every is None:
        report = run(_reconcile_once(settings, args.source, args.log_only, args.record))
        _print_report(report, args.json)
        return 0 if report.ok else 1

    async def once() -> None:
        report = await _reconcile_once(settings, None, args.log_only, record=True)
        _print_report(report, args.json)

    run(every(parse_interval(args.every), once, asyncio.Event()))
    return 0


def parse_interval(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``2h`` → seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def add_reconcile_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    rec = commands.add_parser(
        "reconcile",
        help="recompute billing from the log alone and compare with the read models",
    )
    rec.add_argument("--from", dest="source", type=Path, help="an exported log file")
    rec.add_argument("--json", action="store_true", help="a machine-readable report")
    rec.add_argument("--log-only", action="store_true", help="check the log, not Postgres")
    rec.add_argument(
        "--record", action="store_true", help="append a signed ReconciliationCompleted"
    )
    rec.add_argument(
        "--every", help="run as a loop (e.g. 10m), appending ReconciliationCompleted each time"
    )
    rec.add_argument("--data-dir", type=Path, help="keys (B3IQ_DATA_DIR)")
    rec.set_defaults(func=cmd_reconcile)
