"""The lean AMQP property encoder writes, byte for byte, what pamqp (aio-pika's encoder) writes.

Property sets it handles itself are compared with pamqp's bytes while pamqp's encoder is unavailable
to it (so a fallback cannot pass for the lean path); every other set must reach pamqp and come out as
pamqp writes it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pamqp.commands import Basic

from gateway import message, wire
from gateway.amqp_properties import PERSISTENT, GatewayProperties, amqp_properties

FIXTURES = Path(__file__).parent.parent / "fixtures"
MOMENT = datetime(2025, 3, 18, 21, 0, 5, 678_000, tzinfo=UTC)
OURS: dict[str, Any] = {
    "content_type": "application/json", "delivery_mode": PERSISTENT, "message_id": "a" * 64,
    "timestamp": MOMENT, "message_type": "product.created", "app_id": wire.APP_ID_GATEWAY,
    "headers": {wire.H_EVENT_TYPE: "95001", wire.H_ORGANISATION_ID: "3479979772659009354"},
}

LEAN = {
    "the gateway's usual set": {},
    "no headers": {"headers": {}},
    "headers given unsorted": {"headers": {"z": "1", "a": "2", "m": "3"}},
    "empty header value": {"headers": {"tradevine-object-id": ""}},
    "non-ASCII header value and key": {"headers": {"tradevine-ñame": "Ōtautahi ☃ 🦜"}},
    "header value of 10,000 bytes (a long string)": {"headers": {"big": "x" * 10_000}},
    "header key of 128 bytes": {"headers": {"k" * 128: "v"}},
    "message_id of 255 bytes": {"message_id": "m" * 255},
    "naive timestamp (read as UTC)": {"timestamp": MOMENT.replace(tzinfo=None)},
    "timestamp in another zone": {"timestamp": MOMENT.astimezone(timezone(timedelta(hours=13)))},
    "reconciler app_id": {"app_id": wire.APP_ID_RECONCILER, "message_type": "sales_order.reconciled"},
}

TO_PAMQP = {
    "nested table and array in a header": {"headers": {"x-death": [{"count": 2, "queue": "inventory",
                                                                     "routing-keys": ["product.created"]}]}},
    "None header value": {"headers": {"tradevine-object-id": None}},
    "integer, float and boolean headers": {"headers": {"tradevine-attempt": 3, "ratio": 0.5, "ok": True}},
    "huge integer header": {"headers": {"id": 2**62}},
    "header key over 128 bytes": {"headers": {"k" * 129: "v"}},
    "headers None": {"headers": None},
    "content_encoding set": {"content_encoding": "gzip"},
    "priority set": {"priority": 5},
    "correlation_id and reply_to set": {"correlation_id": "c-1", "reply_to": "amq.rabbitmq.reply-to"},
    "expiration set": {"expiration": "60000"},
    "user_id set": {"user_id": "guest"},
    "transient delivery_mode": {"delivery_mode": 1},
    "delivery_mode None": {"delivery_mode": None},
    "timestamp None": {"timestamp": None},
    "content_type None": {"content_type": None},
    "message_id None": {"message_id": None},
    "message_type None": {"message_type": None},
    "app_id None": {"app_id": None},
    "everything None": {name: None for name in OURS},
}


def pamqp_bytes(fields: dict[str, Any]) -> bytes:
    return Basic.Properties(**fields).marshal()


@pytest.mark.parametrize("change", LEAN.values(), ids=LEAN.keys())
def test_the_lean_path_writes_pamqps_bytes_without_pamqp(change: dict[str, Any],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    fields = {**OURS, **change}
    expected = pamqp_bytes(fields)

    def refused(self: Basic.Properties) -> bytes:
        raise AssertionError("left to pamqp")

    monkeypatch.setattr(Basic.Properties, "marshal", refused)
    assert GatewayProperties(**fields).marshal() == expected


@pytest.mark.parametrize("change", TO_PAMQP.values(), ids=TO_PAMQP.keys())
def test_other_property_sets_are_left_to_pamqp(change: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    fields = {**OURS, **change}
    expected = pamqp_bytes(fields)
    marshal = Basic.Properties.marshal
    calls: list[Basic.Properties] = []

    def counted(self: Basic.Properties) -> bytes:
        calls.append(self)
        return marshal(self)

    monkeypatch.setattr(Basic.Properties, "marshal", counted)
    properties = GatewayProperties(**fields)
    assert properties.marshal() == expected
    assert calls == [properties]


def test_a_short_string_over_255_bytes_is_refused_as_pamqp_refuses_it() -> None:
    fields = {**OURS, "message_id": "é" * 128}  # 256 bytes in UTF-8
    with pytest.raises(TypeError) as theirs:
        pamqp_bytes(fields)
    with pytest.raises(TypeError) as ours:
        GatewayProperties(**fields).marshal()
    assert str(ours.value) == str(theirs.value)


def test_the_bytes_are_written_once() -> None:
    properties = GatewayProperties(**OURS)
    first = properties.marshal()
    properties.headers = {"changed": "after"}
    assert properties.marshal() is first


@pytest.mark.parametrize("fixture", ["product-created.json", "sales-order-status-changed.json"])
def test_a_built_messages_properties_are_pamqps_bytes(fixture: str) -> None:
    outgoing = message.build((FIXTURES / fixture).read_bytes(), table=wire.EVENT_TYPES, received_at=MOMENT,
                             source=wire.SOURCE_WEBHOOK, app_id=wire.APP_ID_GATEWAY)
    properties = amqp_properties(outgoing)
    assert properties.marshal() == pamqp_bytes({
        "content_type": "application/json", "headers": dict(outgoing.headers), "delivery_mode": PERSISTENT,
        "message_id": outgoing.message_id, "timestamp": outgoing.timestamp, "message_type": outgoing.routing_key,
        "app_id": wire.APP_ID_GATEWAY})
