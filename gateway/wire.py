"""The wire contract shared by the gateway, the reconciler and the consumers (standard library only).

Everything a message on `tradevine.events` carries is named here once: the exchange, the routing
keys, the header names, the sources and the event-code table; so is what every command reads its
settings with (`EnvReader`, `redact_url`, `port_in_use`) and its one error (`SettingsError`). Consumers
import this module without loading Starlette or aio-pika; it imports only the standard library and
the gateway's other standard-library-only modules (errors, amqp_addresses, amqp_tls).
"""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Final, TypeVar

from gateway.amqp_addresses import AddressError, split_addresses
from gateway.amqp_tls import tls_problems
from gateway.errors import SettingsError as SettingsError  # the one settings error, consumers' too

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


# ---------------------------------------------------------------------------------------------------
# Settings: the reader every command reads its environment with, and its one error


T = TypeVar("T")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
LOG_LEVELS = ("debug", "info", "warning", "error")


def port_in_use(host: str, port: int, variable: str) -> str | None:
    """A one-line problem when `host:port` cannot be bound (taken, or not an address here), else None.

    Checked before starting, so a second `make run` says which variable moves the port instead of
    printing a traceback. SO_REUSEADDR as the servers set it: a socket in TIME_WAIT is no conflict."""
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"{host!r} is not an address to listen on ({exc.strerror or exc}); use 127.0.0.1 or 0.0.0.0."
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (f"{variable}={port}: {host}:{port} is already in use; stop what listens there "
                        f"or choose another port, e.g. {variable}={port + 10}.")
            return f"{variable}={port}: cannot listen on {host}:{port} ({exc.strerror or exc})."
    return None


class EnvReader:
    """Reads typed values from a mapping and collects every problem instead of stopping at the first."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def log_level(self, name: str, default: str = "info") -> str:
        level = self.text(name, default).lower()
        if level not in LOG_LEVELS:
            self.problems.append(f"{name}={level!r} is not a log level; use one of {', '.join(LOG_LEVELS)}.")
            return default
        return level

    def required(self, name: str, fix: str) -> str:
        value = self.raw(name)
        if value is None:
            self.problems.append(f"{name} is not set; {fix}")
            return ""
        return value

    def integer(self, name: str, default: int, *, low: int, high: int, example: int) -> int:
        return self._ranged(name, default, int, "an integer", low, high, example)

    def number(self, name: str, default: float, *, low: float, high: float, example: float) -> float:
        return self._ranged(name, default, float, "a number of seconds", low, high, example)

    def _ranged(self, name: str, default: T, parse: Callable[[str], T], kind: str,
                low: T, high: T, example: T) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            parsed = parse(value)
        except ValueError:
            self.problems.append(f"{name}={value!r} is not {kind}; try {example}.")
            return default
        if not low <= parsed <= high:  # type: ignore[operator]
            self.problems.append(f"{name}={value!r} is outside {low}..{high}; try {example}.")
            return default
        return parsed

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        self.problems.append(f"{name}={value!r} is not a boolean; use true or false.")
        return default

    def amqp_url(self, name: str = "AMQP_URL") -> str:
        value = self.text(name, "amqp://guest:guest@localhost:5672/")
        try:
            split_addresses(value)
        except AddressError as exc:
            self.problems.append(
                f"{name}={redact_url(value)!r} is not an AMQP URL: it {exc}; try amqp://user:password@rabbitmq:5672/ "
                "or, for several nodes of one cluster, amqp://user:password@rabbit-0:5672,rabbit-1:5672/.")
        self.problems.extend(tls_problems(value, name))
        return value

    def check(self) -> None:
        if self.problems:
            raise SettingsError(self.problems)


def redact_url(url: str) -> str:
    """An AMQP URL with its password replaced, for logs."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, _ = rest.partition("/")[0].rpartition("@")
    user, colon, password = userinfo.partition(":")
    return f"{scheme}{sep}{user}:***@{rest[len(userinfo) + 1:]}" if sep and at and colon and password else url
