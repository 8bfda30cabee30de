"""Building the outgoing message from a verified body (pure)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import orjson

from gateway import message, wire

RECEIVED = datetime(2025, 3, 18, 21, 14, 8, 123000, tzinfo=UTC)


def build(raw: bytes, **kwargs: object) -> message.Outgoing:
    return message.build(raw, table=wire.EVENT_TYPES, received_at=RECEIVED, **kwargs)  # type: ignore[arg-type]


def test_a_product_event(product_body: bytes) -> None:
    out = build(product_body)

    assert (out.routing_key, out.message_id, out.app_id, out.timestamp) == (
        "product.created", hashlib.sha256(product_body).hexdigest(), "tradevine-gateway", RECEIVED)
    assert out.headers == {
        "tradevine-event-type": "95001",
        "tradevine-organisation-id": "3479979772659009354",
        "tradevine-object-id": "3451582911247567682",
        "tradevine-event-date": "2025-03-18T21:14:07.347",
        "tradevine-event-key": "3479979772659009354:95001:3451582911247567682:2025-03-18T21:14:07.347",
        "tradevine-source": "webhook",
        "tradevine-received-at": "2025-03-18T21:14:08.123Z",
    }
    expected = orjson.loads(product_body)
    del expected["AccessToken"]
    assert orjson.loads(out.body) == expected


def test_nineteen_digit_ids_survive_the_round_trip_exactly(sales_order_body: bytes) -> None:
    out = build(sales_order_body)
    assert b'"OrganisationID":3479979772659009354' in out.body
    assert b'"SalesOrderID":3479979772702215467' in out.body


def test_keep_access_token_publishes_the_raw_bytes(product_body: bytes) -> None:
    assert build(product_body, keep_access_token=True).body is product_body


def test_a_body_without_access_token_is_published_byte_for_byte() -> None:
    raw = b'{ "EventType": 95002,  "Product": {"ProductID": 1} }'
    assert build(raw).body is raw


def test_a_null_object_id_has_no_header() -> None:
    out = build(b'{"OrganisationID":1,"EventType":95001,"EventObjectId":null,"EventDateUtc":"0001-01-01T00:00:00"}')
    assert wire.H_OBJECT_ID not in out.headers
    assert out.headers[wire.H_EVENT_KEY] == "1:95001::0001-01-01T00:00:00"


def test_integers_beyond_64_bits_are_kept_exactly() -> None:
    raw = b'{"OrganisationID":123456789012345678901234567890,"AccessToken":"t","EventType":95001,"Product":{}}'
    out = build(raw)
    assert out.headers[wire.H_ORGANISATION_ID] == "123456789012345678901234567890"
    assert b"123456789012345678901234567890" in out.body and b"AccessToken" not in out.body


def test_non_json_is_invalid_and_published_as_is() -> None:
    raw = b"\x00\xffnot json"
    out = build(raw)
    assert (out.routing_key, out.body, out.headers[wire.H_SOURCE]) == ("invalid", raw, "webhook")
    assert wire.H_EVENT_KEY not in out.headers


def test_a_json_array_is_invalid() -> None:
    assert build(b"[1,2,3]").routing_key == "invalid"


def test_the_reconciler_overrides_key_source_and_app() -> None:
    out = build(b'{"OrganisationID":1,"EventType":95002,"Product":{"ProductID":2}}', routing_key="product.reconciled",
                source="reconciliation", app_id="tradevine-reconciler")
    assert (out.routing_key, out.app_id, out.headers[wire.H_SOURCE]) == (
        "product.reconciled", "tradevine-reconciler", "reconciliation")


def test_a_long_payload_value_is_cut_in_its_header_and_named_but_the_body_is_intact() -> None:
    date = "2025-03-18T21:14:07.347" + "9" * 300_000
    raw = orjson.dumps({"EventType": 95001, "OrganisationID": 1, "EventObjectId": "é" * 100, "EventDateUtc": date})
    out = build(raw)
    assert out.body == raw
    assert out.headers["tradevine-event-date"] == date[:wire.MAX_HEADER_VALUE_BYTES]
    assert out.headers["tradevine-object-id"] == "é" * (wire.MAX_HEADER_VALUE_BYTES // 2)
    assert out.headers["tradevine-truncated"] == "tradevine-object-id,tradevine-event-date,tradevine-event-key"
    assert all(len(v.encode()) <= 4 * wire.MAX_HEADER_VALUE_BYTES + 3 for v in out.headers.values())


def test_a_value_at_the_bound_is_not_cut_and_a_lone_surrogate_is_replaced() -> None:
    assert wire.bounded("x" * wire.MAX_HEADER_VALUE_BYTES) == ("x" * wire.MAX_HEADER_VALUE_BYTES, False)
    assert wire.bounded("ab\ud800") == ("ab?", True)
    assert wire.bounded("€" * 43) == ("€" * 42, True)  # 129 bytes: cut before the character, never inside it
