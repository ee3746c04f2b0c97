"""Checking a log on several cores.

Worker processes run ``check_event`` (the Ed25519 verifications, decoding, hashing) over
chunks of consecutive events; this process hands their results, in log order, to one
``LogVerifier``, which does what depends on the order (sequences, hash chains,
checkpoints, which keys a node held). Chunks go to the workers in turn and each answers
in order, so results need no sorting; a bounded number of chunks is in flight, so memory
stays flat however long the log.
"""

import multiprocessing
import queue
import sys
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

import msgspec

from domain.envelope import StoredEvent
from domain.signing import Keyring
from domain.verification import Checked, LogVerifier, Problem, check_chunk

CHUNK = 500
"""Events per task: large enough that passing them between processes costs little."""
DEPTH = 2
"""Tasks queued per worker, so that none waits while this process reads the log."""


class Task(msgspec.Struct, array_like=True):
    new_keys: list[tuple[str, bytes]]
    """Keys the log gave nodes since this worker's previous task: (node id, public key)."""
    events: list[StoredEvent]


# msgpack, not pickle: a quarter of the cost, for what crosses between processes per event.
_encoder = msgspec.msgpack.Encoder()
_tasks = msgspec.msgpack.Decoder(Task)
_results = msgspec.msgpack.Decoder(list[Checked | Problem])


class WorkerFailed(Exception):
    pass


def _work(
    tasks: "multiprocessing.Queue[bytes | None]",
    results: "multiprocessing.Queue[bytes | str]",
    control_keys: list[bytes],
    unchained: frozenset[str],
    defer: bool,
) -> None:
    keyring = Keyring(control_keys)
    candidates: dict[str, Keyring] = {}
    while (encoded := tasks.get()) is not None:
        try:
            task = _tasks.decode(encoded)
            for node_id, public_key in task.new_keys:
                candidates.setdefault(node_id, Keyring()).add(public_key)
            checked = check_chunk(task.events, keyring, candidates, unchained, defer)
            results.put(_encoder.encode(checked))
        except Exception:  # the waiting process raises it, with where it came from
            results.put(traceback.format_exc())


class _Worker:
    def __init__(self, context: Any, verifier: LogVerifier) -> None:
        self.tasks: multiprocessing.Queue[bytes | None] = context.Queue()
        self.results: multiprocessing.Queue[bytes | str] = context.Queue()
        control_keys = [k.public_key for k in verifier.keyring.public_keys()]
        self.process: BaseProcess = context.Process(
            target=_work,
            args=(
                self.tasks,
                self.results,
                control_keys,
                verifier.unchained_streams,
                verifier.defer,
            ),
            daemon=True,
        )
        self.keys_sent = 0
        """How much of the verifier's ``given_keys`` this worker has been sent."""

    def result(self) -> list[Checked | Problem]:
        while True:
            try:
                found = self.results.get(timeout=1.0)
            except queue.Empty:
                if not self.process.is_alive():
                    raise WorkerFailed(f"worker exited with {self.process.exitcode}") from None
                continue
            if isinstance(found, str):
                raise WorkerFailed(found)
            return _results.decode(found)


class ParallelChecks:
    """``feed`` events in log order to ``verifier`` (like ``LogVerifier.feed``), checked on
    ``jobs`` worker processes; problems come back once their chunk is done, still in log
    order, and ``finish`` returns the rest."""

    def __init__(
        self, verifier: LogVerifier, jobs: int, *, chunk: int = CHUNK, depth: int = DEPTH
    ) -> None:
        # Spawned, not forked: the parent may hold threads (progress bars, asyncio's
        # executor) whose locks a fork would copy mid-use.
        context = multiprocessing.get_context("spawn")
        self.verifier = verifier
        self.chunk = chunk
        self.depth = depth
        self._workers = [_Worker(context, verifier) for _ in range(jobs)]
        self._filling: list[StoredEvent] = []
        self._in_flight: deque[tuple[_Worker, list[StoredEvent]]] = deque()
        self._turn = 0

    def __enter__(self) -> "ParallelChecks":
        with main_unseen():
            for worker in self._workers:
                worker.process.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for worker in self._workers:
            worker.tasks.put(None)
        for worker in self._workers:
            worker.process.join(timeout=5.0 if kind is None else 0.5)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join()
            worker.tasks.close()
            worker.results.close()

    def feed(self, stored: StoredEvent) -> list[Problem]:
        self._filling.append(stored)
        if len(self._filling) < self.chunk:
            return []
        self._submit()
        if len(self._in_flight) <= len(self._workers) * self.depth:
            return []
        return self._accept_oldest()

    def finish(self) -> list[Problem]:
        if self._filling:
            self._submit()
        problems: list[Problem] = []
        while self._in_flight:
            problems.extend(self._accept_oldest())
        return [*problems, *self.verifier.finish()]

    def _submit(self) -> None:
        worker = self._workers[self._turn]
        self._turn = (self._turn + 1) % len(self._workers)
        given = self.verifier.given_keys
        worker.tasks.put(_encoder.encode(Task(given[worker.keys_sent :], self._filling)))
        worker.keys_sent = len(given)
        self._in_flight.append((worker, self._filling))
        self._filling = []

    def _accept_oldest(self) -> list[Problem]:
        worker, events = self._in_flight.popleft()
        return accept_all(self.verifier, events, worker.result())


@contextmanager
def main_unseen() -> Iterator[None]:
    """Workers need only this module, but spawn imports the parent's main module in each
    too: for the CLI that is everything, over a second of CPU per worker. Started while
    __main__ names no module or file, they skip it."""
    main = sys.modules["__main__"]
    spec, path = main.__spec__, getattr(main, "__file__", None)
    main.__spec__ = None
    if path is not None:
        del main.__file__
    try:
        yield
    finally:
        main.__spec__ = spec
        if path is not None:
            main.__file__ = path


def accept_all(
    verifier: LogVerifier, events: Sequence[StoredEvent], results: Sequence[Checked | Problem]
) -> list[Problem]:
    return [
        p for stored, r in zip(events, results, strict=True) for p in verifier.accept(stored, r)
    ]
