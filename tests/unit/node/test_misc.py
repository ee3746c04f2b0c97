from pathlib import Path

import pytest

from domain.openai_errors import openai_type
from node.api.errors import error_body
from node.catalog import ModelSource, discover, profile_for
from node.errors import NodeError
from node.inventory import parse_nvidia_smi, read_inventory
from node.runtime.queue import QueueGauge
from node.settings import NodeSettings


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (413, "invalid_request_error"),
        (415, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "authentication_error"),
        (402, "insufficient_quota"),
        (404, "not_found_error"),
        (409, "conflict_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
    ],
)
def test_status_to_openai_type(status: int, kind: str) -> None:
    assert openai_type(status) == kind


def test_error_shapes() -> None:
    error = NodeError(401, "api_key_revoked", "API key is revoked", family="unauthorized")
    assert error_body(error, openai=True)["error"]["b3iq"]["code"] == "unauthorized"
    assert error_body(error, openai=True)["error"]["code"] == "api_key_revoked"
    assert error_body(error, openai=False) == {
        "error": {
            "status": 401,
            "title": "Unauthorized",
            "detail": "API key is revoked",
            "code": "unauthorized",
        }
    }


def test_queue_health() -> None:
    gauge = QueueGauge(max_queue=3)
    with gauge.slot(lambda: None):
        assert gauge.health == "healthy"
        with gauge.slot(lambda: None):
            assert gauge.health == "busy"
            with gauge.slot(lambda: None):
                assert gauge.health == "blocked"
                with pytest.raises(NodeError) as full, gauge.slot(lambda: None):
                    pass
                assert full.value.status == 429
    assert gauge.depth == 0


def test_settings_from_env() -> None:
    settings = NodeSettings.from_env(
        {"B3IQ_HOME": "/tmp/x", "B3IQ_HOST_PORT": "9000", "B3IQ_ALLOW_LAN": "true"}
    )
    assert settings.home == Path("/tmp/x")
    assert settings.port == 9000
    assert settings.allow_lan
    assert settings.is_loopback
    assert not NodeSettings(host="0.0.0.0").is_loopback


def test_nvidia_smi_parsing() -> None:
    gpus = parse_nvidia_smi("NVIDIA H100 80GB HBM3, 81559, 550.54.15\n")
    assert gpus[0].name == "NVIDIA H100 80GB HBM3"
    assert gpus[0].memory_mib == 81559


def test_inventory_reads_this_machine(tmp_path: Path) -> None:
    inventory = read_inventory(tmp_path)
    assert inventory.cpu_count >= 1
    assert inventory.disk_total_gib > 0
    assert inventory.os


def test_discovery_and_profiles(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "a.gguf").write_bytes(b"x")
    stored = [ModelSource(name="gone", runtime_kind="llama_cpp", source=str(tmp_path / "no.gguf"))]
    sources = discover(models, [], stored)
    assert [s.name for s in sources] == ["a", "gone"]
    missing = profile_for("n", sources[1], None, ram_available_mib=1000)
    assert missing.status == "ready_to_install"
    assert missing.route_tier == "local_convenience"
    assert not missing.paid_route_eligible
    proxy = ModelSource(name="p", runtime_kind="ollama", source="http://127.0.0.1:1/v1")
    assert profile_for("n", proxy, None, ram_available_mib=None).status == "runtime_missing"
