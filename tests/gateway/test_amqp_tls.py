"""TLS parameters of AMQP_URL checked at start, and failed connections described in one line."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiormq
import pytest

from gateway.amqp_tls import connect_error_text, tls_error, tls_problems
from gateway.errors import SettingsError
from gateway.settings import GatewaySettings


def test_an_amqps_url_with_a_readable_cafile_is_fine(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert tls_problems(f"amqps://u:p@rabbitmq:5671/?cafile={ca}") == []
    assert tls_problems("amqps://u:p@rabbitmq:5671/") == []  # the system's CAs


def test_missing_files_and_tls_options_on_cleartext_are_each_reported(tmp_path: Path) -> None:
    problems = tls_problems(f"amqp://u:p@rabbitmq:5672/?cafile={tmp_path}/ca.crt&keyfile={tmp_path}/k.pem"
                            "&no_verify_ssl=yes")
    assert problems == [
        "AMQP_URL sets cafile, keyfile, no_verify_ssl but starts with amqp://, which is not TLS; use amqps:// "
        "(port 5671).",
        f"AMQP_URL: cafile='{tmp_path}/ca.crt' is not a readable file; mount the certificate there (e.g. from "
        "the broker's TLS Secret) or correct the path.",
        f"AMQP_URL: keyfile='{tmp_path}/k.pem' is not a readable file; mount the certificate there (e.g. from "
        "the broker's TLS Secret) or correct the path.",
        "AMQP_URL sets keyfile without certfile; give both (a client certificate and its key).",
        "AMQP_URL: no_verify_ssl='yes' is not 0 or 1; leave it out (verification on).",
    ]


def test_settings_report_a_missing_cafile_with_the_other_problems(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as error:
        GatewaySettings.from_environ({"AMQP_URL": f"amqps://u:secret@rabbitmq:5671/?cafile={tmp_path}/x.crt",
                                      "GATEWAY_PORT": "80a", "TRADEVINE_CONSUMER_SECRET": "s"})
    assert len(error.value.problems) == 2
    assert f"cafile='{tmp_path}/x.crt' is not a readable file" in str(error.value)
    assert "secret" not in str(error.value).replace("TRADEVINE_CONSUMER_SECRET", "")


def wrapped(cause: BaseException) -> aiormq.exceptions.AMQPConnectionError:
    """What aiormq raises: AMQPConnectionError from the TLS error."""
    try:
        try:
            raise cause
        except BaseException as exc:
            raise aiormq.exceptions.AMQPConnectionError(*exc.args) from exc
    except aiormq.exceptions.AMQPConnectionError as outer:
        return outer


def test_a_verification_failure_says_tls_names_the_reason_and_the_fix() -> None:
    failure = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    failure.verify_message = "self-signed certificate in certificate chain"
    exc = wrapped(failure)
    assert tls_error(exc) is failure
    assert connect_error_text(exc) == (
        "TLS certificate verification failed (self-signed certificate in certificate chain): the broker's "
        "certificate must be signed by the CA in AMQP_URL's cafile= (the system's CAs when unset) and name the "
        "host in AMQP_URL.")


def test_another_tls_failure_and_a_plain_one() -> None:
    failure = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    failure.reason = "WRONG_VERSION_NUMBER"
    assert connect_error_text(wrapped(failure)).startswith("TLS handshake failed (WRONG_VERSION_NUMBER): check")
    refused = wrapped(ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)"))
    assert tls_error(refused) is None
    assert connect_error_text(refused) == "AMQPConnectionError: [Errno 111] Connect call failed ('127.0.0.1', 1)"
