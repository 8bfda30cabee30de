"""AMQP_URL with several addresses of one cluster: how the host list is read and checked."""

from __future__ import annotations

import pytest

from gateway.amqp_addresses import AddressError, split_addresses
from gateway.errors import SettingsError
from gateway.settings import GatewaySettings
from gateway.wire import redact_url


def test_one_address_is_the_url_itself() -> None:
    assert split_addresses("amqps://u:p@rabbit:5671/v?cafile=/ca.pem") == ["amqps://u:p@rabbit:5671/v?cafile=/ca.pem"]


def test_each_host_gets_the_same_credentials_vhost_and_query() -> None:
    assert split_addresses("amqp://u:p@h1:5672, h2 ,[::1]:5673/vh?heartbeat=10") == [
        "amqp://u:p@h1:5672/vh?heartbeat=10", "amqp://u:p@h2/vh?heartbeat=10", "amqp://u:p@[::1]:5673/vh?heartbeat=10"]
    assert split_addresses("amqp://h1,h2") == ["amqp://h1", "amqp://h2"]


@pytest.mark.parametrize(("url", "says"), [
    ("amqp://u:p@h1,,h2/", "empty host"),
    ("amqp://u:p@h1:5672,h2:56x2/", "bad port in host 'h2:56x2'"),
    ("amqp://u:p@h1,:5672/", "no host name in ':5672'"),
    ("http://u:p@h1/", "amqp://"),
])
def test_a_bad_host_list_is_named(url: str, says: str) -> None:
    with pytest.raises(AddressError, match=says):
        split_addresses(url)


def test_settings_quote_the_bad_value_without_its_password() -> None:
    with pytest.raises(SettingsError) as caught:
        GatewaySettings.from_environ({"TRADEVINE_CONSUMER_SECRET": "s", "AMQP_URL": "amqp://gw:hunter2@h1,h2:x/"})
    [problem] = caught.value.problems
    assert "hunter2" not in problem
    assert problem.startswith("AMQP_URL='amqp://gw:***@h1,h2:x/' is not an AMQP URL: it has a bad port in host 'h2:x'")


def test_settings_accept_a_host_list() -> None:
    url = "amqp://gw:pw@rabbit-0:5672,rabbit-1:5672,rabbit-2:5672/"
    assert GatewaySettings.from_environ({"TRADEVINE_CONSUMER_SECRET": "s", "AMQP_URL": url}).amqp_url == url


def test_redact_url_hides_the_password_of_a_host_list() -> None:
    assert redact_url("amqp://gw:pw@h1:5672,h2/v") == "amqp://gw:***@h1:5672,h2/v"
    assert redact_url("amqp://h1/") == "amqp://h1/"
