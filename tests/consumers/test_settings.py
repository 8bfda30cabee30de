"""ConsumerSettings from the environment: defaults, and every problem at once."""

from __future__ import annotations

import pytest

from consumers import Consumer, ConsumerSettings, RetryPolicy
from consumers.errors import SettingsError
from consumers.runner import Runner
from consumers.settings import parse_delays


def test_defaults() -> None:
    settings = ConsumerSettings.from_environ({})
    assert settings == ConsumerSettings()
    assert (settings.exchange, settings.http_port, settings.prefetch, settings.concurrency) == (
        "tradevine.events", 8081, 128, 64)
    assert (settings.batch_size, settings.batch_max_wait_ms) == (64, 5)
    assert settings.database_path("inventory") == "./inventory.sqlite3"
    assert settings.queue_name("inventory") == "inventory"
    assert settings.retry_delays is None


def test_every_variable_is_read() -> None:
    settings = ConsumerSettings.from_environ({
        "AMQP_URL": "amqp://u:p@rabbit:5672/", "GATEWAY_EXCHANGE": "staging.events",
        "CONSUMER_DATABASE": "/data/stock.db", "CONSUMER_QUEUE": "inventory-staging",
        "CONSUMER_HTTP_HOST": "0.0.0.0", "CONSUMER_HTTP_PORT": "0", "CONSUMER_PREFETCH": "50",
        "CONSUMER_CONCURRENCY": "8", "CONSUMER_RETRY_DELAYS": "1, 2", "CONSUMER_DRAIN_SECONDS": "5",
        "CONSUMER_LOG_LEVEL": "DEBUG"})
    assert settings == ConsumerSettings(
        amqp_url="amqp://u:p@rabbit:5672/", exchange="staging.events", database="/data/stock.db",
        queue="inventory-staging", http_host="0.0.0.0", http_port=0, prefetch=50, concurrency=8,
        retry_delays=(1, 2), drain_seconds=5.0, log_level="debug")
    assert settings.database_path("inventory") == "/data/stock.db"


def test_all_problems_are_reported_together_with_fixes() -> None:
    with pytest.raises(SettingsError) as raised:
        ConsumerSettings.from_environ({
            "AMQP_URL": "http://x", "CONSUMER_HTTP_PORT": "80a", "CONSUMER_PREFETCH": "0",
            "CONSUMER_RETRY_DELAYS": "5,soon", "CONSUMER_LOG_LEVEL": "loud"})
    problems = raised.value.problems
    assert len(problems) == 5
    text = str(raised.value)
    for fragment in ("AMQP_URL='http://x'", "CONSUMER_HTTP_PORT='80a'", "CONSUMER_PREFETCH='0'",
                     "CONSUMER_RETRY_DELAYS='5,soon'", "CONSUMER_LOG_LEVEL='loud'", "try"):
        assert fragment in text


def test_the_password_never_shows_in_a_bad_url_problem() -> None:
    with pytest.raises(SettingsError) as raised:
        ConsumerSettings.from_environ({"AMQP_URL": "http://user:hunter2@x/"})
    assert "hunter2" not in str(raised.value)


def test_the_url_is_not_in_the_repr() -> None:
    assert "hunter2" not in repr(ConsumerSettings(amqp_url="amqp://u:hunter2@x/"))


@pytest.mark.parametrize("text, delays", [("5,30,120,600", (5, 30, 120, 600)), (" 1 , 2 ", (1, 2)), ("none", ())])
def test_retry_delays_parse(text: str, delays: tuple[int, ...]) -> None:
    assert parse_delays(text) == delays


@pytest.mark.parametrize("text", ["0", "1.5", "-1", "1,,2", "86401"])
def test_bad_retry_delays_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_delays(text)


def test_the_handler_time_limit_overrides_the_consumers_policy() -> None:
    consumer = Consumer("stock", bindings=("product.#",), retry=RetryPolicy(handler_timeout=30))
    assert ConsumerSettings.from_environ({}).handler_timeout is None
    kept = Runner(consumer, ConsumerSettings.from_environ({}))
    assert kept.delivery.policy.handler_timeout == 30
    settings = ConsumerSettings.from_environ({"CONSUMER_HANDLER_TIMEOUT_SECONDS": "2.5"})
    assert Runner(consumer, settings).delivery.policy.handler_timeout == 2.5


@pytest.mark.parametrize("value", ["soon", "0", "-1"])
def test_a_bad_handler_time_limit_is_reported_with_its_fix(value: str) -> None:
    with pytest.raises(SettingsError, match=rf"CONSUMER_HANDLER_TIMEOUT_SECONDS='{value}' .*try 60"):
        ConsumerSettings.from_environ({"CONSUMER_HANDLER_TIMEOUT_SECONDS": value})
