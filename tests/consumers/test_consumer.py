"""Declaring a consumer: names, bindings, handlers per routing-key pattern."""

from __future__ import annotations

import pytest

from consumers import Consumer, Event, Transaction, topic_matches


@pytest.mark.parametrize("pattern, key, matches", [
    ("product.#", "product.created", True),
    ("product.#", "product.inventory.ats_updated", True),
    ("product.#", "product", True),
    ("product.#", "sales_order.created", False),
    ("product.*", "product.inventory.ats_updated", False),
    ("product.inventory.*", "product.inventory.ats_updated", True),
    ("#", "anything.at.all", True),
    ("*.reconciled", "sales_order.reconciled", True),
    ("sales_order.shipment.#", "sales_order.shipment", True),
])
def test_topic_patterns_match_like_rabbitmq(pattern: str, key: str, matches: bool) -> None:
    assert topic_matches(pattern, key) is matches


async def noop(event: Event, tx: Transaction) -> None:
    return None


def test_the_first_registered_matching_handler_wins() -> None:
    consumer = Consumer("stock", bindings=("product.#",))

    @consumer.handler("product.deleted")
    async def deleted(event: Event, tx: Transaction) -> None:
        return None

    @consumer.handler
    async def anything(event: Event, tx: Transaction) -> None:
        return None

    assert consumer.handler_for("product.deleted") is deleted
    assert consumer.handler_for("product.updated") is anything


def test_without_a_matching_handler_there_is_none() -> None:
    consumer = Consumer("stock", bindings=("product.#",))
    consumer.handler("product.created")(noop)
    assert consumer.handler_for("product.updated") is None


@pytest.mark.parametrize("kwargs, fragment", [
    ({"name": "Bad Name", "bindings": ("product.#",)}, "consumer name 'Bad Name'"),
    ({"name": "stock", "bindings": ()}, "has no bindings"),
    ({"name": "stock", "bindings": ("product..x",)}, "binding 'product..x'"),
    ({"name": "stock", "bindings": ("product.#",), "delivery_limit": 0}, "delivery_limit=0"),
])
def test_bad_declarations_name_the_value_and_a_fix(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match="try") as raised:
        Consumer(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(raised.value)


def test_a_bad_handler_pattern_is_refused() -> None:
    with pytest.raises(ValueError, match="'product deleted'"):
        Consumer("stock", bindings=("product.#",)).handler("product deleted")


def test_a_handler_registered_after_a_lookup_is_found() -> None:
    consumer = Consumer("late", bindings=("product.#",))
    assert consumer.handler_for("product.deleted") is None  # remembered as no handler

    async def deleted(event: Event, tx: Transaction) -> None:
        return None

    consumer.handler("product.deleted")(deleted)
    assert consumer.handler_for("product.deleted") is deleted
