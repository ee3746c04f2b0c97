"""Handing freed memory back to the operating system, so that a long-running service's
RSS follows what it actually holds.

glibc keeps memory a process has freed for reuse, and in a Python service that streams
messages of a few kilobytes (each a malloc of its own) through batches of varying size,
what it keeps grows with fragmentation. Seen in the soak: the projector's RSS grew about
100 MiB an hour while tracemalloc showed its live Python heap flat, and one
``malloc_trim(0)`` gave back 56 MiB at once. So services trim every little while.
"""

import ctypes
import functools
import threading
import time

TRIM_EVERY_S = 30.0


@functools.cache  # one thread per process, however many services start in it
def keep_heap_trimmed(every_s: float = TRIM_EVERY_S) -> bool:
    """Start a daemon thread calling ``malloc_trim(0)`` every ``every_s`` (it takes the
    allocator's locks, not the GIL, for a few milliseconds). False where the C library
    has no malloc_trim (not glibc): nothing to do there."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int

    def loop() -> None:
        while True:
            time.sleep(every_s)
            trim(0)

    threading.Thread(target=loop, name="heap-trim", daemon=True).start()
    return True
