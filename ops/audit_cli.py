"""`b3iq audit …`: verify, export and prove the log with nothing but it and public keys."""

import argparse
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from adapters.audit import (
    NoCheckpoint,
    export_log,
    keyring_from_file,
    prove,
    read_export,
    read_log,
    verify_log,
)
from adapters.bootstrap import topology_for
from adapters.jetstream import JetStreamEventStore
from adapters.keyfile import load_signer
from adapters.services import rebuild
from adapters.settings import Settings
from domain.envelope import StoredEvent
from domain.proofs import InclusionProof, ProvenEvent, check_proof
from domain.signing import Keyring
from domain.streams import Topology
from ops.cli_support import console, progress_bars, run, settings_from

Use = Callable[[AsyncIterator[StoredEvent]], Any]


async def _with_log(
    settings: Settings,
    topology: Topology,
    source: Path | None,
    use: Use,
    progress: Callable[[str, int, int], None] | None = None,
) -> Any:
    """Run ``use`` over the log: an exported file, or JetStream itself."""
    if source is not None:
        return await use(read_export(source))
    store = await JetStreamEventStore.connect(
        settings.nats_url, topology, replicas=settings.stream_replicas
    )
    try:
        return await use(read_log(store, topology, progress))
    finally:
        await store.close()


def _keyring(args: argparse.Namespace, settings: Settings) -> Keyring:
    if args.keys:
        return keyring_from_file(args.keys)
    return Keyring([load_signer(settings.key_path).public_key])


def cmd_verify(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    topology = topology_for(settings)
    keyring = _keyring(args, settings)

    pinned = None
    if args.head:
        head = msgspec.json.decode(args.head.read_bytes(), type=ProvenEvent)
        pinned = StoredEvent(head.stream, head.seq, head.subject, bytes(head.data))

    async def verify(log: AsyncIterator[StoredEvent]) -> Any:
        return await verify_log(
            log,
            topology,
            keyring,
            pinned=pinned,
            jobs=args.jobs,
            every_signature=args.every_signature,
        )

    with progress_bars("verifying") as update:
        verifier, problems = run(_with_log(settings, topology, args.source, verify, update))
    if args.json:
        report = {
            "ok": not problems,
            "verified": verifier.verified,
            "checkpoints": verifier.checkpoints,
            "signatures": verifier.signatures,
            "vouched_by_checkpoints": verifier.vouched,
            "by_type": dict(verifier.by_type),
            "by_signer": dict(verifier.by_signer),
            "problems": problems,
        }
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        title = (
            f"{verifier.verified} events verified, {verifier.signatures} signatures checked,"
            f" {verifier.vouched} vouched for by {verifier.checkpoints} checkpoints"
        )
        table = Table(title=title)
        table.add_column("event type")
        table.add_column("count", justify="right")
        for name, count in sorted(verifier.by_type.items()):
            table.add_row(name, str(count))
        for signer, count in sorted(verifier.by_signer.items()):
            table.add_row(f"[dim]signed by {signer}[/dim]", str(count))
        Console().print(table)
        for problem in problems:
            console.print(f"[red]FAIL[/red] {problem}")
    return 1 if problems else 0


def cmd_export(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    topology = topology_for(settings)
    with progress_bars("exporting") as update:
        count = run(
            _with_log(settings, topology, None, lambda log: export_log(log, args.out), update)
        )
    console.print(f"{count} events written to {args.out}")
    return 0


def cmd_prove(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    topology = topology_for(settings)
    try:
        proof = run(
            _with_log(settings, topology, args.source, lambda log: prove(log, topology, args.seq))
        )
    except NoCheckpoint as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    sys.stdout.write(msgspec.json.encode(proof).decode() + "\n")
    return 0


def cmd_check_proof(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    proof = msgspec.json.decode(args.proof.read_bytes(), type=InclusionProof)
    failures = check_proof(proof, _keyring(args, settings))
    for failure in failures:
        console.print(f"[red]FAIL[/red] {failure}")
    if not failures:
        console.print(
            f"[green]ok[/green]: {proof.event.stream}#{proof.event.seq} is in the signed "
            f"tree of {proof.tree_size} (root {proof.root})"
        )
    return 1 if failures else 0


def cmd_replay(args: argparse.Namespace) -> int:
    with progress_bars("replaying") as update:
        report = run(
            rebuild(
                settings_from(args),
                keep=args.keep,
                swap=args.swap,
                partitions=args.partitions,
                jobs=args.jobs,
                progress=update,
            )
        )
    table = Table(
        title=f"rebuild into {report.schema}: {report.events} events in {report.seconds:.2f} s"
    )
    for column in ("table", "live rows", "rebuilt rows", "result"):
        table.add_column(column)
    differing = {d.table: d for d in report.differences}
    for name in report.tables:
        diff = differing.get(name)
        if diff is None:
            table.add_row(name, "", "", "[green]identical[/green]")
        else:
            table.add_row(name, str(diff.live.rows), str(diff.rebuilt.rows), "[red]differs[/red]")
    Console().print(table)
    for diff in report.differences:
        for row in diff.sample:
            console.print(f"  {diff.table}: {row}")
    if report.retired:
        console.print(f"swapped in; the previous read models are in schema {report.retired}")
        return 0  # differences are what a swap is for (new projection code)
    return 1 if report.differences else 0


def add_audit_commands(sub: Any) -> None:
    audit = sub.add_parser("audit", help="auditor tools").add_subparsers(
        dest="audit", required=True
    )

    def command(name: str, func: Callable[[argparse.Namespace], int], text: str) -> Any:
        parser = audit.add_parser(name, help=text)
        parser.add_argument("--data-dir", type=Path, help="this control plane's data dir")
        parser.set_defaults(func=func)
        return parser

    def with_keys(parser: Any) -> None:
        parser.add_argument("--keys", type=Path, help="public keys as served by GET /v1/keys")

    verify = command("verify", cmd_verify, "check every signature, chain, sequence and checkpoint")
    with_keys(verify)
    verify.add_argument("--from", dest="source", type=Path, help="an exported log file")
    verify.add_argument("--json", action="store_true", help="a machine-readable report")
    verify.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="processes checking signatures (default: one per CPU; 1: all in this one)",
    )
    verify.add_argument(
        "--every-signature",
        action="store_true",
        help="check every ledger signature, not only those no vouching checkpoint covers",
    )
    verify.add_argument(
        "--head",
        type=Path,
        help="a checkpoint pinned earlier (GET /v1/audit/checkpoint): the log must hold it",
    )

    export = command("export", cmd_export, "write the whole log to a JSON-lines file")
    export.add_argument("out", type=Path)

    proof = command("prove", cmd_prove, "print an inclusion proof of one ledger event")
    proof.add_argument("seq", type=int, help="the event's ledger sequence")
    proof.add_argument("--from", dest="source", type=Path, help="an exported log file")

    replay = command(
        "replay", cmd_replay, "rebuild every read model from the log and compare with the live"
    )
    replay.add_argument("--keep", action="store_true", help="keep the rebuilt schema")
    replay.add_argument("--swap", action="store_true", help="promote the rebuilt schema")
    replay.add_argument(
        "--partitions",
        type=int,
        help="split the rebuilt projections this many ways (with --swap: how to change"
        " `b3iq projector --partitions`; restart every projector with the new count)",
    )
    replay.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="replay in this many processes at once (default: one per CPU)",
    )

    check = command("check-proof", cmd_check_proof, "check a proof printed by `audit prove`")
    with_keys(check)
    check.add_argument("proof", type=Path)
