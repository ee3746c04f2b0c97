import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from adapters.audit import keyring_from_file, verify_log
from adapters.jetstream import JetStreamEventStore
from domain.canonical import b64encode
from domain.signing import Keyring, Signer
from domain.streams import Topology
from domain.verification import Reason
from tests.conftest import Servers
from tests.integration.test_projector import fill


async def test_verify_reads_the_whole_log_and_counts_it(
    js_store: JetStreamEventStore, topology: Topology, signer: Signer
) -> None:
    await fill(js_store, topology, signer, beats=300)
    verifier, problems = await verify_log(js_store, topology, Keyring([signer.public_key]))
    assert problems == []
    assert verifier.by_type == {"NodeEnrolled": 20, "HeartbeatRecorded": 300}
    _, problems = await verify_log(js_store, topology, Keyring([Signer.generate().public_key]))
    assert {p.reason for p in problems} == {Reason.UNKNOWN_KEY}


async def test_the_cli_verifies_with_published_keys(
    js_store: JetStreamEventStore, topology: Topology, servers: Servers, tmp_path: Path
) -> None:
    signer = Signer.generate()
    await fill(js_store, topology, signer, beats=10)
    keys = tmp_path / "keys.json"
    keys.write_text(
        json.dumps(
            {"keys": [{"key_id": signer.key_id, "public_key": b64encode(signer.public_key)}]}
        )
    )
    assert keyring_from_file(keys).public_keys()[0].key_id == signer.key_id
    env = {**os.environ, "B3IQ_NATS_URL": servers.nats_url, "B3IQ_STREAM_PREFIX": topology.prefix}
    b3iq = str(Path(sys.executable).parent / "b3iq")
    result = await asyncio.to_thread(
        subprocess.run,
        [b3iq, "audit", "verify", "--keys", str(keys), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["verified"] == 30
