"""The wire contract shared by the gateway, the reconciler and the consumers (standard library only).

Everything a message on `tradevine.events` carries is named here once: the exchange, the routing
keys, the header names, the sources and the event-code table. Consumers import this module without
loading Starlette or aio-pika.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

EXCHANGE: Final = "tradevine.events"
CONTENT_TYPE: Final = "application/json"
APP_ID_GATEWAY: Final = "tradevine-gateway"
APP_ID_RECONCILER: Final = "tradevine-reconciler"

# Header names (values are always strings: Tradevine ids exceed 2**53).
H_EVENT_TYPE: Final = "tradevine-event-type"
H_ORGANISATION_ID: Final = "tradevine-organisation-id"
H_OBJECT_ID: Final = "tradevine-object-id"
H_EVENT_DATE: Final = "tradevine-event-date"
H_EVENT_KEY: Final = "tradevine-event-key"
H_SOURCE: Final = "tradevine-source"
H_RECEIVED_AT: Final = "tradevine-received-at"
H_ATTEMPT: Final = "tradevine-attempt"
H_ERROR: Final = "tradevine-error"
H_FAILED_AT: Final = "tradevine-failed-at"
H_TRUNCATED: Final = "tradevine-truncated"

# A header value taken from the payload (ids, event type, event date, and the event key built from
# them) is at most this many bytes of UTF-8; a longer value is cut there and its header named in
# `tradevine-truncated`. Real values are under 30 bytes; the body always carries the whole value.
MAX_HEADER_VALUE_BYTES: Final = 128
PAYLOAD_HEADERS: Final = (H_ORGANISATION_ID, H_EVENT_TYPE, H_OBJECT_ID, H_EVENT_DATE, H_EVENT_KEY)

SOURCE_WEBHOOK: Final = "webhook"
SOURCE_RECONCILIATION: Final = "reconciliation"
SOURCE_REPLAY: Final = "replay"

RK_INVALID: Final = "invalid"
RK_UNKNOWN: Final = "unknown"
RK_PRODUCT_UNKNOWN: Final = "product.unknown"
RK_SALES_ORDER_UNKNOWN: Final = "sales_order.unknown"
RK_PRODUCT_RECONCILED: Final = "product.reconciled"
RK_SALES_ORDER_RECONCILED: Final = "sales_order.reconciled"

# Provisional: only 95001 is confirmed by Tradevine's documentation (see TRADEVINE_EVENT_TYPES).
EVENT_TYPES: Final[Mapping[int, str]] = {
    95001: "product.created",
    95002: "product.updated",
    95003: "product.inventory.warehouse_stock_updated",
    95004: "product.inventory.ats_updated",
    95005: "product.deleted",
    95006: "sales_order.created",
    95007: "sales_order.updated",
    95008: "sales_order.status_changed",
    95009: "sales_order.shipment.updated",
    95010: "sales_order.shipment.confirmed",
}

_ROUTING_KEY = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")


def unrouted_name(exchange: str) -> str:
    """The alternate exchange and its queue: `<exchange>.unrouted`."""
    return f"{exchange}.unrouted"


def parse_event_types(text: str) -> dict[int, str]:
    """Parse `TRADEVINE_EVENT_TYPES` (`95001=product.created,95011=product.archived`)."""
    table: dict[int, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        code, sep, key = (s.strip() for s in item.partition("="))
        if not sep or not code.isdigit() or not _ROUTING_KEY.match(key):
            raise ValueError(
                f"{item!r} is not CODE=routing.key; try 95011=product.archived "
                "(digits, '=', lowercase words joined by dots)."
            )
        table[int(code)] = key
    return table


def event_table(override: str | None) -> dict[int, str]:
    """The built-in table with `override` merged over it."""
    return {**EVENT_TYPES, **(parse_event_types(override) if override else {})}


def routing_key(payload: object, table: Mapping[int, str]) -> str:
    """The routing key for a parsed webhook body."""
    if not isinstance(payload, dict):
        return RK_INVALID
    code = payload.get("EventType")
    if isinstance(code, int) and not isinstance(code, bool) and code in table:
        return table[code]
    if payload.get("Product") is not None:
        return RK_PRODUCT_UNKNOWN
    return RK_SALES_ORDER_UNKNOWN if payload.get("SalesOrder") is not None else RK_UNKNOWN


def id_text(value: object) -> str | None:
    """An id as a string (never through a float), or None when absent, null or not an id."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def scalar_text(value: object) -> str | None:
    """A scalar as the string it was sent as; None for null, objects and lists."""
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def bounded(value: str, limit: int = MAX_HEADER_VALUE_BYTES) -> tuple[str, bool]:
    """`value` cut to at most `limit` bytes of UTF-8 (never mid-character), and whether it was altered.

    A lone surrogate (which the standard library's JSON parser lets through) cannot be encoded and is
    replaced by `?`; that counts as altered too.
    """
    if value.isascii():
        return (value, False) if len(value) <= limit else (value[:limit], True)
    try:
        raw = value.encode()
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "replace")
        if len(raw) <= limit:
            return raw.decode(), True
    if len(raw) <= limit:
        return value, False
    return raw[:limit].decode("utf-8", "ignore"), True


def number_value(value: object) -> float | None:
    """A JSON number as a float (quantities, totals), None for anything else."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def integer_value(value: object) -> int | None:
    """A JSON integer (lookup codes such as Status), None for anything else."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def event_key(organisation_id: str | None, code: str | None, object_id: str | None,
              event_date: str | None) -> str:
    """`org:code:object:date`, the semantic identity of an event (empty parts stay empty)."""
    return ":".join(part or "" for part in (organisation_id, code, object_id, event_date))


def parse_event_date(value: object) -> datetime | None:
    """`EventDateUtc` as an aware UTC datetime; naive values are UTC. None when unparseable."""
    if not isinstance(value, str) or not value:
        return None
    # Python 3.11 reads `Z` and .NET's 7 fractional digits (keeping 6); a lower-case `z` it does not.
    text = value.strip()
    if text.endswith("z"):
        text = text[:-1] + "Z"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def utc_iso(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a `Z`, as used in `tradevine-received-at`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def model_of(routing_key_: str) -> str | None:
    """`product` or `sales_order` for keys of those streams, else None."""
    head = routing_key_.split(".", 1)[0]
    return head if head in ("product", "sales_order") else None
