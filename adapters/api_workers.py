"""Several API processes on one port, so the API can use every core.

A Python process runs on one core and heartbeat intake is CPU-bound (an Ed25519
verification and a signature per heartbeat). Workers are forked once the signing key
exists, so they share it; each binds its own socket with SO_REUSEPORT and the kernel
spreads connections across them. Nothing they rely on lives only in one process's
memory: nonces are claimed in a KV bucket, heartbeats and ledger decisions append on
condition that their subject has not moved, and each worker's cache of node keys drops
a node as soon as any process appends to its ledger subject.
"""

import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
from collections.abc import Callable

from adapters.keyfile import load_or_create_signer
from adapters.settings import Settings


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket other processes may bind too (SO_REUSEPORT), bound to ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def run_workers(settings: Settings, workers: int, worker: Callable[[Settings], None]) -> int:
    """Run ``worker(settings)`` in ``workers`` forked processes until a signal or until
    one of them exits; returns 0 after a signal, 1 if a worker died on its own."""
    load_or_create_signer(settings.key_path)  # before the fork: one key for all of them
    context = multiprocessing.get_context("fork")
    procs = [
        context.Process(target=worker, args=(settings,), name=f"b3iq-api-{n}")
        for n in range(workers)
    ]
    for proc in procs:
        proc.start()
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while all(proc.is_alive() for proc in procs):
            multiprocessing.connection.wait([proc.sentinel for proc in procs])
        stop()
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopping and all(p.exitcode == 0 for p in procs) else 1
