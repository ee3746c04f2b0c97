"""The daemon's command loop: long-poll the control plane, run each leased job, post a
signed result (or a signed refusal). A result that cannot be delivered before its lease
lapses is dropped: the control plane will have queued the command again."""

import asyncio
import contextlib
import logging
import random

import httpx
import msgspec

from domain.canonical import canonical_bytes
from domain.command_messages import CommandResult, LeasedCommand, Polled
from node.managed.client import ControlPlaneClient
from node.managed.jobs import JobFailed, JobRefused, Jobs

log = logging.getLogger("b3iq.node.commands")
_polled = msgspec.json.Decoder(Polled)
DELIVERED = frozenset({"stale_lease", "command_cancelled", "result_already_reported"})
"""Refusals that end the upload: the control plane has made up its mind."""


class CommandLoop:
    def __init__(self, client: ControlPlaneClient, jobs: Jobs, *, wait_s: float = 25.0) -> None:
        self._client = client
        self._jobs = jobs
        self._wait_s = wait_s
        self.failures = 0
        self.done: list[str] = []
        """Command ids whose result the control plane has (newest last, bounded)."""

    async def poll_once(self, wait_s: float | None = None) -> list[LeasedCommand]:
        wait = self._wait_s if wait_s is None else wait_s
        node_id = self._client.identity.node_id
        response = await self._client.get_signed(
            f"/v1/nodes/{node_id}/commands?wait={wait:g}", timeout=wait + 10
        )
        if response.status_code != 200:
            raise httpx.HTTPStatusError(
                f"poll answered {response.status_code}", request=response.request, response=response
            )
        return _polled.decode(response.content).commands

    async def execute(self, leased: LeasedCommand) -> CommandResult:
        outcome, code, output = "succeeded", "", {}
        try:
            output = await self._jobs.run(leased.spec)
        except JobRefused as exc:
            outcome, code = "refused", exc.code
        except JobFailed as exc:
            outcome, code = "failed", exc.code
        except Exception as exc:
            log.warning("command %s failed: %s", leased.command_id, type(exc).__name__)
            outcome, code = "failed", "job_crashed"
        return CommandResult(
            command_id=leased.command_id,
            lease_id=leased.lease_id,
            outcome=outcome,
            code=code,
            output=output,
        )

    async def deliver(self, result: CommandResult, attempts: int = 5) -> bool:
        node_id = self._client.identity.node_id
        path = f"/v1/nodes/{node_id}/commands/{result.command_id}/result"
        body = canonical_bytes(result)
        for attempt in range(attempts):
            try:
                response = await self._client.post_signed(path, body)
            except httpx.HTTPError:
                await asyncio.sleep(min(2.0**attempt, 30) * random.uniform(0.5, 1.5))  # noqa: S311
                continue
            if response.status_code < 300 or _code(response) in DELIVERED:
                self.done = [*self.done[-99:], result.command_id]
                return True
            if response.status_code < 500:
                log.warning("result refused: %s %s", response.status_code, _code(response))
                return False
        return False

    async def step(self, wait_s: float | None = None) -> int:
        commands = await self.poll_once(wait_s)
        for leased in commands:
            await self.deliver(await self.execute(leased))
        return len(commands)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.step()
                self.failures = 0
            except (httpx.HTTPError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.failures += 1
                log.warning("command poll failed: %s", type(exc).__name__)
                backoff = min(300.0, 2.0 ** min(self.failures, 8)) * random.uniform(0.5, 1.5)  # noqa: S311
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""
