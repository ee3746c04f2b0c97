"""Secret hygiene: every kind of secret is issued and used (error paths and a support
bundle included), then every log line, every event on both streams, every table and
every response body is searched for the secrets and their hashes.

The only places a hash may live are the credential tables that exist to hold them.
"""

import asyncio
import base64
import hashlib
import logging
from typing import Any

import httpx
import openai

from domain.streams import Topology
from node.keys import KeyStore
from node.owner import OwnerStore
from tests.billing_support import customer
from tests.route_support import World, eventually

CREDENTIAL_TABLES = {"admin_tokens", "support_grants", "gateway_key_secrets"}
"""Where hashes are kept on purpose (never a secret itself)."""


def forms(secret: str) -> list[str]:
    """A secret and what would betray it: its SHA-256 (hex) and its base64."""
    raw = secret.encode()
    return [
        secret,
        hashlib.sha256(raw).hexdigest(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ]


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


async def test_no_secret_or_hash_leaks_anywhere(paid: World, topology: Topology) -> None:
    captured = Captured()
    root = logging.getLogger()
    level = root.level
    root.addHandler(captured)
    root.setLevel(logging.DEBUG)
    try:
        await _exercise_and_scan(paid, topology, captured)
    finally:
        root.removeHandler(captured)
        root.setLevel(level)


async def _exercise_and_scan(paid: World, topology: Topology, captured: Captured) -> None:
    bodies: list[str] = []

    def keep(response: httpx.Response) -> httpx.Response:
        bodies.append(response.text)
        return response

    node = paid.node
    setup_token = OwnerStore(node.db).issue_setup_token()
    _, local_key = KeyStore(node.db).create("hygiene")
    _, gateway_key = await customer(paid.one.plane, 10**12)
    viewer = await paid.cp.token("viewer")
    seed = node.identity.signer.seed
    async with httpx.AsyncClient(base_url=paid.two.url, timeout=60) as http:
        admin = paid.admin()
        # The one response that shows the secret, once, by design: not kept for the scan.
        issued_grant = await http.post(
            f"/v1/nodes/{paid.node_id}/support-grants", json={"reason": "t"}, headers=admin
        )
        grant = issued_grant.json()["grant"]
        # Use every one, and fail with every one.
        gateway = openai.AsyncOpenAI(base_url=f"{paid.two.url}/v1", api_key=gateway_key)
        done = await gateway.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        bodies.append(done.model_dump_json())
        await gateway.close()
        for bad in (gateway_key + "x", local_key, grant, viewer):
            keep(await http.post("/v1/chat/completions", json={}, headers=_bearer(bad)))
        keep(await http.get("/v1/nodes", headers={"x-b3iq-admin-token": viewer}))
        keep(await http.get("/v1/nodes", headers={"x-b3iq-admin-token": viewer + "x"}))
        keep(await http.get("/v1/billing/account", headers=_bearer(gateway_key)))
        support = f"/v1/support/nodes/{paid.node_id}"
        keep(await http.get(f"{support}/readiness", headers=_bearer(grant)))
        keep(await http.get(f"{support}/readiness", headers=_bearer(grant + "x")))
        issued = keep(await http.post(f"{support}/support-bundle", headers=_bearer(grant)))
        assert issued.status_code == 201, issued.text
        command = f"/v1/commands/{issued.json()['command_id']}"

        async def bundled() -> bool:
            await paid.cp.project()
            found = await http.get(command, headers=admin)
            return bool(found.json()["state"] == "succeeded")

        await eventually(bundled, timeout=60)
        keep(await http.get(command, headers=admin))
        keep(await http.get(f"{command}/audit", headers=admin))
    for plane in (paid.one.plane, paid.two.plane):
        await plane.gateway.drain()
    await paid.cp.project()

    secrets = {
        "setup token": setup_token,
        "local key": local_key,
        "gateway key": gateway_key,
        "support grant": grant,
        "admin token": paid.cp.admin,
        "viewer token": viewer,
        "node key (hex)": seed.hex(),
        "node key (base64)": base64.urlsafe_b64encode(seed).decode().rstrip("="),
    }
    assert captured.lines and bodies  # the scan has something to look at
    places = {
        "responses": "\n".join(bodies),
        "logs": "\n".join(captured.lines),
        **await _tables(paid),
        **await _streams(paid, topology),
    }
    leaks = [
        (name, place)
        for name, secret in secrets.items()
        for form in forms(secret)
        for place, text in places.items()
        if form in text
    ]
    assert leaks == []


def _bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


async def _tables(world: World) -> dict[str, str]:
    found = {}
    async with world.cp.plane.pool.acquire() as conn:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        for row in tables:
            name = row["tablename"]
            if name in CREDENTIAL_TABLES:
                continue
            dump = await conn.fetchval(f"SELECT string_agg(t::text, '\n') FROM \"{name}\" t")
            found[f"table {name}"] = dump or ""
    return found


async def _streams(world: World, topology: Topology) -> dict[str, str]:
    found: dict[str, Any] = {}
    store = world.cp.plane.store
    for spec in topology.streams:
        _, last = await store.bounds(spec.name)
        reader = await store.reader(spec.name, 1)
        chunks: list[bytes] = []
        seen = 0
        while seen < last:
            batch = await asyncio.wait_for(reader.next_batch(1000, timeout=2), 10)
            assert batch, spec.name
            seen = batch[-1].seq
            chunks.extend(e.data for e in batch)
        await reader.close()
        found[f"stream {spec.name}"] = b"\n".join(chunks).decode(errors="replace")
    return found
