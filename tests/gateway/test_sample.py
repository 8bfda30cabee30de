"""Bodies built by `send-test-event`, and the command's answers to bad input."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from gateway import cli, sample, wire

MOMENT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def test_every_key_the_gateway_routes_to_can_be_sent() -> None:
    assert set(sample.known_keys(wire.EVENT_TYPES)) == {*wire.EVENT_TYPES.values(), "product.unknown",
                                                        "sales_order.unknown", "unknown", "invalid"}


@pytest.mark.parametrize("key", sample.known_keys(wire.EVENT_TYPES))
def test_every_known_key_gets_a_raw_body_the_gateway_routes_back_to_it(key: str) -> None:
    assert wire.routing_key(orjson.loads(sample.payload_for(key)), wire.EVENT_TYPES) == key


@pytest.mark.parametrize("key", ["product.reconciled", "sales_order.reconciled"])
def test_a_reconciled_key_is_refused_with_what_to_do_instead(key: str) -> None:
    with pytest.raises(ValueError, match=rf"'{key}' is published by the reconciler.*tradevine-gateway reconcile"):
        sample.payload_for(key)


@pytest.mark.parametrize("key", [k for k in sample.known_keys(wire.EVENT_TYPES) if k not in ("unknown", "invalid")])
def test_every_webhook_key_gets_a_body_that_routes_back_to_it(key: str) -> None:
    body = sample.body_for(key, event_date=MOMENT)
    assert wire.routing_key(body, wire.EVENT_TYPES) == key
    assert body["EventDateUtc"] == "2026-01-02T03:04:05.678"
    model = body["Product"] if key.startswith("product") else body["SalesOrder"]
    assert body["EventObjectId"] == model["ProductID" if key.startswith("product") else "SalesOrderID"]


def test_ids_can_be_chosen_and_stay_integers() -> None:
    body = sample.body_for("sales_order.created", organisation_id=3479979772659009999, object_id=42)
    assert (body["OrganisationID"], body["SalesOrder"]["OrganisationID"], body["EventObjectId"],
            body["SalesOrder"]["SalesOrderID"]) == (3479979772659009999, 3479979772659009999, 42, 42)
    assert b'"OrganisationID":3479979772659009999' in sample.encode(body)


def test_shipment_confirmed_ships_every_pack_list() -> None:
    order = sample.body_for("sales_order.shipment.confirmed", event_date=MOMENT)["SalesOrder"]
    assert [(p["Status"], p["ShippedDate"]) for p in order["PackLists"]] == [(14003, "2026-01-02T03:04:05.678")]


def test_an_overridden_table_is_followed() -> None:
    table = wire.event_table("95011=product.archived")
    assert sample.body_for("product.archived", table)["EventType"] == 95011


def test_an_unknown_key_lists_the_choices() -> None:
    expected = r"no event type routes to 'product\.exploded'; choose one of: invalid, product\.created"
    with pytest.raises(ValueError, match=expected):
        sample.body_for("product.exploded")


def test_send_test_event_needs_a_secret(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["send-test-event", "--event", "product.created"], environ={}) == 2
    assert "pass --secret or set TRADEVINE_CONSUMER_SECRET" in capsys.readouterr().err


def test_send_test_event_rejects_an_unknown_event(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["send-test-event", "--event", "nope", "--secret", "s"], environ={}) == 2
    assert "--event no event type routes to 'nope'" in capsys.readouterr().err


def test_send_test_event_reports_an_unreachable_gateway(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["send-test-event", "--event", "product.created", "--secret", "s",
                     "--url", "http://127.0.0.1:9/webhooks/tradevine", "--timeout", "2"], environ={})
    assert code == 1
    assert "is the gateway running there?" in capsys.readouterr().err
