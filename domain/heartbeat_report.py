"""What a node reports in a heartbeat: the machine, its runtimes and its model profiles."""

from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta

Text = Annotated[str, Meta(max_length=256)]


class GpuReport(msgspec.Struct, frozen=True, kw_only=True):
    name: Text
    memory_mib: int | None = None
    driver: Text | None = None


class InventoryReport(msgspec.Struct, frozen=True, kw_only=True):
    os: Text
    os_release: Text = ""
    arch: Text = ""
    cpu_model: Text = ""
    cpu_count: int = 0
    ram_total_mib: int | None = None
    ram_available_mib: int | None = None
    disk_total_gib: float | None = None
    disk_free_gib: float | None = None
    gpus: Annotated[list[GpuReport], Meta(max_length=64)] = []


class RuntimeReport(msgspec.Struct, frozen=True, kw_only=True):
    """A runtime and whether the node could reach it (never its URL: local URLs stay local)."""

    model: Text
    runtime_kind: Text
    reachable: bool
    detail: Text | None = None


class ProfileReport(msgspec.Struct, frozen=True, kw_only=True):
    profile_id: Text
    model: Text
    status: Text
    """installed, ready_to_install, runtime_missing, hardware_unsupported, ..."""
    runtime_kind: Text
    route_tier: Text = "unknown"
    network_eligible: bool = False
    benchmark_verified: bool = False
    """The host's own claim; it never counts as observed benchmark evidence."""
    paid_route_eligible: bool = False
    queue_health: Text = "unknown"
    queue_depth: int = 0
    context_length: int | None = None


class HeartbeatReport(msgspec.Struct, frozen=True, kw_only=True):
    node_id: Text
    heartbeat_seq: Annotated[int, Meta(ge=1)]
    """Strictly increasing per node; the control plane refuses any it has passed."""
    sent_at: datetime
    agent_version: Text
    inventory: InventoryReport
    runtimes: Annotated[list[RuntimeReport], Meta(max_length=256)] = []
    profiles: Annotated[list[ProfileReport], Meta(max_length=256)] = []


_decoder = msgspec.json.Decoder(HeartbeatReport)


def decode_report(body: bytes | str) -> HeartbeatReport:
    """Raises msgspec.DecodeError / ValidationError."""
    return _decoder.decode(body)
