"""Nonces seen, in memory: one process only (tests, and a single-process deployment)."""

import time


class InMemoryNonces:
    def __init__(self, window_s: float) -> None:
        self._window_s = 2 * window_s
        self._seen: dict[str, float] = {}

    async def first_use(self, scope: str, nonce: str) -> bool:
        now = time.monotonic()
        if len(self._seen) > 100_000:
            self._seen = {k: t for k, t in self._seen.items() if now - t < self._window_s}
        key = f"{scope}.{nonce}"
        seen = self._seen.get(key)
        if seen is not None and now - seen < self._window_s:
            return False
        self._seen[key] = now
        return True
