"""A Node.js consumer (amqplib) configured only by docs/asyncapi.yaml receives every event type as documented.

The real gateway process takes every webhook event type (signed, over HTTP), the real reconciler publishes
`*.reconciled` from a fake Tradevine API; `tests/interop/consumer.mjs` binds its own exclusive queue to every
routing key the document lists and reports each message as a JSON line, which is checked here against what
was sent and what the document says.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from gateway import asyncapi, sample, wire
from gateway.reconcile import cli as reconcile_cli
from tests.conftest import sign
from tests.integration.fake_tradevine import FakeTradevine, product, sales_order, serving
from tests.integration.processes import GatewayProcess

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
DOCUMENT = HERE.parents[1] / "docs" / "asyncapi.yaml"
ORG = 3479979772659009354  # above 2^53: must arrive as this exact string
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _node_or_skip() -> str:
    node = shutil.which("node")
    reason = None
    if node is None:
        reason = "node not found: install Node.js 20 to run the Node.js consumer (CI always does)"
    elif not (HERE / "node_modules" / "amqplib").is_dir() or not (HERE / "node_modules" / "yaml").is_dir():
        reason = "npm packages of tests/interop not installed: run `make interop-deps` (npm ci in tests/interop)"
    if reason is None:
        assert node is not None
        return node
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


class NodeConsumer:
    """`node consumer.mjs` with its JSON lines collected by a thread."""

    def __init__(self, node: str, amqp_url: str, exchange: str) -> None:
        env = {**os.environ, "AMQP_URL": amqp_url, "GATEWAY_EXCHANGE": exchange}
        self.process = subprocess.Popen([node, str(HERE / "consumer.mjs"), str(DOCUMENT)], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def next(self, timeout: float) -> dict[str, Any]:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            code = self.process.poll()
            err = self.process.stderr.read() if code is not None and self.process.stderr else ""
            raise AssertionError(f"no line from the Node.js consumer within {timeout}s (exit {code}) {err}") from None

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@pytest.fixture
def exchange(amqp_url: str, unique: str) -> Iterator[str]:
    name = f"test.interop.{unique}"
    yield name

    async def delete() -> None:
        async with await aio_pika.connect(amqp_url) as connection:
            channel = await connection.channel()
            await channel.queue_delete(wire.unrouted_name(name))
            await channel.exchange_delete(name)
            await channel.exchange_delete(wire.unrouted_name(name))

    asyncio.run(delete())


def gateway_bodies() -> dict[str, bytes]:
    """One raw body per routing key the gateway routes to (every event type, unknowns, invalid)."""
    bodies = {key: sample.payload_for(key, organisation_id=ORG) for key in sample.known_keys(wire.EVENT_TYPES)}
    # A value over the header bound: the message carries tradevine-truncated.
    long_date = json.loads(bodies["product.updated"])
    long_date["EventDateUtc"] = "2025-03-18T21:14:07.347" + "7" * 200
    bodies["product.updated"] = sample.encode(long_date)
    return bodies


def run_reconciler(amqp_url: str, exchange: str) -> None:
    api = FakeTradevine(products=[product(3451582911247567002, "2025-03-18T21:00:00")],
                        sales_orders=[sales_order(3479979772702215001, "2025-03-18T21:30:00")])
    with serving(api):
        parser = argparse.ArgumentParser(prog="tradevine-gateway reconcile")
        reconcile_cli.add_arguments(parser)
        env = {**api.credentials.environ(api.base_url), "AMQP_URL": amqp_url, "GATEWAY_EXCHANGE": exchange}
        err = io.StringIO()
        code = reconcile_cli.run(parser.parse_args(["--lookback", "2h", "--until", "2025-03-18T22:00:00Z"]), env,
                             stdout=io.StringIO(), stderr=err)
        assert (code, err.getvalue()) == (0, "")


def test_node_consumer_receives_every_event_type_as_documented(amqp_url: str, exchange: str) -> None:
    node = _node_or_skip()
    documented = asyncapi.document()
    headers_schema = documented["components"]["schemas"]["MessageHeaders"]["properties"]
    with GatewayProcess(amqp_url, exchange) as gateway:  # declares the exchange at start
        consumer = NodeConsumer(node, amqp_url, exchange)
        try:
            ready = consumer.next(30)
            assert ready["ready"] is True and ready["exchange"] == exchange
            assert ready["documentedExchange"] == wire.EXCHANGE
            routing_keys = {c["address"] for c in documented["channels"].values()
                            if c["bindings"]["amqp"]["is"] == "routingKey"}
            assert set(ready["routingKeys"]) == routing_keys and len(routing_keys) == 16
            assert set(ready["headers"]) == set(headers_schema)

            bodies = gateway_bodies()
            sent_at = time.time()
            with httpx.Client(timeout=10) as client:
                for key, body in bodies.items():
                    headers = {"Content-Type": "application/json", "X-Tradevine-Hmac-SHA256": sign(body)}
                    if key == "sales_order.created":
                        headers |= {"traceparent": TRACEPARENT, "tracestate": "vendor=1"}
                    answer = client.post(gateway.url, content=body, headers=headers)
                    assert answer.status_code == 200, (key, answer.text)
                    assert answer.json()["message_id"] == hashlib.sha256(body).hexdigest()
            run_reconciler(amqp_url, exchange)

            received: dict[str, dict[str, Any]] = {}
            while len(received) < len(routing_keys):
                record = consumer.next(30)
                assert record["routingKey"] not in received, f"{record['routingKey']} arrived twice"
                received[record["routingKey"]] = record
        finally:
            assert consumer.stop() == 0

    assert set(received) == routing_keys
    for key, record in received.items():
        props = record["properties"]
        assert record["problems"] == [], (key, record["problems"])
        assert record["exchange"] == exchange
        assert props["type"] == key and props["contentType"] == wire.CONTENT_TYPE and props["deliveryMode"] == 2
        assert abs(props["timestamp"] - sent_at) < 120
        assert set(record["headerTypes"].values()) == {"string"}, (key, record["headerTypes"])
        assert set(record["headers"]) <= set(headers_schema)
        reconciled = key.endswith(".reconciled")
        assert props["appId"] == (wire.APP_ID_RECONCILER if reconciled else wire.APP_ID_GATEWAY)
        headers = record["headers"]
        assert headers[wire.H_SOURCE] == (wire.SOURCE_RECONCILIATION if reconciled else wire.SOURCE_WEBHOOK)
        assert wire.H_RECEIVED_AT in headers
        if key == wire.RK_INVALID:
            assert props["messageId"] == hashlib.sha256(bodies[key]).hexdigest() == record["bodySha256"]
            assert wire.H_EVENT_KEY not in headers
            continue
        # The gateway removes AccessToken (a new body); message_id stays the SHA-256 of what was posted.
        body = json.loads(record["body"])
        assert "AccessToken" not in body
        assert headers[wire.H_ORGANISATION_ID] == str(ORG if not reconciled else body["OrganisationID"])
        assert headers[wire.H_EVENT_KEY].count(":") >= 3
        if not reconciled:
            assert props["messageId"] == hashlib.sha256(bodies[key]).hexdigest()
            assert headers[wire.H_EVENT_TYPE] == str(json.loads(bodies[key])["EventType"])
        else:
            assert props["messageId"] == record["bodySha256"]
    assert received["product.updated"]["headers"][wire.H_TRUNCATED] == f"{wire.H_EVENT_DATE},{wire.H_EVENT_KEY}"
    assert all(wire.H_TRUNCATED not in r["headers"] for k, r in received.items() if k != "product.updated")
    traced = received["sales_order.created"]["headers"]
    assert (traced["traceparent"], traced["tracestate"]) == (TRACEPARENT, "vendor=1")
