"""Sales orders with status, lines and shipments (binds `sales_order.#`, incl. `sales_order.reconciled`)."""

from __future__ import annotations

from consumers import Consumer, Event, Migration, Permanent, RetryPolicy, Transaction
from gateway.wire import id_text, integer_value, number_value, scalar_text

# Portable SQL (SQLite and PostgreSQL): ids are TEXT (19-digit integers exceed 2^53), amounts DOUBLE PRECISION.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS orders (
    organisation_id   TEXT NOT NULL,
    sales_order_id    TEXT NOT NULL,
    order_number      TEXT,
    status            INTEGER,
    customer_reference TEXT,
    grand_total       DOUBLE PRECISION,
    created_date      TEXT,
    modified_date     TEXT,
    completed_date    TEXT,
    last_event_date   TEXT,
    last_routing_key  TEXT NOT NULL,
    last_source       TEXT NOT NULL,
    PRIMARY KEY (organisation_id, sales_order_id)
);
CREATE TABLE IF NOT EXISTS order_lines (
    organisation_id   TEXT NOT NULL,
    sales_order_id    TEXT NOT NULL,
    line_id           TEXT NOT NULL,
    line_number       INTEGER,
    product_id        TEXT,
    code              TEXT,
    name              TEXT,
    quantity          DOUBLE PRECISION,
    line_total        DOUBLE PRECISION,
    PRIMARY KEY (organisation_id, sales_order_id, line_id)
);
CREATE TABLE IF NOT EXISTS shipments (
    organisation_id   TEXT NOT NULL,
    sales_order_id    TEXT NOT NULL,
    pack_list_id      TEXT NOT NULL,
    pack_list_number  TEXT,
    status            INTEGER,
    shipped_date      TEXT,
    courier           TEXT,
    tracking_reference TEXT,
    PRIMARY KEY (organisation_id, sales_order_id, pack_list_id)
);
"""

MIGRATIONS = (Migration(1, SCHEMA_V1, "orders, lines and shipments"),)

orders = Consumer("orders", bindings=("sales_order.#",), delivery_limit=10, migrations=MIGRATIONS,
                  retry=RetryPolicy(attempts=3, tiers=(5, 30, 120, 600)),
                  description="sales orders with status, lines and shipments")




def _items(value: object) -> list[dict[str, object]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


@orders.handler  # every sales_order.* key: created, updated, status, shipments, reconciled, unknown
async def record_order(event: Event, tx: Transaction) -> None:
    order = event.sales_order
    order_id = event.entity_id
    if order is None or order_id is None:
        raise Permanent(f"{event.routing_key} {event.message_id[:12]} has no SalesOrder")
    org = event.organisation_id or ""
    await tx.write(
        "INSERT INTO orders (organisation_id, sales_order_id, order_number, status, customer_reference, "
        "grand_total, created_date, modified_date, completed_date, last_event_date, last_routing_key, "
        "last_source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (organisation_id, sales_order_id) DO UPDATE SET order_number = excluded.order_number, "
        "status = excluded.status, customer_reference = excluded.customer_reference, "
        "grand_total = excluded.grand_total, created_date = excluded.created_date, "
        "modified_date = excluded.modified_date, completed_date = excluded.completed_date, "
        "last_event_date = excluded.last_event_date, last_routing_key = excluded.last_routing_key, "
        "last_source = excluded.last_source",
        (org, order_id, scalar_text(order.get("OrderNumber")), integer_value(order.get("Status")),
         scalar_text(order.get("CustomerOrderReference")), number_value(order.get("GrandTotal")),
         scalar_text(order.get("CreatedDate")), scalar_text(order.get("ModifiedDate")),
         scalar_text(order.get("CompletedDate")), event.event_date_text, event.routing_key, event.source))
    if "SalesOrderLines" in order:  # the payload is the full order: replace what we had
        await tx.write("DELETE FROM order_lines WHERE organisation_id = ? AND sales_order_id = ?",
                         (org, order_id))
        await tx.write_many(
            "INSERT INTO order_lines (organisation_id, sales_order_id, line_id, line_number, "
            "product_id, code, name, quantity, line_total) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (organisation_id, sales_order_id, line_id) DO UPDATE SET "
            "line_number = excluded.line_number, product_id = excluded.product_id, code = excluded.code, "
            "name = excluded.name, quantity = excluded.quantity, line_total = excluded.line_total",
            [(org, order_id, line_id, integer_value(line.get("LineNumber")), id_text(line.get("ProductID")),
              scalar_text(line.get("Code")), scalar_text(line.get("Name")), number_value(line.get("Quantity")),
              number_value(line.get("LineTotal")))
             for line in _items(order.get("SalesOrderLines"))
             if (line_id := id_text(line.get("SalesOrderLineID"))) is not None])
    if "PackLists" in order:
        await tx.write("DELETE FROM shipments WHERE organisation_id = ? AND sales_order_id = ?",
                         (org, order_id))
        await tx.write_many(
            "INSERT INTO shipments (organisation_id, sales_order_id, pack_list_id, "
            "pack_list_number, status, shipped_date, courier, tracking_reference) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (organisation_id, sales_order_id, pack_list_id) "
            "DO UPDATE SET pack_list_number = excluded.pack_list_number, status = excluded.status, "
            "shipped_date = excluded.shipped_date, courier = excluded.courier, "
            "tracking_reference = excluded.tracking_reference",
            [(org, order_id, pack_id, scalar_text(pack.get("PackListNumber")), integer_value(pack.get("Status")),
              scalar_text(pack.get("ShippedDate")), scalar_text(pack.get("Courier")),
              scalar_text(pack.get("TrackingReference")))
             for pack in _items(order.get("PackLists"))
             if (pack_id := id_text(pack.get("PackListID"))) is not None])
