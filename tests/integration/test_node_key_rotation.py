"""`b3iq-host rotate-key`'s core against an in-loop control plane."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.keyfile import load_or_create_signer, load_signer
from domain.streams import Topology
from node.cli import main
from node.identity import NodeIdentity
from node.managed.client import ControlPlaneClient
from node.managed.key_rotation import _ask, pending_key_path, rotate_key
from tests.conftest import Servers
from tests.integration.test_managed import Harness, _harness


@pytest.fixture
async def cp(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Harness]:
    async for harness in _harness(servers, database_url, topology, tmp_path / "cp"):
        yield harness


async def enrolled_client(cp: Harness, key_path: Path) -> ControlPlaneClient:
    identity = NodeIdentity("node-k", load_or_create_signer(key_path))
    client = ControlPlaneClient("http://cp", identity, transport=cp.client._transport)
    assert (await client.enroll("0.1.0")).status == "enrolled"
    return client


async def test_the_new_key_replaces_the_file_once_the_control_plane_holds_it(
    cp: Harness, tmp_path: Path
) -> None:
    key_path = tmp_path / "identity.ed25519"
    client = await enrolled_client(cp, key_path)
    old = client.identity.signer

    new = await rotate_key(client, key_path)

    assert new.key_id != old.key_id
    assert load_signer(key_path).key_id == new.key_id
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert not pending_key_path(key_path).exists()
    rotated = ControlPlaneClient(
        "http://cp", NodeIdentity("node-k", new), transport=cp.client._transport
    )
    assert (await rotated.post_signed("/v1/nodes/node-k/heartbeats", b"{}")).status_code == 400
    await rotated.close()
    refused = await client.post_signed("/v1/nodes/node-k/heartbeats", b"{}")
    assert refused.json()["error"]["detail"] == "wrong_key"
    await client.close()


async def test_a_rotation_cut_short_is_finished_by_the_next_run(
    cp: Harness, tmp_path: Path
) -> None:
    key_path = tmp_path / "identity.ed25519"
    client = await enrolled_client(cp, key_path)
    old = client.identity.signer
    new = load_or_create_signer(pending_key_path(key_path))
    # Accepted by the control plane, but the node stopped before promoting the key.
    assert (await _ask(client, old, old.key_id, new)).status_code == 201
    ledger, _ = await cp.heads()

    assert (await rotate_key(client, key_path)).key_id == new.key_id

    assert load_signer(key_path).key_id == new.key_id
    assert not pending_key_path(key_path).exists()
    assert (await cp.heads())[0] == ledger  # the probe recorded nothing
    await client.close()


def test_the_command_needs_an_enrolled_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    assert main(["--home", str(home), "rotate-key"]) == 1
    assert "not enrolled" in capsys.readouterr().err
