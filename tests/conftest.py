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


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of this test session's own on the real PostgreSQL (dropped at the end). Skipped when no
    server answers, unless TEST_POSTGRES_URL or CI says one must (then a failure saying how to get one)."""
    from tests import postgres

    url = postgres.server_url()
    problem = postgres.reachable(url)
    if problem is not None:
        message = (f"no PostgreSQL at {url} ({problem}); run `bash deploy/local/postgres.sh` or set "
                   "TEST_POSTGRES_URL=postgresql://user@host:5432/postgres")
        if postgres.required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with postgres.database(url) as created:
        yield created


@pytest.fixture
def pg_namespace() -> str:
    """A PostgreSQL schema of this test's own inside the session's database."""
    return f"t_{uuid.uuid4().hex[:12]}"
