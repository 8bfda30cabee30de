"""The example services against a real RabbitMQ: routing by binding, duplicates, order, deletes, snapshots."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consumers.services.inventory import inventory
from consumers.services.orders import orders
from gateway import wire
from tests.integration.consumer_helpers import Broker, Names, body, delete_all, eventually, outgoing, rows, running
from tests.integration.consumer_helpers import settings as consumer_settings

pytestmark = pytest.mark.integration
T0 = datetime(2025, 3, 18, 21, 0, tzinfo=UTC)


@pytest.fixture
async def names(amqp_url: str, unique: str) -> AsyncIterator[Names]:
    chosen = Names(exchange=f"test.consumers.{unique}", queue=f"svc-{unique}")
    yield chosen
    await delete_all(amqp_url, chosen)
    await delete_all(amqp_url, Names(chosen.exchange, f"{chosen.queue}-orders"))


async def test_each_service_receives_only_its_bound_stream(amqp_url: str, names: Names, tmp_path: Path) -> None:
    stock_db, orders_db = tmp_path / "inventory.sqlite3", tmp_path / "orders.sqlite3"
    orders_names = Names(names.exchange, f"{names.queue}-orders")
    async with (Broker(amqp_url, names) as broker,
                running(inventory, consumer_settings(amqp_url, names, stock_db)) as stock,
                running(orders, consumer_settings(amqp_url, orders_names, orders_db)) as sales):
        await broker.publish(outgoing(body("product.created", date=T0)))
        await broker.publish(outgoing(body("sales_order.status_changed", date=T0)))
        await eventually(lambda: rows(stock_db, "SELECT 1 FROM products") and rows(orders_db, "SELECT 1 FROM orders"),
                         what="both stores written")
        await eventually(lambda: stock.metrics.value("inventory", "applied") == 1
                         and sales.metrics.value("orders", "applied") == 1)
        assert rows(stock_db, "SELECT routing_key FROM consumer_applied") == [("product.created",)]
        assert rows(orders_db, "SELECT routing_key FROM consumer_applied") == [("sales_order.status_changed",)]
        assert await broker.count(f"{names.queue}.parked") == 0
        assert await broker.count(f"{orders_names.queue}.parked") == 0


async def test_duplicates_order_deletes_and_snapshots_end_in_the_newest_state(
        amqp_url: str, names: Names, tmp_path: Path) -> None:
    database = tmp_path / "inventory.sqlite3"
    product_id = 3451582911247560001
    created = outgoing(body("product.created", date=T0, object_id=product_id))
    newer = outgoing(body("product.inventory.ats_updated", date=T0 + timedelta(minutes=2), object_id=product_id,
                          Product={**body("product.created", date=T0, object_id=product_id)["Product"],
                                   "QuantityInStock": 40.0}))
    older = outgoing(body("product.updated", date=T0 + timedelta(minutes=1), object_id=product_id))
    old_snapshot = outgoing(body("product.created", date=T0 + timedelta(minutes=1, seconds=30), object_id=product_id),
                            routing_key=wire.RK_PRODUCT_RECONCILED, source=wire.SOURCE_RECONCILIATION)
    deleted = outgoing(body("product.deleted", date=T0 + timedelta(minutes=3), object_id=product_id))
    async with (Broker(amqp_url, names) as broker,
                running(inventory, consumer_settings(amqp_url, names, database, concurrency=1)) as runner):
        for message in (created, created, newer, older, old_snapshot, newer):
            await broker.publish(message)
        await eventually(lambda: sum(runner.metrics.value("inventory", o)
                                     for o in ("applied", "duplicate", "stale")) == 6, what="six outcomes")
        assert [runner.metrics.value("inventory", o) for o in ("applied", "duplicate", "stale")] == [2, 2, 2]
        assert rows(database, "SELECT quantity_in_stock, is_deleted, last_routing_key FROM products") == [
            (40.0, 0, "product.inventory.ats_updated")]
        await broker.publish(deleted)
        await eventually(lambda: rows(database, "SELECT is_deleted FROM products") == [(1,)], what="deleted")
        snapshot = outgoing(body("product.created", date=T0 + timedelta(minutes=4), object_id=product_id),
                            routing_key=wire.RK_PRODUCT_RECONCILED, source=wire.SOURCE_RECONCILIATION)
        await broker.publish(snapshot)
        await eventually(lambda: rows(database, "SELECT last_source FROM products") == [("reconciliation",)])
        assert rows(database, "SELECT product_id, is_deleted FROM products") == [(str(product_id), 1)]
