"""Shared factories: fixture bodies, signed requests, and a real RabbitMQ for integration tests."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import urllib.parse
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
    broker = None
    try:
        from testcontainers.community.rabbitmq import RabbitMqContainer

        broker = RabbitMqContainer(image)
        broker.start()  # returns once a client can connect
    except Exception as exc:  # any failure means no broker
        if broker is not None:
            with contextlib.suppress(Exception):
                broker.stop()
        pytest.fail(
            "Integration tests need RabbitMQ: set AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ for a running "
            f"broker, or start a Docker engine so testcontainers can run {image} (without Docker Hub access, "
            f"as root on Debian: `export $(.ci/docker-rabbitmq)`). Cause: {type(exc).__name__}: {exc}",
            pytrace=False)
    try:
        params = broker.get_connection_params()
        vhost = urllib.parse.quote(broker.vhost, safe="")
        yield f"amqp://{broker.username}:{broker.password}@{params.host}:{params.port}/{vhost}"
    finally:
        broker.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix so each test owns its exchange and queues."""
    return uuid.uuid4().hex[:10]
