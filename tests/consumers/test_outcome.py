"""The pure decision: ack, next tier or park; headers of the copies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consumers import Done, Park, Permanent, Retry, RetryPolicy
from consumers.outcome import copy_headers, decide, error_text, replay_headers
from consumers.topology import Topology

TOPOLOGY = Topology("inventory", "tradevine.events", ("product.#",), 10, (5, 30))
POLICY = RetryPolicy(tiers=(5, 30))


@pytest.mark.parametrize("verdict", ["applied", "duplicate", "stale"])
def test_a_handled_delivery_is_done(verdict: str) -> None:
    assert decide(verdict, attempt=1, policy=POLICY, topology=TOPOLOGY) == Done(verdict)  # type: ignore[arg-type]


def test_failures_walk_the_tiers_then_park() -> None:
    error = OSError("db down")
    assert decide(error, attempt=1, policy=POLICY, topology=TOPOLOGY) == Retry(
        "inventory.retry.5s", 5, 2, "OSError: db down")
    assert decide(error, attempt=2, policy=POLICY, topology=TOPOLOGY) == Retry(
        "inventory.retry.30s", 30, 3, "OSError: db down")
    assert decide(error, attempt=3, policy=POLICY, topology=TOPOLOGY) == Park(
        "inventory.parked", "OSError: db down", 3, permanent=False)


def test_a_permanent_error_parks_at_once() -> None:
    assert decide(Permanent("no Product"), attempt=1, policy=POLICY, topology=TOPOLOGY) == Park(
        "inventory.parked", "Permanent: no Product", 1, permanent=True)


def test_an_error_outside_retry_on_parks_at_once() -> None:
    policy = RetryPolicy(retry_on=(OSError,))
    assert isinstance(decide(KeyError("x"), attempt=1, policy=policy, topology=TOPOLOGY), Park)


def test_without_tiers_a_failure_parks() -> None:
    topology = Topology("inventory", "x", ("product.#",), 10, ())
    assert decide(OSError(), attempt=1, policy=POLICY, topology=topology).label == "parked"


def test_error_text_is_one_line_and_truncated() -> None:
    text = error_text(ValueError("line one\nline two " + "x" * 1000))
    assert text.startswith("ValueError: line one line two x") and len(text) == 500 and "\n" not in text


def test_a_parked_copy_carries_error_and_failed_at_and_no_broker_headers() -> None:
    headers = {"tradevine-source": "webhook", "tradevine-attempt": "2", "x-death": [{}], "x-delivery-count": 3}
    parked = Park("inventory.parked", "OSError: boom", 3, permanent=False)
    assert copy_headers(headers, parked, failed_at=datetime(2025, 3, 18, 21, 0, tzinfo=UTC)) == {
        "tradevine-source": "webhook", "tradevine-attempt": "3", "tradevine-error": "OSError: boom",
        "tradevine-failed-at": "2025-03-18T21:00:00.000Z"}


def test_a_retry_copy_raises_the_attempt() -> None:
    copied = copy_headers({}, Retry("inventory.retry.5s", 5, 2, "e"), failed_at=datetime.now(UTC))
    assert copied == {"tradevine-attempt": "2"}


def test_a_replay_resets_attempt_and_error_and_sets_the_source() -> None:
    headers = {"tradevine-source": "webhook", "tradevine-attempt": "5", "tradevine-error": "e",
               "tradevine-failed-at": "t", "tradevine-event-key": "k", "x-death": []}
    assert replay_headers(headers) == {"tradevine-source": "replay", "tradevine-event-key": "k"}


def test_the_trace_context_follows_every_copy_unchanged() -> None:
    trace = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "rojo=1"}
    headers = {"tradevine-source": "webhook", **trace, "x-death": [{"count": 1}]}
    now = datetime(2025, 3, 18, 21, 0, tzinfo=UTC)
    retried = copy_headers(headers, Retry("inventory.retry.5s", 5, 2, "e"), failed_at=now)
    parked = copy_headers(retried, Park("inventory.parked", "e", 3, permanent=False), failed_at=now)
    for copy in (retried, parked, replay_headers(parked)):
        assert {k: copy[k] for k in trace} == trace
