"""Factories for consumer unit tests: fixture payloads as dicts, changed one field at a time."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from tests.conftest import fixture_bytes


def payload(name: str, **changes: Any) -> dict[str, Any]:
    """A fixture body as a dict, top-level fields replaced by `changes`."""
    body: dict[str, Any] = orjson.loads(fixture_bytes(name))
    body.update(changes)
    return body


def product_body(date: str = "2025-03-18T21:14:07.347", **product: Any) -> dict[str, Any]:
    body = payload("product-created.json", EventDateUtc=date)
    body["Product"] = {**copy.deepcopy(body["Product"]), **product}
    return body


def order_body(date: str = "2025-03-19T02:40:11.052", **order: Any) -> dict[str, Any]:
    body = payload("sales-order-status-changed.json", EventDateUtc=date)
    body["SalesOrder"] = {**copy.deepcopy(body["SalesOrder"]), **order}
    return body


@pytest.fixture
def product() -> dict[str, Any]:
    return product_body()


@pytest.fixture
def order() -> dict[str, Any]:
    return order_body()
