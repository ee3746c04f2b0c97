"""Rolling-window spend in bounded time buckets, counted so that a cap is never overshot.

A window of W seconds keeps buckets of W/24 seconds. A bucket counts while any part of
it lies inside the window, so the sum may include up to one bucket of older spend: the
window's spend is over-estimated, never under-estimated.
"""

import msgspec

BUCKETS_PER_WINDOW = 24


class SpendBucket(msgspec.Struct, frozen=True, array_like=True):
    start_s: int
    end_s: int
    wei: str


def window_spend(buckets: tuple[SpendBucket, ...], now_s: int, window_s: int) -> int:
    since = now_s - window_s
    return sum(int(b.wei) for b in buckets if b.end_s > since)


def add_spend(
    buckets: tuple[SpendBucket, ...], now_s: int, window_s: int, amount_wei: int
) -> tuple[SpendBucket, ...]:
    """Buckets with ``amount_wei`` added now; those wholly outside the window are dropped."""
    since = now_s - window_s
    kept = [b for b in buckets if b.end_s > since]
    if amount_wei == 0:
        return tuple(kept)
    length = max(1, window_s // BUCKETS_PER_WINDOW)
    start = now_s - now_s % length
    end = start + length
    if kept and kept[-1].start_s == start and kept[-1].end_s == end:
        last = kept.pop()
        kept.append(SpendBucket(start, end, str(int(last.wei) + amount_wei)))
    else:
        kept.append(SpendBucket(start, end, str(amount_wei)))
    return tuple(kept)
