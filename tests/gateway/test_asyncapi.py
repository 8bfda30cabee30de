"""The AsyncAPI document: generated from the wire contract, committed up to date, parseable as YAML."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import yaml

from gateway import asyncapi, wire
from gateway.cli import main

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
REGENERATE = "tradevine-gateway asyncapi > docs/asyncapi.yaml"


def run(*argv: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["asyncapi", *argv]) == 0
    return out.getvalue()


def test_committed_document_is_up_to_date() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == run(), (
        f"docs/asyncapi.yaml is out of date with gateway/wire.py; regenerate it: {REGENERATE}")


def test_yaml_and_json_forms_hold_the_same_document() -> None:
    from_yaml = yaml.safe_load(run())
    from_json = json.loads(run("--format", "json"))
    assert from_yaml == from_json == json.loads(json.dumps(asyncapi.document()))
    assert from_yaml["asyncapi"] == "3.0.0"


def test_every_routing_key_has_a_channel_operation_and_message_bound_to_the_topic_exchange() -> None:
    doc = asyncapi.document()
    keys = [*wire.EVENT_TYPES.values(), wire.RK_PRODUCT_UNKNOWN, wire.RK_SALES_ORDER_UNKNOWN, wire.RK_UNKNOWN,
            wire.RK_INVALID, wire.RK_PRODUCT_RECONCILED, wire.RK_SALES_ORDER_RECONCILED]
    routed = {c["address"]: c for c in doc["channels"].values() if c["bindings"]["amqp"]["is"] == "routingKey"}
    assert sorted(routed) == sorted(keys)
    for key, channel in routed.items():
        exchange = channel["bindings"]["amqp"]["exchange"]
        assert exchange == {"name": wire.EXCHANGE, "type": "topic", "durable": True, "autoDelete": False,
                            "vhost": "/"}
        message = doc["components"]["messages"][key]
        assert message["bindings"]["amqp"]["messageType"] == key
        assert message["x-amqp-properties"]["type"]["const"] == key
        operation = doc["operations"][f"publish.{key}"]
        assert operation["action"] == "send" and operation["bindings"]["amqp"]["deliveryMode"] == 2
    assert doc["components"]["messages"][wire.RK_PRODUCT_RECONCILED]["x-amqp-properties"]["app_id"] == {
        "const": wire.APP_ID_RECONCILER}
    assert doc["channels"]["unrouted"]["address"] == wire.unrouted_name(wire.EXCHANGE)


def test_every_header_name_in_the_wire_contract_is_documented_as_a_string() -> None:
    names = {value for name, value in vars(wire).items() if name.startswith("H_")}
    headers = asyncapi.document()["components"]["schemas"]["MessageHeaders"]["properties"]
    assert names | {"traceparent", "tracestate"} == set(headers)
    assert all(schema["type"] == "string" and schema["description"] for schema in headers.values())


def test_consumer_queue_pattern_follows_the_topology() -> None:
    channels = asyncapi.document()["channels"]
    assert channels["consumerQueue"]["address"] == "{name}"
    assert channels["consumerQueue"]["x-queue-arguments"]["x-queue-type"] == "quorum"
    assert "x-delivery-limit" in channels["consumerQueue"]["x-queue-arguments"]
    assert channels["consumerRetry"]["address"] == "{name}.retry.{seconds}s"
    assert channels["consumerParked"]["address"] == "{name}.parked"


def test_ids_are_documented_as_exceeding_two_to_the_53() -> None:
    webhook = asyncapi.document()["components"]["schemas"]["Webhook"]
    assert webhook["additionalProperties"] is True
    assert "2^53" in webhook["properties"]["OrganisationID"]["description"]


def test_emitter_quotes_what_yaml_would_misread() -> None:
    doc = {"a": "yes", "b": "3.0.0", "c": "x: y # z", "d": ["1", 1, True, None, {}, []], "e": [{"k": "v", "l": [1]}],
           "on": "Crème ✓ \"q\"\n", "f": "-dash", "g": "/"}
    assert yaml.safe_load(asyncapi.to_yaml(doc)) == doc
