"""One delivery, without a broker: guards, handler, in-process retries → an Outcome.

Shared by the runner and `consumers.testing.deliver`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from consumers.consumer import Consumer, Handler
from consumers.errors import HandlerTimeout, Permanent
from consumers.event import Event
from consumers.metrics import Metrics
from consumers.outcome import Outcome, decide, error_text
from consumers.policy import RetryPolicy, Sleep
from consumers.store import Store, Transaction, Verdict, Work
from consumers.store.base import Staged
from consumers.timelimit import TimeLimit
from consumers.topology import Topology

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("consumers.delivery")
T = TypeVar("T")


class NoHandler(Permanent):
    """No handler pattern of the consumer matches the routing key."""


@dataclass
class Delivery:
    """Everything one delivery needs; `sleep` is injectable so tests never wait.

    With a `tracer` (tracing on), each try of the handler is a span, and so is the wait for the durable
    COMMIT that follows it, both children of the current (the delivery's CONSUMER) span.
    """

    consumer: Consumer
    store: Store
    topology: Topology
    policy: RetryPolicy
    metrics: Metrics = field(default_factory=Metrics)
    sleep: Sleep = asyncio.sleep
    tracer: Tracer | None = None
    _time_limit: TimeLimit = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._time_limit = TimeLimit(self.policy.handler_timeout)

    async def handle(self, event: Event, failed: Exception | None = None) -> Outcome:
        """Every try the policy allows, then the outcome. `failed`: the first try already ran (`first_try`)
        and raised this; the policy goes on from there."""
        result: Verdict | BaseException
        try:
            handler = self._handler(event)
            if failed is None:
                try:
                    # The first try runs bare: tenacity's machinery costs more than a handler that succeeds.
                    result = await self._try(event, handler)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failed = exc
            if failed is not None:
                # Failed: tenacity takes over, its attempt 1 being this failure, so the policy applies
                # exactly as if it had run every try.
                first: Exception | None = failed
                async for attempt in self.policy.retrying(self.sleep):
                    with attempt:
                        if first is not None:
                            failing, first = first, None
                            raise failing from None
                        result = await self._try(event, handler)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            result = exc
            log.warning("handler_failed", extra={
                "consumer": self.consumer.name, "message_id": event.message_id,
                "routing_key": event.routing_key, "attempt": event.attempt, "error": error_text(exc)})
        return decide(result, attempt=event.attempt, policy=self.policy, topology=self.topology)

    async def first_try(self, event: Event, stage: Callable[[Event, Work], Awaitable[Staged]]) -> Staged:
        """The first try, left in the store's open batch (a store's `stage`), under the time limit; raises
        what it raised: hand that to `handle(event, failed)` for the rest of the policy."""
        return await self._limited(event, stage(event, _work(event, self._handler(event))))

    def _handler(self, event: Event) -> Handler:
        handler = self.consumer.handler_for(event.routing_key)
        if handler is None:
            raise NoHandler(f"consumer {self.consumer.name!r} has no handler for {event.routing_key!r}")
        return handler

    async def _limited(self, event: Event, attempt: Awaitable[T]) -> T:
        """`attempt` under the handler time limit: cut off there, it raises HandlerTimeout."""
        limit = self._time_limit
        token = limit.enter()
        try:
            return await attempt
        except asyncio.CancelledError:
            if not limit.expired(token):
                raise
            raise HandlerTimeout(f"consumer {self.consumer.name!r}: the handler for {event.routing_key!r} took "
                                 f"longer than {self.policy.handler_timeout:g}s and was rolled back; make it faster "
                                 "or raise RetryPolicy(handler_timeout=...) / CONSUMER_HANDLER_TIMEOUT_SECONDS"
                                 ) from None
        finally:
            limit.leave(token)

    async def _try(self, event: Event, handler: Handler) -> Verdict:
        started = time.perf_counter()
        try:
            return await self._limited(event, self.store.apply(event, _work(event, handler)) if self.tracer is None
                                       else self._apply_traced(event, handler))
        finally:
            self.metrics.observe(self.consumer.name, time.perf_counter() - started)

    async def _apply_traced(self, event: Event, handler: Handler) -> Verdict:
        """`store.apply` with a span for the handler and one for the wait until the COMMIT is durable."""
        from opentelemetry import context as otel_context
        from opentelemetry.trace import StatusCode

        from gateway import otel

        assert self.tracer is not None
        tracer, parent = self.tracer, otel_context.get_current()
        handled = time.time_ns()

        async def work(tx: Transaction) -> None:
            nonlocal handled
            with tracer.start_as_current_span(f"handle {event.routing_key}", context=parent,
                                              attributes={otel.CONSUMER: self.consumer.name}):
                await handler(event, tx)
            handled = time.time_ns()

        verdict = await self.store.apply(event, work)  # raises: the handler span holds the error
        commit = tracer.start_span("commit", context=parent, start_time=handled,
                                   attributes={otel.CONSUMER: self.consumer.name, otel.OUTCOME: verdict})
        commit.set_status(StatusCode.OK)
        commit.end()
        return verdict


def _work(event: Event, handler: Handler) -> Work:
    """The store's `work` for one try: the handler with this event."""
    async def work(tx: Transaction) -> None:
        await handler(event, tx)

    return work
