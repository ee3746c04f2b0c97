"""What every `b3iq` command shares: settings from flags and environment, an event loop,
progress bars on stderr."""

import argparse
import asyncio
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import Progress, TaskID

from adapters.settings import Settings

console = Console(stderr=True)


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        data_dir=getattr(args, "data_dir", None),
    )


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a dependency, but not on every OS
        return asyncio.run(coro)


@contextmanager
def progress_bars(verb: str) -> Iterator[Callable[[str, int, int], None]]:
    """A callback ``(name, done, total)`` that draws one bar per name."""
    with Progress(console=console, transient=True) as progress:
        tasks: dict[str, TaskID] = {}

        def update(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"{verb} {name}", total=total)
            progress.update(tasks[name], completed=done, total=total)

        yield update
