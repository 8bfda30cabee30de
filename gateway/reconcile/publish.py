"""What the reconciler publishes (pure: one webhook-shaped body per listed object) and how: confirmed,
with two more tries after a broker blip."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Final, Literal

import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from gateway import wire
from gateway.errors import BrokerUnavailable
from gateway.message import Outgoing, build
from gateway.publisher import Publisher

Model = Literal["product", "sales_order"]
MODELS: Final[tuple[Model, ...]] = ("product", "sales_order")
ROUTING_KEYS: Final[Mapping[Model, str]] = {
    "product": wire.RK_PRODUCT_RECONCILED, "sales_order": wire.RK_SALES_ORDER_RECONCILED}
UPDATED_KEYS: Final[Mapping[Model, str]] = {
    "product": "product.updated", "sales_order": "sales_order.updated"}
ID_FIELDS: Final[Mapping[Model, str]] = {"product": "ProductID", "sales_order": "SalesOrderID"}


def updated_code(key: str, table: Mapping[int, str],
                 preferred: Mapping[int, str] | None = None) -> int | None:
    """The event code for `key` (e.g. `product.updated`): one from `preferred` (the operator's
    `TRADEVINE_EVENT_TYPES`) wins over the built-in table; the lowest code when several map to it."""
    for source in (preferred or {}, table):
        codes = sorted(code for code, routing_key in source.items() if routing_key == key)
        if codes and codes[0] in table:
            return codes[0]
    return None


def webhook_body(model: Model, obj: Mapping[str, object], code: int) -> dict[str, object]:
    """The body Tradevine would have sent for an "updated" event about `obj` (no AccessToken)."""
    return {
        "OrganisationID": obj.get("OrganisationID"),
        "EventType": code,
        "EventObjectId": obj.get(ID_FIELDS[model]),
        "EventDateUtc": obj.get("ModifiedDate"),
        "Product": obj if model == "product" else None,
        "SalesOrder": obj if model == "sales_order" else None,
    }


def outgoing(model: Model, obj: Mapping[str, object], *, code: int, table: Mapping[int, str],
             received_at: datetime, trace: Mapping[str, str] | None = None) -> Outgoing:
    """The message for one reconciled object; `message_id` is the SHA-256 of the body published."""
    payload = webhook_body(model, obj, code)
    raw = orjson.dumps(payload)
    return build(raw, table=table, received_at=received_at, source=wire.SOURCE_RECONCILIATION,
                 app_id=wire.APP_ID_RECONCILER, routing_key=ROUTING_KEYS[model], payload=payload, trace=trace)


async def publish_confirmed(publisher: Publisher, message: Outgoing,
                   sleep: Callable[[float], Awaitable[None]]) -> None:
    """Publish with confirms; a broker blip (reconnecting robust connection) gets two more tries."""
    retrying = AsyncRetrying(stop=stop_after_attempt(3), wait=wait_exponential(multiplier=0.5, max=2),
                             retry=retry_if_exception_type(BrokerUnavailable), sleep=sleep, reraise=True)
    async for attempt in retrying:
        with attempt:
            await publisher.publish(message)
