"""Values served fresh, then stale while one load runs behind, then waited for."""

import asyncio

import pytest

from adapters.refreshing import Refreshing


class Loads:
    def __init__(self) -> None:
        self.count = 0
        self.gate: asyncio.Event | None = None
        self.failure: Exception | None = None

    async def __call__(self) -> int:
        self.count += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return self.count


@pytest.fixture
def now() -> list[float]:
    return [100.0]


@pytest.fixture
def cache(now: list[float]) -> Refreshing[str, int]:
    return Refreshing("things", fresh_s=1.0, stale_s=5.0, clock=lambda: now[0])


async def loaded_then_aged(cache: Refreshing[str, int], now: list[float], by: float) -> Loads:
    """A value loaded (the first load's 1), then ``by`` seconds older."""
    load = Loads()
    await cache.get("k", load)
    now[0] += by
    return load


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_fresh_values_are_not_loaded_again(
    cache: Refreshing[str, int], now: list[float]
) -> None:
    load = await loaded_then_aged(cache, now, 1.0)
    assert await cache.get("k", load) == 1
    assert load.count == 1


async def test_a_stale_value_is_served_while_one_load_refreshes_it(
    cache: Refreshing[str, int], now: list[float]
) -> None:
    load = await loaded_then_aged(cache, now, 2.0)
    load.gate = asyncio.Event()
    assert [await cache.get("k", load) for _ in range(3)] == [1, 1, 1]  # no wait
    await settle()
    assert load.count == 2  # one load behind them, however many asked
    load.gate.set()
    await settle()
    assert await cache.get("k", load) == 2


async def test_past_stale_or_unknown_the_request_waits_and_sees_the_failure(
    cache: Refreshing[str, int], now: list[float]
) -> None:
    load = await loaded_then_aged(cache, now, 5.5)
    load.failure = RuntimeError("db down")
    with pytest.raises(RuntimeError):
        await cache.get("k", load)
    with pytest.raises(RuntimeError):
        await cache.get("other", load)


async def test_a_failed_refresh_keeps_serving_the_old_value_until_stale(
    cache: Refreshing[str, int], now: list[float]
) -> None:
    load = await loaded_then_aged(cache, now, 2.0)
    load.failure = RuntimeError("db down")
    assert await cache.get("k", load) == 1
    await settle()
    assert await cache.get("k", load) == 1  # it tries again, still serving the old one
    now[0] += 4.0
    with pytest.raises(RuntimeError):
        await cache.get("k", load)


async def test_forget_drops_values_and_whatever_a_load_under_way_reads(
    cache: Refreshing[str, int], now: list[float]
) -> None:
    load = await loaded_then_aged(cache, now, 2.0)
    load.gate = asyncio.Event()
    await cache.get("k", load)  # a refresh starts, reading the old state
    await settle()
    cache.forget()  # the state changed meanwhile
    load.gate.set()
    await settle()
    load.gate = None
    assert await cache.get("k", load) == 3  # loaded afresh, not the refresh's read
