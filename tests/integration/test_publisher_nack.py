"""A channel the broker nacked a publish on is replaced, so a channel stuck nacking cannot outlast a node loss."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aio_pika
import pytest

from gateway import wire
from gateway.message import Outgoing
from gateway.publisher import AmqpPublisher, BrokerUnavailable

pytestmark = pytest.mark.integration


def outgoing(number: int) -> Outgoing:
    return Outgoing(body=b"{}", routing_key="product.created", headers={}, message_id=f"m{number}",
                    timestamp=datetime.now(UTC))


async def test_a_nacked_publish_gets_503_and_its_channel_is_replaced(amqp_url: str, unique: str) -> None:
    exchange = f"test.nack.{unique}"
    publisher = AmqpPublisher(amqp_url, exchange=exchange, timeout=3.0, channels=1)
    await publisher.start()
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        # Full after one message, and full means nack (as a quorum queue without a leader answers).
        queue = await channel.declare_queue(f"test.nack.{unique}", durable=True, arguments={
            "x-queue-type": "quorum", "x-max-length": 1, "x-overflow": "reject-publish"})
        await queue.bind(exchange, "#")
        nacked = publisher._channels[0]
        with pytest.raises(BrokerUnavailable, match="nacked"):  # a quorum queue counts its length lazily
            for number in range(5):
                await publisher.publish(outgoing(number))
        async with asyncio.timeout(10):
            while publisher._channels[0] is nacked:
                await asyncio.sleep(0.02)
        assert publisher.renewed == 1 and publisher.ready()
        await queue.purge()
        await publisher.publish(outgoing(3))  # on the new channel
        assert (await queue.get(timeout=5)).message_id == "m3"
    finally:
        await publisher.close()
        channel = await connection.channel()
        await channel.queue_delete(f"test.nack.{unique}")
        await channel.queue_delete(wire.unrouted_name(exchange))
        await channel.exchange_delete(exchange)
        await channel.exchange_delete(wire.unrouted_name(exchange))
        await connection.close()
