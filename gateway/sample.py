"""Realistic, correctly shaped webhook bodies for any routing key (for `send-test-event` and benchmarks)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson

from gateway import wire

UNKNOWN_CODE = 95999
_SHIPPED = {"Status": 14003, "Courier": "NZ Post", "TrackingReference": "NZP123456789NZ"}


def _template(model: str) -> dict[str, Any]:
    raw = resources.files("gateway").joinpath(f"samples/{model}.json").read_bytes()
    data: dict[str, Any] = orjson.loads(raw)
    return data


_TEMPLATES = {"product": _template("product"), "sales_order": _template("sales_order")}


def dotnet_datetime(moment: datetime) -> str:
    """`EventDateUtc` as Tradevine writes it: UTC, milliseconds, no offset suffix."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def known_keys(table: Mapping[int, str]) -> list[str]:
    """Routing keys `send-test-event` can build a body for (every key the gateway itself routes to)."""
    return sorted({*table.values(), wire.RK_PRODUCT_UNKNOWN, wire.RK_SALES_ORDER_UNKNOWN, wire.RK_UNKNOWN,
                   wire.RK_INVALID})


def payload_for(routing_key: str, table: Mapping[int, str] = wire.EVENT_TYPES, *,
                organisation_id: int | None = None, object_id: int | None = None) -> bytes:
    """The raw body the gateway routes to `routing_key`: a webhook, an unknown event or a non-object."""
    if routing_key == wire.RK_INVALID:
        return b'["a verified body that is not a JSON object"]'
    if routing_key == wire.RK_UNKNOWN:
        return encode({"OrganisationID": organisation_id or _TEMPLATES["product"]["OrganisationID"],
                       "EventType": UNKNOWN_CODE, "EventObjectId": object_id,
                       "EventDateUtc": dotnet_datetime(datetime.now(UTC)), "Product": None, "SalesOrder": None})
    if routing_key in (wire.RK_PRODUCT_RECONCILED, wire.RK_SALES_ORDER_RECONCILED):
        raise ValueError(f"{routing_key!r} is published by the reconciler, never routed by the gateway (it routes "
                         "by EventType); run `tradevine-gateway reconcile --lookback 2h`, or send "
                         f"{routing_key.split('.')[0]}.updated, which reconciled snapshots stand in for.")
    return encode(body_for(routing_key, table, organisation_id=organisation_id, object_id=object_id))


def body_for(routing_key: str, table: Mapping[int, str] = wire.EVENT_TYPES, *,
             event_date: datetime | None = None, organisation_id: int | None = None,
             object_id: int | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A webhook body whose EventType maps to `routing_key` in `table` (or an unknown code)."""
    codes = {key: code for code, key in table.items()}
    if routing_key in codes:
        code = codes[routing_key]
    elif routing_key in (wire.RK_PRODUCT_UNKNOWN, wire.RK_SALES_ORDER_UNKNOWN):
        code = UNKNOWN_CODE
    else:
        raise ValueError(f"no event type routes to {routing_key!r}; choose one of: "
                         + ", ".join(known_keys(table)))
    model = wire.model_of(routing_key)
    if model is None:
        raise ValueError(f"{routing_key!r} is neither a product nor a sales-order key.")
    body = copy.deepcopy(_TEMPLATES[model])
    entity = body["Product"] if model == "product" else body["SalesOrder"]
    id_field = "ProductID" if model == "product" else "SalesOrderID"
    if organisation_id is not None:
        body["OrganisationID"] = organisation_id
        entity["OrganisationID"] = organisation_id
    if object_id is not None:
        entity[id_field] = object_id
    moment = event_date or datetime.now(UTC)
    body["EventType"] = code
    body["EventObjectId"] = entity[id_field]
    body["EventDateUtc"] = dotnet_datetime(moment)
    entity["ModifiedDate"] = dotnet_datetime(moment)
    if routing_key == "product.deleted":
        entity["IsArchived"] = True
    elif routing_key == "sales_order.shipment.confirmed":
        for pack in entity["PackLists"]:
            pack.update(_SHIPPED, ShippedDate=dotnet_datetime(moment))
        entity["Status"] = 12003
        entity["CompletedDate"] = dotnet_datetime(moment)
    elif routing_key == "sales_order.shipment.updated":
        for pack in entity["PackLists"]:
            pack["Status"] = 14002
    if overrides:
        body.update(overrides)
    return body


def encode(body: Mapping[str, Any]) -> bytes:
    return orjson.dumps(body)
