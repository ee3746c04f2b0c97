"""Prometheus metrics of one node (a registry per app, so tests can run several)."""

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _QueueCollector(Collector):
    def __init__(self, read: Callable[[], Iterable[tuple[str, int, str]]]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        depth = GaugeMetricFamily("b3iq_node_queue_depth", "Requests per model", labels=["model"])
        healthy = GaugeMetricFamily(
            "b3iq_node_queue_healthy", "1 when queue_health is healthy or busy", labels=["model"]
        )
        for model, queued, health in self._read():
            depth.add_metric([model], queued)
            healthy.add_metric([model], 1 if health in ("healthy", "busy") else 0)
        yield depth
        yield healthy


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "b3iq_node_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.tokens = Counter(
            "b3iq_node_tokens", "Tokens processed", ["model", "kind"], registry=self.registry
        )
        self.latency = Histogram(
            "b3iq_node_completion_seconds",
            "Completion latency",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "b3iq_node_ttft_seconds",
            "Time to first token",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def watch_queues(self, read: Callable[[], Iterable[tuple[str, int, str]]]) -> None:
        self.registry.register(_QueueCollector(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)
