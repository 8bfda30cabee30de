"""The routing table, its override, and the id/date helpers of the wire contract."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest

from gateway import wire


@pytest.mark.parametrize(("payload", "key"), [
    ({"EventType": 95001, "Product": {}}, "product.created"),
    ({"EventType": 95010, "SalesOrder": {}}, "sales_order.shipment.confirmed"),
    ({"EventType": 95999, "Product": {"ProductID": 1}}, "product.unknown"),
    ({"EventType": 95999, "Product": None, "SalesOrder": {"SalesOrderID": 1}}, "sales_order.unknown"),
    ({"EventType": 95999, "Product": None, "SalesOrder": None}, "unknown"),
    ({"EventType": "95001", "Product": {}}, "product.unknown"),
    ({"EventType": True}, "unknown"),
    ({}, "unknown"),
    ([1, 2], "invalid"),
    ("text", "invalid"),
    (None, "invalid"),
])
def test_routing_key(payload: object, key: str) -> None:
    assert wire.routing_key(payload, wire.EVENT_TYPES) == key


def test_the_built_in_table_covers_the_ten_documented_event_types() -> None:
    assert sorted(wire.EVENT_TYPES) == list(range(95001, 95011))
    assert sum(k.startswith("product.") for k in wire.EVENT_TYPES.values()) == 5


def test_an_override_replaces_and_extends_the_table() -> None:
    table = wire.event_table(" 95001=product.added , 95011=product.archived,")
    assert (table[95001], table[95011], table[95002]) == ("product.added", "product.archived", "product.updated")


@pytest.mark.parametrize("text", ["95001", "abc=product.created", "95001=Product Created", "95001=", "=x"])
def test_a_bad_override_quotes_the_item_and_shows_the_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not CODE=routing\.key; try 95011=product\.archived"):
        wire.parse_event_types(text)


@pytest.mark.parametrize(("value", "text"), [
    (3479979772659009354, "3479979772659009354"), ("3479979772659009354", "3479979772659009354"),
    (None, None), (True, None), ("", None), (1.5, None), ({}, None)])
def test_ids_travel_as_strings(value: object, text: str | None) -> None:
    assert wire.id_text(value) == text


@pytest.mark.parametrize(("value", "expected"), [
    ("2025-03-18T21:14:07.347", datetime(2025, 3, 18, 21, 14, 7, 347000, tzinfo=UTC)),
    ("2025-03-18T21:14:07.3471234", datetime(2025, 3, 18, 21, 14, 7, 347123, tzinfo=UTC)),
    ("2025-03-18T21:14:07Z", datetime(2025, 3, 18, 21, 14, 7, tzinfo=UTC)),
    ("2025-03-18T21:14:07.3471234z", datetime(2025, 3, 18, 21, 14, 7, 347123, tzinfo=UTC)),
    (" 2025-03-18T21:14:07.3471234Z ", datetime(2025, 3, 18, 21, 14, 7, 347123, tzinfo=UTC)),
    ("2025-03-19T10:14:07+13:00", datetime(2025, 3, 18, 21, 14, 7, tzinfo=UTC)),
    ("0001-01-01T00:00:00", datetime(1, 1, 1, tzinfo=UTC)),
    ("yesterday", None), (None, None), (20250318, None)])
def test_event_dates_parse_as_utc(value: object, expected: datetime | None) -> None:
    assert wire.parse_event_date(value) == expected


def test_event_key_keeps_empty_parts() -> None:
    assert wire.event_key("1", "95001", None, "2025-01-01T00:00:00") == "1:95001::2025-01-01T00:00:00"


def test_the_wire_module_imports_only_the_standard_library() -> None:
    code = ("import sys, gateway.wire; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'starlette','aio_pika','aiormq','uvicorn','orjson','prometheus_client','httpx'}); print(bad)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("value", "number", "integer"), [
    (12, 12.0, 12), (78.5, 78.5, None), (True, None, None), ("12", None, None), (None, None, None)])
def test_json_numbers_are_narrowed_without_accepting_booleans(value: object, number: float | None,
                                                              integer: int | None) -> None:
    assert (wire.number_value(value), wire.integer_value(value)) == (number, integer)
