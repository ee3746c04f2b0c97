"""Which models this node serves, where they come from, and their profiles."""

import time
from pathlib import Path

import msgspec

from node.errors import NodeError
from node.runtime.base import Runtime
from node.state import Database

GGUF_KIND = "llama_cpp"
PROXY_KINDS = ("openai", "ollama", "vllm", "sglang")
DEFAULT_ROUTE_TIER = "local_convenience"


class ModelSource(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    runtime_kind: str
    source: str
    """A GGUF file path, or the base URL of an OpenAI-compatible server."""
    upstream_model: str | None = None


class ModelProfile(msgspec.Struct, frozen=True, kw_only=True):
    profile_id: str
    model: str
    status: str
    runtime_kind: str
    route_tier: str = DEFAULT_ROUTE_TIER
    network_eligible: bool = False
    benchmark_verified: bool = False
    paid_route_eligible: bool = False
    queue_health: str
    queue_depth: int
    context_length: int | None = None
    size_bytes: int | None = None
    detail: str | None = None


def model_name_for(path: Path) -> str:
    return path.name.removesuffix(".gguf")


class ModelStore:
    """Models added with `b3iq-host models add`, kept in the node's database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, source: ModelSource) -> None:
        if source.runtime_kind != GGUF_KIND and source.runtime_kind not in PROXY_KINDS:
            raise NodeError(400, "invalid_runtime_kind", f"unknown runtime {source.runtime_kind}")
        self._db.execute(
            "INSERT INTO models (name, runtime_kind, source, upstream_model, added_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
            " runtime_kind = excluded.runtime_kind, source = excluded.source,"
            " upstream_model = excluded.upstream_model",
            (source.name, source.runtime_kind, source.source, source.upstream_model, time.time()),
        )

    def remove(self, name: str) -> bool:
        return self._db.execute("DELETE FROM models WHERE name = ?", (name,)) > 0

    def list(self) -> list[ModelSource]:
        rows = self._db.query("SELECT * FROM models ORDER BY added_at")
        return [
            ModelSource(
                name=r["name"],
                runtime_kind=r["runtime_kind"],
                source=r["source"],
                upstream_model=r["upstream_model"],
            )
            for r in rows
        ]


def discover(models_dir: Path, extra: list[Path], stored: list[ModelSource]) -> list[ModelSource]:
    """Command-line models first, then the models directory, then added ones; first name wins."""
    found: dict[str, ModelSource] = {}
    files = [*extra, *sorted(models_dir.glob("*.gguf"))] if models_dir.is_dir() else extra
    for path in files:
        name = model_name_for(path)
        found.setdefault(
            name, ModelSource(name=name, runtime_kind=GGUF_KIND, source=str(path.resolve()))
        )
    for source in stored:
        found.setdefault(source.name, source)
    return list(found.values())


def profile_for(
    node_id: str,
    source: ModelSource,
    runtime: Runtime | None,
    *,
    ram_available_mib: int | None,
    context_length: int | None = None,
) -> ModelProfile:
    size = None
    detail = runtime.failure if runtime else None
    if source.runtime_kind == GGUF_KIND:
        path = Path(source.source)
        size = path.stat().st_size if path.is_file() else None
        if size is None:
            status, detail = "ready_to_install", "model file not present"
        elif (
            ram_available_mib is not None
            and size > ram_available_mib * 2**20
            and not (runtime and runtime.failure is None and context_length)
        ):
            status = "hardware_unsupported"
        else:
            status = "installed"
    else:
        status = "runtime_missing" if runtime is None or runtime.failure else "installed"
    return ModelProfile(
        profile_id=f"{node_id}:{source.name}",
        model=source.name,
        status=status,
        runtime_kind=source.runtime_kind,
        queue_health=runtime.queue_health if runtime else "unhealthy",
        queue_depth=runtime.queue_depth if runtime else 0,
        context_length=context_length or None,
        size_bytes=size,
        detail=detail,
    )
