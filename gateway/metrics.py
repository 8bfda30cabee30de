"""The gateway's Prometheus metrics (names and labels are part of the public contract)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series only add noise to scrapes

OUTCOMES = ("accepted", "invalid_signature", "invalid_custom_header", "body_too_large", "broker_unavailable",
            "request_timeout", "overloaded", "client_disconnected")


class GatewayMetrics:
    """One registry per app, so tests and several apps in one process don't collide."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter("tradevine_gateway_requests", "Webhook requests by outcome.",
                                ["outcome"], registry=self.registry)
        self.publish_seconds = Histogram(
            "tradevine_gateway_publish_seconds", "Time from publish to the broker's confirm.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry)
        self.events = Counter("tradevine_gateway_events", "Confirmed events by routing key.",
                              ["routing_key"], registry=self.registry)
        self.last_event = Gauge(
            "tradevine_gateway_last_event_timestamp_seconds",
            "Unix time of the last confirmed event per organisation (silence detection).",
            ["organisation_id"], registry=self.registry)
        self.signature_failures = Counter(
            "tradevine_gateway_signature_failures", "Rejected signatures by reason.",
            ["reason"], registry=self.registry)
        self.in_flight = Gauge("tradevine_gateway_publishes_in_flight",
                               "Publishes waiting for the broker's confirm.", registry=self.registry)
        # Read at scrape time: a plain int costs the hot path nothing (a Gauge takes a lock per change).
        self.publishing = 0
        self.in_flight.set_function(lambda: self.publishing)
        self.broker_up = Gauge("tradevine_gateway_broker_up", "1 when the publisher's channel is usable.",
                               registry=self.registry)
        # Pre-create the label children so every outcome is exported from the start.
        self._requests = {outcome: self.requests.labels(outcome) for outcome in OUTCOMES}
        self._events: dict[str, Counter] = {}
        self._last_event: dict[str, Gauge] = {}

    def request(self, outcome: str) -> None:
        self._requests[outcome].inc()

    def event(self, routing_key: str, organisation_id: str | None, now: float) -> None:
        child = self._events.get(routing_key)
        if child is None:
            child = self._events[routing_key] = self.events.labels(routing_key)
        child.inc()
        if organisation_id is not None:
            gauge = self._last_event.get(organisation_id)
            if gauge is None:
                gauge = self._last_event[organisation_id] = self.last_event.labels(organisation_id)
            gauge.set(now)
