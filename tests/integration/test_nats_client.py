"""Our nats-py client's additions, against a real server: raw queue subscriptions,
publishes written at once, and requests resolved from the read loop."""

import asyncio
import uuid

import pytest
from nats.errors import ConnectionClosedError, MaxPayloadError

from adapters.jetstream.acks import WRONG_LAST_SEQUENCE, Ack, NoStreamResponders, PublishRejected
from adapters.jetstream.client import Client, RawHandler
from adapters.jetstream.pipeline import Pipeline
from tests.conftest import Servers


async def _connected(servers: Servers) -> Client:
    nc = Client()
    await nc.connect(servers.nats_url)
    return nc


async def test_publish_now_goes_out_behind_what_was_queued_before_it(servers: Servers) -> None:
    sender, receiver = await _connected(servers), await _connected(servers)
    subject = f"t.{uuid.uuid4().hex}"
    got: list[tuple[bytes, bytes]] = []
    arrived = asyncio.Event()

    def on_msg(_subject: bytes, reply: bytes, data: bytes, _headers: bytes | None) -> None:
        got.append((data, reply))
        if len(got) == 4:
            arrived.set()

    try:
        await receiver.subscribe_raw(subject, on_msg)
        await receiver.flush()
        await sender.publish(subject, b"1")  # queued for nats-py's flusher
        sender.publish_now(subject, b"2", reply="inbox.2")
        assert not sender._pending  # written, not left for the flusher
        await sender.publish(subject, b"3")
        sender.publish_now(subject, b"4")
        await asyncio.wait_for(arrived.wait(), 5)
        assert got == [(b"1", b""), (b"2", b"inbox.2"), (b"3", b""), (b"4", b"")]
        assert sender.stats["out_msgs"] == 4
    finally:
        await sender.close()
        await receiver.close()


async def test_a_raw_queue_subscription_shares_messages_with_its_group(servers: Servers) -> None:
    sender, a, b = [await _connected(servers) for _ in range(3)]
    subject = f"t.{uuid.uuid4().hex}"
    seen: dict[str, list[bytes]] = {"a": [], "b": []}
    done = asyncio.Event()

    def member(name: str) -> RawHandler:
        def on_msg(_subject: bytes, _reply: bytes, data: bytes, _h: bytes | None) -> None:
            seen[name].append(data)
            if sum(map(len, seen.values())) == 40:
                done.set()

        return on_msg

    try:
        for nc, name in ((a, "a"), (b, "b")):
            await nc.subscribe_raw(subject, member(name), queue="holder")
            await nc.flush()
        for i in range(40):
            sender.publish_now(subject, str(i).encode())
        await asyncio.wait_for(done.wait(), 5)
        assert sorted(seen["a"] + seen["b"], key=int) == [str(i).encode() for i in range(40)]
        assert seen["a"] and seen["b"]  # each message went to one member, and both got some
    finally:
        for nc in (sender, a, b):
            await nc.close()


async def test_publish_now_is_refused_where_nats_pys_publish_is(servers: Servers) -> None:
    nc = await _connected(servers)
    with pytest.raises(MaxPayloadError):
        nc.publish_now("t.big", b"x" * (nc.max_payload + 1))
    await nc.close()
    with pytest.raises(ConnectionClosedError):
        nc.publish_now("t.closed", b"1")
    with pytest.raises(ConnectionClosedError):
        await nc.publish("t.closed", b"1")


async def test_a_pipeline_request_resolves_by_its_own_reply(servers: Servers) -> None:
    """An ack, the server's refusal, "no stream here" and silence each end one request."""
    nc = await _connected(servers)
    name = f"T{uuid.uuid4().hex[:8]}"
    js = nc.jetstream()
    await js.add_stream(name=name, subjects=[f"{name}.>"])
    pipeline = Pipeline(nc, timeout=0.3)
    try:
        first = await pipeline.request(f"{name}.a", b"1", {"Nats-Msg-Id": "m1"})
        assert first == Ack(name, 1, False)
        again = await pipeline.request(f"{name}.a", b"1", {"Nats-Msg-Id": "m1"})
        assert again == Ack(name, 1, True)
        with pytest.raises(PublishRejected) as refused:
            stale = {"Nats-Msg-Id": "m2", "Nats-Expected-Last-Subject-Sequence": "0"}
            await pipeline.request(f"{name}.a", b"2", stale)
        assert refused.value.err_code == WRONG_LAST_SEQUENCE
        with pytest.raises(NoStreamResponders):
            await pipeline.request(f"nostream{name}.a", b"3", {"Nats-Msg-Id": "m3"})
        await nc.subscribe_raw(f"silent{name}", lambda *_: None)  # takes it, never answers
        with pytest.raises(TimeoutError):
            await pipeline.request(f"silent{name}", b"4", {"Nats-Msg-Id": "m4"})
        assert pipeline._futures == {}  # nothing left waiting
    finally:
        await js.delete_stream(name)
        await nc.close()
