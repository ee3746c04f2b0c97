"""A real node (tiny model, its own state) running typed jobs leased from the control plane."""

import hashlib
import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from domain.canonical import b64encode
from domain.streams import Topology
from node.identity import create_identity
from node.keys import KeyStore
from node.managed.client import ControlPlaneClient
from node.managed.commands import CommandLoop
from node.managed.jobs import Jobs
from node.owner import OwnerStore
from node.services import NodeServices, open_services
from node.settings import NodeSettings
from node.state import Database
from node.tiny_model import write_tiny_model
from tests.conftest import Servers
from tests.integration.test_commands import issue, show
from tests.integration.test_managed import Harness, _harness


class Host(NamedTuple):
    services: NodeServices
    loop: CommandLoop
    secrets: list[str]
    sources: Path


@pytest.fixture
async def cp(
    servers: Servers, database_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Harness]:
    async for harness in _harness(
        servers, database_url, topology, tmp_path / "cp", command_lease_s=1.0
    ):
        yield harness


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture
async def host(cp: Harness, tmp_path: Path, tiny: Path) -> AsyncIterator[Host]:
    sources = tmp_path / "allowed"
    sources.mkdir()
    settings = NodeSettings(home=tmp_path / "home", model_sources=str(sources))
    settings.state_dir.mkdir()
    db = Database(settings.db_path)
    identity = create_identity(db, settings.key_path)
    token = OwnerStore(db).issue_setup_token()
    _, key = KeyStore(db).create("owner")
    db.close()
    services = open_services(settings)
    await services.start([tiny])
    client = ControlPlaneClient("http://cp", services.identity, transport=cp.client._transport)
    await client.enroll("0.1.0")
    secrets = [
        token,
        key,
        cp.admin,
        b64encode(identity.signer.seed),
        identity.signer.seed.hex(),
        str(settings.state_dir),
        str(tiny),
    ]
    try:
        yield Host(services, CommandLoop(client, Jobs(services, "0.1.0")), secrets, sources)
    finally:
        await client.close()
        await services.close()


async def run(cp: Harness, host: Host, command: dict[str, Any]) -> dict[str, Any]:
    command_id = await issue(cp, host.services.identity.node_id, command)
    await cp.project()
    assert await host.loop.step(wait_s=0) == 1
    return await show(cp, command_id)


async def test_benchmark_probe_policy_and_a_redacted_support_bundle(
    cp: Harness, host: Host
) -> None:
    smoke = await run(cp, host, {"kind": "benchmark_smoke", "model": "tiny", "max_tokens": 4})
    assert smoke["state"] == "succeeded", smoke
    output = smoke["result"]["output"]
    assert output["evidence"] == "benchmark_verified"  # self-reported, never "observed"
    assert len(output["output_sha256"]) == 64
    assert output["ttft_ms"] > 0

    probe = await run(cp, host, {"kind": "runtime_probe"})
    assert [r["model"] for r in probe["result"]["output"]["runtimes"]] == ["tiny"]

    policy = await run(
        cp,
        host,
        {"kind": "set_profile_policy", "model": "tiny", "route_tier": "network_beta"},
    )
    assert policy["state"] == "succeeded"
    [profile] = host.services.profiles()
    assert profile.route_tier == "network_beta"

    bundle = await run(cp, host, {"kind": "support_bundle"})
    assert bundle["state"] == "succeeded"
    text = str(bundle["result"])
    assert bundle["result"]["output"]["local_keys"] == 1
    for secret in host.secrets:
        assert secret not in text
    audit = await cp.client.get(f"/v1/commands/{bundle['command_id']}/audit", headers=cp.as_admin())
    for secret in host.secrets:
        assert secret not in audit.text


async def test_model_install_checks_source_and_sha256_then_remove(
    cp: Harness, host: Host, tiny: Path
) -> None:
    allowed = host.sources / "copy.gguf"
    shutil.copyfile(tiny, allowed)
    digest = hashlib.sha256(allowed.read_bytes()).hexdigest()

    outside = await run(
        cp, host, {"kind": "model_install", "name": "x", "source": str(tiny), "sha256": digest}
    )
    assert (outside["state"], outside["outcome_code"]) == ("refused", "source_not_allowed")
    wrong = await run(
        cp,
        host,
        {"kind": "model_install", "name": "x", "source": str(allowed), "sha256": "0" * 64},
    )
    assert (wrong["state"], wrong["outcome_code"]) == ("failed", "sha256_mismatch")
    installed = await run(
        cp,
        host,
        {"kind": "model_install", "name": "second", "source": str(allowed), "sha256": digest},
    )
    assert installed["state"] == "succeeded", installed
    assert "second" in host.services.runtimes
    removed = await run(cp, host, {"kind": "model_remove", "name": "second"})
    assert removed["state"] == "succeeded"
    assert "second" not in host.services.runtimes


async def test_a_node_that_crashes_mid_command_gets_it_again(cp: Harness, host: Host) -> None:
    command_id = await issue(cp, host.services.identity.node_id, {"kind": "runtime_probe"})
    await cp.project()
    [lost] = await host.loop.poll_once(wait_s=0)  # leased, then the node dies
    cp.clock.now += timedelta(seconds=2)
    assert await host.loop.step(wait_s=0) == 1
    shown = await show(cp, command_id)
    assert shown["state"] == "succeeded"
    assert shown["attempt"] == 2
    late = await host.loop.deliver(await host.loop.execute(lost))
    assert late is True  # refused as stale: the upload ends, nothing is recorded
    assert (await show(cp, command_id))["attempt"] == 2


async def test_a_kind_the_node_does_not_allow_is_refused_signed(cp: Harness, host: Host) -> None:
    host.services.settings = NodeSettings(
        home=host.services.settings.home, allowed_commands="runtime_probe"
    )
    refused = await run(cp, host, {"kind": "benchmark_smoke", "model": "tiny"})
    assert (refused["state"], refused["outcome_code"]) == ("refused", "command_not_allowed")
    assert refused["result"]["outcome"] == "refused"
