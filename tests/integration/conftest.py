"""Fixtures shared by the route, benchmark, gateway, secret-hygiene and fault tests."""

from collections.abc import Callable

import pytest

from tests.fault_support import FaultCounts
from tests.route_support import paid, tiny, world

__all__ = ["paid", "record_counts", "tiny", "world"]

FAULT_COUNTS = pytest.StashKey[list[FaultCounts]]()


@pytest.fixture
def record_counts(request: pytest.FixtureRequest) -> Callable[[FaultCounts], None]:
    """Keep a fault test's counts for the summary at the end of the run."""
    rows = request.config.stash.setdefault(FAULT_COUNTS, [])
    return rows.append


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    rows = config.stash.get(FAULT_COUNTS, [])
    if not rows:
        return
    terminalreporter.section("fault injection: events accepted, lost, duplicated")
    terminalreporter.write_line(
        f"{'scenario':<44} {'accepted':>8} {'present':>8} {'lost':>5} {'dup':>4}  note"
    )
    for r in rows:
        figures = f"{r.accepted:>8} {r.present:>8} {r.lost:>5} {r.duplicated:>4}"
        terminalreporter.write_line(f"{r.scenario:<44} {figures}  {r.note}")
