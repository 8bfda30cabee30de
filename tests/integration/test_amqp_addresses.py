"""AMQP_URL with several addresses against a real RabbitMQ: a dead first address, a node that drops the connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aio_pika
import pytest

from gateway import amqp_addresses, wire
from gateway.message import Outgoing
from gateway.publisher import AmqpPublisher
from tests.integration.brokers import free_port

pytestmark = pytest.mark.integration


def _with_hosts(url: str, *hosts: str) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return f"{parts.scheme}://{userinfo}@{','.join(hosts)}{parts.path or '/'}"


async def two_relays(amqp_url: str) -> tuple[Relay, Relay, str]:
    """Two relays to the broker, started, and an AMQP_URL naming both (the first first)."""
    parts = urlsplit(amqp_url)
    target = (parts.hostname or "127.0.0.1", parts.port or 5672)
    first, second = Relay(target), Relay(target)
    await first.start()
    await second.start()
    return first, second, _with_hosts(amqp_url, f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}")


class Relay:
    """A TCP relay to the broker standing in for one cluster node: `kill()` drops it and its connections."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def kill(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()


async def test_a_dead_first_address_still_connects_and_publishes(amqp_url: str, unique: str) -> None:
    parts = urlsplit(amqp_url)
    url = _with_hosts(amqp_url, f"127.0.0.1:{free_port()}", f"{parts.hostname}:{parts.port or 5672}")
    exchange = f"test.addresses.{unique}"
    publisher = AmqpPublisher(url, exchange=exchange, timeout=3.0)
    await publisher.start()
    try:
        assert publisher.ready()
        async with await aio_pika.connect(amqp_url) as connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind(exchange, "#")
            await publisher.publish(Outgoing(body=b"{}", routing_key="product.created", headers={},
                                             message_id=unique, timestamp=datetime.now(UTC)))
            message = await queue.get(timeout=5)
            assert message.message_id == unique
            await channel.exchange_delete(exchange)
            await channel.queue_delete(wire.unrouted_name(exchange))
    finally:
        await publisher.close()


async def test_a_lost_connection_reconnects_to_the_next_address(amqp_url: str) -> None:
    first, second, url = await two_relays(amqp_url)
    connection = await amqp_addresses.connect_robust(url, reconnect_interval=0.2)
    try:
        assert (first.accepted, second.accepted) == (1, 0)
        await first.kill()
        async with asyncio.timeout(10):
            while not (second.accepted and connection.connected.is_set()):
                await asyncio.sleep(0.05)
        channel = await connection.channel()
        await channel.declare_queue(exclusive=True)
    finally:
        await connection.close()
        await second.kill()


async def test_the_publisher_logs_the_loss_and_the_address_it_reconnected_to(
        amqp_url: str, unique: str, caplog: pytest.LogCaptureFixture) -> None:
    first, second, url = await two_relays(amqp_url)
    parts = urlsplit(amqp_url)
    exchange = f"test.addresses.{unique}"
    publisher = AmqpPublisher(url, exchange=exchange, timeout=3.0, reconnect_interval=0.2)
    caplog.set_level(logging.INFO, logger="gateway.publisher")
    await publisher.start()
    try:
        await first.kill()
        async with asyncio.timeout(10):
            while not (publisher.reconnects and publisher.ready()):
                await asyncio.sleep(0.05)
        await publisher.publish(Outgoing(body=b"{}", routing_key="product.created", headers={},
                                         message_id=unique, timestamp=datetime.now(UTC)))
        assert publisher.reconnects == 1
    finally:
        await publisher.close()  # closing on purpose is not a loss
        await second.kill()
        async with await aio_pika.connect(amqp_url) as connection:
            channel = await connection.channel()
            await channel.exchange_delete(exchange)
            await channel.queue_delete(wire.unrouted_name(exchange))
            await channel.exchange_delete(wire.unrouted_name(exchange))
    events = [(r.msg, getattr(r, "url", "")) for r in caplog.records if r.name == "gateway.publisher"
              and r.msg in ("broker_connection_lost", "broker_reconnected")]
    path = parts.path or "/"  # the vhost as the URL names it (`/` or `/%2F`)
    assert events == [("broker_connection_lost", f"amqp://{parts.username}:***@127.0.0.1:{first.port}{path}"),
                      ("broker_reconnected", f"amqp://{parts.username}:***@127.0.0.1:{second.port}{path}")]
