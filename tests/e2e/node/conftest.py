"""A real node daemon (uvicorn on a free port, in a thread) over a tiny generated model."""

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import uvicorn

from node.api.app import create_app
from node.catalog import ModelSource, ModelStore
from node.identity import create_identity
from node.keys import KeyStore
from node.owner import OwnerStore
from node.services import NodeServices, open_services
from node.settings import NodeSettings
from node.state import Database
from node.tiny_model import EOS_ID, IM_END_ID, write_tiny_model

NO_END = {str(EOS_ID): -100.0, str(IM_END_ID): -100.0}
"""logit_bias that keeps the random model from ending early: runs go to max_tokens."""


class Node(NamedTuple):
    url: str
    home: Path
    services: NodeServices
    key: str
    """A key allowed everything."""
    setup_token: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerThread:
    def __init__(self, app: object, port: int) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("node daemon did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Node]:
    home = tmp_path_factory.mktemp("home")
    port = free_port()
    settings = NodeSettings(home=home, port=port, max_body_bytes=200_000, max_queue=32)
    db = Database(settings.db_path)
    create_identity(db, settings.key_path)
    token = OwnerStore(db).issue_setup_token()
    _, key = KeyStore(db).create("e2e")
    broken = home / "broken.gguf"
    broken.write_bytes(b"GGUF not really a model")
    ModelStore(db).add(ModelSource(name="broken", runtime_kind="llama_cpp", source=str(broken)))
    ModelStore(db).add(
        ModelSource(name="nowhere", runtime_kind="openai", source="http://127.0.0.1:9/v1")
    )
    db.close()
    services = open_services(settings)
    app = create_app(services, [tiny_model])
    with ServerThread(app, port):
        yield Node(f"http://127.0.0.1:{port}", home, services, key, token)
