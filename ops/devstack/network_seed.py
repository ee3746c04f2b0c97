"""Network Mode in the dev stack: the local node made route-eligible on labelled dev
evidence, and a demo customer whose first hosted request works.

Every step goes through the public APIs, as an operator would do it. Only the protocol
registry is simulated: its observation is recorded with source `dev-registry (simulated,
not on chain)`, so nothing here can pass for real stake.
"""

import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx

DEV_REGISTRY = "dev-registry (simulated, not on chain)"
CUSTOMER = "demo"
CREDIT_WEI = 10**15
PROMPT_PRICE_WEI, COMPLETION_PRICE_WEI = 1_000, 4_000


class SeedFailed(Exception):
    pass


def _ok(response: httpx.Response) -> dict[str, object]:
    if response.status_code >= 300:
        raise SeedFailed(f"{response.request.method} {response.request.url.path}: {response.text}")
    body: dict[str, object] = response.json()
    return body


def _write_secret(path: Path, secret: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")


def _wait(check: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SeedFailed(f"timed out waiting for {what}")
        time.sleep(0.25)


def seed_network(api: str, admin_token: str, node_id: str, model: str, data_dir: Path) -> Path:
    """Make the node paid-route eligible and seed the demo customer; returns the path of
    the demo gateway key (0600). Safe to run on every start."""
    admin = {"x-b3iq-admin-token": admin_token}
    with httpx.Client(base_url=api, headers=admin, timeout=120) as http:
        _wait(
            lambda: http.get(f"/v1/nodes/{node_id}/route").json().get("connected") is True,
            "the node's broker route",
        )
        _ok(
            http.post(
                f"/v1/admin/nodes/{node_id}/protocol",
                json={"registered": True, "active": True, "stake_wei": "0", "source": DEV_REGISTRY},
            )
        )
        _ok(
            http.put(
                f"/v1/nodes/{node_id}/route/policy",
                json={"public_inference_allowed": True, "reason": "dev stack"},
            )
        )
        _ok(http.post(f"/v1/nodes/{node_id}/benchmarks", json={"model": model}))
        key_file = data_dir / "gateway-api-key"
        if not key_file.exists():
            _seed_customer(http, model, key_file)

        def eligible() -> bool:
            found = http.get(f"/v1/nodes/{node_id}/readiness", params={"model": model}).json()
            return "paid-route eligible" in found["models"][0]["claims"]

        _wait(eligible, "the node's heartbeat to report its network profile")
    return key_file


def _seed_customer(http: httpx.Client, model: str, key_file: Path) -> None:
    billing = "/v1/admin/billing"
    known = http.get(f"{billing}/customers/{CUSTOMER}")
    if known.status_code == 404:
        _ok(http.post(f"{billing}/customers", json={"name": "Demo", "customer_id": CUSTOMER}))
        _ok(
            http.post(
                f"{billing}/customers/{CUSTOMER}/credits",
                json={"amount_wei": str(CREDIT_WEI), "reason": "dev stack demo credit"},
            )
        )
    _ok(
        http.put(
            f"{billing}/prices",
            json={
                "model": model,
                "prompt_price_wei": str(PROMPT_PRICE_WEI),
                "completion_price_wei": str(COMPLETION_PRICE_WEI),
            },
        )
    )
    issued = _ok(http.post(f"{billing}/customers/{CUSTOMER}/gateway-keys", json={"name": "dev"}))
    _write_secret(key_file, str(issued["key"]))


def gateway_hints(api: str, key_file: Path, model: str) -> list[str]:
    return [
        "Try the hosted gateway (paid, routed to the node over its broker route):",
        f'  curl -s {api}/v1/chat/completions -H "Authorization: Bearer $(cat {key_file})" \\\n'
        '    -H "Content-Type: application/json" \\\n'
        f'    -d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "hi"}}],'
        ' "max_tokens": 16}\'',
        "  … then see the receipt hash and the debit:",
        f'  curl -s "{api}/v1/billing/usage?limit=5" -H "Authorization: Bearer $(cat {key_file})"',
    ]
