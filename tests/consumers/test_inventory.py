"""The inventory service: products with stock figures, deletes and reconciled snapshots."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from consumers import Done, Park
from consumers.services.inventory import inventory
from consumers.store import SqlStore
from consumers.testing import deliver, make_event, open_store
from tests.consumers.conftest import product_body

PRODUCT = ("3479979772659009354", "3451582911247567682")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SqlStore]:
    """The service on SQLite and on PostgreSQL: the same handlers, unchanged."""
    if request.param == "postgres":
        opened = await open_store(inventory, request.getfixturevalue("postgres_url"),
                                  namespace=request.getfixturevalue("pg_namespace"))
    else:
        opened = await open_store(inventory)
    yield opened
    await opened.close()


async def product_row(store: SqlStore) -> tuple[Any, ...]:
    rows = await store.query(
        "SELECT organisation_id, product_id, code, name, quantity_in_stock, quantity_available_to_sell, "
        "quantity_available_to_ship, is_archived, is_deleted, last_event_date, last_routing_key, last_source "
        "FROM products")
    assert len(rows) == 1
    return rows[0]


async def test_a_created_product_is_stored_with_stock_per_warehouse(store: SqlStore) -> None:
    assert await deliver(inventory, make_event(product_body()), store=store) == Done("applied")
    assert await product_row(store) == (*PRODUCT, "MSP-152", "Baking Powder 1kg", 100.0, 78.0, 90.0, 0, 0,
                                        "2025-03-18T21:14:07.347", "product.created", "webhook")
    assert await store.query("SELECT * FROM product_warehouse_stock") == [
        (*PRODUCT, "3479979772661223344", "WH1", 100.0, 78.0, 90.0)]


async def test_a_newer_stock_event_updates_and_an_older_one_is_ignored(store: SqlStore) -> None:
    await deliver(inventory, make_event(product_body()), store=store)
    newer = product_body("2025-03-18T22:00:00", QuantityInStock=60.0, QuantityAvailableToSell=40.0,
                         PerWarehouseInventory=[])
    newer["EventType"] = 95004
    assert await deliver(inventory, make_event(newer), store=store) == Done("applied")
    older = product_body("2025-03-18T21:30:00", QuantityInStock=999.0)
    older["EventType"] = 95003
    assert await deliver(inventory, make_event(older), store=store) == Done("stale")
    row = await product_row(store)
    assert row[4:6] == (60.0, 40.0) and row[10] == "product.inventory.ats_updated"
    assert await store.query("SELECT * FROM product_warehouse_stock") == []


async def test_a_deleted_product_is_flagged_and_stays_deleted(store: SqlStore) -> None:
    await deliver(inventory, make_event(product_body()), store=store)
    deleted = product_body("2025-03-18T23:00:00", IsArchived=True)
    deleted["EventType"] = 95005
    assert await deliver(inventory, make_event(deleted), store=store) == Done("applied")
    row = await product_row(store)
    assert (row[7], row[8], row[10]) == (1, 1, "product.deleted")


async def test_a_delete_without_product_payload_uses_the_event_object_id(store: SqlStore) -> None:
    body = product_body("2025-03-18T23:00:00")
    body.update(EventType=95005, Product=None)
    assert await deliver(inventory, make_event(body), store=store) == Done("applied")
    assert await store.query("SELECT organisation_id, product_id, is_deleted FROM products") == [(*PRODUCT, 1)]


async def test_an_older_reconciled_snapshot_never_overwrites_newer_webhook_data(store: SqlStore) -> None:
    await deliver(inventory, make_event(product_body("2025-03-18T22:00:00", QuantityInStock=5.0)), store=store)
    snapshot = make_event(product_body("2025-03-18T21:00:00", QuantityInStock=100.0),
                          routing_key="product.reconciled", source="reconciliation")
    assert await deliver(inventory, snapshot, store=store) == Done("stale")
    newer_snapshot = make_event(product_body("2025-03-18T23:00:00", QuantityInStock=7.0),
                                routing_key="product.reconciled", source="reconciliation")
    assert await deliver(inventory, newer_snapshot, store=store) == Done("applied")
    row = await product_row(store)
    assert (row[4], row[10], row[11]) == (7.0, "product.reconciled", "reconciliation")


async def test_a_product_event_without_product_is_parked_at_once(store: SqlStore) -> None:
    body = product_body()
    body["Product"] = None
    outcome = await deliver(inventory, make_event(body, routing_key="product.updated"), store=store)
    assert isinstance(outcome, Park) and outcome.permanent and "has no Product" in outcome.error
