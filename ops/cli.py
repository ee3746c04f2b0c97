"""`b3iq`: the control plane's services and the operator's tools."""

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from adapters.keyfile import KeyFileError
from adapters.postgres import DatabaseUnavailable, migrate
from adapters.settings import Settings
from domain.ports import StoreUnavailable

console = Console(stderr=True)
EXIT_UNAVAILABLE = 2


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        data_dir=getattr(args, "data_dir", None),
    )


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a dependency, but not on every OS
        return asyncio.run(coro)


def cmd_serve(args: argparse.Namespace) -> int:
    from adapters.services import serve

    _run(serve(_settings(args)))
    return 0


def cmd_projector(args: argparse.Namespace) -> int:
    from adapters.services import run_projector

    _run(run_projector(_settings(args), args.metrics_port))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _run(migrate(settings.database_url))
    console.print("[green]migrations applied[/green]")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from adapters.services import rebuild

    with Progress(console=console, transient=True) as progress:
        tasks: dict[str, Any] = {}

        def update(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done, total=total)

        report = _run(rebuild(_settings(args), keep=args.keep, progress=update))
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
    return 1 if report.differences else 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from adapters.audit import keyring_from_file, verify_log
    from adapters.bootstrap import topology_for
    from adapters.jetstream import JetStreamEventStore
    from adapters.keyfile import load_signer
    from domain.signing import Keyring

    settings = _settings(args)
    topology = topology_for(settings)
    if args.keys:
        keyring = keyring_from_file(args.keys)
    else:
        keyring = Keyring([load_signer(settings.key_path).public_key])

    async def verify() -> Any:
        store = await JetStreamEventStore.connect(settings.nats_url, topology)
        try:
            with Progress(console=console, transient=True) as progress:
                tasks: dict[str, Any] = {}

                def update(name: str, done: int, total: int) -> None:
                    if name not in tasks:
                        tasks[name] = progress.add_task(f"verifying {name}", total=total)
                    progress.update(tasks[name], completed=done)

                return await verify_log(store, topology, keyring, update)
        finally:
            await store.close()

    verifier, problems = _run(verify())
    if args.json:
        import msgspec

        report = {
            "ok": not problems,
            "verified": verifier.verified,
            "by_type": dict(verifier.by_type),
            "by_signer": dict(verifier.by_signer),
            "problems": problems,
        }
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        table = Table(title=f"{verifier.verified} events verified")
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


def cmd_dev(args: argparse.Namespace) -> int:
    from ops.devstack.stack import run_dev_stack

    code: int = run_dev_stack(Path(args.data_dir), with_node=not args.no_node)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="b3iq", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the control-plane HTTP API")
    serve.add_argument("--host", help="listen address (default 127.0.0.1, B3IQ_HOST)")
    serve.add_argument("--port", type=int, help="listen port (default 8830, B3IQ_PORT)")
    serve.add_argument("--data-dir", type=Path, help="keys and state (B3IQ_DATA_DIR)")
    serve.set_defaults(func=cmd_serve)

    projector = sub.add_parser("projector", help="fold the log into the read models")
    projector.add_argument("--data-dir", type=Path, help="keys and state (B3IQ_DATA_DIR)")
    projector.add_argument("--metrics-port", type=int, help="serve Prometheus metrics here")
    projector.set_defaults(func=cmd_projector)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    rebuild = sub.add_parser(
        "rebuild", help="replay the log into a scratch schema and compare with the live one"
    )
    rebuild.add_argument("--data-dir", type=Path, help="keys and state (B3IQ_DATA_DIR)")
    rebuild.add_argument("--keep", action="store_true", help="keep the scratch schema")
    rebuild.set_defaults(func=cmd_rebuild)

    audit = sub.add_parser("audit", help="auditor tools").add_subparsers(
        dest="audit", required=True
    )
    verify = audit.add_parser("verify", help="check every signature, chain and sequence in the log")
    verify.add_argument("--keys", type=Path, help="public keys as served by GET /v1/keys")
    verify.add_argument("--data-dir", type=Path, help="use this control plane's own key")
    verify.add_argument("--json", action="store_true", help="a machine-readable report")
    verify.set_defaults(func=cmd_audit_verify)

    dev = sub.add_parser("dev", help="run the whole stack locally with embedded servers")
    dev.add_argument("--data-dir", default=".b3iq", help="where everything lives (./.b3iq)")
    dev.add_argument("--no-node", action="store_true", help="don't start a local node")
    dev.set_defaults(func=cmd_dev)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        return handler(args)
    except (StoreUnavailable, DatabaseUnavailable, KeyFileError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
