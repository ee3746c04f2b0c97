"""`b3iq billing …`: operator tools for the money path."""

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from adapters.billing import StaleRelease
from adapters.bootstrap import bootstrap
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
