"""A consumer process survives a broker restart: /readyz goes 503 then 200, and consuming resumes."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.integration.brokers import ScratchBroker, free_port
from tests.integration.consumer_helpers import Broker, ConsumerProcess, Names, body, eventually, outgoing, rows

pytestmark = [pytest.mark.integration, pytest.mark.fault]
T0 = datetime(2025, 3, 18, 21, 0, tzinfo=UTC)


def readyz(port: int) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code
    except httpx.HTTPError:
        return None


def wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.05)


async def publish(url: str, names: Names, key: str, date: datetime) -> None:
    async with Broker(url, names) as broker:
        await eventually(lambda: broker.consumers(names.queue), what="consumer up")
        await broker.publish(outgoing(body(key, date=date)))


def test_consuming_resumes_after_a_broker_restart(tmp_path: Path, unique: str) -> None:
    names = Names(f"test.reconnect.{unique}", f"inventory-{unique}")
    port = free_port()
    database = tmp_path / "inventory.sqlite3"
    with ScratchBroker() as broker:
        env = {"AMQP_URL": broker.url, "GATEWAY_EXCHANGE": names.exchange, "CONSUMER_QUEUE": names.queue,
               "CONSUMER_DATABASE": str(database), "CONSUMER_HTTP_PORT": str(port)}
        process = ConsumerProcess("inventory", env, tmp_path / "inventory.log").start()
        try:
            wait(lambda: readyz(port) == 200, 20, "ready")
            asyncio.run(publish(broker.url, names, "product.created", T0))
            wait(lambda: len(rows(database, "SELECT 1 FROM consumer_applied")) == 1, 15, "first applied")
            broker.stop_app()
            wait(lambda: readyz(port) == 503, 15, "not ready while the broker is down")
            broker.start_app()
            wait(lambda: readyz(port) == 200, 30, "ready again")
            asyncio.run(publish(broker.url, names, "product.updated", T0 + timedelta(minutes=1)))
            wait(lambda: len(rows(database, "SELECT 1 FROM consumer_applied")) == 2, 15, "second applied")
            assert rows(database, "SELECT last_routing_key FROM products") == [("product.updated",)]
            process.signal(signal.SIGTERM)
            assert asyncio.run(process.wait()) == 0
        finally:
            process.stop()
