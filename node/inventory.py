"""The machine as read from the machine: OS, CPU, RAM, GPU, disk."""

import os
import platform
import shutil
import subprocess
from pathlib import Path

import msgspec


class Gpu(msgspec.Struct, frozen=True):
    name: str
    memory_mib: int | None = None
    driver: str | None = None


class Inventory(msgspec.Struct, frozen=True, kw_only=True):
    os: str
    os_release: str
    arch: str
    python: str
    cpu_model: str
    cpu_count: int
    ram_total_mib: int | None
    ram_available_mib: int | None
    disk_total_gib: float
    disk_free_gib: float
    gpus: list[Gpu]


def _meminfo() -> dict[str, int]:
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return {}
    values: dict[str, int] = {}
    for line in lines:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name] = int(parts[0]) // 1024
    return values


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_nvidia_smi(output: str) -> list[Gpu]:
    gpus = []
    for line in output.strip().splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) >= 3 and fields[0]:
            memory = int(fields[1]) if fields[1].isdigit() else None
            gpus.append(Gpu(name=fields[0], memory_mib=memory, driver=fields[2] or None))
    return gpus


def probe_gpus() -> list[Gpu]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        result = subprocess.run(
            [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(result.stdout) if result.returncode == 0 else []


def read_inventory(disk_path: Path) -> Inventory:
    mem = _meminfo()
    probe = disk_path if disk_path.exists() else Path(os.sep)
    disk = shutil.disk_usage(probe)
    return Inventory(
        os=platform.system(),
        os_release=platform.release(),
        arch=platform.machine(),
        python=platform.python_version(),
        cpu_model=_cpu_model(),
        cpu_count=os.cpu_count() or 1,
        ram_total_mib=mem.get("MemTotal"),
        ram_available_mib=mem.get("MemAvailable"),
        disk_total_gib=round(disk.total / 2**30, 1),
        disk_free_gib=round(disk.free / 2**30, 1),
        gpus=probe_gpus(),
    )
