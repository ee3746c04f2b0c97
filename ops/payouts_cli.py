"""`b3iq payouts …`: batch pending node payouts under a Merkle root, prove any one row,
and settle batches through the local anchor (no on-chain settlement adapter is included)."""

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from adapters.bootstrap import topology_for
from adapters.jetstream import JetStreamEventStore
from adapters.keyfile import load_signer
from adapters.local_anchor import NOT_ON_CHAIN
from adapters.payout_batches import PayoutBatches, payout_batches_for
from adapters.postgres import create_pool
from adapters.recorder import Recorder
from domain.events import PayoutBatchCreated, PayoutBatchPreviewed
from domain.nodes import Refused
from domain.payout_batches import PayoutProof, check_payout_proof
from ops.cli_support import console, run, settings_from

out = Console()


def _with_batches(args: argparse.Namespace, work: Callable[[PayoutBatches], Awaitable[Any]]) -> Any:
    settings = settings_from(args)

    async def go() -> Any:
        topology = topology_for(settings)
        store = await JetStreamEventStore.connect(
            settings.nats_url, topology, replicas=settings.stream_replicas
        )
        pool = None
        try:
            pool = await create_pool(settings.database_url, max_size=2)
            recorder = Recorder(store, load_signer(settings.key_path), topology)
            return await work(payout_batches_for(recorder, pool))
        finally:
            if pool is not None:
                await pool.close()
            await store.close()

    return run(go())


def _by(args: argparse.Namespace) -> str:
    return str(args.by or f"cli:{os.environ.get('USER', 'operator')}")


def _refused(exc: Refused) -> int:
    console.print(f"[red]refused ({exc.code}):[/red] {exc.reason}")
    return 1


def cmd_batch(args: argparse.Namespace) -> int:
    async def work(batches: PayoutBatches) -> PayoutBatchPreviewed | PayoutBatchCreated:
        if args.preview:
            return await batches.preview(_by(args))
        return await batches.create(_by(args))

    try:
        made = _with_batches(args, work)
    except Refused as exc:
        return _refused(exc)
    kind = "preview (claims nothing)" if args.preview else "created"
    table = Table(title=f"payout batch {made.batch_id}: {kind}, ledger up to #{made.up_to_seq}")
    for column in ("payout", "node", "receipt", "amount_wei"):
        table.add_column(column, justify="right" if column == "amount_wei" else "left")
    for row in made.rows[: args.show]:
        table.add_row(row.payout_id, row.node_id, row.receipt_hash[:16] + "…", row.amount_wei)
    if len(made.rows) > args.show:
        table.add_row(f"… {len(made.rows) - args.show} more", "", "", "")
    out.print(table)
    out.print(
        f"batch_id {made.batch_id}\npayout_count {made.payout_count}\n"
        f"total_amount_wei {made.total_amount_wei}\nmerkle_root {made.merkle_root}"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    found = _with_batches(args, lambda b: b.recent(args.limit))
    table = Table(title="payout batches (newest first)")
    for column in ("batch", "state", "payouts", "total_wei", "merkle_root", "reference", "at"):
        table.add_column(column, justify="right" if column in ("payouts", "total_wei") else "left")
    for b in found:
        table.add_row(
            b.batch_id,
            b.state,
            str(b.payout_count),
            b.total_amount_wei,
            b.merkle_root[:16] + "…",
            b.reference or "",
            b.updated_at.isoformat(timespec="seconds"),
        )
    out.print(table)
    return 0


def cmd_prove(args: argparse.Namespace) -> int:
    try:
        proof = _with_batches(args, lambda b: b.prove(args.batch_id, args.payout_id))
    except Refused as exc:
        return _refused(exc)
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(proof)).decode() + "\n")
    return 0


def cmd_check_proof(args: argparse.Namespace) -> int:
    """Offline: no servers, nothing but the file."""
    try:
        proof = msgspec.json.decode(Path(args.file).read_bytes(), type=PayoutProof)
    except (OSError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        console.print(f"[red]not a payout proof:[/red] {exc}")
        return 1
    failures = check_payout_proof(proof)
    if failures:
        for failure in failures:
            console.print(f"[red]FAIL[/red] {failure}")
        return 1
    out.print(
        f"[green]OK[/green] payout {proof.row.payout_id} ({proof.row.amount_wei} wei to "
        f"{proof.row.node_id}) is leaf {proof.index} of {proof.payout_count} in batch "
        f"{proof.batch_id} under root {proof.merkle_root}"
    )
    out.print("to trust the root, find the batch's signed PayoutBatchCreated on the log")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        done = _with_batches(args, lambda b: b.submit(args.batch_id, _by(args)))
    except Refused as exc:
        return _refused(exc)
    out.print(f"batch {done.batch_id} submitted to {done.target}: reference {done.reference}")
    out.print(f"[yellow]{NOT_ON_CHAIN}[/yellow]")
    return 0


def cmd_finalize(args: argparse.Namespace) -> int:
    try:
        done = _with_batches(args, lambda b: b.finalize(args.batch_id, _by(args)))
    except Refused as exc:
        return _refused(exc)
    out.print(f"batch {done.batch_id} finalized at {done.target}: confirmation {done.reference}")
    out.print(f"[yellow]{NOT_ON_CHAIN}[/yellow]")
    return 0


def add_payouts_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    payouts = sub.add_parser("payouts", help="payout batches: Merkle roots, proofs, settlement")
    commands = payouts.add_subparsers(dest="payouts_command", required=True)

    def online(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("--data-dir", type=Path, help="keys (B3IQ_DATA_DIR)")
        return parser

    batch = online("batch", "batch every pending payout under one Merkle root")
    batch.add_argument("--preview", action="store_true", help="append a preview; claim nothing")
    batch.add_argument("--by", help="who is acting (default cli:<user>)")
    batch.add_argument("--show", type=int, default=50, help="rows to print")
    batch.set_defaults(func=cmd_batch)

    listing = online("list", "payout batches and their state")
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(func=cmd_list)

    prove = online("prove", "print a JSON inclusion proof of one payout in a batch")
    prove.add_argument("batch_id")
    prove.add_argument("payout_id")
    prove.set_defaults(func=cmd_prove)

    check = commands.add_parser("check-proof", help="check a payout proof offline")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_check_proof)

    for name, func, text in (
        ("submit", cmd_submit, "submit a created batch to the settlement target (local anchor)"),
        ("finalize", cmd_finalize, "finalize a submitted batch at the settlement target"),
    ):
        parser = online(name, text)
        parser.add_argument("batch_id")
        parser.add_argument("--by", help="who is acting (default cli:<user>)")
        parser.set_defaults(func=func)
