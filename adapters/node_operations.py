"""What operators do to and ask about nodes: approve, revoke, readiness now."""

from collections.abc import Callable
from datetime import datetime

import asyncpg
import msgspec

from adapters.enrollment import refused
from adapters.http.problems import ApiError
from adapters.node_auth import NodeDirectory
from adapters.recorder import Recorder
from domain.decoding import Decoded
from domain.events import Event
from domain.nodes import Refused, decide_approval, decide_revocation, state_of
from domain.ports import ProtocolRegistry
from domain.readiness import EvidenceRef, Policy, ProtocolFacts, Readiness, evaluate
from projections.node_queries import NodeDetail, node_detail, with_protocol


class NodeChange(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    status: str
    seq: int | None
    """The ledger sequence of the change; None when there was nothing to change."""


class NodeReadiness(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    evaluated_at: datetime
    node: Readiness
    """Gates that do not depend on a model (the Model gate names the missing choice)."""
    models: list[Readiness]


class NodeOperations:
    def __init__(
        self,
        pool: asyncpg.Pool,
        recorder: Recorder,
        directory: NodeDirectory,
        protocol: ProtocolRegistry,
        *,
        policy: Policy,
        clock: Callable[[], datetime],
    ) -> None:
        self._pool = pool
        self._recorder = recorder
        self._directory = directory
        self.protocol = protocol
        self.policy = policy
        self._clock = clock

    async def approve(self, node_id: str, by: str) -> NodeChange:
        return await self._change(node_id, lambda state: decide_approval(state, by))

    async def revoke(self, node_id: str, by: str, reason: str) -> NodeChange:
        return await self._change(node_id, lambda state: decide_revocation(state, by, reason))

    async def _change(self, node_id: str, decision: Callable[..., list[Event]]) -> NodeChange:
        status: list[str] = []

        def decide(tail: Decoded | None) -> list[Event]:
            state = state_of(tail.event) if tail else None
            events = decision(state)
            after = state_of(events[-1]) if events else state
            status[:] = [after.status if after else "unknown"]
            return events

        try:
            result = await self._recorder.record(
                self._recorder.topology.subject("node", node_id), decide
            )
        except Refused as exc:
            raise refused(exc) from None
        self._directory.forget(node_id)
        return NodeChange(
            node_id=node_id, status=status[0], seq=None if result is None else result.last_seq
        )

    async def detail(self, node_id: str) -> NodeDetail:
        async with self._pool.acquire() as conn:
            found = await node_detail(conn, node_id, now=self._clock(), policy=self.policy)
        if found is None:
            raise ApiError(404, "not_found", "Not Found", "no such node")
        return found[0]

    async def readiness(self, node_id: str, model: str | None) -> NodeReadiness:
        now = self._clock()
        async with self._pool.acquire() as conn:
            found = await node_detail(conn, node_id, now=now, policy=self.policy)
        if found is None:
            raise ApiError(404, "not_found", "Not Found", "no such node")
        detail, evidence = found
        status = await self.protocol.status(node_id)
        if status is not None:
            evidence = with_protocol(
                evidence,
                ProtocolFacts(
                    registered=status.registered,
                    active=status.active,
                    stake_wei=status.stake_wei,
                    ref=EvidenceRef(
                        kind="protocol",
                        event_id=status.event_id,
                        stream="ledger",
                        seq=status.seq,
                        at=status.observed_at,
                    ),
                ),
            )
        models = [p.model for p in detail.profiles if model is None or p.model == model]
        if model is not None and not models:
            models = [model]
        return NodeReadiness(
            node_id=node_id,
            evaluated_at=now,
            node=evaluate(evidence, None, self.policy, now),
            models=[evaluate(evidence, m, self.policy, now) for m in models],
        )
