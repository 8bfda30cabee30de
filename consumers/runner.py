"""Connect (robustly), declare, consume with bounded concurrency, act on outcomes, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import AbstractChannel as AmqpChannel
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from consumers.acks import AckWindow
from consumers.consumer import Consumer
from consumers.delivery import Delivery
from consumers.errors import (
    BrokerError,
    BrokerTlsError,
    MalformedEvent,
    SettingsError,
    TopologyError,
    UnsupportedOperation,
)
from consumers.event import Event, decode
from consumers.http import HealthServer
from consumers.metrics import Metrics
from consumers.outcome import Done, Outcome, Park, copy_headers, error_text
from consumers.policy import Sleep
from consumers.received import Received
from consumers.settings import ConsumerSettings
from consumers.store import Clock, MemoryStore, SqliteStore, Store, Verdict, Work, is_postgres_url, utc_now
from consumers.store.base import Staged
from consumers.topology import Topology, declare
from gateway import amqp_addresses, tracing, wire
from gateway.amqp_tls import connect_error_text, tls_error
from gateway.errors import TopologyMissing
from gateway.publisher import ensure_topology
from gateway.wire import redact_url

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

log = logging.getLogger("consumers.runner")
Stage = Callable[[Event, Work], Awaitable[Staged]]
CONFIRM_TIMEOUT = 10.0
RECONNECT_SECONDS = 2.0


def topology_for(consumer: Consumer, settings: ConsumerSettings) -> Topology:
    tiers = settings.retry_delays if settings.retry_delays is not None else consumer.retry.tiers
    return Topology(settings.queue_name(consumer.name), settings.exchange, consumer.bindings,
                    consumer.delivery_limit, tiers)


def store_for(consumer: Consumer, settings: ConsumerSettings) -> Store:
    """The store the consumer chose: its database (CONSUMER_DATABASE: a SQLite path or a PostgreSQL URL) or
    the guards in memory."""
    if consumer.store == "memory":
        return MemoryStore()
    database = settings.database_path(consumer.name)
    if is_postgres_url(database):
        try:
            from consumers.store.postgres import PostgresStore
        except ImportError as exc:
            raise SettingsError([f"CONSUMER_DATABASE is a PostgreSQL URL but its driver is missing ({exc}); "
                                 "install it with: pip install 'tradevine-gateway[postgres]'."]) from None
        return PostgresStore(database, namespace=consumer.name, schema=consumer.schema,
                             migrations=consumer.migrations, batch_size=settings.batch_size,
                             batch_max_wait=settings.batch_max_wait_ms / 1000)
    return SqliteStore(database, schema=consumer.schema, migrations=consumer.migrations,
                       batch_size=settings.batch_size, batch_max_wait=settings.batch_max_wait_ms / 1000)


class Runner:
    """One consumer against RabbitMQ. `start()`, then `stop()` drains: nothing lost, nothing doubled."""

    def __init__(self, consumer: Consumer, settings: ConsumerSettings, *, store: Store | None = None,
                 metrics: Metrics | None = None, sleep: Sleep = asyncio.sleep, clock: Clock = utc_now,
                 tracer_provider: TracerProvider | None = None) -> None:
        self.consumer = consumer
        self.settings = settings
        self.topology = topology_for(consumer, settings)
        policy = consumer.retry.with_tiers(self.topology.tiers).with_handler_timeout(settings.handler_timeout)
        self.store: Store = store or store_for(consumer, settings)
        self.metrics = metrics or Metrics()
        self.tracer: Tracer | None = None  # None: tracing off, no OpenTelemetry work per delivery
        if tracer_provider is not None:
            from gateway import otel

            self.tracer = otel.tracer(tracer_provider, "consumers.runner")
        self.delivery = Delivery(consumer, self.store, self.topology, policy, self.metrics, sleep, self.tracer)
        self.clock = clock
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._topology_channel: AbstractChannel | None = None
        self._underlay: AmqpChannel | None = None  # the AMQP channel the subscription lives on
        self._tag: str | None = None  # the subscription's consumer tag, None while there is none
        self._subscribing: asyncio.Task[None] | None = None
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        self._stopping = False
        self._inflight = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._acks: AckWindow | None = None
        self._closed = False  # the connection is closed: a batch that fails now is left to the broker
        # Staged deliveries by their batch's `durable` future: one callback acks a whole batch.
        self._waiting: dict[asyncio.Future[None], list[tuple[Received, AckWindow, Event, Staged, float]]] = {}
        # Stores with group commit stage the first try in their open batch, and the COMMIT's callback acks:
        # no task per delivery waits for it. Traced deliveries keep a task each (their spans need one).
        stage = getattr(self.store, "stage", None)
        self._stage: Stage | None = stage if self.tracer is None and callable(stage) else None
        # A store that applies one event at a time (SQLite: one connection) gets its deliveries through a
        # queue, staged in order by one task (`_apply_in_order`): no task and no lock wait per delivery.
        self._queue: deque[tuple[Received, AckWindow]] | None = (
            deque() if self._stage is not None and getattr(self.store, "serial", False) else None)
        self._applier: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        # Once started, the loop it runs on: asking asyncio for it costs a system call (getpid) each time.
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await self.store.open()
        except (OSError, sqlite3.Error) as exc:
            where = self.settings.database_path(self.consumer.name)
            raise SettingsError([f"CONSUMER_DATABASE={where!r} cannot be opened ({exc}); point it at a file in a "
                                 f"writable directory, e.g. ./{self.consumer.name}.sqlite3."]) from exc
        url = self.settings.amqp_url
        try:
            connection = await amqp_addresses.connect_robust(
                url, reconnect_interval=RECONNECT_SECONDS,
                client_properties={"connection_name": f"tradevine-consumer-{self.topology.name}"})
        except Exception as exc:
            await self.store.close()
            if tls_error(exc) is not None:
                raise BrokerTlsError(f"cannot connect to RabbitMQ at {redact_url(url)}: "
                                     f"{connect_error_text(exc)}") from None
            raise BrokerError(f"cannot connect to RabbitMQ at {redact_url(url)} ({connect_error_text(exc)}); "
                              "check AMQP_URL and that the broker is up.") from None
        try:
            try:
                self._topology_channel = await ensure_topology(connection, self.topology.exchange)
            except TopologyMissing as exc:
                raise TopologyError(str(exc)) from None
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await declare(channel, self.topology)
            await channel.set_qos(prefetch_count=self.settings.prefetch)
            self._channel = channel
            await self._subscribe()
        except BaseException:
            self._channel = None
            await connection.close()
            await self.store.close()
            raise
        self._connection = connection
        # The robust channel reopens after a reconnect and declares the queue again; the subscription,
        # made under aio-pika, is this runner's to renew.
        channel.reopen_callbacks.add(self._on_reopen)
        log.info("consumer_started", extra={
            "consumer": self.consumer.name, "queue": self.topology.queue, "exchange": self.topology.exchange,
            "bindings": list(self.topology.bindings), "tiers": list(self.topology.tiers),
            "delivery_limit": self.topology.delivery_limit, "prefetch": self.settings.prefetch,
            "concurrency": self.settings.concurrency, "amqp_url": redact_url(url)})

    async def _subscribe(self) -> None:
        """Consume the queue on the channel's AMQP layer (see consumers.received)."""
        assert self._channel is not None
        underlay = await self._channel.get_underlay_channel()
        if underlay is not self._underlay:
            underlay.on_consumer_cancel_callbacks.add(self._on_cancelled)
        self._underlay = underlay
        subscribed = await underlay.basic_consume(self.topology.queue, self._on_delivery)
        self._tag = subscribed.consumer_tag

    def _on_reopen(self, _channel: object) -> None:
        self._tag = None
        self._resubscribe()

    def _on_cancelled(self, frame: Basic.Cancel) -> None:
        """The broker ended the subscription (the queue was deleted, or its leader moved away)."""
        if frame.consumer_tag != self._tag:
            return
        log.warning("consumer_cancelled_by_broker", extra={"consumer": self.consumer.name,
                                                           "queue": self.topology.queue})
        self._tag = None
        self._resubscribe()

    def _resubscribe(self) -> None:
        if self._stopping or (self._subscribing is not None and not self._subscribing.done()):
            return
        self._subscribing = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        """Declare the queue (a deleted one comes back) and subscribe again, until that works or the runner
        stops; not ready meanwhile."""
        while not self._stopping and self._tag is None:
            try:
                assert self._channel is not None
                await declare(self._channel, self.topology)
                await self._subscribe()
            except Exception as exc:
                log.warning("consumer_subscribe_failed", extra={
                    "consumer": self.consumer.name, "queue": self.topology.queue, "error": error_text(exc),
                    "retry_in_s": RECONNECT_SECONDS})
                await asyncio.sleep(RECONNECT_SECONDS)
            else:
                log.info("consumer_subscribed", extra={"consumer": self.consumer.name,
                                                       "queue": self.topology.queue})

    def ready(self) -> bool:
        connection, channel = self._connection, self._channel
        return (not self._stopping and connection is not None and not connection.is_closed
                and connection.connected.is_set() and channel is not None and not channel.is_closed
                and self._tag is not None)

    async def stop(self) -> None:
        """Stop consuming, let in-flight handlers finish and ack, then close."""
        if self._stopping:
            return
        self._stopping = True
        log.info("consumer_draining", extra={"consumer": self.consumer.name, "in_flight": self._inflight})
        if self._subscribing is not None:
            self._subscribing.cancel()
        if self._underlay is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._underlay.basic_cancel(self._tag), 5)
        try:
            await asyncio.wait_for(self._idle.wait(), self.settings.drain_seconds)
        except TimeoutError:
            log.warning("consumer_drain_timeout", extra={
                "consumer": self.consumer.name, "in_flight": self._inflight,
                "seconds": self.settings.drain_seconds})
            # Unacked: the broker redelivers them, and the guards skip whatever did commit.
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._closed = True
        await self.store.close()
        log.info("consumer_stopped", extra={"consumer": self.consumer.name})

    async def _on_delivery(self, delivered: DeliveredMessage) -> None:
        message = Received(delivered)
        self._inflight += 1
        self._idle.clear()
        queue = self._queue
        if queue is not None:
            queue.append((message, self._window(message)))
            if self._applier is None:
                self._applier = applier = (self._loop or asyncio.get_running_loop()).create_task(self._apply_in_order())
                self._tasks.add(applier)
            return
        task = asyncio.current_task(self._loop)
        if task is not None:
            self._tasks.add(task)
        acks = self._window(message)
        finished = True  # False: the COMMIT's callback, or a task of its own, finishes it
        try:
            async with self._semaphore:
                if self._stopping:  # delivered before the cancel reached the broker: hand it back
                    await self._hand_back(message, acks)
                elif self._stage is not None:
                    await self._process_staged(message, acks, self._stage)
                    finished = False
                elif self.tracer is None:
                    await self._process(message, acks)
                else:
                    await self._process_traced(message, acks)
        finally:
            if task is not None:
                self._tasks.discard(task)
            if finished:
                self._finished()

    def _finished(self, count: int = 1) -> None:
        self._inflight -= count
        if not self._inflight:
            self._idle.set()

    def _window(self, message: Received) -> AckWindow:
        """The ack window of the delivery's channel (a new one after the robust channel reopened), with
        the delivery tracked in it."""
        acks = self._acks
        if acks is None or acks.channel is not message.channel:
            acks = self._acks = AckWindow(message.channel)
        acks.track(message.delivery_tag)
        return acks

    async def _hand_back(self, message: Received, acks: AckWindow) -> None:
        """Nack with requeue (the broker redelivers it, here or to another replica)."""
        try:
            await message.nack(requeue=True)
        except Exception:  # the channel went away: the broker redelivers it anyway
            return
        acks.released(message.delivery_tag)

    async def _process_traced(self, message: Received, acks: AckWindow) -> None:
        """One delivery attempt as a CONSUMER span, a child of the context the message carries.

        Every attempt (first delivery, each delay tier, the one that parks) is its own span in the
        message's trace: the copies sent to the tiers and to parking keep the message's `traceparent`.
        """
        from opentelemetry.trace import SpanKind

        from gateway import otel

        assert self.tracer is not None
        queue = self.topology.queue
        with self.tracer.start_as_current_span(
                f"process {queue}", context=otel.extract(message.headers), kind=SpanKind.CONSUMER,
                attributes={otel.MESSAGING_SYSTEM: "rabbitmq", otel.DESTINATION: queue, otel.OPERATION: "process",
                            otel.CONSUMER: self.consumer.name}) as span:
            await self._process(message, acks, span)

    async def _apply_in_order(self) -> None:
        """Stage the queued deliveries one after another (a serial store's). A delivery whose first try
        failed, or whose body is not an event, goes on in a task of its own (its retry policy may sleep,
        its copy to a tier or to parking waits for the broker), so the queue never waits for it."""
        queue, stage = self._queue, self._stage
        assert queue is not None and stage is not None
        try:
            while queue:
                message, acks = queue.popleft()
                finished = True
                try:
                    if self._stopping:  # delivered before the cancel reached the broker: hand it back
                        await self._hand_back(message, acks)
                    elif not getattr(message.channel, "is_closed", False):  # closed: redelivered anyway
                        await self._process_staged(message, acks, stage)
                        finished = False  # the COMMIT's callback, or a task of its own, finishes it
                except asyncio.CancelledError:
                    raise  # never acked: the broker redelivers it
                except Exception as exc:  # unexpected: left unacked (redelivered), and the queue goes on
                    log.error("delivery_failed", extra={"consumer": self.consumer.name, "error": error_text(exc)})
                finally:
                    if finished:
                        self._finished()
        finally:
            if self._applier is not None:
                self._tasks.discard(self._applier)
            self._applier = None
            while queue:  # cancelled (the drain timed out): left unacked, the broker redelivers them
                queue.popleft()
                self._finished()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Go on with a delivery in a task of its own; the delivery is finished when the task is done, also
        when it was cancelled before it began (the drain timed out right after it was started)."""
        task = (self._loop or asyncio.get_running_loop()).create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._spawned_done)

    def _spawned_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._finished()

    async def _process_staged(self, message: Received, acks: AckWindow, stage: Stage) -> None:
        """The first try in the store's open batch, then on to the next delivery: no task waits for the
        COMMIT; its callback acks (`_committed`). A first try that failed, or a body that is not an event,
        goes on in a task of its own (its retry policy may sleep, its copy to a tier or to parking waits for
        the broker's confirm), which finishes the delivery; the caller never waits for it."""
        try:
            event = self._decode(message)
        except MalformedEvent:
            self._spawn(self._process(message, acks))  # parks it
            return
        started = time.perf_counter()
        try:
            staged = await self.delivery.first_try(event, stage)
        except asyncio.CancelledError:
            raise  # never acked: the broker redelivers it
        except Exception as exc:
            self.metrics.observe(self.consumer.name, time.perf_counter() - started)
            self._spawn(self._retry(message, acks, event, exc))
            return
        durable = staged.durable
        waiting = self._waiting.get(durable)
        if waiting is None:  # the first of its batch here: one callback for the batch, not one per delivery
            waiting = self._waiting[durable] = []
            durable.add_done_callback(self._committed)
        waiting.append((message, acks, event, staged, started))

    def _committed(self, durable: asyncio.Future[None]) -> None:
        """A batch of staged deliveries committed (or failed): ack them, or run the retry policy of each
        that failed."""
        waiting = self._waiting.pop(durable)
        now = time.perf_counter()
        acked: dict[AckWindow, list[tuple[int, Event, Verdict]]] = {}
        for message, acks, event, staged, started in waiting:
            self.metrics.observe(self.consumer.name, now - started)
            try:
                verdict = staged.result()
            except BaseException as failure:  # the COMMIT failed, or the event failed when its batch was applied again
                exc = failure if isinstance(failure, Exception) else UnsupportedOperation(
                    "the batch's COMMIT was cancelled; the event is tried again.")
                if self._closed:
                    self._finished()  # unacked: the broker redelivers it
                    continue
                self._spawn(self._retry(message, acks, event, exc))
                continue
            found = acked.get(acks)
            if found is None:
                found = acked[acks] = []
            found.append((message.delivery_tag, event, verdict))
        for acks, settled in acked.items():
            acks.ack_all([tag for tag, _, _ in settled]).add_done_callback(partial(self._acked, settled))

    def _acked(self, settled: list[tuple[int, Event, Verdict]], written: asyncio.Future[None]) -> None:
        """The acks of a batch's deliveries are written (or failed): count and log them as done."""
        try:
            failure = None if written.cancelled() else written.exception()
            if written.cancelled() or failure is not None:
                for _, event, _ in settled:
                    log.warning("ack_failed", extra={
                        "consumer": self.consumer.name, "message_id": event.message_id,
                        "routing_key": event.routing_key,
                        "error": "cancelled" if failure is None else error_text(failure)})
                return
            applied, debug = 0, log.isEnabledFor(logging.DEBUG)
            for _, event, verdict in settled:
                if verdict == "applied" and not debug:
                    applied += 1  # most events: counted together below, not logged at info
                else:
                    self._done(verdict, event.message_id, event.routing_key, event.attempt)
            if applied:
                self.metrics.count(self.consumer.name, "applied", applied)
        finally:
            self._finished(len(settled))

    def _done(self, verdict: Verdict, message_id: str, routing_key: str, attempt: int) -> None:
        """Count and log a delivery acked as applied, duplicate or stale."""
        self.metrics.count(self.consumer.name, verdict)
        level = logging.DEBUG if verdict == "applied" else logging.INFO
        if log.isEnabledFor(level):  # most events: applied, not logged at info; skip building the line
            log.log(level, f"event_{verdict}", extra={"consumer": self.consumer.name, "message_id": message_id,
                                                      "routing_key": routing_key, "attempt": attempt})

    async def _retry(self, message: Received, acks: AckWindow, event: Event, failed: Exception) -> None:
        """A staged delivery that failed (its first try, its batch's COMMIT, or its event when the batch was
        applied again), in a task of its own (`_spawn`): the rest of its retry policy, then its outcome."""
        async with self._semaphore:
            outcome = await self.delivery.handle(event, failed)
            await self._settle(message, acks, outcome, event.routing_key, event.message_id, event.attempt)

    @staticmethod
    def _decode(message: Received) -> Event:
        return decode(message.body, routing_key=message.routing_key, exchange=message.exchange,
                      message_id=message.message_id, type_=message.type, headers=message.headers,
                      redelivered=message.redelivered)

    async def _process(self, message: Received, acks: AckWindow, span: Span | None = None) -> None:
        try:
            event = self._decode(message)
        except MalformedEvent as exc:
            outcome: Outcome = Park(self.topology.parked, error_text(exc), 1, permanent=True)
            routing_key, message_id, attempt = message.type or message.routing_key or "", message.message_id or "", 1
        else:
            outcome = await self.delivery.handle(event)
            routing_key, message_id, attempt = event.routing_key, event.message_id, event.attempt
        await self._settle(message, acks, outcome, routing_key, message_id, attempt, span)

    async def _settle(self, message: Received, acks: AckWindow, outcome: Outcome, routing_key: str,
                      message_id: str, attempt: int, span: Span | None = None) -> None:
        """Act on the outcome: republish a retry or a park (confirmed), then ack; hand back what could not
        be republished."""
        headers = message.headers
        ids = {"consumer": self.consumer.name, "message_id": message_id, "routing_key": routing_key}
        if span is not None:
            _span_outcome(span, outcome, routing_key=routing_key, message_id=message_id, attempt=attempt)
        if not isinstance(outcome, Done):
            try:
                if span is None:
                    await self._republish(message, outcome, headers, routing_key)
                else:
                    await self._republish_traced(message, outcome, headers, routing_key)
            except Exception as exc:
                log.error("republish_failed", extra={**ids, "queue": outcome.queue, "error": error_text(exc)})
                if span is not None:
                    span.set_attribute("tradevine.republish_failed", error_text(exc))
                await self._hand_back(message, acks)
                return
        try:  # with the others settled in this pass of the loop: one frame for a batch
            await acks.ack(message.delivery_tag)
        except Exception as exc:  # the channel went away: the broker redelivers, the guards skip it
            log.warning("ack_failed", extra={**ids, "error": error_text(exc)})
            if span is not None:
                span.set_attribute("tradevine.ack_failed", error_text(exc))
            return
        if isinstance(outcome, Done):
            self._done(outcome.verdict, message_id, routing_key, attempt)
            return
        self.metrics.count(self.consumer.name, outcome.label)
        if isinstance(outcome, Park):
            log.warning("event_parked", extra={**ids, "queue": outcome.queue, "attempt": outcome.attempt,
                                               "permanent": outcome.permanent, "error": outcome.error})
        else:
            log.info("event_retried", extra={**ids, "queue": outcome.queue, "attempt": outcome.attempt,
                                             "error": outcome.error})

    async def _republish(self, message: Received, outcome: Outcome,
                         headers: dict[str, Any], routing_key: str) -> None:
        assert not isinstance(outcome, Done) and self._channel is not None
        copy = aio_pika.Message(
            body=message.body,
            headers=copy_headers(headers, outcome, failed_at=self.clock()),  # type: ignore[arg-type]
            content_type=message.content_type or wire.CONTENT_TYPE,
            content_encoding=message.content_encoding,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            timestamp=message.timestamp,
            type=routing_key,
            app_id=message.app_id,
            correlation_id=message.correlation_id,
        )
        await asyncio.wait_for(
            self._channel.default_exchange.publish(copy, routing_key=outcome.queue, mandatory=True),
            CONFIRM_TIMEOUT)

    async def _republish_traced(self, message: Received, outcome: Outcome,
                                headers: dict[str, Any], routing_key: str) -> None:
        """The copy to a delay tier or to parking as a PRODUCER span.

        The copy keeps the message's `traceparent`, so the next attempt is a sibling of this one in the
        same trace; a message that came without one gets this attempt's, so its attempts share a trace.
        """
        from opentelemetry.trace import SpanKind

        from gateway import otel

        assert self.tracer is not None and not isinstance(outcome, Done)
        with self.tracer.start_as_current_span(
                f"publish {outcome.queue}", kind=SpanKind.PRODUCER,
                attributes={otel.MESSAGING_SYSTEM: "rabbitmq", otel.DESTINATION: "", otel.OPERATION: "send",
                            otel.ROUTING_KEY: outcome.queue}):
            if tracing.header_text(headers.get(tracing.TRACEPARENT)) is None:
                carried: dict[str, str] = {}
                otel.inject(carried)
                headers = {**headers, **carried}
            await self._republish(message, outcome, headers, routing_key)


def _span_outcome(span: Span, outcome: Outcome, *, routing_key: str, message_id: str, attempt: int) -> None:
    from opentelemetry.trace import StatusCode

    from gateway import otel

    span.set_attributes({otel.ROUTING_KEY: routing_key, otel.MESSAGE_ID: message_id, otel.ATTEMPT: attempt,
                         otel.OUTCOME: outcome.label})
    if not isinstance(outcome, Done):
        span.set_status(StatusCode.ERROR, outcome.error)


async def serve(consumer: Consumer, settings: ConsumerSettings, *, stop: asyncio.Event | None = None,
                tracer_provider: TracerProvider | None = None) -> None:
    """Run until SIGTERM/SIGINT (or `stop` is set), with the HTTP probes when enabled."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    runner = Runner(consumer, settings, tracer_provider=tracer_provider)
    http = (HealthServer(settings.http_host, settings.http_port, ready=runner.ready,
                         registry=runner.metrics.registry) if settings.http_port else None)
    if http is not None:
        await http.start()
    try:
        await runner.start()
        await stop.wait()
        await runner.stop()
    finally:
        if http is not None:
            await http.close()
