"""Any interleaving of duplicates and out-of-order events ends in the newest event's state per entity."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from consumers import Consumer, Event, MemoryStore, Transaction
from consumers.event import Event as EventType
from consumers.services.inventory import inventory
from consumers.testing import deliver, make_event, open_store
from tests.consumers.conftest import product_body

BASE = datetime(2025, 3, 18, 21, 0, tzinfo=UTC)
ENTITIES = [("3479979772659009354", 3451582911247567682), ("3479979772659009354", 3451582911247567683),
            ("1000000000000000001", 3451582911247567682)]


def versions() -> st.SearchStrategy[list[tuple[int, int, float]]]:
    """(entity index, distinct millisecond offset, stock) for up to 12 events."""
    return st.lists(
        st.tuples(st.integers(0, len(ENTITIES) - 1), st.integers(0, 10_000_000), st.integers(0, 500)),
        min_size=1, max_size=12, unique_by=lambda v: (v[0], v[1])).map(
        lambda items: [(e, ms, float(stock)) for e, ms, stock in items])


def build(entity: int, offset_ms: int, stock: float) -> EventType:
    organisation, product_id = ENTITIES[entity]
    date = (BASE + timedelta(milliseconds=offset_ms)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    body = product_body(date, ProductID=product_id, OrganisationID=int(organisation), QuantityInStock=stock)
    body.update(OrganisationID=int(organisation), EventObjectId=product_id)
    return make_event(body)


def newest(items: list[tuple[int, int, float]]) -> dict[tuple[str, str], float]:
    best: dict[int, tuple[int, float]] = {}
    for entity, ms, stock in items:
        if entity not in best or ms > best[entity][0]:
            best[entity] = (ms, stock)
    return {(ENTITIES[e][0], str(ENTITIES[e][1])): stock for e, (_, stock) in best.items()}


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[tuple[int, int, float]], list[int]]:
    items = draw(versions())
    order = draw(st.permutations(range(len(items))))
    repeats = draw(st.lists(st.integers(0, len(items) - 1), max_size=6))
    sequence = list(order)
    for index in repeats:  # duplicates land anywhere, before or after the original
        sequence.insert(draw(st.integers(0, len(sequence))), index)
    return items, sequence


@settings(max_examples=60, deadline=None)
@given(deliveries())
def test_sqlite_inventory_ends_in_the_newest_state_per_entity(
        case: tuple[list[tuple[int, int, float]], list[int]]) -> None:
    items, sequence = case
    events = [build(*item) for item in items]

    async def run() -> dict[tuple[str, str], float]:
        store = await open_store(inventory)
        try:
            for index in sequence:
                await deliver(inventory, events[index], store=store)
            rows = await store.query("SELECT organisation_id, product_id, quantity_in_stock FROM products")
            return {(org, pid): stock for org, pid, stock in rows}
        finally:
            await store.close()

    assert asyncio.run(run()) == newest(items)


@settings(max_examples=100, deadline=None)
@given(deliveries())
def test_memory_store_guards_end_in_the_newest_state_per_entity(
        case: tuple[list[tuple[int, int, float]], list[int]]) -> None:
    items, sequence = case
    events = [build(*item) for item in items]
    state: dict[tuple[str, str], float] = {}
    consumer = Consumer("stock", bindings=("product.#",))

    @consumer.handler
    async def record(event: Event, tx: Transaction) -> None:
        assert event.organisation_id is not None and event.entity_id is not None and event.product
        stock = event.product["QuantityInStock"]
        assert isinstance(stock, float)
        state[(event.organisation_id, event.entity_id)] = stock

    async def run() -> None:
        store = MemoryStore()
        for index in sequence:
            await deliver(consumer, events[index], store=store)

    asyncio.run(run())
    assert state == newest(items)
