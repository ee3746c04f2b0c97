"""The shipped NATS cluster configuration, the dev cluster's, and how B3IQ_NATS_URL is read."""

import os
import subprocess
from pathlib import Path

import pytest

from adapters.urls import redact, server_list
from ops.cli import build_parser
from ops.devstack.nats_cluster import (
    PASSWORD_VARIABLE,
    PRODUCTION,
    PRODUCTION_STORE,
    Member,
    member_config,
)
from ops.devstack.nats_server import nats_server_binary

SHIPPED = Path(__file__).resolve().parents[2] / "ops" / "nats"


@pytest.mark.parametrize("member", PRODUCTION, ids=lambda m: m.name)
def test_the_shipped_files_are_what_the_generator_writes(member: Member) -> None:
    rendered = member_config(member, PRODUCTION, store_dir=PRODUCTION_STORE)
    shipped = (SHIPPED / f"{member.name}.conf").read_text()
    assert shipped == rendered, "regenerate: python -m ops.devstack.nats_cluster ops/nats"


@pytest.mark.parametrize("member", PRODUCTION, ids=lambda m: m.name)
def test_nats_server_accepts_the_shipped_files_only_with_the_password_set(member: Member) -> None:
    path = SHIPPED / f"{member.name}.conf"
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_VARIABLE}

    def check(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(nats_server_binary()), "-t", "-c", str(path)],
            env=environ,
            capture_output=True,
            text=True,
            check=False,
        )

    assert check({**env, PASSWORD_VARIABLE: "x"}).returncode == 0
    refused = check(env)
    assert refused.returncode != 0
    assert PASSWORD_VARIABLE in refused.stderr + refused.stdout


def test_a_member_routes_to_every_member_and_names_the_domain() -> None:
    members = [Member(f"n{i}", "127.0.0.1", 4000 + i, 5000 + i, 6000 + i) for i in (1, 2, 3)]
    text = member_config(
        members[1], members, store_dir="/tmp/s", listen="127.0.0.1", password_variable=None
    )
    assert 'server_name: "n2"' in text
    assert 'listen: "127.0.0.1:4002"' in text
    assert 'domain: "b3iq"' in text
    assert all(f'"nats://127.0.0.1:{5000 + i}"' in text for i in (1, 2, 3))
    assert "authorization" not in text


def test_nats_url_lists_servers_and_hides_passwords() -> None:
    urls = " nats://b3iq:pw@a:4222, nats://b3iq:pw@b:4222,,nats://c:4222 "
    assert server_list(urls) == ["nats://b3iq:pw@a:4222", "nats://b3iq:pw@b:4222", "nats://c:4222"]
    assert [redact(u) for u in server_list(urls)] == [
        "nats://b3iq:***@a:4222",
        "nats://b3iq:***@b:4222",
        "nats://c:4222",
    ]


def test_dev_takes_cluster() -> None:
    assert build_parser().parse_args(["dev", "--cluster"]).cluster is True
    assert build_parser().parse_args(["dev"]).cluster is False
