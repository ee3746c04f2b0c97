"""The service units in ops/systemd: their commands are real commands, their secrets come
from files, and systemd accepts them."""

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from node.cli import _parser as host_parser
from ops.cli import build_parser

UNITS = sorted((Path(__file__).resolve().parents[2] / "ops" / "systemd").glob("*.service"))
VENV = "/opt/b3iq/.venv/bin/"
SECRET = re.compile(r"(?i)password|token|secret|nats://|postgres(ql)?://")


def service(unit: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(unit)
    return dict(parser["Service"])


def defaults(unit: Path) -> dict[str, str]:
    found = {}
    for line in unit.read_text().splitlines():
        if line.startswith("Environment="):
            key, _, value = line.removeprefix("Environment=").partition("=")
            found[key] = value
    return found


def test_there_are_units_for_the_api_the_projector_and_the_host() -> None:
    names = {u.name for u in UNITS}
    assert {"b3iq-api.service", "b3iq-projector.service", "b3iq-host.service"} <= names


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_exec_start_is_a_command_of_ours_with_no_secret(unit: Path) -> None:
    command = service(unit)["ExecStart"]
    assert not SECRET.search(command)
    for key in re.findall(r"\$\{(\w+)\}", command):
        command = command.replace(f"${{{key}}}", defaults(unit)[key])
    program, *args = shlex.split(command)
    if not program.startswith(VENV):
        return  # nats-server: its config file is tested in test_cluster_config
    name = program.removeprefix(VENV)
    parser = {"b3iq": build_parser, "b3iq-host": host_parser}[name]()
    parser.parse_args(args)  # exits (fails the test) on an unknown command or flag


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_settings_and_keys_come_from_root_only_files(unit: Path) -> None:
    text = unit.read_text()
    assert "User=" in text  # never root
    assert not SECRET.search(
        "\n".join(line for line in text.splitlines() if line.startswith("Environment="))
    )
    if "b3iq " in service(unit)["ExecStart"] and "migrate" not in service(unit)["ExecStart"]:
        assert "LoadCredential=control-plane.ed25519:" in text
        assert "B3IQ_SIGNING_KEY_PATH=%d/control-plane.ed25519" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    for unit in UNITS:
        # verify wants the programs and files to exist on this machine.
        text = re.sub(r"^(ExecStart=)\S+", r"\1/bin/true", unit.read_text(), flags=re.M)
        text = text.replace("EnvironmentFile=/", "EnvironmentFile=-/")
        text = re.sub(r"^(LoadCredential=[^:]+:)\S+", rf"\g<1>{unit}", text, flags=re.M)
        (tmp_path / unit.name).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Unknown" not in done.stderr and "ignoring" not in done.stderr, done.stderr
