"""A generated, signed ledger of paid work, made by the real billing decisions.

Customers are credited and each gets a key; then each request reserves, is claimed and
either settles with a node's signed receipt (debit, payout, release in one append) or is
released. Every envelope is sealed and chained as the recorder would, so the output
verifies, projects and reconciles like a live ledger. Streaming: one event at a time.
"""

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from operator import methodcaller

from domain.billing.books import Books, Rules, decide_batch, new_account
from domain.billing.money import Price, quote_for
from domain.billing.state import INFERENCE, AccountState, Policy
from domain.canonical import b64encode
from domain.envelope import StoredEvent
from domain.events import Event, ModelPriceSet, NodeEnrolled, NodeEvidence, PriceEntry
from domain.receipts import ReceiptBody, Timings, Usage, sign_receipt
from domain.sealing import seal
from domain.signing import Signer
from domain.streams import Topology

PRICE = Price(model="tiny", prompt_wei=2, completion_wei=10)
RULES = Rules(fee_bps=500)


class Workload:
    """``events()`` yields ledger messages in order; stop whenever you have enough."""

    def __init__(
        self,
        topology: Topology,
        signer: Signer,
        *,
        customers: int = 50,
        nodes: int = 4,
        release_share: float = 0.2,
        seed: int = 7,
    ) -> None:
        self.topology = topology
        self.signer = signer
        self.customers = customers
        self.nodes = [(f"node-{n}", Signer(bytes([n + 1]) * 32)) for n in range(nodes)]
        self.release_share = release_share
        self.random = random.Random(seed)  # noqa: S311 - a reproducible workload, not secrets
        self.now = datetime(2026, 11, 25, tzinfo=UTC)
        self.seq = 0
        self._tips: dict[str, tuple[str, AccountState | None]] = {}

    def _append(self, subject: str, events: list[Event]) -> Iterator[StoredEvent]:
        prev, _ = self._tips.get(subject, (None, None))
        sealed = seal(subject, events, prev_hash=prev, signer=self.signer, now=self.now)
        account = getattr(events[-1], "account", None)
        self._tips[subject] = (sealed[-1].hash, account)
        for s in sealed:
            self.seq += 1
            yield StoredEvent(self.topology.ledger.name, self.seq, subject, s.data)

    def _customer(self, cid: str, decide: Callable[[Books], list[Event]]) -> Iterator[StoredEvent]:
        subject = self.topology.subject("customer", cid)
        _, state = self._tips.get(subject, (None, None))
        events, _ = decide_batch(state, [lambda b: (decide(b), None)], RULES, self.now)
        if events:
            yield from self._append(subject, events)

    def _setup(self) -> Iterator[StoredEvent]:
        for node_id, node in self.nodes:
            challenge = f'{{"challenge":"{node_id}"}}'
            enrolled = NodeEnrolled(
                node_id=node_id,
                key_id=node.key_id,
                public_key=b64encode(node.public_key),
                agent_version="bench",
                evidence=NodeEvidence(node.key_id, challenge, node.sign(challenge.encode())),
            )
            yield from self._append(self.topology.subject("node", node_id), [enrolled])
        entry = PriceEntry(model="tiny", prompt_price_wei="2", completion_price_wei="10")
        book = ModelPriceSet(
            model="tiny",
            profile_id=None,
            prompt_price_wei="2",
            completion_price_wei="10",
            set_by="bench",
            prices=(entry,),
        )
        yield from self._append(self.topology.subject("prices", "book"), [book])
        for n in range(self.customers):
            cid = f"cus-{n}"
            created = new_account(None, cid, cid, Policy(), "bench", self.now)
            yield from self._append(self.topology.subject("customer", cid), created)
            yield from self._customer(cid, lambda b: b.grant(10**15, "seed", "bench"))
            yield from self._customer(
                cid,
                lambda b: b.issue_key(
                    "key-" + b.customer_id, "k", (INFERENCE,), Policy(), None, "b"
                ),
            )

    def events(self) -> Iterator[StoredEvent]:
        yield from self._setup()
        n = 0
        while True:
            n += 1
            self.now += timedelta(milliseconds=50)
            cid = f"cus-{self.random.randrange(self.customers)}"
            rid, key = f"rsv-{n}", f"key-{cid}"
            quote = quote_for(PRICE, self.random.randint(5, 50), self.random.randint(10, 100))
            job = f"job-{n}"
            yield from self._customer(
                cid, methodcaller("reserve", key, rid, job, quote, "network_beta")
            )
            node_id, node = self.nodes[n % len(self.nodes)]
            yield from self._customer(cid, methodcaller("claim", rid, node_id))
            if self.random.random() < self.release_share:
                yield from self._customer(cid, methodcaller("release", rid, "node_failed"))
                continue
            completion = self.random.randint(1, quote.max_tokens)
            body = ReceiptBody(
                receipt_id=f"rcp-{n}",
                node_id=node_id,
                key_id=node.key_id,
                model="tiny",
                runtime_kind="llama_cpp",
                created_at_ms=int(self.now.timestamp() * 1000),
                stream=False,
                finish_reason="stop",
                usage=Usage(quote.prompt_tokens, completion, quote.prompt_tokens + completion),
                timings=Timings(queue_us=10, ttft_us=2000, latency_us=9000),
                request_digest="1" * 64,
                response_digest="2" * 64,
                dispatch_id=rid,
            )
            receipt = sign_receipt(node, body)
            yield from self._customer(cid, methodcaller("settle", rid, receipt))


def take(events: Iterator[StoredEvent], count: int) -> Iterator[StoredEvent]:
    for _, stored in zip(range(count), events, strict=False):
        yield stored
