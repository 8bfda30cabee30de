"""TLS to the broker: a RabbitMQ node with a TLS listener and a certificate authority made in the test.

The gateway and both consumers connect with `amqps://…?cafile=CA` (aio-pika's URL parameters,
verification on) and events go end to end; with another CA's certificate the consumer CLI stops with
one line naming the TLS problem (exit 2) and the gateway stays unready (503) with an error log
line saying why. A missing cafile is a settings error at start.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import wire
from tests.conftest import TEST_SECRET
from tests.integration.brokers import RABBITMQ_BIN, ScratchBroker
from tests.integration.consumer_helpers import ROOT, ConsumerProcess, eventually, rows
from tests.integration.processes import GatewayProcess
from tests.integration.tls import OPENSSL, ServerCertificate, make_authority

pytestmark = pytest.mark.integration


class Tls:
    """The node, the CA that signed its certificate, and another CA that did not."""

    def __init__(self, broker: ScratchBroker, right: ServerCertificate, wrong: ServerCertificate) -> None:
        self.broker, self.right, self.wrong = broker, right, wrong

    def url(self, ca: Path) -> str:
        return f"{self.broker.tls_url}?cafile={ca}"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    if OPENSSL is None:
        pytest.skip("openssl is not installed (Debian package openssl): cannot make a CA for the TLS listener")
    if not (RABBITMQ_BIN / "rabbitmq-server").exists() or os.geteuid() != 0:
        pytest.skip("a TLS listener needs a scratch node of Debian's rabbitmq-server, started as root")
    directory = tmp_path_factory.mktemp("tls")
    right, wrong = make_authority(directory, "right"), make_authority(directory, "wrong")
    with ScratchBroker(tls=right) as broker:
        yield Tls(broker, right, wrong)


def consumer(name: str, url: str, tmp_path: Path) -> ConsumerProcess:
    return ConsumerProcess(name, {"AMQP_URL": url, "CONSUMER_DATABASE": str(tmp_path / f"{name}.sqlite3"),
                                  "CONSUMER_HTTP_PORT": "0", "GATEWAY_EXCHANGE": wire.EXCHANGE},
                           tmp_path / f"{name}.log")


def send(url: str, key: str) -> str:
    done = subprocess.run([sys.executable, "-m", "gateway", "send-test-event", "--event", key, "--url", url,
                           "--secret", TEST_SECRET], capture_output=True, text=True, timeout=30, cwd=ROOT,
                          check=False)
    return done.stdout


async def test_gateway_and_consumers_over_verified_tls(tls: Tls, tmp_path: Path) -> None:
    url = tls.url(tls.right.ca)
    with GatewayProcess(url, wire.EXCHANGE, log_path=tmp_path / "gateway.log") as gateway:
        started = [consumer(name, url, tmp_path).start() for name in ("inventory", "orders")]
        try:
            for name in ("inventory", "orders"):
                await eventually(lambda n=name: f"{n}\t1" in tls.broker.ctl(  # type: ignore[misc]
                    "list_queues", "-q", "name", "consumers"), what=f"{name} consuming")
            assert send(gateway.url, "product.created").startswith('200 {"status":"accepted"')
            assert send(gateway.url, "sales_order.created").startswith('200 {"status":"accepted"')
            await eventually(lambda: rows(tmp_path / "inventory.sqlite3", "SELECT routing_key FROM consumer_applied")
                             == [("product.created",)]
                             and rows(tmp_path / "orders.sqlite3", "SELECT routing_key FROM consumer_applied")
                             == [("sales_order.created",)], what="both events applied")
            # Every client connection (gateway, two consumers) is a TLS one.
            connections = tls.broker.ctl("list_connections", "-q", "ssl", "client_properties").splitlines()
            ours = [line for line in connections if "tradevine-" in line]
            assert len(ours) == 3 and all(line.startswith("true") for line in ours), connections
        finally:
            for process in started:
                process.signal(signal.SIGTERM)
            codes = [await process.wait() for process in started]
            for process in started:
                process.stop()
    assert codes == [0, 0]


async def test_the_consumer_cli_stops_with_one_line_naming_the_tls_problem(tls: Tls, tmp_path: Path) -> None:
    process = consumer("inventory", tls.url(tls.wrong.ca), tmp_path).start()
    try:
        assert await process.wait() == 2
    finally:
        process.stop()
    text = process.log.read_text()
    errors = [line for line in text.splitlines() if line.startswith("tradevine-consumers:")]
    assert errors == [
        f"tradevine-consumers: cannot connect to RabbitMQ at amqps://guest:***@localhost:{tls.broker.tls_port}/"
        f"?cafile={tls.wrong.ca}: TLS certificate verification failed (self-signed certificate in certificate "
        "chain): the broker's certificate must be signed by the CA in AMQP_URL's cafile= (the system's CAs "
        "when unset) and name the host in AMQP_URL."], text
    assert "Traceback" not in text


async def test_the_gateway_stays_unready_and_logs_the_tls_problem(tls: Tls, tmp_path: Path) -> None:
    with GatewayProcess(tls.url(tls.wrong.ca), wire.EXCHANGE, wait_ready=False,
                        log_path=tmp_path / "gateway.log") as gateway:

        def logged() -> list[dict[str, object]]:
            lines = (json.loads(line) for line in gateway.log_text().splitlines() if line.startswith("{"))
            return [line for line in lines if line.get("event") == "broker_connect_failed"]

        await eventually(lambda: len(logged()) >= 2, what="two failed connection attempts logged")
        assert gateway.probe("/readyz") == 503
        answer = await asyncio.to_thread(send, gateway.url, "product.created")
        assert answer.startswith('503 {"error":"broker_unavailable"}'), answer
        first = logged()[0]
        assert first["level"] == "error", first
        assert str(first["error"]).startswith(
            "TLS certificate verification failed (self-signed certificate in certificate chain)"), first
    assert "Traceback" not in gateway.log_text()


def test_a_cafile_that_is_not_there_is_a_settings_error_at_start(tls: Tls, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.crt"
    env = {**os.environ, "AMQP_URL": tls.url(missing), "TRADEVINE_CONSUMER_SECRET": TEST_SECRET,
           "GATEWAY_PORT": "0"}
    for argv in (["-m", "gateway", "serve"], ["-m", "consumers", "run", "inventory"]):
        done = subprocess.run([sys.executable, *argv], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=30, check=False)
        assert done.returncode == 2, done.stderr
        assert f"AMQP_URL: cafile='{missing}' is not a readable file" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
