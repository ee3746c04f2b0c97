"""The hosted gateway: a customer's chat request, paid for, run on an eligible node.

authorize (gateway key) → candidates (all five gates) → quote → reserve → dispatch over
the broker route → verify the node's signed receipt → settle (debit, payout, release the
rest). A node that fails before its first token is skipped for a while and the next
candidate tries once, on the same reservation, so nothing is charged twice. Prompts and
outputs pass through; nothing here stores them.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple

import asyncpg
import msgspec
from msgspec import Meta

from adapters.billing import Billing, GatewayPrincipal, Reservation, reservation_id_for
from adapters.broker import Broker, RouteUnavailable
from adapters.http import sse
from adapters.http.problems import ApiError
from adapters.node_auth import NodeDirectory, require_receipt
from adapters.refreshing import Refreshing
from domain.billing.state import INFERENCE, OPEN_STATES, Policy
from domain.broker_frames import Chunk, Done, Failed, Reply
from domain.canonical import sha256_hex
from domain.ids import uuid7
from domain.readiness import Policy as GatePolicy
from domain.receipts import Receipt
from projections.node_queries import Candidate, NodeFilter, candidates, list_nodes, servable_models

log = logging.getLogger("b3iq.gateway")

FAILED_NODE_PAUSE_S = 30.0
"""A node that just failed a dispatch gets no new requests from this process for this long."""
CACHE_S = 1.0
"""Keys and candidate lists are reused this long, then refreshed behind the requests
(see Refreshing): both change rarely, and a stale candidate costs only a retry."""
STALE_S = 5.0
"""Past this, a request waits for the key or the candidates to be read again."""
SETTLE_AFTER_S = 0.05
"""A settlement appended after its answer left waits this long for others to go with it
(see ``AccountLanes.submit``); what it holds stays reserved meanwhile."""
TEMPLATE_TOKENS_PER_MESSAGE = 32
"""Chat-template overhead allowed per message in the prompt estimate."""


class B3iqOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    model_profile_id: Annotated[str, Meta(max_length=256)] | None = None
    job_id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")] | None = None
    max_price_wei: Annotated[str, Meta(pattern=r"^[0-9]{1,78}$")] | None = None
    dispatch_mode: Literal["pooled_sync"] = "pooled_sync"


class _Part(msgspec.Struct, frozen=True):
    type: str
    text: str | None = None


class _Message(msgspec.Struct, frozen=True):
    role: str
    content: str | list[_Part] | None = None


class HostedRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The fields the gateway itself needs; the node validates the whole request."""

    model: Annotated[str, Meta(min_length=1, max_length=256)]
    messages: Annotated[list[_Message], Meta(min_length=1)]
    stream: bool = False
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None
    n: Annotated[int, Meta(ge=1)] | None = None


class _Job(NamedTuple):
    reservation: Reservation
    model: str
    arrived: float
    """perf_counter() when the request arrived: the gateway's latency starts there."""


class Completed(msgspec.Struct, frozen=True):
    body: bytes


class Streaming(msgspec.Struct, frozen=True):
    events: AsyncIterator[bytes]


def invalid(detail: str, param: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request", "Bad Request", detail, param)


def parse(raw: bytes) -> tuple[HostedRequest, B3iqOptions, dict[str, Any]]:
    """The request, its `b3iq` options, and the body to dispatch (options stripped)."""
    try:
        body = msgspec.json.decode(raw)
        if not isinstance(body, dict):
            raise invalid("the body must be a JSON object")
        options = msgspec.convert(body.pop("b3iq", None) or {}, B3iqOptions)
        request = msgspec.convert(body, HostedRequest)
    except (msgspec.DecodeError, UnicodeDecodeError):  # the latter: bad UTF-8 in a string
        raise invalid("the body is not valid JSON") from None
    except msgspec.ValidationError as exc:
        raise invalid(str(exc)) from None
    if request.n is not None and request.n > 1:
        raise invalid("n > 1 is not supported; send one request per choice", "n")
    return request, options, body


def prompt_estimate(request: HostedRequest) -> int:
    """An upper bound on prompt tokens: a token is at least one byte (byte-fallback
    vocabularies), plus the chat template's own tokens."""
    size = 0
    for message in request.messages:
        content = message.content
        if isinstance(content, list):
            size += sum(len((p.text or "").encode()) for p in content)
        elif content:
            size += len(content.encode())
    return size + TEMPLATE_TOKENS_PER_MESSAGE * (len(request.messages) + 1)


def _allowed_tiers(principal: GatewayPrincipal) -> Callable[[str], bool]:
    policies: tuple[Policy, ...] = (principal.policy, principal.customer_policy)
    return lambda tier: all(
        p.allowed_route_tiers is None or tier in p.allowed_route_tiers for p in policies
    )


class _Started:
    """A dispatch under way: its replies, and the first of them as a task of its own."""

    def __init__(self, frames: AsyncGenerator[Reply, None]) -> None:
        self.frames = frames
        self.first: asyncio.Task[Reply] = asyncio.ensure_future(anext(frames))

    async def abandon(self) -> None:
        """Cancel it on the node (its dispatch's own cleanup sends the cancel)."""
        self.first.cancel()
        with contextlib.suppress(BaseException):
            await self.first
        await self.frames.aclose()


class Gateway:
    def __init__(
        self,
        pool: asyncpg.Pool,
        billing: Billing,
        broker: Broker,
        directory: NodeDirectory,
        policy: GatePolicy,
        *,
        default_max_tokens: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._pool = pool
        self.billing = billing
        self._broker = broker
        self._directory = directory
        self._policy = policy
        self.default_max_tokens = default_max_tokens
        self._clock = clock
        self._paused: dict[str, float] = {}
        self._principals: Refreshing[str, GatewayPrincipal | None] = Refreshing(
            "gateway keys", fresh_s=CACHE_S, stale_s=STALE_S
        )
        self._candidates: Refreshing[str, list[Candidate]] = Refreshing(
            "candidates", fresh_s=CACHE_S, stale_s=STALE_S, max_keys=1_000
        )
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- who, and where -----------------------------------------------------------------

    async def principal(self, secret: str | None) -> GatewayPrincipal:
        if not secret:
            raise ApiError(401, "unauthorized", "Unauthorized", "a gateway API key is required")
        digest = sha256_hex(secret.encode())
        principal = await self._principals.get(digest, lambda: self.billing.authenticate(secret))
        if principal is None:
            raise ApiError(401, "unauthorized", "Unauthorized", "the gateway API key is not valid")
        if INFERENCE not in principal.scopes:
            raise ApiError(
                403, "gateway_api_key_scope_denied", "Forbidden", "the key lacks inference"
            )
        return principal

    async def models(self) -> list[tuple[str, datetime]]:
        async with self._pool.acquire() as conn:
            return await servable_models(conn, now=self._clock(), policy=self._policy)

    async def _eligible(self, model: str) -> list[Candidate]:
        async def load() -> list[Candidate]:
            async with self._pool.acquire() as conn:
                return await candidates(conn, model, now=self._clock(), policy=self._policy)

        found = await self._candidates.get(model, load)
        now = time.monotonic()
        return [c for c in found if self._paused.get(c.node_id, 0.0) < now]

    async def _why_none(self, model: str) -> ApiError:
        """The most telling reason no node can serve the model."""
        async with self._pool.acquire() as conn:
            for blocker, code in (
                ("benchmark_proof", "observed_benchmark_missing"),
                ("protocol_stake", "protocol_stake_unsatisfied"),
            ):
                where = NodeFilter(model=model, blocker=blocker, status="enrolled")
                if await list_nodes(
                    conn, where, after=None, limit=1, now=self._clock(), policy=self._policy
                ):
                    return ApiError(
                        503, code, "Service Unavailable", f"no node for {model} passes: {code}"
                    )
        return ApiError(
            503, "no_healthy_candidates", "Service Unavailable", f"no eligible node serves {model}"
        )

    # -- the paid request ---------------------------------------------------------------

    async def chat(
        self, principal: GatewayPrincipal, raw: bytes, idempotency_key: str | None
    ) -> Completed | Streaming:
        arrived = time.perf_counter()
        request, options, body = parse(raw)
        allowed = _allowed_tiers(principal)
        found = [
            c
            for c in await self._eligible(request.model)
            if allowed(c.route_tier)
            and (options.model_profile_id is None or c.profile_id == options.model_profile_id)
        ]
        if not found:
            raise await self._why_none(request.model)
        max_tokens = request.max_completion_tokens or request.max_tokens
        if max_tokens is None:  # the node must stop where the reservation does
            max_tokens = body["max_tokens"] = self.default_max_tokens
        limit = None if options.max_price_wei is None else int(options.max_price_wei)
        quote = await self.billing.quote(
            principal, request.model, prompt_estimate(request), max_tokens, limit
        )
        rid = reservation_id_for(principal.customer_id, idempotency_key)
        dispatched = msgspec.json.encode(body)
        # With room to spare (and no retry to replay), the node starts while the hold is
        # appended: the answer still waits for the hold, and a refused hold cancels it.
        early = None
        if idempotency_key is None and self.billing.has_room_for(principal, quote.amount_wei):
            early = _Started(self._broker.dispatch(found[0].node_id, dispatched, rid))
        try:
            if early is not None:
                # The dispatch goes out before the hold is decided and signed, not after:
                # the node's work is the longer of the two (interleaved bench_gateway
                # --quick: added p50 0.79/1.24 -> 0.67/1.04 ms on A/B).
                await asyncio.sleep(0)
            reservation = await self.billing.reserve(
                principal,
                model=request.model,
                route_tier=found[0].route_tier,
                quote=quote,
                job_id=options.job_id or uuid7(),
                idempotency_key=idempotency_key,
                reservation_id=rid,
            )
        except BaseException:
            if early is not None:
                await early.abandon()
            raise
        if reservation.existing:
            return _replayed(reservation, request.model)
        job = _Job(reservation, request.model, arrived)
        try:
            return await self._dispatch(job, found, dispatched, early)
        except BaseException:
            # Refused, failed, or the client left mid-wait: the hold goes back, no debit
            # (a reservation that already settled keeps its outcome).
            self._spawn(self.billing.release(reservation, "dispatch_failed"))
            raise

    async def _dispatch(
        self, job: _Job, found: list[Candidate], dispatched: bytes, early: "_Started | None"
    ) -> Completed | Streaming:
        """The first candidate (``early``: already started), then one retry."""
        rid = job.reservation.reservation_id
        for candidate in found[:2]:
            started = early or _Started(self._broker.dispatch(candidate.node_id, dispatched, rid))
            early = None
            frames = started.frames
            try:
                first = await started.first
            except (RouteUnavailable, StopAsyncIteration):
                self._pause(candidate.node_id)
                continue
            if isinstance(first, Failed):
                if 400 <= first.status < 500 and first.code != "model_not_network_eligible":
                    raise ApiError(first.status, first.code, "Bad Request", first.message)
                self._pause(candidate.node_id)
                continue
            if isinstance(first, Done):
                return await self._completed(job, candidate, first)
            return Streaming(self._stream(job, candidate, first, frames))
        raise ApiError(502, "router_dispatch_failed", "Bad Gateway", "no candidate answered")

    def _pause(self, node_id: str) -> None:
        self._paused[node_id] = time.monotonic() + FAILED_NODE_PAUSE_S
        log.warning("dispatch to node %s failed; pausing it", node_id)

    async def _completed(self, job: _Job, candidate: Candidate, done: Done) -> Completed:
        receipt = done.receipt
        # Checked against the model asked for; a refusal releases the hold (see chat).
        await require_receipt(
            self._directory,
            receipt,
            node_id=candidate.node_id,
            model=job.model,
            dispatch_id=job.reservation.reservation_id,
        )
        if done.streamed:  # a node that answers a plain request without its body
            raise ApiError(502, "router_dispatch_failed", "Bad Gateway", "the node sent no answer")
        response = msgspec.json.decode(done.response)
        response["b3iq"] = {
            "runtime_kind": receipt.body.runtime_kind,
            "latency_ms": round((time.perf_counter() - job.arrived) * 1000, 3),
            "ttft_ms": round(receipt.body.timings.ttft_us / 1000, 3),
            "receipt_hash": receipt.receipt_hash,
            "job_id": job.reservation.job_id,
        }
        # The receipt is verified: settling it cannot be refused for the node's sake, so
        # it is appended after the answer leaves (a lost settle is released, never billed).
        settling = self._settle(job.reservation, receipt, candidate.node_id, SETTLE_AFTER_S)
        self._spawn(settling)
        return Completed(msgspec.json.encode(response))

    async def _settle(
        self, reservation: Reservation, receipt: Receipt, node_id: str, after_s: float = 0.0
    ) -> None:
        _, keys = await self._directory.state(node_id)
        for attempt in range(3):
            try:
                await self.billing.settle(reservation, receipt, keys, after_s=after_s)
                return
            except ApiError as exc:
                log.error("settle refused: %s", exc.code)
                return
            except Exception as exc:  # transient: try again, then leave it to the sweeper
                log.warning("settle failed (%s), attempt %d", type(exc).__name__, attempt + 1)
                await asyncio.sleep(0.2 * 2**attempt)

    async def _stream(
        self, job: _Job, candidate: Candidate, first: Reply, frames: AsyncIterator[Reply]
    ) -> AsyncIterator[bytes]:
        settled = False
        try:
            frame: Reply = first
            while isinstance(frame, Chunk):
                yield sse.event(frame.data)
                frame = await anext(frames)
            if isinstance(frame, Failed):
                yield sse.in_stream_error(frame)
                return
            node_id = candidate.node_id
            await require_receipt(
                self._directory,
                frame.receipt,
                node_id=node_id,
                model=job.model,
                dispatch_id=job.reservation.reservation_id,
            )
            await self._settle(job.reservation, frame.receipt, node_id)
            settled = True
            yield sse.DONE
        finally:
            if not settled:  # the client left, the node failed, or the receipt was refused
                self._spawn(self.billing.release(job.reservation, "stream_ended"))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for settlements still being appended (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _replayed(reservation: Reservation, model: str) -> Completed:
    """The same Idempotency-Key again: the earlier outcome, never a second charge. The
    answer's text is not kept anywhere, so a settled job replays its billing outcome."""
    if reservation.receipt_hash is not None:
        return Completed(
            msgspec.json.encode(
                {
                    "id": f"chatcmpl-{reservation.job_id}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [],
                    "b3iq": {
                        "receipt_hash": reservation.receipt_hash,
                        "job_id": reservation.job_id,
                        "charged_wei": str(reservation.debited_wei or 0),
                        "idempotent_replay": True,
                    },
                }
            )
        )
    if reservation.state not in OPEN_STATES:
        raise ApiError(
            409,
            "idempotency_key_reused",
            "Conflict",
            "an earlier request with this Idempotency-Key failed uncharged; use a new key",
        )
    raise ApiError(
        409, "request_in_progress", "Conflict", "a request with this Idempotency-Key is running"
    )
