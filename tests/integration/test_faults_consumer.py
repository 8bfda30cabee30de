"""Fault injection on the consumer side, through the real gateway and the `inventory` service as processes.

A consumer SIGKILLed under load and restarted loses nothing and applies each event once; a poison
message among good ones is parked after the configured attempts while the good ones are applied.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway import sample, wire
from tests.integration.consumer_helpers import Broker, ConsumerProcess, Names, delete_all, eventually, rows
from tests.integration.processes import GatewayProcess
from tests.integration.test_faults import Load

pytestmark = [pytest.mark.integration, pytest.mark.fault]

PRODUCT_KEYS = tuple(key for key in wire.EVENT_TYPES.values() if key.startswith("product."))
BASE_ID = 3_100_000_000_000_000_000


@pytest.fixture
async def names(amqp_url: str, unique: str) -> AsyncIterator[Names]:
    chosen = Names(exchange=f"test.faults.consumer.{unique}", queue=f"inventory-{unique}")
    yield chosen
    await delete_all(amqp_url, chosen)


@pytest.fixture
def inventory(amqp_url: str, names: Names, tmp_path: Path) -> Iterator[Inventory]:
    service = Inventory(amqp_url, names, tmp_path)
    yield service
    service.stop()


class Inventory:
    """`python -m consumers run inventory` on this test's queue and SQLite file; restartable."""

    def __init__(self, amqp_url: str, names: Names, directory: Path) -> None:
        self.database = directory / "inventory.sqlite3"
        self.log = directory / "inventory.log"
        self.env = {"AMQP_URL": amqp_url, "GATEWAY_EXCHANGE": names.exchange, "CONSUMER_QUEUE": names.queue,
                    "CONSUMER_DATABASE": str(self.database), "CONSUMER_HTTP_PORT": "0",
                    "CONSUMER_RETRY_DELAYS": "1,2"}
        self.process: ConsumerProcess | None = None

    def start(self) -> ConsumerProcess:
        self.process = ConsumerProcess("inventory", self.env, self.log).start()
        return self.process

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def applied(self) -> list[str]:
        return [row[0] for row in rows(self.database, "SELECT message_id FROM consumer_applied")]

    def products(self) -> int:
        found = rows(self.database, "SELECT COUNT(*) FROM products")
        return int(found[0][0]) if found else 0


def product_body(number: int, **product: object) -> bytes:
    payload = sample.body_for(PRODUCT_KEYS[number % len(PRODUCT_KEYS)], object_id=BASE_ID + number)
    payload["Product"].update(product)
    return json.dumps(payload, separators=(",", ":")).encode()  # exact integers of any size


def with_resends(count: int) -> Iterator[bytes]:
    """`count` distinct bodies; every fifth is followed by an identical resend (as Tradevine retries)."""
    for number in range(count):
        body = product_body(number)
        yield body
        if number % 5 == 0:
            yield body


async def test_a_consumer_killed_under_load_loses_nothing_and_applies_each_event_once(
        amqp_url: str, names: Names, inventory: Inventory, tmp_path: Path) -> None:
    async with Broker(amqp_url, names) as broker:
        first = inventory.start()
        await eventually(lambda: broker.consumers(names.queue), what="inventory consuming")
        with GatewayProcess(amqp_url, names.exchange, log_path=tmp_path / "gateway.log") as gateway:
            load = Load(gateway.url, senders=8, bodies=with_resends(1500))
            with load:
                await eventually(lambda: len(inventory.applied()) >= 150, 30, "150 applied")
                first.signal(signal.SIGKILL)
                assert await first.wait() == -signal.SIGKILL
                killed_with = len(inventory.applied())
                inventory.start()
                await asyncio.to_thread(load.join)  # every body sent
        accepted = {answer.message_id for answer in load.answers if answer.status == 200}
        await eventually(lambda: set(inventory.applied()) >= accepted, 60, "every accepted event applied")
        await eventually(lambda: broker.holds(names.queue, 0), 30, "queue drained")
        applied = inventory.applied()

        assert {answer.status for answer in load.answers} == {200}, load.summary()
        assert len(load.answers) == 1800
        assert killed_with < len(accepted)  # the kill came while events were still arriving
        assert len(applied) == len(set(applied)) == len(accepted)
        assert set(applied) == accepted
        assert inventory.products() == len(accepted)
        assert await broker.count(f"{names.queue}.parked") == 0


async def test_a_poison_message_is_parked_after_its_attempts_and_the_good_ones_are_applied(
        amqp_url: str, names: Names, inventory: Inventory, tmp_path: Path) -> None:
    good = [product_body(number) for number in range(40)]
    # An exact 401-digit integer: the gateway publishes it as received, the handler's float() overflows.
    poison = product_body(1000, QuantityInStock=10**400)
    bodies = iter([*good[:20], poison, *good[20:]])
    async with Broker(amqp_url, names) as broker:
        inventory.start()
        await eventually(lambda: broker.consumers(names.queue), what="inventory consuming")
        with GatewayProcess(amqp_url, names.exchange, log_path=tmp_path / "gateway.log") as gateway:
            load = Load(gateway.url, senders=4, bodies=bodies)
            with load:
                await eventually(lambda: len(load.answers) == 41, 30, "all sent")
        good_ids = {hashlib.sha256(body).hexdigest() for body in good}
        poison_id = hashlib.sha256(poison).hexdigest()
        await eventually(lambda: broker.holds(f"{names.queue}.parked", 1), 30, "poison parked")
        parked = await broker.take(f"{names.queue}.parked")

        assert {answer.status for answer in load.answers} == {200}, load.summary()
        assert set(inventory.applied()) == good_ids
        assert inventory.products() == len(good)
        assert parked is not None and parked.message_id == poison_id
        headers = dict(parked.headers)
        assert headers[wire.H_ATTEMPT] == "3"  # the first delivery, then the 1 s and 2 s tiers
        assert "OverflowError" in str(headers[wire.H_ERROR])
        assert await broker.count(names.queue) == 0
