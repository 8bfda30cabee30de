"""Shared factories: fixture bodies, signed requests, and a real RabbitMQ for integration tests."""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
TEST_SECRET = "test-consumer-secret"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def sign(body: bytes, secret: str = TEST_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
def product_body() -> bytes:
    return fixture_bytes("product-created.json")


@pytest.fixture
def sales_order_body() -> bytes:
    return fixture_bytes("sales-order-status-changed.json")


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """`AMQP_URL` if set, else a RabbitMQ container from testcontainers, else a failure saying how."""
    if url := os.environ.get("AMQP_URL"):
        yield url
        return
    image = os.environ.get("RABBITMQ_IMAGE", "rabbitmq:3.13-management")
    try:
        from testcontainers.rabbitmq import RabbitMqContainer

        broker = RabbitMqContainer(image).start()
    except Exception as exc:
        pytest.fail(
            "Integration tests need RabbitMQ: set AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ for a "
            f"running broker, or start a Docker engine so testcontainers can run {image} ({exc!r}).")
    try:
        host, port = broker.get_container_host_ip(), broker.get_exposed_port(5672)
        yield f"amqp://guest:guest@{host}:{port}/"
    finally:
        broker.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix so each test owns its exchange and queues."""
    return uuid.uuid4().hex[:10]
