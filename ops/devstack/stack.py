"""`b3iq dev`: the whole stack on one machine, every part a real process.

NATS (JetStream) and PostgreSQL come from their wheels unless B3IQ_NATS_URL /
B3IQ_DATABASE_URL name servers to use instead; then the API, the projector and a local
node run as child processes, exactly as they would be deployed. With ``cluster`` NATS is
three clustered servers on loopback and the streams keep three replicas.
"""

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
from rich.console import Console

from adapters.postgres import migrate
from ops.devstack.nats_cluster import NatsCluster
from ops.devstack.nats_server import NatsServer, port_accepts
from ops.devstack.postgres_server import PostgresServer

console = Console(soft_wrap=True)  # URLs and commands must stay copy-pasteable
API_PORT, PROJECTOR_METRICS_PORT, NODE_PORT = 8830, 8833, 8831
NATS_PORT, PG_PORT = 14222, 15432
CLUSTER_PORTS = (14231, 14232, 14233)
DATABASE = "b3iq"


def _port(preferred: int) -> int | None:
    """The preferred port, or None (pick a free one) if something else holds it."""
    return None if port_accepts(preferred) else preferred


async def _ensure_database(admin_dsn: str, dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await conn.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await conn.close()
    await migrate(dsn)


def _wait_http(url: str, timeout: float, alive: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


class DevStack:
    def __init__(self, data_dir: Path, *, cluster: bool = False) -> None:
        self.data_dir = data_dir.resolve()
        self.cluster = cluster
        self.nats: NatsServer | NatsCluster | None = None
        self.postgres: PostgresServer | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.env = dict(os.environ)

    def start_servers(self) -> None:
        nats_url = os.environ.get("B3IQ_NATS_URL")
        if not nats_url:
            if self.cluster:
                self.nats = NatsCluster(self.data_dir / "nats-cluster", client_ports=CLUSTER_PORTS)
                self.env["B3IQ_STREAM_REPLICAS"] = str(len(self.nats.servers))
            else:
                self.nats = NatsServer(self.data_dir / "nats", _port(NATS_PORT))
            self.nats.start()
            nats_url = self.nats.url
        dsn = os.environ.get("B3IQ_DATABASE_URL")
        if not dsn:
            self.postgres = PostgresServer(self.data_dir / "postgres", _port(PG_PORT))
            self.postgres.start()
            dsn = self.postgres.dsn(DATABASE)
            asyncio.run(_ensure_database(self.postgres.dsn(), dsn))
        else:
            asyncio.run(migrate(dsn))
        self.env |= {
            "B3IQ_NATS_URL": nats_url,
            "B3IQ_DATABASE_URL": dsn,
            "B3IQ_DATA_DIR": str(self.data_dir / "control-plane"),
        }

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.data_dir / f"{name}.log").open("ab")
        # A session of its own: Ctrl-C reaches only `b3iq dev`, which stops the parts in
        # order (services first, servers last) instead of all of them at once.
        proc = subprocess.Popen(
            [*args], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.children[name] = proc
        return proc

    def dead_child(self) -> str | None:
        return next((n for n, p in self.children.items() if p.poll() is not None), None)

    def stop(self) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.children.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.postgres is not None:
            self.postgres.stop()
        if self.nats is not None:
            self.nats.stop()


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def run_dev_stack(data_dir: Path, *, with_node: bool = True, cluster: bool = False) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stack = DevStack(data_dir, cluster=cluster)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    hints: list[str] = []
    try:
        with console.status("starting NATS and PostgreSQL…"):
            stack.start_servers()
        stack.spawn("api", _bin("b3iq"), "serve", "--port", str(API_PORT))
        stack.spawn(
            "projector", _bin("b3iq"), "projector", "--metrics-port", str(PROJECTOR_METRICS_PORT)
        )
        api = f"http://127.0.0.1:{API_PORT}"
        with console.status("waiting for the control plane…"):
            up = _wait_http(f"{api}/health", 30, lambda: stack.dead_child() is None)
        if not up:
            console.print(f"[red]the stack did not come up; logs in {stack.data_dir}[/red]")
            return 1
        if with_node:
            hints = _start_node(stack, api)
        _print_urls(stack, api)
        for line in hints:
            console.print(line, highlight=False, markup=False)
        while not stop:
            dead = stack.dead_child()
            if dead:
                console.print(f"[red]{dead} exited; see {stack.data_dir / (dead + '.log')}[/red]")
                return 1
            time.sleep(0.5)
        return 0
    finally:
        with console.status("stopping…"):
            stack.stop()


def _start_node(stack: DevStack, api: str) -> list[str]:
    from ops.devstack.local_node import MODEL, start_local_node
    from ops.devstack.network_seed import SeedFailed, gateway_hints, seed_network

    with console.status("starting the local node…"):
        node_id, hints = start_local_node(stack, NODE_PORT, control_plane=api)
    token = (stack.data_dir / "control-plane" / "admin-token").read_text().strip()
    try:
        with console.status("route, dev registry evidence, observed benchmark, demo customer…"):
            key_file = seed_network(api, token, node_id, MODEL, stack.data_dir)
    except SeedFailed as exc:
        console.print(f"[yellow]Network Mode demo not ready: {exc}[/yellow]")
        return hints
    return [*hints, *gateway_hints(api, key_file, MODEL)]


def _print_urls(stack: DevStack, api: str) -> None:
    console.print(f"[bold green]B3IQ dev stack is up[/bold green]  (data in {stack.data_dir})")
    console.print(f"  control plane   {api}   docs {api}/schema   metrics {api}/metrics")
    console.print(f"  readiness       {api}/ready")
    console.print(f"  projector       http://127.0.0.1:{PROJECTOR_METRICS_PORT}/ (metrics)")
    console.print(f"  NATS            {stack.env['B3IQ_NATS_URL']}")
    if isinstance(stack.nats, NatsCluster):
        names = ", ".join(m.name for m in stack.nats.members)
        console.print(f"                  cluster {names}; streams R{len(stack.nats.servers)}")
    console.print(f"  PostgreSQL      {stack.env['B3IQ_DATABASE_URL']}")
    if "node" in stack.children:
        console.print(f"  local node      http://127.0.0.1:{NODE_PORT}  (see node.log)")
        token = stack.data_dir / "control-plane" / "admin-token"
        console.print(
            f'  its readiness   curl -s {api}/v1/nodes -H "X-B3IQ-Admin-Token: $(cat {token})"',
            highlight=False,
        )
    console.print("Ctrl-C stops everything.")
