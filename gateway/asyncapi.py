"""The AsyncAPI 3.0 document of `tradevine.events`, built from the wire contract (standard library only).

`document()` reads every name from `gateway.wire` (exchange, routing keys, header names, sources, app ids)
and the consumer queue pattern from `consumers.topology`, so the published description cannot drift from
what the code puts on the wire; `tests/gateway/test_asyncapi.py` fails when `docs/asyncapi.yaml` is older
than this. `to_yaml()` is a small deterministic block-style emitter: the document is plain dicts, lists,
strings, integers and booleans, so forty lines do what a YAML library would, without a runtime dependency.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from gateway import __version__, wire
from gateway.tracing import TRACEPARENT, TRACESTATE

AMQP_BINDING = "0.3.0"
VHOST = "/"
SERVER = "rabbitmq"
EXAMPLE_TIERS = (5, 30, 120, 600)  # RetryPolicy's default delay tiers
EXAMPLE_DELIVERY_LIMIT = 10  # Consumer's default delivery_limit

_BIG_ID = ("a Tradevine id: 19 digits, above 2^53, so parse it as a big integer (or keep the text); "
           "never through a double")


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(path)}


def _string(description: str, **extra: object) -> dict[str, object]:
    return {"type": "string", "description": description, **extra}


def _id(description: str, nullable: bool = False) -> dict[str, object]:
    return {"type": ["integer", "null"] if nullable else "integer", "format": "int64",
            "description": f"{description}; {_BIG_ID}"}


def _number(description: str) -> dict[str, object]:
    return {"type": "number", "description": description}


def _object(description: str, properties: Mapping[str, object], nullable: bool = False) -> dict[str, object]:
    return {"type": ["object", "null"] if nullable else "object", "description": description,
            "additionalProperties": True, "properties": dict(properties)}


def _array(description: str, items: object) -> dict[str, object]:
    return {"type": "array", "description": description, "items": items}


_DATE = "a .NET date-time without offset, e.g. 2025-03-18T21:14:07.347"
_N = {"type": ["string", "null"]}  # an optional text field
_B = {"type": "boolean"}
_I = {"type": "integer"}
_ID = {"type": ["integer", "null"], "format": "int64", "description": _BIG_ID}


def _fields(names: str, schema: Mapping[str, object]) -> dict[str, object]:
    return {name: dict(schema) for name in names.split()}


def schemas() -> dict[str, object]:
    """Payload schemas: Tradevine's Webhook model and its Product and SalesOrder, unknown fields allowed."""
    warehouse = _object("stock of the product in one warehouse", {
        "WarehouseID": _id("the warehouse"), "WarehouseCode": _string("e.g. WH1"),
        **_fields("QuantityInStockSnapshot QuantityAvailableToSell QuantityAvailableToShip", {"type": "number"})})
    product = _object("the full latest product, the shape of GET v1/Product/{id}", {
        "ProductID": _id("the product"), "OrganisationID": _id("the organisation"),
        "Code": _string("the SKU, e.g. MSP-152"), "Name": _string("the product's name"),
        "QuantityInStock": _number("quantity in stock"),
        "QuantityAvailableToSell": _number("available to sell (ATS)"),
        "QuantityAvailableToShip": _number("available to ship"),
        "IsArchived": {"type": "boolean"},
        "CreatedDate": _string(_DATE),
        "ModifiedDate": _string(f"{_DATE}; stock changes may not bump it, so order events by EventDateUtc"),
        "PerWarehouseInventory": _array("stock per warehouse", _ref("components", "schemas", "Warehouse")),
        **_fields("Description AlternateCode UnitOfMeasure Barcode ManufacturerCode Brand InternalNotes "
                  "ExternalNotes TaxCode PhotoIdentifier", _N),
        **_fields("EnableInventory IsManualOrderApprovalNeeded", _B),
        **_fields("ProductCategoryID TaxClassID CreatedBy ModifiedBy", _ID),
        **_fields("Weight Length Width Height CostPrice SellPriceIncTax SellPriceExTax MinimumStockQuantity",
                  {"type": ["number", "null"]}),
        "Currency": {"type": "integer", "description": "a Tradevine lookup code"},
    }, nullable=True)
    line = _object("one order line", {
        "SalesOrderLineID": _id("the line"), "ProductID": _id("the product", nullable=True),
        "Code": _N, "Name": _N, "Barcode": _N, "LineNumber": _I, "LineNotes": _N, "TaxCode": _N,
        "TargetWarehouseID": _ID,
        **_fields("Quantity CostPrice SellPrice SellPriceExTax SellPriceIncTax TaxRate TaxTotal LineTotal",
                  {"type": ["number", "null"]}),
        "TaxClassID": _ID})
    item = _object("one packed item", {
        "PackListItemID": _id("the item"), "ProductID": _id("the product", nullable=True),
        "Code": _N, "Name": _N, "Barcode": _N, "TrafficLight": _I, "LineNumber": _I,
        **_fields("QuantityRequested QuantityPacked QuantityBackOrder", {"type": ["number", "null"]})})
    pack_list = _object("a shipment (pack list)", {
        "PackListID": _id("the shipment"), "OrganisationID": _ID, "SalesOrderID": _ID,
        "Status": {"type": "integer",
                   "description": "14001 Pending, 14002 AwaitingPack, 14003 Completed (lookup codes never change)"},
        "PackListNumber": _N, "ShipmentType": _I, "CustomerShippingAddressID": _ID, "WarehouseID": _ID,
        "AccountingJournalID": _ID,
        "ShippedDate": {"type": ["string", "null"], "description": _DATE},
        "Courier": _N, "TrackingReference": _N, "TrackingReference2": _N, "DeliveryNotes": _N,
        "RequestedShippingDate": _N, "PrintedDate": _N,
        **_fields("IsInvoiceEmailed IsInvoicePrinted IsPackSlipEmailed IsPackSlipPrinted", _B),
        "PackListItems": _array("the items packed", _ref("components", "schemas", "PackListItem"))})
    address = _object("an address", {"AddressID": _ID, "CustomerID": _ID, **_fields(
        "AddressLine1 AddressLine2 TownCity RegionState PostalCode Country", _N)}, nullable=True)
    customer = _object("the customer", {"CustomerID": _ID, "OrganisationID": _ID, **_fields(
        "CustomerCode FirstName LastName Email PhoneNumber", _N)}, nullable=True)
    order = _object("the full latest sales order with lines and shipments, the shape of GET v1/SalesOrder/{id}", {
        "SalesOrderID": _id("the sales order"), "OrganisationID": _id("the organisation"),
        "OrderNumber": _string("e.g. SO453"),
        "Status": {"type": "integer", "description": "12001 Pending, 12002 AwaitingShipment, 12003 Completed, "
                   "12004 Cancelled; newer codes exist (lookup codes never change)"},
        "CreatedDate": _string(_DATE), "ModifiedDate": _string(_DATE),
        "CompletedDate": {"type": ["string", "null"], "description": _DATE},
        "SalesOrderLines": _array("the order lines", _ref("components", "schemas", "SalesOrderLine")),
        "PackLists": _array("the shipments", _ref("components", "schemas", "PackList")),
        "Customer": _ref("components", "schemas", "Customer"),
        "BillingAddress": _ref("components", "schemas", "Address"),
        "ShippingAddress": _ref("components", "schemas", "Address"),
        **_fields("CustomerID TradeMeOrganisationID ShopifyOrganisationID CustomerBillingAddressID "
                  "CustomerShippingAddressID CreatedBy ModifiedBy WarehouseID", _ID),
        **_fields("CustomerOrderReference ExternalListingID ExternalOfferID ShopifyOrderNumber ShopifyOrderStatus "
                  "RecipientName PaymentDueDate PaymentDate PaymentReference RequestedShippingDate InternalNotes "
                  "ExternalNotes", _N),
        **_fields("OrderOrigin TermsOfTrade PaymentType ShipmentType Currency",
                  {"type": ["integer", "null"], "description": "a Tradevine lookup code"}),
        "ShopifyOrderID": {"type": ["integer", "null"]},
        **_fields("IsCompletedWithCancellations IsPaymentReceived ManualApprovalNeeded IsManuallyApproved "
                  "ApplyTaxes TotalsTaxInclusive", _B),
        **_fields("SubTotal TotalDiscount GrandTotal", {"type": ["number", "null"]}),
    }, nullable=True)
    webhook = _object(
        "Tradevine's Webhook model as received (unknown fields are kept and must be ignored), without "
        "AccessToken unless GATEWAY_KEEP_ACCESS_TOKEN=true. Either payload field may be absent or null.", {
            "OrganisationID": _id("the tenant"),
            "EventType": {"type": "integer", "description": "the event code (see the routing-key channels)"},
            "EventObjectId": _id("the ProductID or SalesOrderID; null in Tradevine's documentation sample",
                                 nullable=True),
            "EventDateUtc": _string(f"when the event happened, UTC: {_DATE}"),
            "AccessToken": _string("a credential; removed by the gateway unless GATEWAY_KEEP_ACCESS_TOKEN=true"),
            "Product": _ref("components", "schemas", "Product"),
            "SalesOrder": _ref("components", "schemas", "SalesOrder"),
        })
    product_event = {"allOf": [_ref("components", "schemas", "Webhook")],
                     "description": "a product event: the latest product is in `Product`"}
    order_event = {"allOf": [_ref("components", "schemas", "Webhook")],
                   "description": "a sales-order event: the latest order is in `SalesOrder`"}
    invalid = {"description": "the verified request body, byte for byte: not a JSON object (any bytes)"}
    return {"Webhook": webhook, "ProductEvent": product_event, "SalesOrderEvent": order_event,
            "Product": product, "Warehouse": warehouse, "SalesOrder": order, "SalesOrderLine": line,
            "PackList": pack_list, "PackListItem": item, "Customer": customer, "Address": address,
            "InvalidBody": invalid, "MessageHeaders": headers_schema()}


def headers_schema() -> dict[str, object]:
    """Every header a message on the exchange may carry; values are always strings."""
    payload = (f"taken from the payload, at most {wire.MAX_HEADER_VALUE_BYTES} bytes of UTF-8 "
               "(cut beyond, see tradevine-truncated)")
    props: dict[str, object] = {
        wire.H_EVENT_TYPE: _string(f"the EventType as received, e.g. \"95001\"; {payload}"),
        wire.H_ORGANISATION_ID: _string(f"OrganisationID as a decimal string (it exceeds 2^53); {payload}",
                                        examples=["3479979772659009354"]),
        wire.H_OBJECT_ID: _string(f"EventObjectId as a decimal string; absent when null; {payload}"),
        wire.H_EVENT_DATE: _string(f"EventDateUtc as sent (UTC, no offset suffix); {payload}"),
        wire.H_EVENT_KEY: _string("`org:code:object:date` from the four headers above (empty parts stay empty), "
                                  "for semantic de-duplication; set on every JSON object body"),
        wire.H_TRUNCATED: _string("only when a payload value was cut: the names of the cut headers, "
                                  "comma-separated (the body carries the whole value)"),
        wire.H_SOURCE: _string("who published it", enum=[wire.SOURCE_WEBHOOK, wire.SOURCE_RECONCILIATION,
                                                        wire.SOURCE_REPLAY]),
        wire.H_RECEIVED_AT: _string("receipt time, ISO-8601 UTC with milliseconds, e.g. 2025-03-18T21:14:08.001Z"),
        wire.H_ATTEMPT: _string("set by the consumer framework on a copy sent to a delay tier or parked: the "
                                "attempt number, e.g. \"2\""),
        wire.H_ERROR: _string("set on parked copies: the error's type and message, truncated"),
        wire.H_FAILED_AT: _string("set on parked copies: when the last attempt failed, ISO-8601 UTC"),
        TRACEPARENT: _string("W3C trace context, optional: present when the request carried a valid one or "
                             "tracing is on"),
        TRACESTATE: _string("W3C trace context, optional: passed on with traceparent when present"),
    }
    return {"type": "object", "additionalProperties": True,
            "description": "AMQP headers; every value is a string (ids included). Broker headers such as "
                           "x-death may appear on dead-lettered copies.",
            "required": [wire.H_SOURCE, wire.H_RECEIVED_AT], "properties": props}


def routing_keys() -> list[tuple[str, str, str]]:
    """(routing key, payload schema, description) for everything published on the exchange."""
    keys: list[tuple[str, str, str]] = []
    for code, key in sorted(wire.EVENT_TYPES.items()):
        schema = "ProductEvent" if wire.model_of(key) == "product" else "SalesOrderEvent"
        keys.append((key, schema, f"EventType {code} (provisional codes; TRADEVINE_EVENT_TYPES overrides the table)"))
    keys += [
        (wire.RK_PRODUCT_UNKNOWN, "ProductEvent", "an EventType not in the table, with `Product` present"),
        (wire.RK_SALES_ORDER_UNKNOWN, "SalesOrderEvent", "an EventType not in the table, with `SalesOrder` present"),
        (wire.RK_UNKNOWN, "Webhook", "an EventType not in the table and neither payload; unbound, it lands in "
                                     f"{wire.unrouted_name(wire.EXCHANGE)}"),
        (wire.RK_INVALID, "InvalidBody", "a verified body that is not a JSON object; unbound, it lands in "
                                         f"{wire.unrouted_name(wire.EXCHANGE)}"),
        (wire.RK_PRODUCT_RECONCILED, "ProductEvent", "a product the reconciler found changed (REST API)"),
        (wire.RK_SALES_ORDER_RECONCILED, "SalesOrderEvent", "a sales order the reconciler found changed"),
    ]
    return keys


def _exchange_binding(name: str, kind: str) -> dict[str, object]:
    return {"amqp": {"is": "routingKey", "exchange": {"name": name, "type": kind, "durable": True,
                                                       "autoDelete": False, "vhost": VHOST},
                     "bindingVersion": AMQP_BINDING}}


def _queue_binding(name: str) -> dict[str, object]:
    return {"amqp": {"is": "queue", "queue": {"name": name, "durable": True, "exclusive": False,
                                              "autoDelete": False, "vhost": VHOST},
                     "bindingVersion": AMQP_BINDING}}


def _channel_id(key: str) -> str:
    return key


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document as plain data (deterministic)."""
    from consumers.topology import PARKED_DELIVERY_LIMIT, Topology

    exchange = wire.EXCHANGE
    unrouted = wire.unrouted_name(exchange)
    topology = Topology("{name}", exchange, ("product.#",), EXAMPLE_DELIVERY_LIMIT, (EXAMPLE_TIERS[0],))
    gateway_props = {
        "message_id": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                       "description": "SHA-256 hex of the raw request body (the reconciler: of the body it "
                                      "publishes); stable across Tradevine's identical resends, the idempotency key"},
        "content_type": {"const": wire.CONTENT_TYPE},
        "delivery_mode": {"const": 2, "description": "persistent"},
        "timestamp": {"type": "integer", "description": "receipt time, seconds since the epoch"},
        "app_id": {"enum": [wire.APP_ID_GATEWAY, wire.APP_ID_RECONCILER]},
    }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for key, schema, description in routing_keys():
        cid = _channel_id(key)
        reconciled = key in (wire.RK_PRODUCT_RECONCILED, wire.RK_SALES_ORDER_RECONCILED)
        messages[key] = {
            "name": key, "title": key, "summary": description, "contentType": wire.CONTENT_TYPE,
            "headers": _ref("components", "schemas", "MessageHeaders"),
            "payload": _ref("components", "schemas", schema),
            "bindings": {"amqp": {"messageType": key, "bindingVersion": AMQP_BINDING}},
            "x-amqp-properties": {**gateway_props, "type": {"const": key, "description": "the routing key"},
                                  "app_id": {"const": wire.APP_ID_RECONCILER if reconciled
                                             else wire.APP_ID_GATEWAY}},
        }
        channels[cid] = {
            "address": key, "title": key, "description": f"Routing key `{key}` on `{exchange}`: {description}.",
            "messages": {key: _ref("components", "messages", key)},
            "bindings": _exchange_binding(exchange, "topic"),
        }
        operations[f"publish.{key}"] = {
            "action": "send", "channel": _ref("channels", cid),
            "summary": f"{'The reconciler' if reconciled else 'The gateway'} publishes `{key}`, confirmed",
            "messages": [_ref("channels", cid, "messages", key)],
            "bindings": {"amqp": {"deliveryMode": 2, "mandatory": True, "timestamp": True,
                                  "bindingVersion": AMQP_BINDING}},
        }
    channels["unrouted"] = {
        "address": unrouted, "title": unrouted,
        "description": f"`{exchange}` is declared with `alternate-exchange = {unrouted}`, a durable fanout exchange "
                       f"bound to the durable quorum queue `{unrouted}`: every message no queue is bound for "
                       "(typically `unknown`, `invalid`) ends here for a human to look at. The gateway declares all "
                       "three at start, idempotently.",
        "messages": {key: _ref("components", "messages", key) for key, _, _ in routing_keys()},
        "bindings": _queue_binding(unrouted),
        "x-exchange-arguments": {"alternate-exchange": unrouted},
        "x-alternate-exchange": {"name": unrouted, "type": "fanout", "durable": True},
        "x-queue-arguments": {"x-queue-type": "quorum"},
    }
    all_messages = {key: _ref("components", "messages", key) for key, _, _ in routing_keys()}
    pattern = {
        "consumerQueue": (topology.queue, topology.queue_arguments(),
                          "A consumer service's quorum queue, bound to the exchange with its keys (e.g. `product.#`). "
                          "A message redelivered more than `x-delivery-limit` times is dead-lettered to "
                          "`{name}.parked`."),
        "consumerRetry": ("{name}.retry.{seconds}s", topology.tier_arguments(EXAMPLE_TIERS[0]),
                          "A delay tier: holds a failed message for `seconds` (x-message-ttl = seconds * 1000), then "
                          "dead-letters it through the default exchange back into `{name}`. The copy carries "
                          f"`{wire.H_ATTEMPT}`."),
        "consumerParked": (topology.parked, topology.parked_arguments(),
                           "Where a message ends after its last tier (or at once, when the handler marks the error "
                           f"permanent): carries `{wire.H_ATTEMPT}`, `{wire.H_ERROR}` and `{wire.H_FAILED_AT}`; "
                           "kept until `tradevine-consumers parked replay|purge NAME`."),
    }
    parameters = {"name": {"description": "the consumer service's queue name (CONSUMER_QUEUE, default its name)",
                           "examples": ["inventory", "orders"]},
                  "seconds": {"description": "a delay tier in whole seconds (CONSUMER_RETRY_DELAYS)",
                              "examples": [str(s) for s in EXAMPLE_TIERS]}}
    for cid, (address, arguments, description) in pattern.items():
        arguments = dict(arguments)
        if cid == "consumerRetry":
            arguments["x-message-ttl"] = "{seconds} * 1000"
            arguments["x-dead-letter-routing-key"] = "{name}"
        channels[cid] = {
            "address": address, "title": address, "description": description,
            "parameters": {p: parameters[p] for p in ("name", "seconds") if "{" + p + "}" in address},
            "messages": all_messages,
            "bindings": _queue_binding(address),
            "x-queue-arguments": arguments,
        }
    operations["consume"] = {
        "action": "receive", "channel": _ref("channels", "consumerQueue"),
        "summary": "A consumer service (tradevine-consumers run NAME) takes each message; it acks only after the "
                   "handler and the durable commit",
        "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING}},
    }
    operations["retry"] = {
        "action": "send", "channel": _ref("channels", "consumerRetry"),
        "summary": "A failed handler's copy to the next delay tier, with tradevine-attempt; the original is acked "
                   "once the copy is confirmed",
        "bindings": {"amqp": {"deliveryMode": 2, "bindingVersion": AMQP_BINDING}},
    }
    operations["park"] = {
        "action": "send", "channel": _ref("channels", "consumerParked"),
        "summary": "After the last tier, or a permanent error: the copy is parked with tradevine-error and "
                   "tradevine-failed-at",
        "bindings": {"amqp": {"deliveryMode": 2, "bindingVersion": AMQP_BINDING}},
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Tradevine events",
            "version": __version__,
            "description": (
                f"Tradevine webhooks, verified by tradevine-gateway and published, confirmed and persistent, to the "
                f"RabbitMQ topic exchange `{exchange}` (GATEWAY_EXCHANGE; this document uses the default name), "
                "one routing key per event type. The reconciler publishes what it finds through the REST API under "
                "`*.reconciled`. Generated by `tradevine-gateway asyncapi` from gateway/wire.py and "
                "consumers/topology.py; see docs/contract.md for the prose."),
            "license": {"name": "MIT"},
        },
        "defaultContentType": wire.CONTENT_TYPE,
        "servers": {SERVER: {
            "host": "localhost:5672", "protocol": "amqp", "protocolVersion": "0.9.1",
            "title": "RabbitMQ",
            "description": "RabbitMQ 3.10 or later (quorum queues), reached through AMQP_URL; `amqps` on port 5671 "
                           "for TLS. Every service connects with its own user (docs/operations.md).",
        }},
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas(), "messages": messages},
        "x-max-header-value-bytes": wire.MAX_HEADER_VALUE_BYTES,
        "x-parked-delivery-limit": PARKED_DELIVERY_LIMIT,
    }


# ---- a small YAML emitter (block style; every value this document holds) ----

_PLAIN = re.compile(r"^[A-Za-z_$/][A-Za-z0-9_$./\-]*$")
_RESERVED = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"})


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _RESERVED:
            return value
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar
    raise TypeError(f"cannot emit {type(value).__name__} {value!r}")


def _emit(value: object, indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            head = f"{pad}{_scalar(str(key))}:"
            if isinstance(item, (dict, list)) and item:
                lines.append(head)
                _emit(item, indent + 1, lines)
            else:
                lines.append(f"{head} {_inline(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)) and item:
                sub: list[str] = []
                _emit(item, indent + 1, sub)
                first = sub[0][len(pad) + 2:]
                lines.append(f"{pad}- {first}")
                lines.extend(sub[1:])
            else:
                lines.append(f"{pad}- {_inline(item)}")


def _inline(value: object) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def to_yaml(doc: Mapping[str, object]) -> str:
    lines = ["# Generated by `tradevine-gateway asyncapi`; do not edit (regenerate: "
             "tradevine-gateway asyncapi > docs/asyncapi.yaml)."]
    _emit(dict(doc), 0, lines)
    return "\n".join(lines) + "\n"


def to_json(doc: Mapping[str, object]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
