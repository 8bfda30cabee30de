"""Fixtures shared by the consumer integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.consumer_helpers import Names, delete_all


@pytest.fixture
async def names(amqp_url: str, unique: str) -> AsyncIterator[Names]:
    """The probe consumer's own exchange and queues, deleted afterwards (modules may override)."""
    chosen = Names(exchange=f"test.consumers.{unique}", queue=f"probe-{unique}")
    yield chosen
    await delete_all(amqp_url, chosen)
