"""End to end: gateway + inventory + orders as processes; `send-test-event` for all ten event types.

Webhook (signed) → gateway → RabbitMQ (confirmed) → each service's queue by binding → SQLite.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway import wire
from tests.integration.consumer_helpers import Broker, ConsumerProcess, Names, delete_all, eventually, rows
from tests.integration.processes import GatewayProcess, send

pytestmark = pytest.mark.integration
ORG, PRODUCT, ORDER = "3479979772659009354", "3451582911247567682", "3479979772702215467"
PRODUCT_KEYS = [key for key in wire.EVENT_TYPES.values() if key.startswith("product.")]
ORDER_KEYS = [key for key in wire.EVENT_TYPES.values() if key.startswith("sales_order.")]


@pytest.fixture
async def names(amqp_url: str, unique: str) -> AsyncIterator[tuple[Names, Names]]:
    exchange = f"test.e2e.{unique}"
    chosen = (Names(exchange, f"inventory-{unique}"), Names(exchange, f"orders-{unique}"))
    yield chosen
    for each in chosen:
        await delete_all(amqp_url, each)


@pytest.fixture
def services(amqp_url: str, names: tuple[Names, Names], tmp_path: Path) -> Iterator[dict[str, Path]]:
    databases: dict[str, Path] = {}
    started: list[ConsumerProcess] = []
    for service, each in zip(("inventory", "orders"), names, strict=True):
        databases[service] = tmp_path / f"{service}.sqlite3"
        env = {"AMQP_URL": amqp_url, "GATEWAY_EXCHANGE": each.exchange, "CONSUMER_QUEUE": each.queue,
               "CONSUMER_DATABASE": str(databases[service]), "CONSUMER_HTTP_PORT": "0",
               "CONSUMER_RETRY_DELAYS": "1"}
        started.append(ConsumerProcess(service, env, tmp_path / f"{service}.log").start())
    yield databases
    for process in started:
        process.signal(signal.SIGTERM)
    for process in started:
        assert asyncio.run(process.wait()) == 0
        process.stop()


async def test_all_ten_event_types_reach_the_stores(amqp_url: str, names: tuple[Names, Names],
                                                    services: dict[str, Path], tmp_path: Path) -> None:
    stock, sales = services["inventory"], services["orders"]
    inventory_names, orders_names = names
    async with Broker(amqp_url, inventory_names) as broker:
        await eventually(lambda: broker.consumers(inventory_names.queue), what="inventory consuming")
        await eventually(lambda: broker.consumers(orders_names.queue), what="orders consuming")
        with GatewayProcess(amqp_url, inventory_names.exchange, log_path=tmp_path / "gateway.log") as gateway:
            for key in [*PRODUCT_KEYS, *ORDER_KEYS]:
                assert send(gateway.url, key).startswith('200 {"status":"accepted"')
            await eventually(lambda: len(rows(stock, "SELECT 1 FROM consumer_applied")) == 5
                             and len(rows(sales, "SELECT 1 FROM consumer_applied")) == 5, what="ten applied")
        assert sorted(r[0] for r in rows(stock, "SELECT routing_key FROM consumer_applied")) == sorted(PRODUCT_KEYS)
        assert sorted(r[0] for r in rows(sales, "SELECT routing_key FROM consumer_applied")) == sorted(ORDER_KEYS)
        assert rows(stock, "SELECT organisation_id, product_id, code, quantity_in_stock, is_archived, is_deleted, "
                           "last_routing_key FROM products") == [
            (ORG, PRODUCT, "MSP-152", 100.0, 1, 1, "product.deleted")]
        assert rows(stock, "SELECT warehouse_id, warehouse_code FROM product_warehouse_stock") == [
            ("3479979772661223344", "WH1")]
        assert rows(sales, "SELECT organisation_id, sales_order_id, order_number, status, last_routing_key "
                           "FROM orders") == [(ORG, ORDER, "SO1042", 12003, "sales_order.shipment.confirmed")]
        assert rows(sales, "SELECT line_id FROM order_lines") == [("3479979772702215501",)]
        shipments = rows(sales, "SELECT pack_list_id, status, courier, tracking_reference FROM shipments")
        assert shipments == [("3479979772702215610", 14003, "NZ Post", "NZP123456789NZ")]
        assert rows(sales, "SELECT shipped_date IS NOT NULL FROM shipments") == [(1,)]
        for queue in (inventory_names.queue, orders_names.queue):
            assert await broker.count(f"{queue}.parked") == 0
        assert await broker.count(wire.unrouted_name(inventory_names.exchange)) == 0
