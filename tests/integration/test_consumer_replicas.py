"""Two `tradevine-consumers run inventory` processes on one queue and one PostgreSQL database.

Several snapshots per product, published out of date order; one replica is SIGKILLed mid-batch, the
other (and a replacement) finish: every product ends at its newest snapshot, each message is recorded
once, nothing is parked or left in a retry queue.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import postgres
from tests.integration.consumer_helpers import T0, Broker, ConsumerProcess, Names, body, eventually, outgoing

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.postgres]

PRODUCTS = 250
SNAPSHOTS = 6  # per product, a minute apart
BASE_ID = 3_200_000_000_000_000_000
KEYS = ("product.updated", "product.inventory.ats_updated", "product.inventory.warehouse_stock_updated")


@pytest.fixture
def database(postgres_url: str) -> Iterator[str]:
    """A database of this test's own (the service's tables go in schema `inventory`)."""
    with postgres.database(postgres.server_url(), "tvg_replicas") as url:
        yield url


def read(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SET search_path TO inventory")
        try:
            return connection.execute(sql).fetchall()  # type: ignore[arg-type]  # the test's own SQL
        except psycopg.errors.UndefinedTable:
            return []


def applied_count(url: str) -> int:
    found = read(url, "SELECT count(*) FROM consumer_applied")
    return int(found[0][0]) if found else 0


@pytest.fixture
def replicas() -> Iterator[list[ConsumerProcess]]:
    started: list[ConsumerProcess] = []
    yield started
    for process in started:
        process.stop()


async def test_two_replicas_one_killed_mid_batch_end_with_every_product_at_its_newest_snapshot(
        amqp_url: str, names: Names, database: str, tmp_path: Path, replicas: list[ConsumerProcess]) -> None:
    env = {"AMQP_URL": amqp_url, "GATEWAY_EXCHANGE": names.exchange, "CONSUMER_QUEUE": names.queue,
           "CONSUMER_DATABASE": database, "CONSUMER_HTTP_PORT": "0", "CONSUMER_RETRY_DELAYS": "1,2",
           "CONSUMER_BATCH_SIZE": "32", "CONSUMER_BATCH_MAX_WAIT_MS": "20", "CONSUMER_PREFETCH": "64"}

    def start(number: int) -> ConsumerProcess:
        process = ConsumerProcess("inventory", env, tmp_path / f"replica-{number}.log").start()
        replicas.append(process)
        return process

    messages = []
    newest: dict[str, tuple[str, float]] = {}
    for product in range(PRODUCTS):
        for minute in range(SNAPSHOTS):
            quantity = float(product * 100 + minute)
            payload = body(KEYS[minute % len(KEYS)], date=T0 + timedelta(minutes=minute),
                           object_id=BASE_ID + product)
            payload["Product"]["QuantityInStock"] = quantity
            messages.append(outgoing(payload))
            newest[str(BASE_ID + product)] = (payload["EventDateUtc"], quantity)
    random.Random(9).shuffle(messages)  # out of date order, and spread over both replicas

    async with Broker(amqp_url, names) as broker:
        first, second = start(1), start(2)
        async def both_consuming() -> bool:
            return await broker.consumers(names.queue) == 2

        await eventually(both_consuming, 30, "both replicas consuming")
        for message in messages:
            await broker.publish(message)
        await eventually(lambda: applied_count(database) >= 200, 60, "200 applied")
        first.signal(signal.SIGKILL)  # mid-batch: its open transaction dies with it, its messages come back
        assert await first.wait() == -signal.SIGKILL
        assert applied_count(database) < len(messages)
        start(3)  # a replacement joins the survivor

        def stored() -> dict[str, tuple[str, float]]:
            return {row[0]: (row[1], row[2]) for row in read(
                database, "SELECT product_id, last_event_date, quantity_in_stock FROM products")}

        # Every product at its newest snapshot (the queue's ready count says nothing of unacked deliveries).
        await eventually(lambda: stored() == newest, 120, "every product at its newest snapshot")
        await eventually(lambda: broker.holds(names.queue, 0), 30, "queue drained")
        recorded = [row[0] for row in read(database, "SELECT message_id FROM consumer_applied")]
        assert len(recorded) == len(set(recorded)) <= len(messages)  # each message recorded at most once
        assert set(recorded) <= {m.message_id for m in messages}
        assert await broker.count(f"{names.queue}.parked") == 0
        for seconds in (1, 2):
            assert await broker.count(f"{names.queue}.retry.{seconds}s") == 0
        assert second.process is not None and second.process.poll() is None  # the survivor never fell over
        logs = "".join((tmp_path / f"replica-{n}.log").read_text() for n in (1, 2, 3))
        assert "event_parked" not in logs and "handler_failed" not in logs
