"""/healthz, /readyz and /metrics."""

from __future__ import annotations

import asyncio

from consumers.http import HealthServer
from consumers.metrics import Metrics


def server(ready: bool) -> HealthServer:
    metrics = Metrics()
    metrics.count("inventory", "applied")
    return HealthServer("127.0.0.1", 0, ready=lambda: ready, registry=metrics.registry)


def test_healthz_needs_nothing() -> None:
    assert server(False).answer("GET", "/healthz")[0] == 200


def test_readyz_follows_the_broker_channel() -> None:
    assert server(True).answer("GET", "/readyz")[0] == 200
    assert server(False).answer("GET", "/readyz")[0] == 503


def test_metrics_carry_the_contract_names() -> None:
    status, content_type, body = server(True).answer("GET", "/metrics?x=1")
    assert status == 200 and content_type.startswith("text/plain")
    assert b'tradevine_consumer_messages_total{consumer="inventory",outcome="applied"} 1.0' in body
    assert b"tradevine_consumer_handler_seconds_bucket" in body or b"tradevine_consumer_handler_seconds" in body


def test_other_paths_and_methods() -> None:
    assert server(True).answer("GET", "/nope")[0] == 404
    assert server(True).answer("POST", "/healthz")[0] == 405


async def test_the_server_answers_over_tcp() -> None:
    health = server(True)
    await health.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", health.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await reader.read()
        writer.close()
        assert response.startswith(b"HTTP/1.1 200 OK\r\n") and response.endswith(b'{"status":"ok"}')
    finally:
        await health.close()
