"""Fuzz the control plane's and the node's HTTP APIs from their own OpenAPI schemas.

    .venv/bin/python ops/fuzz.py [--target control-plane|node|both] [--examples N]
        [--seconds S] [--seed N] [--url URL --token-file F]

Schemathesis generates requests for every operation in ``/schema/openapi.json``: valid
ones (positive) and ones that break the schema (negative), with random and pinned path
ids. Every response must be no 5xx, a documented status code and content type, a body
that matches the documented schema, and a negative case must be refused with a 4xx.

Without ``--url`` it starts its own stack, as the benchmarks do: NATS and PostgreSQL (or
the ones B3IQ_NATS_URL / B3IQ_DATABASE_URL name), one `b3iq serve`, `b3iq projector`,
and a real node (`b3iq-host init / keys create / enroll / run`) serving the tiny model;
it fuzzes the control plane with an admin token, a gateway key, a support grant and
requests signed as the node, and the node with its local API key. With ``--url`` it
fuzzes a running control plane (``--token-file``: an admin token) or node
(``--token-file``: a local API key) with that one credential.

Prints a table (operation, cases, failures) and each distinct failure with a curl line
to reproduce it; exits 1 if anything failed. The test suite runs the same code with a
few examples per operation (tests/integration/test_openapi_fuzz.py).
"""

import argparse
import asyncio
import contextlib
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import requests
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from domain.node_requests import sign_request
from domain.signing import Signer

console = Console(width=140)

MAX_EXAMPLES = 10
"""Per operation and mode, for the test suite; the ops run asks for more."""


class Bearer(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


class NodeSigned(requests.auth.AuthBase):
    """Signs each request as the node would (domain/node_requests.py), over the exact
    method, path, query and body bytes about to be sent."""

    def __init__(self, node_id: str, signer: Signer) -> None:
        self.node_id, self.signer = node_id, signer

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        if not isinstance(body, bytes):  # schemathesis sends whole bodies, never streams
            raise TypeError("a streamed body cannot be signed")
        headers = sign_request(
            self.signer,
            self.node_id,
            method=request.method or "GET",
            path=request.path_url,
            body=body,
            timestamp=int(time.time()),
            nonce=secrets.token_urlsafe(24),
        )
        request.headers.update(headers)
        return request


class ByMethod(requests.auth.AuthBase):
    """One path, two callers: the node posts its receipts where operators read them."""

    def __init__(self, by_method: dict[str, requests.auth.AuthBase]) -> None:
        self.by_method = by_method

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return self.by_method[request.method or "GET"](request)


@dataclass(frozen=True)
class Target:
    """An API to fuzz and how to reach every part of it."""

    name: str
    url: str
    credentials: Callable[[str], requests.auth.AuthBase | None]
    """By operation path: the credential its caller would hold."""
    pinned: dict[str, str] = field(default_factory=dict)
    """Path parameters set to a known id in half the cases, so lookups find something."""
    keep_random: Callable[[str], bool] = lambda _path: False
    """Operations whose path ids stay random (their pinned id would be destroyed)."""
    exclude: frozenset[str] = frozenset()
    """Operation labels ("METHOD /path") not fuzzed; the caller says why."""


@dataclass
class Finding:
    check: str
    status: int | None
    detail: str
    reproduce: str


@dataclass
class OperationResult:
    label: str
    cases: int = 0
    findings: dict[tuple[str, int | None], Finding] = field(default_factory=dict)

    @property
    def failures(self) -> int:
        return len(self.findings)


def _checks(negative: bool) -> list[Any]:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]
    return [*checks, negative_data_rejection] if negative else checks


def fuzz(
    target: Target,
    *,
    examples: int = MAX_EXAMPLES,
    seconds: float | None = None,
    run_seed: int = 0,
    timeout_s: float = 30.0,
    on_round: Callable[[int], None] | None = None,
) -> list[OperationResult]:
    """Every operation, positive then negative cases, ``examples`` of each; with
    ``seconds``, rounds with fresh seeds repeat until that much time has passed."""
    import schemathesis
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(f"{target.url}/schema/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    results: dict[str, OperationResult] = {}
    deadline = None if seconds is None else time.monotonic() + seconds
    session = requests.Session()
    rounds = 0
    while True:
        for operation in operations:
            label = f"{operation.method.upper()} {operation.path}"
            if label in target.exclude:
                continue
            result = results.setdefault(label, OperationResult(label))
            auth = target.credentials(operation.path)
            pin = {} if target.keep_random(operation.path) else target.pinned
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _run(
                    target,
                    operation,
                    mode,
                    result,
                    pin,
                    auth,
                    session,
                    examples,
                    run_seed + rounds,
                    timeout_s,
                )
        rounds += 1
        if on_round is not None:
            on_round(rounds)
        if deadline is None or time.monotonic() >= deadline:
            break
    session.close()
    return list(results.values())


def _run(  # noqa: PLR0917
    target: Target,
    operation: Any,
    mode: Any,
    result: OperationResult,
    pin: dict[str, str],
    auth: requests.auth.AuthBase | None,
    session: requests.Session,
    examples: int,
    run_seed: int,
    timeout_s: float,
) -> None:
    from schemathesis.core.failures import FailureGroup
    from schemathesis.generation import GenerationMode

    checks = _checks(mode is GenerationMode.NEGATIVE)

    @seed(run_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(case=operation.as_strategy(generation_mode=mode), pinned=st.booleans())
    def one(case: Any, pinned: bool) -> None:
        if pinned and case.path_parameters:
            for name, value in pin.items():
                if name in case.path_parameters:
                    case.path_parameters[name] = value
        result.cases += 1
        try:
            response = case.call(base_url=target.url, session=session, auth=auth, timeout=timeout_s)
        except requests.RequestException as exc:
            _record(result, "network_error", None, type(exc).__name__, case)
            return
        try:
            case.validate_response(response, checks=checks)
        except FailureGroup as group:
            for failure in group.exceptions:
                _record(result, failure.title, response.status_code, str(failure), case)

    with contextlib.suppress(Unsatisfiable):  # nothing to break: no parameters, no body
        one()


def _record(
    result: OperationResult, check: str, status: int | None, detail: str, case: Any
) -> None:
    key = (check, status)
    if key not in result.findings:
        try:
            curl = case.as_curl_command()
        except Exception:  # a case too broken to print stays reported without one
            curl = ""
        result.findings[key] = Finding(check, status, detail.strip(), curl)


def summary(results: Sequence[OperationResult]) -> tuple[int, int]:
    return sum(r.cases for r in results), sum(r.failures for r in results)


def report(results: Sequence[OperationResult]) -> str:
    """The failures, one block each, for an assertion message or the console."""
    blocks = []
    for result in results:
        for finding in result.findings.values():
            status = "no response" if finding.status is None else str(finding.status)
            blocks.append(
                f"{result.label}: {finding.check} ({status})\n{finding.detail}\n"
                f"    {finding.reproduce}"
            )
    return "\n\n".join(blocks)


NODE_SIGNED = frozenset(
    {
        "/v1/nodes/{node_id}/heartbeats",
        "/v1/nodes/{node_id}/keys",
        "/v1/nodes/{node_id}/commands",  # the node's long-poll (GET)
        "/v1/nodes/{node_id}/commands/{command_id}/result",
    }
)
NODE_POSTS = frozenset({"/v1/nodes/{node_id}/receipts"})
"""Paths the node signs its POST to and operators GET with an admin token."""
UNAUTHENTICATED = (
    *("/health", "/ready", "/v1/keys", "/v1/audit/", "/v1/enrollment", "/v1/public/"),
    "/v1/receipts/",
)
CONTROL_PLANE_EXCLUDED = frozenset(
    {
        # Prometheus text, not an API: nothing to generate, and no schema for the body.
        "GET /metrics",
    }
)
"""The node's broker WebSocket (GET /v1/broker/connect) is not in the schema at all: an
upgrade, not a request/response operation."""


@dataclass(frozen=True)
class ControlPlaneAccess:
    admin_token: str
    node_id: str
    node_signer: Signer
    gateway_key: str | None = None
    support_grant: str | None = None
    pinned: dict[str, str] = field(default_factory=dict)
    """More known ids (customer_id, command_id, ...) to aim at."""


def control_plane(url: str, access: ControlPlaneAccess) -> Target:
    """The control plane, each operation called with the credential its caller holds."""
    admin = Bearer(access.admin_token)
    node = NodeSigned(access.node_id, access.node_signer)
    gateway = None if access.gateway_key is None else Bearer(access.gateway_key)
    support = None if access.support_grant is None else Bearer(access.support_grant)

    def credentials(path: str) -> requests.auth.AuthBase | None:
        if path in NODE_SIGNED:
            return node
        if path in NODE_POSTS:
            return ByMethod({"POST": node, "GET": admin})
        if path in ("/v1/chat/completions", "/v1/models") or path.startswith("/v1/billing/"):
            return gateway
        if path.startswith("/v1/support/"):
            return support
        if path.startswith(UNAUTHENTICATED):
            return None
        return admin

    return Target(
        "control plane",
        url,
        credentials,
        pinned={"node_id": access.node_id, **access.pinned},
        # Revoking the node, its gateway key or its grant would leave every later
        # operation refused: those ids stay random (a 404 is still checked).
        keep_random=lambda path: path.endswith("/revoke"),
        exclude=CONTROL_PLANE_EXCLUDED,
    )


def node(url: str, api_key: str) -> Target:
    """The node's local API with a key allowed everything. Its setup page (/setup/..., an
    owner's session over HTML forms) and /metrics are not in its schema."""
    return Target("node", url, lambda _path: Bearer(api_key))


def render(title: str, results: Sequence[OperationResult], seconds: float) -> Table:
    cases, failures = summary(results)
    table = Table(title=f"{title}: {cases} cases, {failures} failures in {seconds:.0f} s")
    table.add_column("operation")
    table.add_column("cases", justify="right")
    table.add_column("failures", justify="right")
    for result in results:
        style = "red" if result.failures else ""
        table.add_row(escape(result.label), str(result.cases), str(result.failures), style=style)
    return table


@contextlib.contextmanager
def own_stack(workdir: Path) -> Iterator[tuple[str, ControlPlaneAccess, str, str]]:
    """NATS, PostgreSQL, one API process, the projector and a real node with the tiny
    model, paid-route eligible, a customer with a gateway key and a support grant:
    (control plane URL, its access, node URL, the node's local API key)."""
    from adapters.keyfile import load_signer
    from adapters.postgres import migrate
    from ops.bench.bench_broker import HostAgent, Processes, _bin
    from ops.bench.bench_heartbeats import servers
    from ops.devstack.network_seed import CUSTOMER, seed_network

    with servers(workdir) as env:
        asyncio.run(migrate(env.dsn))
        processes = Processes(env, workdir)
        # A long-poll holds its request at most this long: fuzzed `wait` values are capped.
        processes.environ["B3IQ_COMMAND_MAX_WAIT_S"] = "1"
        host = HostAgent(workdir)
        try:
            port = processes.start_api("api")
            processes.spawn("projector", [_bin("b3iq"), "projector"])
            api = f"http://127.0.0.1:{port}"
            host.prepare(api, paid=True)
            host.start(processes)
            admin = processes.admin_token
            key_file = seed_network(api, admin, host.node_id, "tiny", workdir)
            grant = httpx.post(
                f"{api}/v1/nodes/{host.node_id}/support-grants",
                json={"reason": "fuzz"},
                headers={"Authorization": f"Bearer {admin}"},
            )
            grant.raise_for_status()
            access = ControlPlaneAccess(
                admin_token=admin,
                node_id=host.node_id,
                node_signer=load_signer(host.home / "identity.ed25519"),
                gateway_key=key_file.read_text().strip(),
                support_grant=grant.json()["grant"],
                pinned={"customer_id": CUSTOMER},
            )
            yield api, access, f"http://127.0.0.1:{host.port}", host.api_key
        except BaseException:
            for name in processes.procs:
                console.print(f"--- {name}.log (tail)\n{processes.log_tail(name)}", markup=False)
            raise
        finally:
            processes.stop()


def _run_targets(targets: Sequence[Target], args: argparse.Namespace, run_seed: int) -> int:
    failed = 0
    for target in targets:
        started = time.monotonic()
        with console.status(f"fuzzing the {target.name}…"):
            results = fuzz(target, examples=args.examples, seconds=args.seconds, run_seed=run_seed)
        console.print(render(target.name, results, time.monotonic() - started))
        if any(r.failures for r in results):
            console.print(report(results), markup=False, highlight=False)
            failed = 1
    console.print(f"seed {run_seed}")
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--target", choices=["control-plane", "node", "both"], default="both")
    parser.add_argument("--examples", type=int, default=50, help="per operation and mode")
    parser.add_argument("--seconds", type=float, help="repeat rounds until this much time passed")
    parser.add_argument("--seed", type=int, help="default: a random one, printed at the end")
    parser.add_argument("--url", help="a running control plane or node instead of a new stack")
    parser.add_argument("--token-file", type=Path, help="with --url: admin token or local key")
    args = parser.parse_args(argv)
    run_seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    if args.url:
        if args.target == "both" or args.token_file is None:
            parser.error("--url needs --target control-plane or node, and --token-file")
        secret = args.token_file.read_text().strip()
        target = Target(args.target, args.url.rstrip("/"), lambda _path: Bearer(secret))
        if args.target == "control-plane":
            target = Target(target.name, target.url, target.credentials,
                            exclude=CONTROL_PLANE_EXCLUDED)  # fmt: skip
        return _run_targets([target], args, run_seed)
    workdir = Path(tempfile.mkdtemp(prefix="b3iq-fuzz-"))
    try:
        console.print("starting the stack (NATS, PostgreSQL, API, projector, node)…")
        with own_stack(workdir) as (api, access, node_url, api_key):
            targets = []
            if args.target in ("control-plane", "both"):
                targets.append(control_plane(api, access))
            if args.target in ("node", "both"):
                targets.append(node(node_url, api_key))
            return _run_targets(targets, args, run_seed)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
