"""The endpoint's order of checks and answers, with an in-memory publisher (no broker)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.message import Outgoing
from gateway.metrics import GatewayMetrics
from gateway.publisher import InMemoryPublisher
from gateway.settings import GatewaySettings
from gateway.signature import dotnet_ascii
from tests.conftest import TEST_SECRET, sign

URL = "/webhooks/tradevine"


def make(env: dict[str, str] | None = None) -> tuple[Starlette, InMemoryPublisher]:
    settings = GatewaySettings.from_environ({"TRADEVINE_CONSUMER_SECRET": TEST_SECRET, **(env or {})})
    publisher = InMemoryPublisher()
    return create_app(settings, publisher, metrics=GatewayMetrics(), clock=lambda: 1_700_000_000.0), publisher


class Client(httpx.AsyncClient):
    """An httpx client bound to the app, with the app's lifespan running."""

    def __init__(self, app: Starlette) -> None:
        super().__init__(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
        self.lifespan = app.router.lifespan_context(app)

    async def __aenter__(self) -> Client:
        await self.lifespan.__aenter__()
        await super().__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__()
        await self.lifespan.__aexit__(None, None, None)


@pytest.fixture
async def app() -> AsyncIterator[tuple[Client, InMemoryPublisher]]:
    application, publisher = make()
    async with Client(application) as client:
        yield client, publisher


def signed(body: bytes, **headers: str) -> dict[str, str]:
    return {"X-Tradevine-Hmac-SHA256": sign(body), **headers}


async def test_a_signed_body_is_published_then_accepted(app: tuple[Client, InMemoryPublisher],
                                                  product_body: bytes) -> None:
    client, publisher = app
    answer = await client.post(URL, content=product_body, headers=signed(product_body))

    digest = hashlib.sha256(product_body).hexdigest()
    assert (answer.status_code, answer.json()) == (200, {"status": "accepted", "message_id": digest})
    assert [(m.routing_key, m.message_id) for m in publisher.messages] == [("product.created", digest)]


async def test_a_duplicate_delivery_is_answered_the_same_way(app: tuple[Client, InMemoryPublisher],
                                                       product_body: bytes) -> None:
    client, _ = app
    first = await client.post(URL, content=product_body, headers=signed(product_body))
    second = await client.post(URL, content=product_body, headers=signed(product_body))
    assert (first.status_code, first.json()) == (second.status_code, second.json())


@pytest.mark.parametrize("headers", [{}, {"X-Tradevine-Hmac-SHA256": ""}, {"X-Tradevine-Hmac-SHA256": "0" * 64}])
async def test_a_bad_signature_gets_401_and_nothing_is_published(app: tuple[Client, InMemoryPublisher],
                                                           product_body: bytes, headers: dict[str, str]) -> None:
    client, publisher = app
    answer = await client.post(URL, content=product_body, headers=headers)
    assert (answer.status_code, answer.json()) == (401, {"error": "invalid_signature"})
    assert publisher.messages == []


async def test_the_csharp_sample_signature_over_ascii_bytes_is_accepted(app: tuple[Client, InMemoryPublisher]) -> None:
    client, publisher = app
    body = '{"EventType":95002,"Product":{"Name":"Crème brûlée 🍰"}}'.encode()
    answer = await client.post(URL, content=body, headers={"X-Tradevine-Hmac-SHA256": sign(dotnet_ascii(body)).upper()})
    assert answer.status_code == 200
    assert publisher.messages[0].body == body


async def test_the_custom_header_is_checked_before_the_signature(product_body: bytes) -> None:
    application, publisher = make({"TRADEVINE_CUSTOM_HEADER_NAME": "X-Api-Key",
                                   "TRADEVINE_CUSTOM_HEADER_VALUE": "key-1"})
    async with Client(application) as client:
        no_header = await client.post(URL, content=product_body, headers={"X-Tradevine-Hmac-SHA256": "bad"})
        wrong = await client.post(URL, content=product_body, headers=signed(product_body, **{"X-Api-Key": "key-2"}))
        right = await client.post(URL, content=product_body, headers=signed(product_body, **{"X-Api-Key": "key-1"}))
    assert (no_header.status_code, no_header.json()) == (401, {"error": "invalid_custom_header"})
    assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid_custom_header"})
    assert right.status_code == 200 and len(publisher.messages) == 1


async def test_the_size_cap_comes_before_everything(product_body: bytes) -> None:
    application, publisher = make({"GATEWAY_MAX_BODY_BYTES": "1024", "TRADEVINE_CUSTOM_HEADER_NAME": "X-K",
                                   "TRADEVINE_CUSTOM_HEADER_VALUE": "v"})
    async with Client(application) as client:
        answer = await client.post(URL, content=product_body)
    assert (answer.status_code, answer.json()) == (413, {"error": "body_too_large"})
    assert publisher.messages == []


async def test_a_streamed_body_is_cut_at_the_cap_and_the_rest_never_read() -> None:
    application, _ = make({"GATEWAY_MAX_BODY_BYTES": "1024"})
    reads = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal reads
        for _ in range(100):
            reads += 1
            yield b"x" * 512

    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        answer = await client.post(URL, content=chunks())
    assert answer.status_code == 413
    assert reads < 100


async def test_a_broker_failure_gets_503_with_retry_after(app: tuple[Client, InMemoryPublisher],
                                                    product_body: bytes) -> None:
    client, publisher = app
    publisher.fail = "no confirm within 3.0s"
    answer = await client.post(URL, content=product_body, headers=signed(product_body))
    assert (answer.status_code, answer.json(), answer.headers["retry-after"]) == (
        503, {"error": "broker_unavailable"}, "5")


async def test_a_verified_non_object_is_accepted_as_invalid(app: tuple[Client, InMemoryPublisher]) -> None:
    client, publisher = app
    answer = await client.post(URL, content=b"[]", headers=signed(b"[]"))
    assert answer.status_code == 200
    assert publisher.messages[0].routing_key == "invalid"


async def test_any_content_type_is_accepted(app: tuple[Client, InMemoryPublisher], product_body: bytes) -> None:
    client, _ = app
    headers = signed(product_body, **{"Content-Type": "text/plain"})
    answer = await client.post(URL, content=product_body, headers=headers)
    assert answer.status_code == 200


async def test_trailing_slash_and_methods(app: tuple[Client, InMemoryPublisher], product_body: bytes) -> None:
    client, _ = app
    slash = await client.post(URL + "/", content=product_body, headers=signed(product_body), follow_redirects=False)
    assert slash.status_code == 200
    assert (await client.get(URL)).status_code == 405
    assert (await client.put(URL + "/")).status_code == 405


async def test_probes_reflect_the_publisher(app: tuple[Client, InMemoryPublisher]) -> None:
    client, publisher = app
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    publisher.fail = "down"
    assert (await client.get("/readyz")).status_code == 503
    assert (await client.get("/healthz")).status_code == 200


async def test_metrics_count_outcomes_and_never_show_secrets(app: tuple[Client, InMemoryPublisher],
                                                       product_body: bytes) -> None:
    client, _ = app
    await client.post(URL, content=product_body, headers=signed(product_body))
    await client.post(URL, content=product_body, headers={"X-Tradevine-Hmac-SHA256": "bad"})
    text = (await client.get("/metrics")).text
    assert 'tradevine_gateway_requests_total{outcome="accepted"} 1.0' in text
    assert 'tradevine_gateway_requests_total{outcome="invalid_signature"} 1.0' in text
    assert 'tradevine_gateway_signature_failures_total{reason="mismatch"} 1.0' in text
    assert 'tradevine_gateway_events_total{routing_key="product.created"} 1.0' in text
    assert 'tradevine_gateway_last_event_timestamp_seconds{organisation_id="3479979772659009354"} 1.7e+09' in text
    assert TEST_SECRET not in text and "99366f6d" not in text


async def test_logs_never_carry_the_access_token_or_secret(app: tuple[Client, InMemoryPublisher], product_body: bytes,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    client, publisher = app
    caplog.set_level("DEBUG")
    await client.post(URL, content=product_body, headers=signed(product_body))
    await client.post(URL, content=product_body, headers={"X-Tradevine-Hmac-SHA256": "bad"})
    publisher.fail = "down"
    await client.post(URL, content=product_body, headers=signed(product_body))
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "webhook_rejected" in logged and "publish_failed" in logged
    assert "99366f6d-ee8e-463b-a4e6-64b66a855bf4" not in logged and TEST_SECRET not in logged
    assert sign(product_body) not in logged


class HeldPublisher(InMemoryPublisher):
    """Each publish waits until `release` is set (a broker slow to confirm)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def publish(self, message: Outgoing) -> None:
        self.waiting.set()
        await self.release.wait()
        await super().publish(message)


async def test_a_request_cancelled_while_awaiting_the_confirm_frees_its_in_flight_slot(product_body: bytes) -> None:
    """A pod stopping, or a client gone, cancels the request mid-publish: the slot must come back, or
    GATEWAY_MAX_IN_FLIGHT cancelled requests later every webhook would get 503 overloaded."""
    settings = GatewaySettings.from_environ({"TRADEVINE_CONSUMER_SECRET": TEST_SECRET, "GATEWAY_MAX_IN_FLIGHT": "1"})
    publisher, metrics = HeldPublisher(), GatewayMetrics()
    async with Client(create_app(settings, publisher, metrics=metrics)) as client:
        held = asyncio.create_task(client.post(URL, content=product_body, headers=signed(product_body)))
        await publisher.waiting.wait()
        assert metrics.publishing == 1
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held
        assert metrics.publishing == 0
        assert metrics.registry.get_sample_value("tradevine_gateway_publishes_in_flight") == 0
        publisher.release.set()
        response = await client.post(URL, content=product_body, headers=signed(product_body))
        assert response.status_code == 200, response.text
    assert len(publisher.messages) == 1
