"""What each `b3iq-host` subcommand does."""

import argparse
import sys
import time
from collections.abc import Callable

import httpx
import msgspec
from rich.console import Console
from rich.table import Table

from domain.signing import Keyring
from node.catalog import GGUF_KIND, ModelSource, ModelStore, discover, model_name_for
from node.identity import create_identity, load_identity
from node.keys import KeyStore
from node.managed.client import Enrollment
from node.owner import OwnerStore
from node.receipts import Receipt, ReceiptStore, verify_receipt
from node.secrets_input import read_api_key, write_secret_file
from node.settings import NodeSettings
from node.state import Database
from node.tiny_model import write_tiny_model

out = Console()
err = Console(stderr=True)
Handler = Callable[[argparse.Namespace], int]


def _settings(args: argparse.Namespace, **overrides: object) -> NodeSettings:
    return NodeSettings.from_env(None, home=getattr(args, "home", None), **overrides)


def _db(settings: NodeSettings) -> Database:
    if not settings.db_path.exists():
        raise SystemExit("this node is not initialised: run `b3iq-host init` first")
    return Database(settings.db_path)


def init(args: argparse.Namespace) -> int:
    settings = _settings(args)
    fresh = not settings.db_path.exists()
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(settings.db_path)
    identity = create_identity(db, settings.key_path)
    out.print(f"node id     {identity.node_id}")
    out.print(f"public key  {identity.public_key_hex}")
    out.print(f"state       {settings.state_dir}")
    if not fresh:
        out.print("already initialised; `b3iq-host wizard-url --with-token` issues a new token")
        return 0
    token = OwnerStore(db).issue_setup_token()
    out.print(f"setup token {token}", soft_wrap=True)
    out.print(f"(shown once; open {settings.base_url}/setup/ to claim this node)")
    return 0


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from node.api.app import create_app
    from node.services import open_services

    settings = _settings(
        args,
        host=args.host,
        port=args.port,
        allow_lan=args.allow_lan or None,
        n_threads=args.n_threads,
    )
    if not settings.is_loopback:
        if not settings.allow_lan:
            raise SystemExit(
                f"refusing to bind {settings.host}: pass --allow-lan to expose the API"
            )
        err.print(
            f"[bold yellow]warning:[/] serving on {settings.host}: anyone on the network "
            "can reach the setup page and try keys"
        )
    for path in args.model:
        if not path.is_file():
            raise SystemExit(f"no such model file: {path}")
    services = open_services(settings)
    app = create_app(services, list(args.model))
    out.print(f"b3iq-host serving on {settings.base_url} (setup page {settings.base_url}/setup/)")
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,  # access lines would carry the setup token in ?token=
        loop="auto",
    )
    return 0


def enroll(args: argparse.Namespace) -> int:
    import asyncio

    from node.managed.client import ControlPlaneClient, EnrollmentFailed
    from node.managed.daemon import AGENT_VERSION, CONTROL_PLANE_URL

    settings = _settings(args)
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(settings.db_path)
    identity = create_identity(db, settings.key_path)  # the key is made on first use, 0600

    async def _enroll() -> Enrollment:
        client = ControlPlaneClient(args.control_plane, identity)
        try:
            return await client.enroll(AGENT_VERSION)
        finally:
            await client.close()

    try:
        result = asyncio.run(_enroll())
    except (EnrollmentFailed, httpx.HTTPError) as exc:
        err.print(f"enrollment failed: {exc or type(exc).__name__}")
        return 1
    db.set_meta(CONTROL_PLANE_URL, args.control_plane)
    db.set_meta("heartbeat_interval_s", str(result.heartbeat_interval_s))
    out.print(f"node {result.node_id} enrolled ({result.status}) with key {result.key_id}")
    if result.status == "pending":
        out.print("an operator must approve it before it counts as managed-enrolled")
    out.print("`b3iq-host run` now sends signed heartbeats to the control plane")
    return 0


def rotate_key(args: argparse.Namespace) -> int:
    import asyncio

    from domain.signing import Signer
    from node.managed.client import ControlPlaneClient
    from node.managed.daemon import CONTROL_PLANE_URL
    from node.managed.key_rotation import RotationFailed, rotate_key

    settings = _settings(args)
    db = _db(settings)
    url = db.get_meta(CONTROL_PLANE_URL)
    if url is None:
        err.print("this node is not enrolled: run `b3iq-host enroll --control-plane URL` first")
        return 1
    identity = load_identity(db, settings.key_path)

    async def _rotate() -> Signer:
        client = ControlPlaneClient(url, identity)
        try:
            return await rotate_key(client, settings.key_path)
        finally:
            await client.close()

    try:
        new = asyncio.run(_rotate())
    except (RotationFailed, httpx.HTTPError) as exc:
        err.print(f"key rotation failed: {exc or type(exc).__name__}")
        return 1
    db.set_meta("public_key", new.public_key.hex())
    out.print(f"node {identity.node_id} now uses key {new.key_id} (was {identity.signer.key_id})")
    out.print("restart `b3iq-host run` so that it signs with the new key")
    return 0


def wizard_url(args: argparse.Namespace) -> int:
    settings = _settings(args)
    url = f"{settings.base_url}/setup/"
    if args.with_token:
        token = OwnerStore(_db(settings)).issue_setup_token()
        url += f"?token={token}"
        err.print("a new one-time setup token replaces any earlier one")
    out.print(url, soft_wrap=True)
    return 0


def _scopes(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip()) or ("*",)


def keys_create(args: argparse.Namespace) -> int:
    store = KeyStore(_db(_settings(args)))
    expires = time.time() + args.expires_days * 86400 if args.expires_days else None
    if args.out is not None and args.out.exists():
        raise SystemExit(f"{args.out} exists; refusing to overwrite a secret file")
    key, secret = store.create(
        args.name,
        models=_scopes(args.models),
        endpoints=_scopes(args.endpoints),
        expires_at=expires,
    )
    if args.out is not None:
        write_secret_file(args.out, secret)
        out.print(f"key {key.public_id} created; secret written to {args.out} (mode 0600)")
    else:
        out.print(f"key {key.public_id} created; the secret is shown once:")
        print(secret)
    return 0


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def keys_list(args: argparse.Namespace) -> int:
    now = time.time()
    table = Table("id", "name", "models", "endpoints", "status", "expires", "last used")
    for key in KeyStore(_db(_settings(args))).list():
        table.add_row(
            key.public_id,
            key.name,
            ",".join(key.models),
            ",".join(key.endpoints),
            key.status(now),
            _when(key.expires_at),
            _when(key.last_used_at),
        )
    out.print(table)
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    if not KeyStore(_db(_settings(args))).revoke(args.public_id):
        err.print(f"no active key {args.public_id}")
        return 1
    out.print(f"key {args.public_id} revoked")
    return 0


def models_make_tiny(args: argparse.Namespace) -> int:
    path = write_tiny_model(args.path, seed=args.seed)
    out.print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


def models_add(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = ModelStore(_db(settings))
    if args.url:
        if not args.name:
            raise SystemExit("--name is required with --url")
        source = ModelSource(
            name=args.name,
            runtime_kind=args.kind,
            source=args.url,
            upstream_model=args.upstream_model,
        )
    elif args.path is not None:
        if not args.path.is_file():
            raise SystemExit(f"no such model file: {args.path}")
        source = ModelSource(
            name=args.name or model_name_for(args.path),
            runtime_kind=GGUF_KIND,
            source=str(args.path.resolve()),
        )
    else:
        raise SystemExit("give a GGUF PATH or --url")
    store.add(source)
    out.print(f"model {source.name} added ({source.runtime_kind}); restart `b3iq-host run`")
    return 0


def models_remove(args: argparse.Namespace) -> int:
    if not ModelStore(_db(_settings(args))).remove(args.name):
        err.print(f"no added model {args.name}")
        return 1
    out.print(f"model {args.name} removed")
    return 0


def models_offer(args: argparse.Namespace) -> int:
    """The owner's consent: serve this model to the network (or withdraw it)."""
    import json

    from node.services import PROFILE_POLICY

    db = _db(_settings(args))
    offered = not args.withdraw
    policy = {
        "network_eligible": offered,
        "paid_route_eligible": offered and not args.unpaid,
        "route_tier": args.tier,
    }
    db.set_meta(PROFILE_POLICY + args.name, json.dumps(policy))
    state = f"offered to the network ({args.tier})" if offered else "withdrawn from the network"
    out.print(f"model {args.name} {state}; the next heartbeat reports it")
    return 0


def node_id(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(load_identity(_db(settings), settings.key_path).node_id)
    return 0


def models_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    table = Table("model", "runtime", "source")
    for source in discover(settings.models_dir, [], ModelStore(_db(settings)).list()):
        table.add_row(source.name, source.runtime_kind, source.source)
    out.print(table)
    return 0


def receipts_list(args: argparse.Namespace) -> int:
    table = Table("time", "model", "in", "out", "ttft ms", "latency ms", "receipt hash")
    for r in ReceiptStore(_db(_settings(args))).recent(args.limit):
        b = r.body
        table.add_row(
            _when(b.created_at_ms / 1000),
            b.model,
            str(b.usage.prompt_tokens),
            str(b.usage.completion_tokens),
            f"{b.timings.ttft_us / 1000:.1f}",
            f"{b.timings.latency_us / 1000:.1f}",
            r.receipt_hash,
        )
    out.print(table)
    return 0


class _ReceiptFile(msgspec.Struct):
    data: list[Receipt]
    public_key: str | None = None


def receipts_verify(args: argparse.Namespace) -> int:
    settings = _settings(args)
    public_key = args.public_key
    if args.file is not None:
        document = msgspec.json.decode(args.file.read_bytes(), type=_ReceiptFile)
        receipts, public_key = document.data, public_key or document.public_key
        if args.public_key is None:
            err.print("using the public key inside the file; pass --public-key to pin it")
    else:
        db = _db(settings)
        receipts = ReceiptStore(db).recent(10**9)
        public_key = public_key or load_identity(db, settings.key_path).public_key_hex
    if not public_key:
        raise SystemExit("no public key: pass --public-key HEX")
    keyring = Keyring()
    keyring.add(bytes.fromhex(public_key))
    bad = 0
    for receipt in receipts:
        problem = verify_receipt(receipt, keyring)
        if problem is not None:
            bad += 1
            out.print(f"[red]FAIL[/] {receipt.receipt_hash} {problem}")
    out.print(f"{len(receipts) - bad} of {len(receipts)} receipts verified")
    return 1 if bad else 0


def receipts_submit(args: argparse.Namespace) -> int:
    from node.chat_client import error_message

    key = read_api_key(args.api_key_file, args.api_key_stdin)
    url = args.url or _settings(args).base_url
    body = {"receipt_hashes": args.receipt} if args.receipt else {}
    try:
        response = httpx.post(
            f"{url}/v1/receipts/submit",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        err.print(f"cannot reach the node at {url}: {type(exc).__name__}")
        return 1
    if response.status_code != 202:
        err.print(f"[red]{error_message(response)}[/]")
        return 1
    counts = response.json()
    table = Table("queued", "already queued", "already submitted", "not submittable", "waiting")
    table.add_row(
        *(
            str(counts[k])
            for k in ("queued", "already_queued", "already_submitted", "not_submittable", "waiting")
        )
    )
    out.print(table)
    if counts["remaining"]:
        out.print(f"{counts['remaining']} more not reached: run it again")
    return 0


def chat(args: argparse.Namespace) -> int:
    from node.chat_client import chat_loop

    key = read_api_key(args.api_key_file, args.api_key_stdin)
    if args.api_key_stdin and args.prompt is None:
        raise SystemExit("with --api-key-stdin, give the prompt as an argument")
    url = args.url or _settings(args).base_url
    return chat_loop(
        url,
        key,
        model=args.model,
        prompt=args.prompt,
        max_tokens=args.max_tokens,
        stdin=sys.stdin,
        console=out,
    )


HANDLERS: dict[tuple[str, str | None], Handler] = {
    ("init", None): init,
    ("run", None): run,
    ("wizard-url", None): wizard_url,
    ("enroll", None): enroll,
    ("rotate-key", None): rotate_key,
    ("keys", "create"): keys_create,
    ("keys", "list"): keys_list,
    ("keys", "revoke"): keys_revoke,
    ("models", "make-tiny"): models_make_tiny,
    ("models", "add"): models_add,
    ("models", "remove"): models_remove,
    ("models", "list"): models_list,
    ("models", "offer"): models_offer,
    ("id", None): node_id,
    ("receipts", "list"): receipts_list,
    ("receipts", "verify"): receipts_verify,
    ("receipts", "submit"): receipts_submit,
    ("chat", None): chat,
}
