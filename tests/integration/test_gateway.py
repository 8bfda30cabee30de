"""The gateway as a real process against a real RabbitMQ: routing, properties, rejections, outages."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import httpx
import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from gateway import sample, wire
from tests.conftest import TEST_SECRET, sign
from tests.integration.brokers import ScratchBroker, free_port
from tests.integration.processes import GatewayProcess, delete_gateway_topology

pytestmark = pytest.mark.integration

STREAMS = ("product.#", "sales_order.#")


@pytest.fixture(scope="module")
def exchange(amqp_url: str) -> Iterator[str]:
    name = f"test.gateway.{time.monotonic_ns()}"
    yield name
    asyncio.run(delete_gateway_topology(amqp_url, name))


@pytest.fixture(scope="module")
def gateway(amqp_url: str, exchange: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with GatewayProcess(amqp_url, exchange, log_path=log) as process:
        yield process


@pytest.fixture
async def channel(amqp_url: str) -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        yield await connection.channel()


@pytest.fixture
async def streams(channel: AbstractChannel, exchange: str, gateway: GatewayProcess) -> AbstractQueue:
    """An exclusive queue bound to both streams (not to `invalid` or `unknown`)."""
    queue = await channel.declare_queue("", exclusive=True)
    for key in STREAMS:
        await queue.bind(exchange, key)
    return queue


@pytest.fixture
async def unrouted(channel: AbstractChannel, exchange: str, gateway: GatewayProcess) -> AbstractQueue:
    queue = await channel.declare_queue(wire.unrouted_name(exchange), passive=True)
    await queue.purge()
    return queue


async def next_message(queue: AbstractQueue, timeout: float = 5.0) -> AbstractIncomingMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            return message
        await _pause()
    raise AssertionError(f"no message in {queue.name} within {timeout}s")


async def _pause() -> None:
    await asyncio.sleep(0.02)


def post(url: str, body: bytes, *, secret: str = TEST_SECRET, headers: dict[str, str] | None = None,
         signature: str | None = None) -> httpx.Response:
    sent = {"X-Tradevine-Hmac-SHA256": signature if signature is not None else sign(body, secret),
            "Content-Type": "application/json", **(headers or {})}
    return httpx.post(url, content=body, headers=sent, timeout=10)


@pytest.mark.parametrize("code", sorted(wire.EVENT_TYPES))
async def test_each_event_type_arrives_under_its_routing_key(
        gateway: GatewayProcess, streams: AbstractQueue, code: int) -> None:
    key = wire.EVENT_TYPES[code]
    payload = sample.body_for(key)
    body = sample.encode(payload)

    answer = post(gateway.url, body)

    digest = hashlib.sha256(body).hexdigest()
    assert (answer.status_code, answer.json()) == (200, {"status": "accepted", "message_id": digest})
    message = await next_message(streams)
    assert message.routing_key == key
    assert (message.message_id, message.type, message.app_id, message.content_type) == (
        digest, key, "tradevine-gateway", "application/json")
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.timestamp is not None
    assert abs(message.timestamp.timestamp() - time.time()) < 60
    model = payload["Product"] or payload["SalesOrder"]
    object_id = str(model["ProductID" if key.startswith("product") else "SalesOrderID"])
    headers = dict(message.headers)
    received_at = headers.pop(wire.H_RECEIVED_AT)
    assert isinstance(received_at, str) and received_at.endswith("Z")
    assert headers == {
        wire.H_EVENT_TYPE: str(code),
        wire.H_ORGANISATION_ID: "3479979772659009354",
        wire.H_OBJECT_ID: object_id,
        wire.H_EVENT_DATE: payload["EventDateUtc"],
        wire.H_EVENT_KEY: f"3479979772659009354:{code}:{object_id}:{payload['EventDateUtc']}",
        wire.H_SOURCE: "webhook",
    }
    expected = {k: v for k, v in payload.items() if k != "AccessToken"}
    assert orjson.loads(message.body) == expected
    assert b"AccessToken" not in message.body


@pytest.mark.parametrize(("model", "key"), [("Product", "product.unknown"),
                                            ("SalesOrder", "sales_order.unknown")])
async def test_an_unknown_code_is_routed_by_the_payload_present(
        gateway: GatewayProcess, streams: AbstractQueue, model: str, key: str) -> None:
    payload = sample.body_for(key)
    assert payload["EventType"] == sample.UNKNOWN_CODE and payload[model] is not None

    assert post(gateway.url, sample.encode(payload)).status_code == 200

    message = await next_message(streams)
    assert (message.routing_key, message.headers[wire.H_EVENT_TYPE]) == (key, str(sample.UNKNOWN_CODE))


async def test_a_body_that_is_not_a_json_object_lands_in_the_unrouted_queue(
        gateway: GatewayProcess, streams: AbstractQueue, unrouted: AbstractQueue) -> None:
    body = b"this is not json \xff"

    answer = post(gateway.url, body)

    assert answer.status_code == 200
    message = await next_message(unrouted)
    assert (message.routing_key, message.body, message.type) == ("invalid", body, "invalid")
    assert message.headers[wire.H_SOURCE] == "webhook"
    assert await streams.get(fail=False) is None


async def test_an_object_without_a_model_or_known_code_lands_in_the_unrouted_queue(
        gateway: GatewayProcess, unrouted: AbstractQueue) -> None:
    body = b'{"OrganisationID": 1, "EventType": 1, "AccessToken": "t"}'

    assert post(gateway.url, body).status_code == 200

    message = await next_message(unrouted)
    assert (message.routing_key, orjson.loads(message.body)) == ("unknown", {"OrganisationID": 1, "EventType": 1})


@pytest.mark.parametrize("signature", ["", "0" * 64, "not-hex"])
async def test_a_bad_or_missing_signature_gets_401_and_publishes_nothing(
        gateway: GatewayProcess, streams: AbstractQueue, unrouted: AbstractQueue, signature: str) -> None:
    rejected = sample.encode(sample.body_for("product.updated"))
    marker = sample.encode(sample.body_for("product.created"))

    answer = post(gateway.url, rejected, signature=signature)
    assert post(gateway.url, marker).status_code == 200

    assert (answer.status_code, answer.json()) == (401, {"error": "invalid_signature"})
    # The 401 was answered before the marker was sent: anything it published would be queued first.
    assert (await next_message(streams)).message_id == hashlib.sha256(marker).hexdigest()
    assert await unrouted.get(fail=False) is None


async def test_a_body_signed_with_another_secret_gets_401(gateway: GatewayProcess) -> None:
    answer = post(gateway.url, sample.encode(sample.body_for("product.created")), secret="other-secret")

    assert (answer.status_code, answer.json()) == (401, {"error": "invalid_signature"})


def test_an_oversized_body_gets_413_whether_declared_or_streamed(gateway: GatewayProcess) -> None:
    big = b'{"x":"' + b"a" * 2_100_000 + b'"}'

    declared = post(gateway.url, big)
    streamed = httpx.post(gateway.url, content=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                          headers={"X-Tradevine-Hmac-SHA256": sign(big)}, timeout=10)

    assert (declared.status_code, declared.json()) == (413, {"error": "body_too_large"})
    assert (streamed.status_code, streamed.json()) == (413, {"error": "body_too_large"})


async def test_the_trailing_slash_is_answered_directly(
        gateway: GatewayProcess, streams: AbstractQueue) -> None:
    body = sample.encode(sample.body_for("sales_order.created"))

    answer = httpx.post(gateway.url + "/", content=body, headers={"X-Tradevine-Hmac-SHA256": sign(body)},
                        follow_redirects=False, timeout=10)

    assert answer.status_code == 200
    assert (await next_message(streams)).routing_key == "sales_order.created"


def test_other_methods_get_405(gateway: GatewayProcess) -> None:
    assert httpx.get(gateway.url, timeout=5).status_code == 405


def test_probes_and_metrics(gateway: GatewayProcess) -> None:
    assert httpx.get(gateway.base + "/healthz", timeout=5).json() == {"status": "ok"}
    assert httpx.get(gateway.base + "/readyz", timeout=5).json() == {"status": "ready"}
    body = sample.encode(sample.body_for("product.deleted", organisation_id=77))
    assert post(gateway.url, body).status_code == 200

    metrics = httpx.get(gateway.base + "/metrics", timeout=5).text

    assert 'tradevine_gateway_requests_total{outcome="accepted"}' in metrics
    assert 'tradevine_gateway_events_total{routing_key="product.deleted"}' in metrics
    assert 'tradevine_gateway_last_event_timestamp_seconds{organisation_id="77"}' in metrics
    assert "tradevine_gateway_publish_seconds_bucket" in metrics


def test_custom_header_is_required_when_configured(amqp_url: str, exchange: str) -> None:
    env = {"TRADEVINE_CUSTOM_HEADER_NAME": "X-Api-Key", "TRADEVINE_CUSTOM_HEADER_VALUE": "k-123"}
    body = sample.encode(sample.body_for("product.created"))
    with GatewayProcess(amqp_url, exchange, extra_env=env) as gateway:
        missing = post(gateway.url, body)
        wrong = post(gateway.url, body, headers={"X-Api-Key": "k-124"})
        right = post(gateway.url, body, headers={"x-api-key": "k-123"})

    assert (missing.status_code, missing.json()) == (401, {"error": "invalid_custom_header"})
    assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid_custom_header"})
    assert right.status_code == 200


def test_an_unreachable_broker_gets_503_well_inside_five_seconds(exchange: str) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    body = sample.encode(sample.body_for("product.created"))
    with GatewayProcess(dead, exchange, wait_ready=False) as gateway:
        started = time.monotonic()
        answer = post(gateway.url, body)
        elapsed = time.monotonic() - started
        ready = httpx.get(gateway.base + "/readyz", timeout=5).status_code

    assert (answer.status_code, answer.json()) == (503, {"error": "broker_unavailable"})
    assert answer.headers["retry-after"] == "5"
    assert elapsed < 4.0
    assert ready == 503


def test_the_gateway_accepts_again_after_a_broker_restart_without_restarting(exchange: str) -> None:
    body = sample.encode(sample.body_for("product.created"))
    with ScratchBroker() as broker, GatewayProcess(broker.url, exchange) as gateway:
        pid = gateway.process.pid if gateway.process else None
        assert post(gateway.url, body).status_code == 200
        broker.stop_app()
        down = post(gateway.url, body)
        broker.start_app()
        started = time.monotonic()
        gateway.wait_until(lambda: post(gateway.url, body).status_code == 200, 15)
        recovered_after = time.monotonic() - started
        same_process = gateway.process is not None and gateway.process.pid == pid

    assert down.status_code == 503
    assert recovered_after < 15
    assert same_process


def test_sigterm_drains_and_stops_cleanly(amqp_url: str, exchange: str, tmp_path: Path) -> None:
    gateway = GatewayProcess(amqp_url, exchange, log_path=tmp_path / "gateway.log")
    with gateway:
        assert post(gateway.url, sample.encode(sample.body_for("product.created"))).status_code == 200
        code = gateway.stop()

    assert code in (0, -signal.SIGTERM)
    events = [orjson.loads(line)["event"] for line in gateway.log_text().splitlines() if line.startswith("{")]
    assert "gateway_stopped" in events


def test_sigterm_waits_for_an_in_flight_confirm(exchange: str) -> None:
    body = sample.encode(sample.body_for("sales_order.updated"))
    env = {"GATEWAY_PUBLISH_TIMEOUT_SECONDS": "4"}
    with ScratchBroker() as broker, GatewayProcess(broker.url, exchange, extra_env=env) as gateway:
        queue = f"{exchange}.all"
        asyncio.run(_declare_bound_queue(broker.url, exchange, queue))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            broker.block()  # a memory alarm: the broker holds the publish, its confirm stays in flight
            answer = pool.submit(post, gateway.url, body)
            gateway.wait_until(lambda: _gauge(gateway, "tradevine_gateway_publishes_in_flight") == 1, 5)
            assert gateway.process is not None
            gateway.process.send_signal(signal.SIGTERM)
            broker.unblock()
            result = answer.result(timeout=10)
        code = gateway.stop()
        queued = asyncio.run(_queue_length(broker.url, queue))

    assert result.status_code == 200
    assert code in (0, -signal.SIGTERM)
    assert queued == 1


async def _declare_bound_queue(url: str, exchange: str, name: str) -> None:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, durable=True)
        await queue.bind(exchange, "#")


async def _queue_length(url: str, name: str) -> int:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)


def _gauge(gateway: GatewayProcess, name: str) -> float | None:
    for line in httpx.get(gateway.base + "/metrics", timeout=2).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None
