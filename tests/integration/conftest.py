"""Fixtures shared by the route, benchmark and gateway tests."""

from tests.route_support import tiny, world

__all__ = ["tiny", "world"]
