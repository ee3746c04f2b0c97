"""The host agent's configuration, read once from the environment into one typed object."""

import os
from pathlib import Path

import msgspec

from adapters.settings import read_settings

DEFAULT_PORT = 8831
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class NodeSettings(msgspec.Struct, frozen=True, kw_only=True):
    home: Path = Path("~/.b3iq-host")
    """B3IQ_HOME: all node state (database, identity key, models)."""
    host: str = "127.0.0.1"
    """B3IQ_HOST_BIND: where the local API listens; loopback unless --allow-lan."""
    port: int = DEFAULT_PORT
    """B3IQ_HOST_PORT."""
    allow_lan: bool = False
    """B3IQ_ALLOW_LAN: permit a non-loopback bind address."""
    max_body_bytes: int = 4_000_000
    """B3IQ_MAX_BODY_BYTES: larger request bodies get 413."""
    max_queue: int = 64
    """B3IQ_MAX_QUEUE: requests waiting for one model before new ones are refused."""
    n_threads: int = 0
    """B3IQ_N_THREADS: llama.cpp threads per model (0: let llama.cpp choose)."""
    n_ctx: int = 0
    """B3IQ_N_CTX: context size per model (0: the model's trained context)."""
    session_ttl_s: int = 12 * 3600
    """B3IQ_SESSION_TTL_S: lifetime of an owner session on the setup page."""
    allowed_commands: str = (
        "benchmark_smoke,runtime_probe,route_health_check,model_install,model_remove,"
        "support_bundle,set_profile_policy"
    )
    """B3IQ_ALLOWED_COMMANDS: the command kinds this node runs; it refuses the others."""
    model_sources: str = ""
    """B3IQ_MODEL_SOURCES: directories (os.pathsep-separated) model_install may copy from."""
    command_wait_s: float = 25.0
    """B3IQ_COMMAND_WAIT_S: how long each command long-poll asks the control plane to hold."""
    auto_submit_receipts: bool = True
    """B3IQ_AUTO_SUBMIT_RECEIPTS: once enrolled, send every new receipt to the control plane
    (off: only those `b3iq-host receipts submit` queues)."""
    receipts_flush_s: float = 10.0
    """B3IQ_RECEIPTS_FLUSH_S: how often queued receipts are sent (at once when queued by hand)."""

    @property
    def allowed_command_kinds(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.allowed_commands.split(",") if k.strip())

    @property
    def model_source_dirs(self) -> list[Path]:
        return [Path(p).expanduser() for p in self.model_sources.split(os.pathsep) if p]

    @property
    def state_dir(self) -> Path:
        return self.home.expanduser()

    @property
    def db_path(self) -> Path:
        return self.state_dir / "node.sqlite3"

    @property
    def key_path(self) -> Path:
        return self.state_dir / "identity.ed25519"

    @property
    def models_dir(self) -> Path:
        return self.state_dir / "models"

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> "NodeSettings":
        names = {"host": "B3IQ_HOST_BIND", "port": "B3IQ_HOST_PORT"}
        return read_settings(cls, environ, overrides, names)
