"""The contract's consumer metrics: deliveries by final outcome, and time in the handler."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    """The contract's consumer metrics, in a registry of their own (one per runner)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.messages = Counter("tradevine_consumer_messages", "Deliveries by final outcome.",
                                ["consumer", "outcome"], registry=self.registry)
        self.handler_seconds = Histogram(
            "tradevine_consumer_handler_seconds", "Time in the handler and its transaction, per try.",
            ["consumer"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

        self._counters: dict[tuple[str, str], Any] = {}
        self._timers: dict[str, Any] = {}

    def count(self, consumer: str, outcome: str, deliveries: int = 1) -> None:
        child = self._counters.get((consumer, outcome))
        if child is None:  # labels() per event costs more than the increment: keep the children
            child = self._counters[consumer, outcome] = self.messages.labels(consumer=consumer, outcome=outcome)
        child.inc(deliveries)

    def observe(self, consumer: str, seconds: float) -> None:
        child = self._timers.get(consumer)
        if child is None:
            child = self._timers[consumer] = self.handler_seconds.labels(consumer=consumer)
        child.observe(seconds)

    def value(self, consumer: str, outcome: str) -> float:
        found = self.registry.get_sample_value("tradevine_consumer_messages_total",
                                               {"consumer": consumer, "outcome": outcome})
        return found or 0.0
