"""`consumers.testing.deliver`: a whole delivery without a broker, as authors test their consumers."""

from __future__ import annotations

import asyncio

import pytest

from consumers import (
    Consumer,
    ConsumerSettings,
    Done,
    Event,
    MemoryStore,
    Park,
    Permanent,
    Retry,
    RetryPolicy,
    SqliteStore,
    Transaction,
)
from consumers.metrics import Metrics
from consumers.runner import Runner
from consumers.testing import deliver, make_event, open_store
from tests.consumers.conftest import product_body


def flaky(failures: int, error: type[Exception] = OSError) -> tuple[Consumer, list[str]]:
    consumer = Consumer("stock", bindings=("product.#",), retry=RetryPolicy(attempts=3, tiers=(5, 30)))
    calls: list[str] = []

    @consumer.handler
    async def handle(event: Event, tx: Transaction) -> None:
        calls.append(event.message_id)
        if len(calls) <= failures:
            raise error(f"failure {len(calls)}")

    return consumer, calls


async def test_a_handler_that_recovers_within_the_in_process_tries_is_applied() -> None:
    consumer, calls = flaky(2)
    assert await deliver(consumer, make_event(product_body())) == Done("applied")
    assert len(calls) == 3


async def test_a_handler_still_failing_goes_to_the_first_tier_with_the_next_attempt() -> None:
    consumer, calls = flaky(99)
    assert await deliver(consumer, make_event(product_body())) == Retry("stock.retry.5s", 5, 2, "OSError: failure 3")
    assert len(calls) == 3


async def test_the_attempt_header_selects_the_tier_and_the_last_one_parks() -> None:
    consumer, _ = flaky(99)
    assert await deliver(consumer, make_event(product_body(), attempt=2)) == Retry(
        "stock.retry.30s", 30, 3, "OSError: failure 3")
    assert await deliver(consumer, make_event(product_body(), attempt=3)) == Park(
        "stock.parked", "OSError: failure 6", 3, permanent=False)


async def test_tiers_can_be_replaced_as_with_consumer_retry_delays() -> None:
    consumer, _ = flaky(99)
    assert await deliver(consumer, make_event(product_body()), tiers=(1,)) == Retry(
        "stock.retry.1s", 1, 2, "OSError: failure 3")


async def test_a_permanent_error_parks_at_once_without_retrying() -> None:
    consumer, calls = flaky(99, Permanent)
    assert await deliver(consumer, make_event(product_body())) == Park(
        "stock.parked", "Permanent: failure 1", 1, permanent=True)
    assert len(calls) == 1


async def test_a_routing_key_without_handler_is_parked() -> None:
    consumer = Consumer("stock", bindings=("product.#",))

    @consumer.handler("product.created")
    async def created(event: Event, tx: Transaction) -> None:
        return None

    outcome = await deliver(consumer, make_event(product_body(), routing_key="product.updated"))
    assert isinstance(outcome, Park) and outcome.permanent
    assert "no handler for 'product.updated'" in outcome.error


async def test_a_store_shared_between_deliveries_catches_duplicates_and_counts_outcomes() -> None:
    consumer, calls = flaky(0)
    store = await open_store(consumer)
    metrics = Metrics()
    event = make_event(product_body())
    assert await deliver(consumer, event, store=store, metrics=metrics) == Done("applied")
    assert await deliver(consumer, event, store=store, metrics=metrics) == Done("duplicate")
    older = make_event(product_body("2025-01-01T00:00:00"))
    assert await deliver(consumer, older, store=store, metrics=metrics) == Done("stale")
    assert len(calls) == 1
    assert [metrics.value("stock", o) for o in ("applied", "duplicate", "stale")] == [1.0, 1.0, 1.0]
    assert metrics.registry.get_sample_value("tradevine_consumer_handler_seconds_count", {"consumer": "stock"}) == 3
    await store.close()


def test_make_event_drops_the_access_token_and_routes_by_event_type() -> None:
    event = make_event(product_body())
    assert "AccessToken" not in event.body
    assert (event.routing_key, event.source, event.attempt) == ("product.created", "webhook", 1)


def test_make_event_refuses_a_body_that_is_not_an_object() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        make_event(b"[1]")


async def test_a_hung_handler_is_cut_at_its_time_limit_rolled_back_and_retried() -> None:
    consumer = Consumer("stock", bindings=("product.#",), schema="CREATE TABLE IF NOT EXISTS w (name TEXT);",
                        retry=RetryPolicy(attempts=2, tiers=(5,), handler_timeout=0.05))
    hang = asyncio.Event()

    @consumer.handler
    async def handle(event: Event, tx: Transaction) -> None:
        await tx.execute("INSERT INTO w VALUES (?)", (event.message_id,))
        if not hang.is_set():
            await asyncio.Event().wait()  # never returns: the time limit must cut it

    store = await open_store(consumer)
    first = make_event(product_body())
    outcome = await deliver(consumer, first, store=store)
    assert isinstance(outcome, Retry) and (outcome.queue, outcome.attempt) == ("stock.retry.5s", 2)
    assert outcome.error.startswith("HandlerTimeout: consumer 'stock': the handler for 'product.created' took longer "
                                    "than 0.05s"), outcome.error
    assert await store.query("SELECT count(*) FROM w") == [(0,)]  # both tries rolled back
    hang.set()  # the store is not left inside a transaction: the next event commits
    assert await deliver(consumer, make_event(product_body(date="2025-03-19T00:00:00")), store=store) == Done("applied")
    assert await store.query("SELECT count(*) FROM w") == [(1,)]


async def test_a_handlers_own_timeout_error_is_not_reported_as_the_time_limit() -> None:
    consumer = Consumer("stock", bindings=("product.#",), retry=RetryPolicy(attempts=1, tiers=(5,)))

    @consumer.handler
    async def handle(event: Event, tx: Transaction) -> None:
        raise TimeoutError("the warehouse API did not answer")

    outcome = await deliver(consumer, make_event(product_body()))
    assert isinstance(outcome, Retry) and outcome.error == "TimeoutError: the warehouse API did not answer"


def test_the_handler_time_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"handler_timeout=0 must be a number of seconds above 0"):
        RetryPolicy(handler_timeout=0)
    assert RetryPolicy(handler_timeout=5).with_handler_timeout(None).handler_timeout == 5
    assert RetryPolicy().with_handler_timeout(2.5).handler_timeout == 2.5


async def test_a_consumer_that_chose_the_memory_store_gets_one_from_the_runner_and_deliver() -> None:
    in_memory = Consumer("notify", bindings=("product.#",), store="memory")
    seen: list[str] = []

    @in_memory.handler
    async def handle(event: Event, tx: Transaction) -> None:
        seen.append(event.message_id)

    assert isinstance(Runner(in_memory, ConsumerSettings()).store, MemoryStore)
    assert isinstance(Runner(Consumer("stock", bindings=("product.#",)), ConsumerSettings()).store, SqliteStore)
    assert await deliver(in_memory, make_event(product_body())) == Done("applied")
    assert len(seen) == 1
    with pytest.raises(ValueError, match=r"store='postgres' of consumer 'x' is not one of sqlite, memory"):
        Consumer("x", bindings=("product.#",), store="postgres")  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["postgresql://app:pw@db:5432/consumers", "postgres://app@db/consumers"])
def test_a_postgresql_url_in_consumer_database_selects_postgresql(url: str) -> None:
    from consumers.runner import Runner
    from consumers.services.inventory import inventory
    from consumers.store.postgres import PostgresStore

    store = Runner(inventory, ConsumerSettings(database=url, batch_size=32, batch_max_wait_ms=7)).store
    assert isinstance(store, PostgresStore)  # nothing connects before start()
    assert (store.url, store.namespace, store.batch_size, store.batch_max_wait) == (url, "inventory", 32, 0.007)
    assert store.migrations == inventory.migrations
