"""`NAME.parked`: list and show (without removing), replay into `NAME`, purge.

Looking is `basic.get` without ack, then a requeue: the parked queue's delivery limit is set far
above anything an operator could reach (topology.PARKED_DELIVERY_LIMIT), so looking never drops.
Replay republishes each message, with confirms, through the default exchange straight into queue
`NAME` (only that consumer sees it), keeping `message_id` and the `type` (the routing key),
setting `tradevine-source: replay` and dropping the attempt and error headers; the parked copy is
acked only after the confirm. Messages parked again during a replay are not picked up twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from consumers.errors import BrokerError
from consumers.outcome import replay_headers
from consumers.topology import Topology
from gateway import amqp_addresses, wire
from gateway.wire import redact_url

CONFIRM_TIMEOUT = 10.0
PAGE = 100
"""`parked list` and `parked show` look at this many messages unless given --limit."""


@dataclass(frozen=True, slots=True)
class ParkedMessage:
    message_id: str
    routing_key: str
    attempt: str
    error: str
    failed_at: str
    source: str
    headers: Mapping[str, object] = field(default_factory=dict)
    body: bytes = b""

    def summary(self) -> str:
        return "  ".join((self.message_id[:16] or "-", self.routing_key or "-", f"attempt={self.attempt}",
                          self.failed_at or "-", self.error or "-"))

    def as_json(self) -> str:
        try:
            body: object = json.loads(self.body)
        except ValueError:
            body = self.body.decode("utf-8", "replace")
        return json.dumps({"message_id": self.message_id, "routing_key": self.routing_key,
                           "headers": plain(self.headers), "body": body}, indent=2, ensure_ascii=False)


def plain(value: object) -> Any:
    """AMQP header values as JSON-friendly values."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime):
        return wire.utc_iso(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def describe(message: AbstractIncomingMessage) -> ParkedMessage:
    headers = dict(message.headers or {})
    deaths = headers.get("x-death")
    death: Mapping[str, object] = deaths[0] if isinstance(deaths, list) and deaths and isinstance(
        deaths[0], Mapping) else {}
    keys = death.get("routing-keys")
    routing_key = message.type or (plain(keys[0]) if isinstance(keys, list) and keys else "") or ""
    error = plain(headers.get(wire.H_ERROR)) or (
        f"dead-lettered by the broker ({plain(death.get('reason'))}: redelivered past x-delivery-limit)"
        if death.get("reason") == "delivery_limit" else
        f"dead-lettered by the broker ({plain(death.get('reason'))})" if death else "")
    failed_at = plain(headers.get(wire.H_FAILED_AT)) or (plain(death.get("time")) if death else "")
    return ParkedMessage(
        message_id=message.message_id or "", routing_key=str(routing_key),
        attempt=str(plain(headers.get(wire.H_ATTEMPT)) or "1"), error=str(error), failed_at=str(failed_at),
        source=str(plain(headers.get(wire.H_SOURCE)) or ""), headers=headers, body=message.body)


@contextlib.asynccontextmanager
async def _channel(url: str) -> AsyncIterator[AbstractChannel]:
    try:
        connection = await amqp_addresses.connect(url, client_properties={"connection_name": "tradevine-consumers-cli"})
    except Exception as exc:
        raise BrokerError(f"cannot connect to RabbitMQ at {redact_url(url)} ({exc!r}); check AMQP_URL.") from None
    try:
        yield await connection.channel(publisher_confirms=True, on_return_raises=True)
    finally:
        await connection.close()


async def _parked_queue(channel: AbstractChannel, topology: Topology) -> tuple[AbstractQueue, int]:
    try:
        queue = await channel.declare_queue(topology.parked, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise BrokerError(f"queue {topology.parked!r} does not exist; run `tradevine-consumers run "
                          f"{topology.name}` once to declare it (or check CONSUMER_QUEUE).") from None
    result = queue.declaration_result
    return queue, int(result.message_count or 0)


async def _take(queue: AbstractQueue, count: int) -> list[AbstractIncomingMessage]:
    """Up to `count` messages from the head of the queue, held unacked.

    `count` is at most the depth when the queue was declared, so a message parked again while we work
    (it joins the tail) is not picked up twice; two parked copies of one message_id (at-least-once
    republishing can park both) are both taken.
    """
    taken: list[AbstractIncomingMessage] = []
    while len(taken) < count:
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            break
        taken.append(message)
    return taken


@dataclass(frozen=True, slots=True)
class Page:
    messages: list[ParkedMessage]
    total: int
    """How many messages the parked queue held when we looked."""

    @property
    def more(self) -> int:
        return max(self.total - len(self.messages), 0)


async def peek(url: str, topology: Topology, *, limit: int | None = PAGE) -> Page:
    """The first `limit` parked messages (all with None), left in the queue, and the queue's depth."""
    async with _channel(url) as channel:
        queue, count = await _parked_queue(channel, topology)
        taken = await _take(queue, count if limit is None else min(limit, count))
        described = [describe(m) for m in taken]
        for message in taken:
            await message.nack(requeue=True)
        return Page(described, count)


async def replay(url: str, topology: Topology, *, limit: int | None = None,
                 dry_run: bool = False) -> list[ParkedMessage]:
    """Send parked messages back to queue `NAME`; returns what was (or would be) replayed."""
    async with _channel(url) as channel:
        queue, count = await _parked_queue(channel, topology)
        if not dry_run:
            try:
                await channel.declare_queue(topology.queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                raise BrokerError(f"queue {topology.queue!r} does not exist; run `tradevine-consumers run "
                                  f"{topology.name}` once to declare it.") from None
        taken = await _take(queue, count if limit is None else min(limit, count))
        done: list[ParkedMessage] = []
        for message in taken:
            parked = describe(message)
            if dry_run:
                await message.nack(requeue=True)
                done.append(parked)
                continue
            copy = aio_pika.Message(
                body=message.body, headers=replay_headers(parked.headers),  # type: ignore[arg-type]
                content_type=message.content_type or wire.CONTENT_TYPE,
                content_encoding=message.content_encoding, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message.message_id, timestamp=message.timestamp,
                type=parked.routing_key or None, app_id=message.app_id,
                correlation_id=message.correlation_id)
            try:
                await asyncio.wait_for(channel.default_exchange.publish(
                    copy, routing_key=topology.queue, mandatory=True), CONFIRM_TIMEOUT)
            except Exception as exc:
                raise BrokerError(f"replay of {parked.message_id[:16]} to {topology.queue!r} was not "
                                  f"confirmed ({exc!r}); it stays parked, nothing was lost.") from None
            await message.ack()
            done.append(parked)
        return done


async def purge(url: str, topology: Topology, *, limit: int | None = None) -> int:
    """Delete parked messages (all, or the first `limit`); returns how many."""
    async with _channel(url) as channel:
        queue, count = await _parked_queue(channel, topology)
        if limit is None:
            result = await queue.purge()
            return int(result.message_count or 0)
        taken = await _take(queue, min(limit, count))
        for message in taken:
            await message.ack()
        return len(taken)
