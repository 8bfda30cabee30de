"""Confirmed, persistent publishing to the topic exchange: the gateway's only I/O.

`AmqpPublisher` keeps a robust connection (reconnecting on its own after a broker restart) and a pool
of confirm channels. `publish()` returns only once RabbitMQ confirmed the message, and raises
`BrokerUnavailable` on a lost connection, a timeout, a nack or a return. `InMemoryPublisher` stands
in for it in unit tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import Callable
from typing import Protocol

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
)
from pamqp.commands import Basic

from gateway import amqp_addresses, wire
from gateway.amqp_properties import amqp_properties
from gateway.amqp_tls import connect_error_text, tls_error
from gateway.errors import BrokerUnavailable, TopologyMissing
from gateway.message import Outgoing
from gateway.wire import redact_url

log = logging.getLogger("gateway.publisher")
RENEW_SPACING = 0.25  # seconds: a channel nacked again soon after it was replaced is replaced again after this


class Publisher(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def ready(self) -> bool: ...

    async def publish(self, message: Outgoing) -> None: ...


async def declare_topology(channel: aio_pika.abc.AbstractChannel, exchange: str) -> AbstractRobustExchange:
    """Declare the topic exchange, its fanout alternate exchange and the unrouted quorum queue."""
    unrouted = wire.unrouted_name(exchange)
    alternate = await channel.declare_exchange(unrouted, aio_pika.ExchangeType.FANOUT, durable=True)
    queue = await channel.declare_queue(unrouted, durable=True, arguments={"x-queue-type": "quorum"})
    await queue.bind(alternate, routing_key="")
    main = await channel.declare_exchange(
        exchange, aio_pika.ExchangeType.TOPIC, durable=True,
        arguments={"alternate-exchange": unrouted})
    return main  # type: ignore[return-value]


async def ensure_topology(connection: AbstractConnection, exchange: str) -> AbstractChannel | None:
    """Declare the topology, or, for a user not allowed to, check that the exchange exists.

    With least privilege only the gateway's broker user may configure the exchange; a consumer's or
    the reconciler's user gets ACCESS_REFUSED, and then a passive declare (which needs no permission)
    checks that the gateway has declared it. Returns the channel the topology was declared on, to keep
    open (a robust channel declares it again after a reconnect), or None when it was only checked.
    Raises `TopologyMissing` when the exchange does not exist and this user may not declare it.
    """
    channel = await connection.channel()
    try:
        await declare_topology(channel, exchange)
        return channel
    except aiormq.exceptions.ChannelAccessRefused as exc:
        refused = str(exc.args[0]) if exc.args else str(exc)
        await channel.close()
    check = await connection.channel()
    try:
        await check.declare_exchange(exchange, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise TopologyMissing(
            f"exchange {exchange!r} does not exist and this RabbitMQ user may not declare it ({refused}); "
            "start the gateway first (its user declares the exchange) or grant configure on it.") from None
    finally:
        if not check.is_closed:
            await check.close()
    log.debug("topology_checked", extra={"exchange": exchange, "declare_refused": refused})
    return None


# A content header frame's payload: class id, weight, body size, then the properties.
_CONTENT_HEADER = 12


class FrameTooLarge(ValueError):
    pass


def fitting_properties(message: Outgoing, max_payload: int) -> Basic.Properties:
    """The message's properties, measured before they are written: a content header frame larger than the
    broker's negotiated frame_max makes RabbitMQ close the whole (shared) connection.

    Header values from the payload are bounded (`wire.MAX_HEADER_VALUE_BYTES`), so with any frame_max
    RabbitMQ accepts (4096 and up) they fit; should they not, the message goes without them (named in
    `tradevine-truncated`; the body still carries them), and FrameTooLarge is raised only if even that
    does not fit. `max_payload` is aiormq's `max_content_size` (frame_max less the frame's 8 bytes).
    """
    properties = amqp_properties(message)
    if _CONTENT_HEADER + len(properties.marshal()) <= max_payload:
        return properties
    dropped = [name for name in wire.PAYLOAD_HEADERS if name in message.headers]
    headers = {k: v for k, v in message.headers.items() if k not in dropped}
    headers[wire.H_TRUNCATED] = ",".join(dropped)
    log.warning("headers_dropped", extra={"message_id": message.message_id, "frame_payload_max": max_payload,
                                          "headers": dropped})
    properties = amqp_properties(dataclasses.replace(message, headers=headers))
    size = _CONTENT_HEADER + len(properties.marshal())
    if size > max_payload:
        raise FrameTooLarge(f"message properties of {size} bytes exceed the broker's frame_max")
    return properties


class AmqpPublisher:
    """Publishes with confirms over a robust connection; declares the topology at start."""

    def __init__(self, url: str, *, exchange: str = wire.EXCHANGE, timeout: float = 3.0,
                 channels: int = 2, reconnect_interval: float = 1.0,
                 connection_name: str = wire.APP_ID_GATEWAY) -> None:
        self.url = url
        self.connection_name = connection_name
        self.exchange_name = exchange
        self.timeout = timeout
        self.channel_count = max(1, channels)
        self.reconnect_interval = reconnect_interval
        self._connection: AbstractRobustConnection | None = None
        self._channels: list[AbstractRobustChannel] = []
        self._topology: AbstractChannel | None = None
        self._next: Callable[[], int] = itertools.cycle([0]).__next__
        self._connecting: asyncio.Task[None] | None = None
        self._renewing: set[int] = set()  # positions in _channels whose channel is being replaced
        self._renewals: set[asyncio.Task[None]] = set()
        self.renewed = 0  # channels replaced after a nack
        self.reconnects = 0  # connections restored after a loss
        self.last_error: str | None = None  # why the last connection attempt failed, in one line
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        """Connect now if the broker answers, else keep trying in the background (503 meanwhile)."""
        try:
            await self._connect()
        except Exception as exc:
            self._connect_failed(exc)
            self._connecting = asyncio.create_task(self._connect_until_up())

    def _connect_failed(self, exc: Exception) -> None:
        self.last_error = connect_error_text(exc)
        # A TLS failure is a configuration problem (wrong CA, host name): an error, not a warning.
        level = logging.ERROR if tls_error(exc) is not None else logging.WARNING
        log.log(level, "broker_connect_failed", extra={"url": redact_url(self.url), "error": self.last_error})

    async def _connect_until_up(self) -> None:
        while True:
            await asyncio.sleep(self.reconnect_interval)
            try:
                await self._connect()
                return
            except Exception as exc:
                self._connect_failed(exc)

    async def _connect(self) -> None:
        connection = await amqp_addresses.connect_robust(
            self.url, timeout=self.timeout, reconnect_interval=self.reconnect_interval,
            client_properties={"connection_name": self.connection_name})
        try:
            # Declared through a robust channel, so it is declared again after a reconnect (or, for
            # a user that may only publish, checked once).
            self._topology = await ensure_topology(connection, self.exchange_name)
            channels = [await connection.channel(publisher_confirms=True, on_return_raises=True)
                        for _ in range(self.channel_count)]
        except BaseException:
            await connection.close()
            raise
        # Which node the connection is on now, and when it was lost: a node loss reads as lost → reconnected.
        connection.close_callbacks.add(self._connection_lost)
        connection.reconnect_callbacks.add(self._reconnected)
        self._connection, self._channels, self.last_error = connection, channels, None
        self._next = itertools.cycle(range(len(channels))).__next__
        log.info("broker_connected", extra={"url": redact_url(self.url), "exchange": self.exchange_name})

    def _connection_lost(self, connection: object, exc: BaseException | None = None) -> None:
        # None or CancelledError: closed on purpose (shutting down), not lost.
        if self._connection is connection and exc is not None and not isinstance(exc, asyncio.CancelledError):
            log.warning("broker_connection_lost", extra={"url": redact_url(str(getattr(connection, "url", ""))),
                                                         "error": connect_error_text(exc)})

    def _reconnected(self, connection: object) -> None:
        self.reconnects += 1
        log.warning("broker_reconnected", extra={"url": redact_url(str(getattr(connection, "url", "")))})

    def ready(self) -> bool:
        connection = self._connection
        return (connection is not None and not connection.is_closed and connection.connected.is_set()
                and bool(self._channels) and not any(c.is_closed for c in self._channels))

    async def publish(self, message: Outgoing) -> None:
        if not self.ready():
            raise BrokerUnavailable("not connected to RabbitMQ")
        position = self._next()
        channel = self._channels[position]
        self._inflight += 1
        self._idle.clear()
        # Straight to the underlying aiormq channel with pamqp properties: aio-pika's Message and
        # Exchange.publish only add allocations here. aiormq applies the timeout to the write and the
        # confirm with asyncio.timeout (wait_for would cost a task per publish). The connection is up
        # (checked above, nothing awaited since), so getting the channel does not wait.
        try:
            underlay = await channel.get_underlay_channel()
            properties = fitting_properties(message, underlay.max_content_size)  # type: ignore[attr-defined]
            result = await underlay.basic_publish(
                message.body, exchange=self.exchange_name, routing_key=message.routing_key,
                properties=properties, mandatory=True, timeout=self.timeout)
        except TimeoutError:
            raise BrokerUnavailable(f"no confirm within {self.timeout}s") from None
        except FrameTooLarge as exc:
            raise BrokerUnavailable(str(exc)) from None
        except aiormq.exceptions.PublishError as exc:
            raise BrokerUnavailable("message returned as unroutable") from exc
        except aiormq.exceptions.DeliveryError as exc:
            self._renew(position, channel)
            raise BrokerUnavailable("message nacked by the broker") from exc
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise BrokerUnavailable(f"connection lost: {type(exc).__name__}") from exc
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()
        if not isinstance(result, Basic.Ack):
            raise BrokerUnavailable(f"unexpected publish result {type(result).__name__}")

    def _renew(self, position: int, channel: AbstractRobustChannel) -> None:
        """Replace a channel the broker nacked a publish on, in the background.

        A nack is rare (the broker could not enqueue the message), but a channel can keep failing: on
        RabbitMQ 3.x, a channel opened while a quorum queue's leader has just died (a reconnect within
        a fraction of a second of a node loss) keeps sending that queue's messages to the dead leader
        and has every one nacked until the node is back (make fault-cluster). A new channel asks where
        the leader is now. The old channel is closed once its other publishes had time to be confirmed.
        """
        if position in self._renewing or self._connection is None:
            return
        self._renewing.add(position)
        task = asyncio.get_running_loop().create_task(self._replace(position, channel, self._connection))
        self._renewals.add(task)
        task.add_done_callback(self._renewals.discard)

    async def _replace(self, position: int, channel: AbstractRobustChannel,
                       connection: AbstractRobustConnection) -> None:
        try:
            try:
                fresh = await asyncio.wait_for(
                    connection.channel(publisher_confirms=True, on_return_raises=True), self.timeout)
            except Exception as exc:  # the connection is going: its reconnect brings the channels back
                log.warning("channel_renew_failed", extra={"error": connect_error_text(exc)})
                return
            if self._connection is not connection or position >= len(self._channels) \
                    or self._channels[position] is not channel:
                await fresh.close()  # the publisher reconnected or closed meanwhile
                return
            self._channels[position] = fresh
            self.renewed += 1
            log.warning("channel_renewed", extra={"reason": "message nacked by the broker", "channel": position})
            await asyncio.sleep(RENEW_SPACING)  # a nack storm renews a channel at most this often
        finally:  # also when cancelled (the publisher closing): the position can be renewed again
            self._renewing.discard(position)
        await asyncio.sleep(self.timeout)  # the old channel's confirms in flight come in, or time out
        with contextlib.suppress(Exception):
            await channel.close()

    async def close(self) -> None:
        """Wait for in-flight confirms (up to the publish timeout), then close."""
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        renewals = list(self._renewals)
        for task in renewals:
            task.cancel()
        await asyncio.gather(*renewals, return_exceptions=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.timeout)
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
        self._channels, self._topology = [], None


class InMemoryPublisher:
    """Records messages instead of publishing; `fail` makes every publish raise BrokerUnavailable."""

    def __init__(self) -> None:
        self.messages: list[Outgoing] = []
        self.fail: str | None = None
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.started = False

    def ready(self) -> bool:
        return self.started and self.fail is None

    async def publish(self, message: Outgoing) -> None:
        if self.fail is not None:
            raise BrokerUnavailable(self.fail)
        self.messages.append(message)
