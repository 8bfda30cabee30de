"""Shared pieces of the consumer integration tests: names, publishing, waiting, queue peeking."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from consumers import Consumer, ConsumerSettings
from consumers.runner import Runner
from gateway import message as gateway_message
from gateway import sample, wire
from gateway.publisher import declare_topology

APP = "tests.integration.consumer_apps:probe"  # the probe consumer, steered by files
T0 = datetime(2025, 3, 18, 21, 0, tzinfo=UTC)

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Names:
    """One test's own exchange and consumer queue stem."""

    exchange: str
    queue: str

    def all_queues(self, tiers: tuple[int, ...] = (1, 2, 5, 30, 120, 600)) -> list[str]:
        return [self.queue, f"{self.queue}.parked", *(f"{self.queue}.retry.{s}s" for s in tiers),
                wire.unrouted_name(self.exchange)]


async def delete_all(url: str, names: Names) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for queue in names.all_queues():
            await channel.queue_delete(queue)
        for exchange in (names.exchange, wire.unrouted_name(names.exchange)):
            await channel.exchange_delete(exchange)


def settings(url: str, names: Names, database: Path, **changes: Any) -> ConsumerSettings:
    base: dict[str, Any] = {"amqp_url": url, "exchange": names.exchange, "queue": names.queue,
                            "database": str(database), "http_port": 0, "retry_delays": (1, 2)}
    return ConsumerSettings(**{**base, **changes})


def body(routing_key: str, *, date: datetime, object_id: int | None = None,
         **overrides: Any) -> dict[str, Any]:
    """A realistic webhook body (the gateway's own sample builder)."""
    return sample.body_for(routing_key, event_date=date, object_id=object_id, overrides=overrides or None)


def outgoing(payload: Mapping[str, Any] | bytes, *, routing_key: str | None = None,
             source: str = wire.SOURCE_WEBHOOK) -> gateway_message.Outgoing:
    raw = payload if isinstance(payload, bytes) else sample.encode(payload)
    app_id = wire.APP_ID_RECONCILER if source == wire.SOURCE_RECONCILIATION else wire.APP_ID_GATEWAY
    return gateway_message.build(raw, table=wire.EVENT_TYPES, received_at=datetime.now(UTC),
                                 source=source, app_id=app_id, routing_key=routing_key)


def amqp_message(message: gateway_message.Outgoing) -> aio_pika.Message:
    """`message` as an aio-pika Message with the properties the gateway gives it."""
    return aio_pika.Message(
        body=message.body,
        headers=dict(message.headers),
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.routing_key,
        app_id=message.app_id,
    )


class Broker:
    """A test's connection: publish as the gateway does (confirmed, mandatory), peek at queues."""

    def __init__(self, url: str, names: Names) -> None:
        self.url, self.names = url, names
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None

    async def __aenter__(self) -> Broker:
        self.connection = await aio_pika.connect_robust(self.url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        await declare_topology(self.channel, self.names.exchange)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.connection is not None:
            await self.connection.close()

    async def publish(self, message: gateway_message.Outgoing) -> None:
        assert self.channel is not None
        exchange = await self.channel.get_exchange(self.names.exchange, ensure=False)
        await exchange.publish(amqp_message(message), message.routing_key, mandatory=True)

    async def count(self, queue: str) -> int:
        assert self.connection is not None
        channel = await self.connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
            return int(declared.declaration_result.message_count or 0)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return -1
        finally:
            if not channel.is_closed:
                await channel.close()

    async def consumers(self, queue: str) -> int:
        assert self.connection is not None
        channel = await self.connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
            return int(declared.declaration_result.consumer_count or 0)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return 0
        finally:
            if not channel.is_closed:
                await channel.close()

    async def holds(self, queue: str, count: int) -> bool:
        return await self.count(queue) == count

    async def take(self, queue: str) -> aio_pika.abc.AbstractIncomingMessage | None:
        """Remove and return one message (acked)."""
        assert self.connection is not None
        channel = await self.connection.channel()
        try:
            found = await (await channel.declare_queue(queue, passive=True)).get(no_ack=True, fail=False)
            return found
        finally:
            await channel.close()


async def eventually(condition: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float = 15.0,
                     what: str = "condition") -> None:
    """Poll until `condition()` is true (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(consumer: Consumer, consumer_settings: ConsumerSettings) -> AsyncIterator[Runner]:
    runner = Runner(consumer, consumer_settings)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


def rows(database: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if not database.exists():
        return []
    connection = sqlite3.connect(database, timeout=5)
    try:
        return connection.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # table not created yet
        return []
    finally:
        connection.close()


class ConsumerProcess:
    """`python -m consumers --app ... run NAME` as a real process."""

    def __init__(self, name: str, env: Mapping[str, str], log: Path, *, app: str | None = None) -> None:
        self.argv = [sys.executable, "-m", "consumers", *(["--app", app] if app else []), "run", name]
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ConsumerProcess:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=log, cwd=ROOT)
        return self

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        await eventually(lambda: self.process is not None and self.process.poll() is not None, timeout,
                         "consumer process exit")
        return self.process.returncode

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
