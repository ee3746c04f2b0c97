"""`b3iq-host`: the host agent's command line."""

import argparse
import sys
from pathlib import Path

from node import commands
from node.keys import ENDPOINT_SCOPES
from node.settings import DEFAULT_PORT


def _managed_mode(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    enroll = sub.add_parser("enroll", help="enroll this node with a control plane (Managed Mode)")
    enroll.add_argument("--control-plane", required=True, help="control-plane base URL")
    sub.add_parser(
        "rotate-key", help="move this enrolled node to a new identity key (the old one vouches)"
    )


def _models(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    models = sub.add_parser("models", help="models").add_subparsers(dest="action", required=True)
    tiny = models.add_parser("make-tiny", help="write a tiny random-weight GGUF for tests")
    tiny.add_argument("path", type=Path)
    tiny.add_argument("--seed", type=int, default=0)
    add = models.add_parser("add", help="serve a GGUF file, or an OpenAI-compatible server")
    add.add_argument("path", nargs="?", type=Path)
    add.add_argument("--name")
    add.add_argument("--url", help="base URL of an OpenAI-compatible server (…/v1)")
    add.add_argument("--kind", default="openai", choices=["openai", "ollama", "vllm", "sglang"])
    add.add_argument("--upstream-model", help="the model name the server knows")
    remove = models.add_parser("remove", help="stop serving a model added with `models add`")
    remove.add_argument("name")
    models.add_parser("list", help="list models and their profiles")
    offer = models.add_parser("offer", help="offer a model to the network (Network Mode)")
    offer.add_argument("name")
    offer.add_argument("--tier", default="network_beta", choices=["network_beta", "portable_local"])
    offer.add_argument("--unpaid", action="store_true", help="network-eligible, not paid work")
    offer.add_argument("--withdraw", action="store_true", help="stop offering it")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="b3iq-host", description="B3IQ host agent (Local Mode)")
    parser.add_argument("--home", type=Path, help="node state directory (B3IQ_HOME)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("init", help="create local state, identity key and a setup token")

    run = sub.add_parser("run", help="serve the local API and setup page")
    run.add_argument("--host", help="bind address (default 127.0.0.1)")
    run.add_argument("--port", type=int, help=f"port (default {DEFAULT_PORT})")
    run.add_argument("--allow-lan", action="store_true", help="permit a non-loopback address")
    run.add_argument(
        "--model", type=Path, action="append", default=[], help="a GGUF file to serve (repeat)"
    )
    run.add_argument("--n-threads", type=int, help="llama.cpp threads per model")

    _managed_mode(sub)

    wizard = sub.add_parser("wizard-url", help="print the setup page URL")
    wizard.add_argument(
        "--with-token", action="store_true", help="issue a fresh one-time setup token into it"
    )

    keys = sub.add_parser("keys", help="local API keys").add_subparsers(
        dest="action", required=True
    )
    create = keys.add_parser("create", help="create a key; its secret is printed once")
    create.add_argument("--name", required=True)
    create.add_argument("--models", default="*", help="comma-separated model names, or *")
    create.add_argument(
        "--endpoints", default="*", help=f"comma-separated: {', '.join(ENDPOINT_SCOPES)}, or *"
    )
    create.add_argument("--expires-days", type=float)
    create.add_argument("--out", type=Path, help="write the secret to this new 0600 file instead")
    keys.add_parser("list", help="list keys (never their secrets)")
    revoke = keys.add_parser("revoke", help="revoke a key by its public id")
    revoke.add_argument("public_id")

    _models(sub)
    sub.add_parser("id", help="print this node's id")

    receipts = sub.add_parser("receipts", help="signed local receipts").add_subparsers(
        dest="action", required=True
    )
    listing = receipts.add_parser("list")
    listing.add_argument("--limit", type=int, default=20)
    verify = receipts.add_parser("verify", help="verify receipts offline")
    verify.add_argument("--file", type=Path, help="a /v1/receipts JSON document (default: local)")
    verify.add_argument("--public-key", help="the node's public key, hex (default: this node)")
    submit = receipts.add_parser(
        "submit", help="queue receipts for the control plane (Managed Mode), via the local API"
    )
    submit.add_argument(
        "--receipt", action="append", default=[], help="a receipt hash (repeat; default: all new)"
    )
    submit.add_argument("--url", help="node URL (default http://127.0.0.1:8831)")
    submit.add_argument("--api-key-file", type=Path)
    submit.add_argument("--api-key-stdin", action="store_true")

    chat = sub.add_parser("chat", help="chat with a local model through the local API")
    chat.add_argument("prompt", nargs="?", help="one message; without it, read lines from stdin")
    chat.add_argument("--model")
    chat.add_argument("--url", help="node URL (default http://127.0.0.1:8831)")
    chat.add_argument("--api-key-file", type=Path)
    chat.add_argument("--api-key-stdin", action="store_true")
    chat.add_argument("--max-tokens", type=int, default=256)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = commands.HANDLERS[(args.command, getattr(args, "action", None))]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
