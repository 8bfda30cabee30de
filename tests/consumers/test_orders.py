"""The orders service: orders with status, lines and shipments."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator

import pytest

from consumers import Done
from consumers.services.orders import orders
from consumers.store import SqlStore
from consumers.testing import deliver, make_event, open_store
from tests.consumers.conftest import order_body

ORDER = ("3479979772659009354", "3479979772702215467")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SqlStore]:
    """The service on SQLite and on PostgreSQL: the same handlers, unchanged."""
    if request.param == "postgres":
        opened = await open_store(orders, request.getfixturevalue("postgres_url"),
                                  namespace=request.getfixturevalue("pg_namespace"))
    else:
        opened = await open_store(orders)
    yield opened
    await opened.close()


async def test_an_order_is_stored_with_its_lines_and_shipments(store: SqlStore) -> None:
    assert await deliver(orders, make_event(order_body()), store=store) == Done("applied")
    assert await store.query("SELECT organisation_id, sales_order_id, order_number, status, last_routing_key "
                             "FROM orders") == [(*ORDER, "SO1042", 12002, "sales_order.status_changed")]
    assert await store.query("SELECT line_id, line_number, product_id, code, quantity FROM order_lines") == [
        ("3479979772702215501", 1, "3451582911247567682", "MSP-152", 2.0)]
    assert await store.query("SELECT pack_list_id, status, shipped_date, courier, tracking_reference "
                             "FROM shipments") == [("3479979772702215610", 14001, None, None, None)]


async def test_a_confirmed_shipment_records_date_courier_and_tracking(store: SqlStore) -> None:
    await deliver(orders, make_event(order_body()), store=store)
    shipped = order_body("2025-03-20T01:00:00", Status=12003)
    packs = copy.deepcopy(shipped["SalesOrder"]["PackLists"])
    packs[0].update(Status=14003, ShippedDate="2025-03-20T00:59:00", Courier="NZ Post",
                    TrackingReference="NZP123456789NZ")
    shipped["SalesOrder"]["PackLists"] = packs
    shipped["EventType"] = 95010
    assert await deliver(orders, make_event(shipped), store=store) == Done("applied")
    assert await store.query("SELECT status, last_routing_key FROM orders") == [
        (12003, "sales_order.shipment.confirmed")]
    assert await store.query("SELECT status, shipped_date, courier, tracking_reference FROM shipments") == [
        (14003, "2025-03-20T00:59:00", "NZ Post", "NZP123456789NZ")]


async def test_an_older_status_change_after_a_newer_one_leaves_the_newer_status(store: SqlStore) -> None:
    assert await deliver(orders, make_event(order_body("2025-03-20T00:00:00", Status=12003)), store=store) == Done(
        "applied")
    assert await deliver(orders, make_event(order_body("2025-03-19T00:00:00", Status=12001)), store=store) == Done(
        "stale")
    assert await store.query("SELECT status FROM orders") == [(12003,)]


async def test_a_reconciled_snapshot_applies_when_newer(store: SqlStore) -> None:
    await deliver(orders, make_event(order_body()), store=store)
    snapshot = make_event(order_body("2025-03-21T00:00:00", Status=12004), routing_key="sales_order.reconciled",
                          source="reconciliation")
    assert await deliver(orders, snapshot, store=store) == Done("applied")
    assert await store.query("SELECT status, last_source FROM orders") == [(12004, "reconciliation")]


async def test_orders_never_sees_product_keys_it_does_not_bind() -> None:
    assert orders.bindings == ("sales_order.#",)
