"""Unit-test a consumer without a broker: `await deliver(consumer, event)` → the Outcome.

    from consumers.testing import deliver, make_event, open_store

    async def test_deleted_product_is_flagged():
        store = await open_store(inventory)
        outcome = await deliver(inventory, make_event(body, routing_key="product.deleted"), store=store)
        assert outcome == Done("applied")
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from consumers.consumer import Consumer
from consumers.delivery import Delivery
from consumers.event import Event, from_payload
from consumers.metrics import Metrics
from consumers.outcome import Outcome
from consumers.policy import Sleep
from consumers.store import MemoryStore, SqliteStore, SqlStore, Store, is_postgres_url
from consumers.topology import Topology
from gateway import wire
from gateway.message import parse


async def no_sleep(seconds: float) -> None:
    """In-process backoff that does not wait."""
    return None


def make_event(body: bytes | Mapping[str, object], *, routing_key: str | None = None,
               message_id: str | None = None, source: str = wire.SOURCE_WEBHOOK, attempt: int = 1,
               table: Mapping[int, str] = wire.EVENT_TYPES) -> Event:
    """An Event as the gateway would publish it; the routing key comes from EventType unless given."""
    if isinstance(body, bytes):
        payload, raw = parse(body), body
    else:
        payload = dict(body)
        raw = json.dumps(payload, separators=(",", ":")).encode()
    if not isinstance(payload, dict):
        raise ValueError("make_event needs a JSON object body.")
    payload.pop("AccessToken", None)
    headers: dict[str, object] = {wire.H_SOURCE: source, wire.H_ATTEMPT: str(attempt)}
    return from_payload(payload, routing_key=routing_key or wire.routing_key(payload, table),
                        message_id=message_id or hashlib.sha256(raw).hexdigest(), headers=headers)


async def open_store(consumer: Consumer, database: str | None = None, *,
                     namespace: str | None = None) -> SqlStore:
    """An opened store with the consumer's schema and migrations: in-memory SQLite by default, or the
    `database` given (a SQLite path or a PostgreSQL URL, where the tables go in schema `namespace`,
    by default the consumer's name). Events are committed one at a time."""
    store: SqlStore
    if database is not None and is_postgres_url(database):
        from consumers.store.postgres import PostgresStore

        store = PostgresStore(database, namespace=namespace or consumer.name, schema=consumer.schema,
                              migrations=consumer.migrations, batch_size=1)
    else:
        store = SqliteStore(database or ":memory:", schema=consumer.schema, migrations=consumer.migrations,
                            batch_size=1)
    await store.open()
    return store


async def _open_chosen(consumer: Consumer) -> Store:
    """A fresh store of the kind the consumer chose (`Consumer(store=...)`), opened."""
    if consumer.store == "memory":
        return MemoryStore()
    return await open_store(consumer)


async def deliver(consumer: Consumer, event: Event, *, store: Store | None = None,
                  metrics: Metrics | None = None, sleep: Sleep = no_sleep,
                  tiers: tuple[int, ...] | None = None) -> Outcome:
    """Handle one event as the runner would (guards, handler, in-process retries) and return the
    Outcome the runner would act on. Without `store`, a fresh in-memory one is used and closed."""
    own = store is None
    used = store or await _open_chosen(consumer)
    topology = Topology(consumer.name, wire.EXCHANGE, consumer.bindings, consumer.delivery_limit,
                        consumer.retry.tiers if tiers is None else tiers)
    delivery = Delivery(consumer, used, topology, consumer.retry.with_tiers(topology.tiers),
                        metrics or Metrics(), sleep)
    try:
        outcome = await delivery.handle(event)
        delivery.metrics.count(consumer.name, outcome.label)
        return outcome
    finally:
        if own:
            await used.close()
