"""The runner's own subscription on a real RabbitMQ: acks coalesced per batch, renewed when the broker ends it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from consumers.runner import topology_for
from consumers.services.inventory import inventory
from consumers.topology import declare
from tests.integration.consumer_helpers import T0, Broker, Names, body, eventually, outgoing, rows, running
from tests.integration.consumer_helpers import settings as consumer_settings

pytestmark = pytest.mark.integration


async def test_a_burst_is_acked_in_fewer_frames_than_events_and_nothing_stays_unacked(
        amqp_url: str, names: Names, tmp_path: Path) -> None:
    database = tmp_path / "inventory.sqlite3"
    count = 300
    chosen = consumer_settings(amqp_url, names, database, batch_size=64)
    async with Broker(amqp_url, names) as broker:
        assert broker.channel is not None
        await declare(broker.channel, topology_for(inventory, chosen))
        for number in range(count):  # all waiting before the consumer starts: its batches fill up
            await broker.publish(outgoing(body("product.updated", date=T0 + timedelta(seconds=number),
                                               object_id=3451582911247500000 + number % 50)))
        async with running(inventory, chosen) as runner:
            await eventually(lambda: len(rows(database, "SELECT 1 FROM consumer_applied")) == count,
                             what="every event applied")
            await eventually(lambda: runner._acks is not None and runner._acks.open == 0, what="every ack written")
            frames = runner._acks.frames if runner._acks is not None else count
        # Stopped: anything left unacked would be back in the queue now.
        await eventually(lambda: broker.holds(names.queue, 0), what="the queue empty after the stop")
    assert frames < count / 4, f"{frames} ack frames for {count} events"


async def test_a_subscription_the_broker_ends_is_renewed_and_consuming_resumes(
        amqp_url: str, names: Names, tmp_path: Path) -> None:
    """Deleting the queue cancels the subscription: the runner declares it again and consumes from it."""
    database = tmp_path / "inventory.sqlite3"
    async with Broker(amqp_url, names) as broker, \
            running(inventory, consumer_settings(amqp_url, names, database)) as runner:
        await eventually(lambda: broker.consumers(names.queue), what="subscribed")
        assert broker.channel is not None
        await broker.channel.queue_delete(names.queue)
        await eventually(lambda: broker.consumers(names.queue), what="subscribed again")
        await eventually(runner.ready, what="ready again")
        await broker.publish(outgoing(body("product.created", date=T0)))
        await eventually(lambda: len(rows(database, "SELECT 1 FROM products")) == 1, what="applied")
