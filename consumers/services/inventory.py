"""Stock figures per product and organisation (binds `product.#`, including `product.reconciled`)."""

from __future__ import annotations

from collections.abc import Mapping

from consumers import Consumer, Event, Migration, Permanent, RetryPolicy, Transaction
from gateway.wire import id_text, number_value, scalar_text

# Portable SQL (SQLite and PostgreSQL): ids are TEXT (19-digit integers exceed 2^53), quantities DOUBLE PRECISION.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS products (
    organisation_id            TEXT NOT NULL,
    product_id                 TEXT NOT NULL,
    code                       TEXT,
    name                       TEXT,
    quantity_in_stock          DOUBLE PRECISION,
    quantity_available_to_sell DOUBLE PRECISION,
    quantity_available_to_ship DOUBLE PRECISION,
    is_archived                INTEGER NOT NULL DEFAULT 0,
    is_deleted                 INTEGER NOT NULL DEFAULT 0,
    modified_date              TEXT,
    last_event_date            TEXT,
    last_routing_key           TEXT NOT NULL,
    last_source                TEXT NOT NULL,
    PRIMARY KEY (organisation_id, product_id)
);
CREATE TABLE IF NOT EXISTS product_warehouse_stock (
    organisation_id            TEXT NOT NULL,
    product_id                 TEXT NOT NULL,
    warehouse_id               TEXT NOT NULL,
    warehouse_code             TEXT,
    quantity_in_stock          DOUBLE PRECISION,
    quantity_available_to_sell DOUBLE PRECISION,
    quantity_available_to_ship DOUBLE PRECISION,
    PRIMARY KEY (organisation_id, product_id, warehouse_id)
);
"""

MIGRATIONS = (Migration(1, SCHEMA_V1, "products and stock per warehouse"),)

inventory = Consumer("inventory", bindings=("product.#",), delivery_limit=10, migrations=MIGRATIONS,
                     retry=RetryPolicy(attempts=3, tiers=(5, 30, 120, 600)),
                     description="products with stock in hand, ATS, available to ship, per warehouse")



def _key(event: Event) -> tuple[str, str]:
    product_id = event.entity_id
    if product_id is None:
        raise Permanent(f"{event.routing_key} {event.message_id[:12]} names no ProductID or EventObjectId")
    return event.organisation_id or "", product_id


@inventory.handler("product.deleted")
async def mark_deleted(event: Event, tx: Transaction) -> None:
    organisation_id, product_id = _key(event)
    if event.product is not None:
        await upsert_product(tx, event, event.product)
    else:
        await tx.write(
            "INSERT INTO products (organisation_id, product_id, last_event_date, last_routing_key, "
            "last_source) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (organisation_id, product_id, event.event_date_text, event.routing_key, event.source))
    await tx.write("UPDATE products SET is_deleted = 1, last_event_date = ?, last_routing_key = ? "
                     "WHERE organisation_id = ? AND product_id = ?",
                     (event.event_date_text, event.routing_key, organisation_id, product_id))


@inventory.handler  # every other product.* key: created, updated, inventory.*, reconciled, unknown
async def record_product(event: Event, tx: Transaction) -> None:
    if event.product is None:
        raise Permanent(f"{event.routing_key} {event.message_id[:12]} has no Product")
    await upsert_product(tx, event, event.product)


async def upsert_product(tx: Transaction, event: Event, product: Mapping[str, object]) -> None:
    """The product's latest state; `is_deleted` is left as it is (only product.deleted sets it)."""
    organisation_id, product_id = _key(event)
    await tx.write(
        "INSERT INTO products (organisation_id, product_id, code, name, quantity_in_stock, "
        "quantity_available_to_sell, quantity_available_to_ship, is_archived, modified_date, "
        "last_event_date, last_routing_key, last_source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (organisation_id, product_id) DO UPDATE SET code = excluded.code, "
        "name = excluded.name, quantity_in_stock = excluded.quantity_in_stock, "
        "quantity_available_to_sell = excluded.quantity_available_to_sell, "
        "quantity_available_to_ship = excluded.quantity_available_to_ship, "
        "is_archived = excluded.is_archived, modified_date = excluded.modified_date, "
        "last_event_date = excluded.last_event_date, last_routing_key = excluded.last_routing_key, "
        "last_source = excluded.last_source",
        (organisation_id, product_id, scalar_text(product.get("Code")), scalar_text(product.get("Name")),
         number_value(product.get("QuantityInStock")), number_value(product.get("QuantityAvailableToSell")),
         number_value(product.get("QuantityAvailableToShip")), int(product.get("IsArchived") is True),
         scalar_text(product.get("ModifiedDate")), event.event_date_text, event.routing_key, event.source))
    warehouses = product.get("PerWarehouseInventory")
    if not isinstance(warehouses, list):
        return  # absent: keep what we know
    await tx.write("DELETE FROM product_warehouse_stock WHERE organisation_id = ? AND product_id = ?",
                     (organisation_id, product_id))
    await tx.write_many(
        "INSERT INTO product_warehouse_stock (organisation_id, product_id, warehouse_id, "
        "warehouse_code, quantity_in_stock, quantity_available_to_sell, quantity_available_to_ship) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (organisation_id, product_id, warehouse_id) DO UPDATE SET "
        "warehouse_code = excluded.warehouse_code, quantity_in_stock = excluded.quantity_in_stock, "
        "quantity_available_to_sell = excluded.quantity_available_to_sell, "
        "quantity_available_to_ship = excluded.quantity_available_to_ship",
        [(organisation_id, product_id, warehouse_id, scalar_text(w.get("WarehouseCode")),
          number_value(w.get("QuantityInStock", w.get("QuantityInStockSnapshot"))),
          number_value(w.get("QuantityAvailableToSell")), number_value(w.get("QuantityAvailableToShip")))
         for w in warehouses
         if isinstance(w, dict) and (warehouse_id := id_text(w.get("WarehouseID"))) is not None])
