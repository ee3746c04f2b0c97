"""Services hand freed memory back: one trimming thread per process."""

import sys
import threading

import pytest

from adapters.heap import keep_heap_trimmed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_one_trimming_thread_however_often_asked() -> None:
    assert keep_heap_trimmed() and keep_heap_trimmed()
    assert [t.name for t in threading.enumerate()].count("heap-trim") == 1
