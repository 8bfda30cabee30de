"""Decoding AMQP messages into Events."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consumers.errors import MalformedEvent
from consumers.event import decode, original_routing_key, usable_date
from tests.conftest import fixture_bytes

HEADERS = {"tradevine-source": "webhook", "tradevine-organisation-id": "3479979772659009354"}


def test_a_product_message_decodes_with_ids_as_exact_strings() -> None:
    event = decode(fixture_bytes("product-created.json"), routing_key="product.created",
                   exchange="tradevine.events", message_id="abc", headers=HEADERS)
    assert (event.routing_key, event.message_id, event.code) == ("product.created", "abc", 95001)
    assert event.organisation_id == "3479979772659009354"
    assert event.object_id == "3451582911247567682"
    assert event.entity == "product:3451582911247567682"
    assert event.event_date == datetime(2025, 3, 18, 21, 14, 7, 347000, tzinfo=UTC)
    assert event.event_date_text == "2025-03-18T21:14:07.347"
    assert event.source == "webhook"
    assert event.attempt == 1
    assert event.product is not None and event.product["Code"] == "MSP-152"
    assert event.sales_order is None


def test_a_sales_order_entity_is_its_sales_order_id() -> None:
    event = decode(fixture_bytes("sales-order-status-changed.json"), routing_key="sales_order.status_changed",
                   exchange="tradevine.events", message_id="m")
    assert event.entity == "sales_order:3479979772702215467"
    assert event.model == "sales_order"


def test_after_a_delay_tier_the_routing_key_comes_from_the_type_property() -> None:
    event = decode(fixture_bytes("product-created.json"), routing_key="inventory", exchange="",
                   message_id="m", type_="product.created", headers={"tradevine-attempt": "3"})
    assert event.routing_key == "product.created"
    assert event.attempt == 3


def test_without_a_type_the_routing_key_comes_from_x_death() -> None:
    headers = {"x-death": [{"routing-keys": [b"product.updated"], "queue": "inventory.retry.5s"}]}
    assert original_routing_key(routing_key="inventory", exchange="", type_=None,
                                headers=headers) == "product.updated"


def test_a_missing_message_id_becomes_the_sha256_of_the_body() -> None:
    event = decode(b'{"EventType": 95001}', routing_key="product.created", exchange="x")
    assert len(event.message_id) == 64 and int(event.message_id, 16) >= 0


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"', b""])
def test_a_body_that_is_not_a_json_object_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedEvent):
        decode(body, routing_key="invalid", exchange="x", message_id="m")


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00", "", "yesterday", None, 12])
def test_dates_that_cannot_order_events_are_none(text: object) -> None:
    assert usable_date(text) is None


@pytest.mark.parametrize("value, attempt", [("2", 2), (b"4", 4), (7, 7), ("x", 1), ("0", 1), (None, 1)])
def test_the_attempt_header_is_read_leniently(value: object, attempt: int) -> None:
    event = decode(b"{}", routing_key="k", exchange="x", message_id="m", headers={"tradevine-attempt": value})
    assert event.attempt == attempt


def test_ids_beyond_2_to_the_53_survive_unchanged() -> None:
    body = b'{"OrganisationID": 9223372036854775807, "EventObjectId": 9007199254740993}'
    event = decode(body, routing_key="product.updated", exchange="x", message_id="m")
    assert (event.organisation_id, event.object_id) == ("9223372036854775807", "9007199254740993")
