"""Settings: defaults, every problem reported at once with its fix, secrets never printed."""

from __future__ import annotations

import pytest

from gateway.errors import SettingsError
from gateway.settings import GatewaySettings

SECRET = "s3cret-value"


def test_defaults_follow_the_contract() -> None:
    s = GatewaySettings.from_environ({"TRADEVINE_CONSUMER_SECRET": SECRET})
    assert (s.secrets, s.custom_header_name, s.ascii_compat, s.amqp_url, s.exchange, s.host, s.port,
            s.max_body_bytes, s.publish_timeout, s.keep_access_token) == (
        (SECRET,), None, True, "amqp://guest:guest@localhost:5672/", "tradevine.events", "127.0.0.1", 8080,
        2_097_152, 3.0, False)
    assert s.event_types[95001] == "product.created"
    assert s.keepalive == 75.0


def test_keepalive_outlasts_the_ingress_upstream_keepalive_and_is_settable() -> None:
    assert GatewaySettings.from_environ({"TRADEVINE_CONSUMER_SECRET": SECRET}).keepalive > 60
    env = {"TRADEVINE_CONSUMER_SECRET": SECRET, "GATEWAY_KEEPALIVE_SECONDS": "90"}
    assert GatewaySettings.from_environ(env).keepalive == 90.0
    with pytest.raises(SettingsError) as caught:
        GatewaySettings.from_environ({**env, "GATEWAY_KEEPALIVE_SECONDS": "0"})
    assert caught.value.problems == ["GATEWAY_KEEPALIVE_SECONDS='0' is outside 1.0..3600.0; try 75.0."]


def test_several_secrets_are_split_on_commas() -> None:
    s = GatewaySettings.from_environ({"TRADEVINE_CONSUMER_SECRET": " new , old ,"})
    assert s.secrets == ("new", "old")
    assert s.secret_bytes == (b"new", b"old")


def test_every_problem_is_reported_together_with_its_fix() -> None:
    env = {"GATEWAY_PORT": "80a", "GATEWAY_PUBLISH_TIMEOUT_SECONDS": "9", "GATEWAY_MAX_BODY_BYTES": "big",
           "TRADEVINE_SIGNATURE_ASCII_COMPAT": "maybe", "TRADEVINE_EVENT_TYPES": "95001=Bad Key",
           "TRADEVINE_CUSTOM_HEADER_NAME": "X-Key", "AMQP_URL": "http://user:pw@host/"}
    with pytest.raises(SettingsError) as caught:
        GatewaySettings.from_environ(env)
    assert caught.value.problems == [
        "TRADEVINE_CONSUMER_SECRET is not set; set it to your Tradevine API application's consumer secret "
        "(several, comma-separated, during rotation).",
        "TRADEVINE_CUSTOM_HEADER_NAME and TRADEVINE_CUSTOM_HEADER_VALUE must be set together; set both "
        "(as configured on the Tradevine webhook) or neither.",
        "TRADEVINE_EVENT_TYPES: '95001=Bad Key' is not CODE=routing.key; try 95011=product.archived "
        "(digits, '=', lowercase words joined by dots).",
        "TRADEVINE_SIGNATURE_ASCII_COMPAT='maybe' is not a boolean; use true or false.",
        ("AMQP_URL='http://user:***@host/' is not an AMQP URL: it does not start with amqp:// or amqps://; try "
             "amqp://user:password@rabbitmq:5672/ or, for several nodes of one cluster, "
             "amqp://user:password@rabbit-0:5672,rabbit-1:5672/."),
        "GATEWAY_PORT='80a' is not an integer; try 8080.",
        "GATEWAY_MAX_BODY_BYTES='big' is not an integer; try 2097152.",
        "GATEWAY_PUBLISH_TIMEOUT_SECONDS='9' is outside 0.05..4.5; try 3.0.",
    ]
    assert "pw" not in str(caught.value)


def test_secrets_do_not_appear_in_the_repr() -> None:
    env = {"TRADEVINE_CONSUMER_SECRET": SECRET, "TRADEVINE_CUSTOM_HEADER_NAME": "X-Key",
           "TRADEVINE_CUSTOM_HEADER_VALUE": "header-secret", "AMQP_URL": "amqp://u:amqp-pw@h/"}
    text = repr(GatewaySettings.from_environ(env))
    assert SECRET not in text and "header-secret" not in text and "amqp-pw" not in text


def test_serving_without_a_secret_is_allowed_for_other_commands() -> None:
    assert GatewaySettings.from_environ({}, require_secret=False).secrets == ()


@pytest.mark.parametrize(("text", "value"), [("true", True), ("FALSE", False), ("1", True), ("off", False)])
def test_booleans(text: str, value: bool) -> None:
    env = {"TRADEVINE_CONSUMER_SECRET": SECRET, "GATEWAY_KEEP_ACCESS_TOKEN": text}
    assert GatewaySettings.from_environ(env).keep_access_token is value


def test_json_log_lines_carry_no_ansi_colour_codes() -> None:
    import logging

    from gateway.logs import JsonFormatter

    record = logging.makeLogRecord({"msg": "Started server process [%d]", "args": (42,), "name": "uvicorn.error",
                                    "levelname": "INFO", "color_message": "Started server process [\x1b[36m%d\x1b[0m]",
                                    "port": 8080})
    line = JsonFormatter().format(record)
    assert "\x1b" not in line and "color_message" not in line
    assert '"event":"Started server process [42]"' in line and '"port":8080' in line


def test_the_edge_limits_have_defaults_and_bad_values_say_the_fix() -> None:
    settings = GatewaySettings.from_environ({"TRADEVINE_CONSUMER_SECRET": SECRET})
    assert (settings.request_timeout, settings.max_connections, settings.max_in_flight) == (3.0, 1024, 256)
    assert settings.connection_overflow == 102
    with pytest.raises(SettingsError) as caught:
        GatewaySettings.from_environ({"TRADEVINE_CONSUMER_SECRET": SECRET, "GATEWAY_REQUEST_TIMEOUT_SECONDS": "0",
                                      "GATEWAY_MAX_CONNECTIONS": "many", "GATEWAY_MAX_IN_FLIGHT": "0"})
    assert caught.value.problems == [
        "GATEWAY_REQUEST_TIMEOUT_SECONDS='0' is outside 0.1..60.0; try 3.0.",
        "GATEWAY_MAX_CONNECTIONS='many' is not an integer; try 1024.",
        "GATEWAY_MAX_IN_FLIGHT='0' is outside 1..100000; try 256.",
    ]
