"""Fixtures shared by the route, benchmark, gateway and secret-hygiene tests."""

from tests.route_support import paid, tiny, world

__all__ = ["paid", "tiny", "world"]
