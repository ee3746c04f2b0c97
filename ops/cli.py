"""`b3iq`: the control plane's services and the operator's tools."""

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec

from adapters.keyfile import KeyFileError
from adapters.postgres import DatabaseUnavailable, migrate
from adapters.settings import Settings
from domain.ports import StoreUnavailable
from ops.audit_cli import add_audit_commands
from ops.billing_cli import add_billing_commands
from ops.cli_support import console, run, settings_from
from ops.payouts_cli import add_payouts_commands

EXIT_UNAVAILABLE = 2
EXIT_CONFLICT = 3


def cmd_serve(args: argparse.Namespace) -> int:
    from adapters.services import serve

    settings = settings_from(args)
    if args.workers <= 1:
        run(serve(settings))
        return 0
    from adapters.api_workers import run_workers

    return run_workers(settings, args.workers, _serve_worker)


def _serve_worker(settings: Settings) -> None:
    from adapters.services import serve

    run(serve(settings, shared_port=True))


def cmd_projector(args: argparse.Namespace) -> int:
    from adapters.services import run_projector
    from adapters.work_sharing import WorkFailed
    from projections.checkpoints import PartitionsChanged

    settings = settings_from(args)
    if args.partitions is not None:
        settings = msgspec.structs.replace(settings, projector_partitions=args.partitions)
    try:
        run(run_projector(settings, args.metrics_port))
    except (PartitionsChanged, WorkFailed) as exc:
        # At start, or later: read models swapped for a rebuild split another way.
        changed = exc if isinstance(exc, PartitionsChanged) else exc.__cause__
        if not isinstance(changed, PartitionsChanged):
            raise
        console.print(f"[red]error:[/red] {changed}")
        return EXIT_CONFLICT
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    run(migrate(settings.database_url))
    console.print("[green]migrations applied[/green]")
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from ops.devstack.stack import run_dev_stack

    code: int = run_dev_stack(Path(args.data_dir), with_node=not args.no_node, cluster=args.cluster)
    return code


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="b3iq", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the control-plane HTTP API")
    serve.add_argument("--host", help="listen address (default 127.0.0.1, B3IQ_HOST)")
    serve.add_argument("--port", type=int, help="listen port (default 8830, B3IQ_PORT)")
    serve.add_argument("--data-dir", type=Path, help="keys and state (B3IQ_DATA_DIR)")
    serve.add_argument(
        "--workers", type=int, default=1, help="API processes sharing the port (one per core)"
    )
    serve.set_defaults(func=cmd_serve)

    projector = sub.add_parser("projector", help="fold the log into the read models")
    projector.add_argument("--data-dir", type=Path, help="keys and state (B3IQ_DATA_DIR)")
    projector.add_argument("--metrics-port", type=int, help="serve Prometheus metrics here")
    projector.add_argument(
        "--partitions",
        type=_positive,
        help="split each projection keyed by node (or command) this many ways, shared by"
        " every projector process; the same in all of them (B3IQ_PROJECTOR_PARTITIONS, 1)",
    )
    projector.set_defaults(func=cmd_projector)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    add_audit_commands(sub)
    add_billing_commands(sub)
    add_payouts_commands(sub)

    dev = sub.add_parser("dev", help="run the whole stack locally with embedded servers")
    dev.add_argument("--data-dir", default=".b3iq", help="where everything lives (./.b3iq)")
    dev.add_argument("--no-node", action="store_true", help="don't start a local node")
    dev.add_argument(
        "--cluster", action="store_true", help="three clustered NATS servers, R3 streams"
    )
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
