"""An `Event` decoded from an AMQP message (pure: bytes, properties and headers in, a value out)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from consumers.errors import MalformedEvent
from gateway import wire
from gateway.message import INVALID, parse

_ENTITY_ID = {"product": ("Product", "ProductID"), "sales_order": ("SalesOrder", "SalesOrderID")}


def date_key(moment: datetime) -> str:
    """A UTC datetime as fixed-width text, so SQL compares it in time order."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"  # without its "+00:00"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One delivery as a handler sees it. Ids are strings (they exceed 2**53); `body` is the payload."""

    routing_key: str
    message_id: str
    body: Mapping[str, object]
    code: int | None = None
    organisation_id: str | None = None
    object_id: str | None = None
    event_date: datetime | None = None
    event_date_text: str | None = None
    source: str = wire.SOURCE_WEBHOOK
    attempt: int = 1
    headers: Mapping[str, object] = field(default_factory=dict)
    redelivered: bool = False
    # Worked out once (the store's guards and the handler ask for them): `entity_id`, `entity`, `date_key`.
    _entity_id: str | None = field(init=False, repr=False, compare=False, default=None)
    _entity: str | None = field(init=False, repr=False, compare=False, default=None)
    _date_key: str | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        model = wire.model_of(self.routing_key)
        entity_id = self._find_entity_id(model)
        object.__setattr__(self, "_entity_id", entity_id)
        object.__setattr__(self, "_entity", None if entity_id is None else f"{model or 'object'}:{entity_id}")
        if self.event_date is not None:
            object.__setattr__(self, "_date_key", date_key(self.event_date))

    @property
    def model(self) -> str | None:
        """`product` or `sales_order` (from the routing key), else None."""
        return wire.model_of(self.routing_key)

    @property
    def product(self) -> Mapping[str, object] | None:
        value = self.body.get("Product")
        return value if isinstance(value, dict) else None

    @property
    def sales_order(self) -> Mapping[str, object] | None:
        value = self.body.get("SalesOrder")
        return value if isinstance(value, dict) else None

    @property
    def entity_id(self) -> str | None:
        """ProductID / SalesOrderID from the payload, else EventObjectId."""
        return self._entity_id

    def _find_entity_id(self, model: str | None) -> str | None:
        if model is not None:
            part, key = _ENTITY_ID[model]
            payload = self.body.get(part)
            if isinstance(payload, dict) and (found := wire.id_text(payload.get(key))) is not None:
                return found
        return self.object_id

    @property
    def entity(self) -> str | None:
        """`product:<id>` or `sales_order:<id>`: what the stale guard orders events by (with the org)."""
        return self._entity

    @property
    def date_key(self) -> str | None:
        """`event_date` as the stale guard stores it (`date_key`), or None when undated."""
        return self._date_key


def usable_date(text: object) -> datetime | None:
    """EventDateUtc as an aware datetime, or None when it cannot order events.

    Missing, unparseable and .NET's minimum date (`0001-01-01T00:00:00`, seen in Tradevine's
    documentation sample) all give None: such an event is applied without moving the stale guard.
    """
    moment = wire.parse_event_date(text)
    if moment is None or moment.year <= 1:
        return None
    return moment


def _attempt(value: object) -> int:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, int) and not isinstance(value, bool):
        return max(1, value)
    if isinstance(value, str) and value.strip().isdigit():
        return max(1, int(value))
    return 1


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value else None


def original_routing_key(*, routing_key: str, exchange: str, type_: str | None,
                         headers: Mapping[str, object]) -> str:
    """The event's own routing key, also after a delay tier or a replay.

    Messages back from `NAME.retry.<s>s` or replayed arrive through the default exchange with the
    queue name as routing key; the `type` property (set by the gateway to the routing key) keeps it.
    """
    if exchange:
        return routing_key
    if type_:
        return type_
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[-1], dict):
        keys = deaths[-1].get("routing-keys")
        if isinstance(keys, list) and keys and (first := _text(keys[0])):
            return first
    return routing_key


def from_payload(payload: Mapping[str, object], *, routing_key: str, message_id: str,
                 headers: Mapping[str, object] | None = None, redelivered: bool = False) -> Event:
    """Build an Event from a parsed body and the message's headers (a dict is kept as it is, not copied)."""
    headers = headers if type(headers) is dict else dict(headers or {})
    code = payload.get("EventType")
    date_value = payload.get("EventDateUtc", headers.get(wire.H_EVENT_DATE))
    return Event(
        routing_key=routing_key,
        message_id=message_id,
        body=payload,
        code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        organisation_id=(wire.id_text(payload.get("OrganisationID"))
                         or _text(headers.get(wire.H_ORGANISATION_ID))),
        object_id=wire.id_text(payload.get("EventObjectId")) or _text(headers.get(wire.H_OBJECT_ID)),
        event_date=usable_date(date_value),
        event_date_text=wire.scalar_text(date_value),
        source=_text(headers.get(wire.H_SOURCE)) or wire.SOURCE_WEBHOOK,
        attempt=_attempt(headers.get(wire.H_ATTEMPT)),
        headers=headers,
        redelivered=redelivered,
    )


def decode(body: bytes, *, routing_key: str, exchange: str = "", message_id: str | None = None,
           type_: str | None = None, headers: Mapping[str, object] | None = None,
           redelivered: bool = False) -> Event:
    """Decode one AMQP message; raises MalformedEvent when the body is not a JSON object."""
    headers = dict(headers or {})
    key = original_routing_key(routing_key=routing_key, exchange=exchange, type_=type_, headers=headers)
    mid = message_id or hashlib.sha256(body).hexdigest()
    payload = parse(body)
    if payload is INVALID or not isinstance(payload, dict):
        raise MalformedEvent(f"{key} {mid[:12]} is not a JSON object")
    return from_payload(payload, routing_key=key, message_id=mid, headers=headers,
                        redelivered=redelivered)
