"""The hosted gateway: its added latency over calling the node directly, and paid requests/s.

    .venv/bin/python ops/bench/bench_gateway.py [--quick] [--calls N] [--concurrency C]

Starts NATS and PostgreSQL (or uses B3IQ_NATS_URL / B3IQ_DATABASE_URL), two `b3iq serve`
processes (A holds the node's broker connection, B relays to A over NATS), the projector
and a real node serving the tiny model, then makes the node paid-route eligible on real
evidence (its heartbeat, a probed route, a protocol observation, an observed benchmark)
and seeds a customer with credit, a price and a gateway key, all through the public APIs.

1. Added latency: the same chat request from the same client to the node's own API
   (direct) and to the gateway's POST /v1/chat/completions on A and on B (each a paid
   request: authorize, candidates, quote, reserve, dispatch, verify the receipt, settle),
   interleaved in a shuffled order. Target: gateway p50 - direct p50 < 1 ms.
2. Paid requests/s end to end: C concurrent clients through the gateway (A and B
   alternately) against the same C clients straight to the node, same run.
Afterwards the customer's account is read back: the debits must equal the priced sum of
the receipts and nothing may stay reserved.
"""

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from adapters.postgres import migrate
from ops.bench.bench_broker import (
    CHAT,
    HOST,
    MODEL,
    HostAgent,
    KeepAlive,
    Processes,
    Row,
    Target,
    console,
    interleaved,
    ms,
    p50_p99,
    post,
    render,
    wait_for_route,
)
from ops.bench.bench_heartbeats import servers
from ops.bench.http_load import percentile

ADDED_P50_TARGET_S = 0.001
PROMPT_PRICE, COMPLETION_PRICE = 3, 7
CREDIT = 10**18


def make_eligible(api: str, admin: str, node: HostAgent) -> str:
    """Evidence for every gate and a paying customer; returns the gateway key."""
    headers = {"x-b3iq-admin-token": admin}
    with httpx.Client(base_url=api, headers=headers, timeout=120) as http:

        def ok(response: httpx.Response) -> dict[str, object]:
            if response.status_code >= 300:
                raise RuntimeError(f"{response.request.url.path}: {response.text}")
            body: dict[str, object] = response.json()
            return body

        node_path = f"/v1/nodes/{node.node_id}"
        observation = {"registered": True, "active": True, "stake_wei": "1", "source": "bench"}
        ok(http.post(f"/v1/admin/nodes/{node.node_id}/protocol", json=observation))
        allow = {"public_inference_allowed": True, "reason": "bench"}
        ok(http.put(f"{node_path}/route/policy", json=allow))
        ok(http.post(f"{node_path}/benchmarks", json={"model": MODEL}))
        billing = "/v1/admin/billing"
        ok(http.post(f"{billing}/customers", json={"name": "Bench", "customer_id": "bench"}))
        credit = {"amount_wei": str(CREDIT), "reason": "bench"}
        ok(http.post(f"{billing}/customers/bench/credits", json=credit))
        price = {
            "model": MODEL,
            "prompt_price_wei": str(PROMPT_PRICE),
            "completion_price_wei": str(COMPLETION_PRICE),
        }
        ok(http.put(f"{billing}/prices", json=price))
        key = ok(http.post(f"{billing}/customers/bench/gateway-keys", json={"name": "bench"}))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # the projector catches up with the evidence
            found = http.get(f"{node_path}/readiness", params={"model": MODEL}).json()
            if "paid-route eligible" in found["models"][0]["claims"]:
                return str(key["key"])
            time.sleep(0.2)
    raise RuntimeError(f"the node never became paid-route eligible: {found}")


def start_paid_stack(processes: Processes, node: HostAgent) -> str:
    """API processes A and B, the projector and a node paid-route eligible on real
    evidence, with a paying customer; returns its gateway key."""
    with console.status("starting the control plane and the node…"):
        a = processes.start_api("api-a")  # first: it writes the signing key and admin token
        processes.start_api("api-b")
        processes.spawn("projector", [str(Path(sys.executable).parent / "b3iq"), "projector"])
        node.prepare(f"http://{HOST}:{a}", paid=True)
        node.start(processes)
    admin = processes.admin_token
    with console.status("evidence for every gate, a customer and a key…"):
        holder = KeepAlive(a)
        wait_for_route(holder, node.node_id, admin)
        holder.close()
        return make_eligible(f"http://{HOST}:{a}", admin, node)


def latency_rows(processes: Processes, node: HostAgent, secret: str, calls: int) -> list[Row]:
    paid = {"authorization": f"Bearer {secret}"}
    targets = [
        Target("direct", KeepAlive(node.port), post("/v1/chat/completions", CHAT,
               {"authorization": f"Bearer {node.api_key}"})),
        Target("gateway-a", KeepAlive(processes.ports["api-a"]),
               post("/v1/chat/completions", CHAT, paid)),
        Target("gateway-b", KeepAlive(processes.ports["api-b"]),
               post("/v1/chat/completions", CHAT, paid)),
    ]  # fmt: skip
    interleaved(targets, max(20, calls // 10))  # warm-up
    latencies, problem = interleaved(targets, calls)
    for target in targets:
        target.client.close()
    direct = percentile(latencies["direct"], 0.5)
    rows = [Row("direct: the node's /v1/chat/completions, p50 / p99", calls,
                p50_p99(latencies["direct"]), broken=problem)]  # fmt: skip
    for name, label in (("gateway-a", "A, holds the route"), ("gateway-b", "B, relays to A")):
        p50 = percentile(latencies[name], 0.5)
        rows += [
            Row(f"gateway on {label}: paid request, p50 / p99", calls, p50_p99(latencies[name])),
            Row(f"  added p50 over direct ({p50 / direct:.2f}x)", calls, ms(p50 - direct),
                "< 1 ms", ok=p50 - direct < ADDED_P50_TARGET_S),
        ]  # fmt: skip
    return rows


def throughput(targets: Sequence[tuple[int, bytes]], concurrency: int, seconds: float) -> float:
    """Requests/s of ``concurrency`` blocking clients, client i using targets[i % n]."""
    done = [0] * concurrency
    failures: list[str] = []
    stop = time.perf_counter() + seconds

    def client(i: int) -> None:
        port, request = targets[i % len(targets)]
        connection = KeepAlive(port)
        while time.perf_counter() < stop:
            status, body = connection.request(request)
            if status != 200:
                failures.append(f"{status} {body[:200]!r}")
                return
            done[i] += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(failures[0])
    return sum(done) / (time.perf_counter() - started)


def throughput_rows(
    processes: Processes, node: HostAgent, secret: str, concurrency: int, seconds: float
) -> list[Row]:
    paid = {"authorization": f"Bearer {secret}"}
    direct = throughput(
        [
            (
                node.port,
                post("/v1/chat/completions", CHAT, {"authorization": f"Bearer {node.api_key}"}),
            )
        ],
        concurrency,
        seconds,
    )
    gateway = throughput(
        [
            (processes.ports[n], post("/v1/chat/completions", CHAT, paid))
            for n in ("api-a", "api-b")
        ],
        concurrency,
        seconds,
    )
    return [
        Row(f"direct to the node, {concurrency} clients", None, f"{direct:,.0f} req/s"),
        Row(f"paid through the gateway (A and B), {concurrency} clients", None,
            f"{gateway:,.0f} req/s ({gateway / direct:.2f}x direct)"),
    ]  # fmt: skip


def books_rows(api: str, secret: str) -> list[Row]:
    """Every paid request settled: debits are the priced receipts, nothing stays held."""
    time.sleep(2)  # settlements are appended after the answers leave; then projected
    with httpx.Client(base_url=api, headers={"authorization": f"Bearer {secret}"}) as http:
        account = http.get("/v1/billing/account").json()
        usage = http.get("/v1/billing/usage", params={"limit": 1}).json()
    totals = {t["kind"]: t for t in usage["totals"]}
    debits = int(totals.get("debit", {}).get("amount_wei", 0))
    spent = CREDIT - int(account["balance_wei"])
    return [
        Row("paid requests settled (debit entries)", totals.get("debit", {}).get("count", 0),
            f"{debits:,} wei debited", "= balance spent, 0 reserved",
            ok=debits == spent and account["reserved_wei"] == "0"),
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--calls", type=int)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    calls = args.calls or (100 if args.quick else 500)
    seconds = 5.0 if args.quick else 15.0
    workdir = Path(tempfile.mkdtemp(prefix="b3iq-bench-gateway-"))
    rows: list[Row] = []
    try:
        with servers(workdir) as env:
            asyncio.run(migrate(env.dsn))
            processes = Processes(env, workdir)
            node = HostAgent(workdir)
            try:
                secret = start_paid_stack(processes, node)
                api = f"http://{HOST}:{processes.ports['api-a']}"
                with console.status(f"{calls} calls on each path, interleaved…"):
                    rows += latency_rows(processes, node, secret, calls)
                with console.status(f"{args.concurrency} clients, {seconds:.0f} s per path…"):
                    rows += throughput_rows(processes, node, secret, args.concurrency, seconds)
                rows += books_rows(api, secret)
            except (RuntimeError, subprocess.CalledProcessError):
                for name in processes.procs:
                    console.print(f"--- {name}.log\n{processes.log_tail(name)}", markup=False)
                raise
            finally:
                processes.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    note = (
        "One blocking keep-alive HTTP/1.1 client per path; tiny model, llama.cpp 1 thread,"
        " max_tokens 8, temperature 0; every answer identical. A gateway call is a paid"
        " request end to end (the settlement's append follows the answer)."
    )
    console.print(render(rows, note))
    return 1 if any(row.verdict() == "FAIL" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
