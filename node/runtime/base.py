"""What the API asks of a runtime, whichever engine is behind it."""

from collections.abc import AsyncIterator
from typing import Protocol

import msgspec

QUEUE_HEALTH = ("healthy", "busy", "blocked", "unhealthy")


class Message(msgspec.Struct, frozen=True):
    role: str
    content: str


class SamplingParams(msgspec.Struct, frozen=True, kw_only=True):
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logit_bias: dict[int, float] = msgspec.field(default_factory=dict)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


class Completion(msgspec.Struct, kw_only=True):
    """The outcome of one generation; timings are milliseconds since the request arrived."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    queue_ms: float
    ttft_ms: float
    latency_ms: float


class Runtime(Protocol):
    name: str
    kind: str

    @property
    def queue_health(self) -> str: ...

    @property
    def queue_depth(self) -> int: ...

    @property
    def failure(self) -> str | None:
        """Why the runtime cannot serve (load error, crash), or None."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def complete(
        self, messages: list[Message], params: SamplingParams, arrived: float
    ) -> Completion: ...

    def stream(
        self, messages: list[Message], params: SamplingParams, arrived: float
    ) -> AsyncIterator[str | Completion]:
        """Text deltas as they are produced, then exactly one Completion, whose text is all
        of it: the deltas are a prefix, and what they did not carry goes with the finish."""
        ...
