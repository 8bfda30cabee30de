"""Idempotency and the stale guard, in SQLite and in memory, in one transaction with the handler."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from consumers import MemoryStore, SqliteStore, Store, Transaction
from consumers.errors import UnsupportedOperation
from consumers.event import Event
from consumers.store import date_key
from consumers.testing import make_event
from tests.consumers.conftest import product_body

SCHEMA = "CREATE TABLE IF NOT EXISTS seen (message_id TEXT, name TEXT);"


def event(date: str = "2025-03-18T21:14:07.347", name: str = "a", **kwargs: object) -> Event:
    return make_event(product_body(date, Name=name), **kwargs)  # type: ignore[arg-type]


class Writes:
    """A handler that writes the product name in the transaction (SQLite) or a list (memory)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    async def __call__(self, current: Event, tx: Transaction) -> None:
        name = str((current.product or {}).get("Name"))
        with contextlib.suppress(UnsupportedOperation):
            await tx.execute("INSERT INTO seen VALUES (?, ?)", (current.message_id, name))
        self.names.append(name)


@pytest.fixture(params=["sqlite", "memory", "postgres"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    chosen: Store
    if request.param == "postgres":
        from consumers.store.postgres import PostgresStore

        chosen = PostgresStore(request.getfixturevalue("postgres_url"), schema=SCHEMA,
                               namespace=request.getfixturevalue("pg_namespace"), batch_size=1)
    else:
        chosen = SqliteStore.memory(schema=SCHEMA) if request.param == "sqlite" else MemoryStore()
    await chosen.open()
    yield chosen
    await chosen.close()


async def apply(store: Store, current: Event, handler: Writes) -> str:
    async def work(tx: Transaction) -> None:
        await handler(current, tx)

    return await store.apply(current, work)


async def test_a_message_id_is_applied_once(store: Store) -> None:
    handler = Writes()
    first = event()
    assert await apply(store, first, handler) == "applied"
    assert await apply(store, first, handler) == "duplicate"
    assert handler.names == ["a"]


async def test_an_older_event_for_the_same_entity_is_stale(store: Store) -> None:
    handler = Writes()
    assert await apply(store, event("2025-03-18T21:00:00", "new"), handler) == "applied"
    assert await apply(store, event("2025-03-18T20:59:59.999", "old"), handler) == "stale"
    assert handler.names == ["new"]


async def test_an_equal_date_is_applied(store: Store) -> None:
    handler = Writes()
    assert await apply(store, event("2025-03-18T21:00:00", "one"), handler) == "applied"
    assert await apply(store, event("2025-03-18T21:00:00", "two"), handler) == "applied"
    assert handler.names == ["one", "two"]


async def test_another_organisation_is_another_entity(store: Store) -> None:
    handler = Writes()
    newer = make_event(product_body("2025-03-18T22:00:00"))
    older_elsewhere = make_event({**product_body("2025-03-18T20:00:00"), "OrganisationID": 1})
    assert await apply(store, newer, handler) == "applied"
    assert await apply(store, older_elsewhere, handler) == "applied"


async def test_an_undated_event_is_applied_and_does_not_move_the_guard(store: Store) -> None:
    handler = Writes()
    assert await apply(store, event("2025-03-18T21:00:00", "dated"), handler) == "applied"
    assert await apply(store, event("0001-01-01T00:00:00", "undated"), handler) == "applied"
    assert await apply(store, event("2025-03-18T20:00:00", "older"), handler) == "stale"
    assert await apply(store, event("2025-03-18T21:00:01", "newer"), handler) == "applied"
    assert handler.names == ["dated", "undated", "newer"]


async def test_a_failing_handler_records_nothing() -> None:
    store = SqliteStore.memory(schema=SCHEMA)
    await store.open()
    current = event()

    async def fails(tx: Transaction) -> None:
        await tx.execute("INSERT INTO seen VALUES ('partial', 'x')")
        raise OSError("disk")

    with pytest.raises(OSError):
        await store.apply(current, fails)
    assert await store.query("SELECT * FROM seen") == []
    assert await store.query("SELECT * FROM consumer_applied") == []
    assert await apply(store, current, Writes()) == "applied"
    assert await store.query("SELECT message_id FROM consumer_applied") == [(current.message_id,)]
    await store.close()


async def test_sqlite_keeps_the_last_date_per_entity_as_sortable_text(tmp_path: object) -> None:
    store = SqliteStore(f"{tmp_path}/guards.sqlite3", schema=SCHEMA)
    await store.open()
    current = event("2025-03-18T21:14:07.3471234")
    await apply(store, current, Writes())
    assert await store.query("SELECT organisation_id, entity, event_date FROM consumer_entity") == [
        ("3479979772659009354", "product:3451582911247567682", "2025-03-18T21:14:07.347123Z")]
    assert await store.query("PRAGMA journal_mode") == [("wal",)]
    await store.close()


async def test_sqlite_is_tuned_for_a_database_that_outgrew_the_defaults(tmp_path: object) -> None:
    store = SqliteStore(f"{tmp_path}/tuned.sqlite3", schema=SCHEMA)
    await store.open()
    settings = [(await store.query(f"PRAGMA {name}"))[0][0]
                for name in ("synchronous", "cache_size", "mmap_size", "wal_autocheckpoint", "journal_size_limit")]
    assert settings == [2, -16384, 268435456, 8192, 67108864]  # synchronous 2: FULL
    await store.close()


def test_date_keys_sort_in_time_order() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    early = datetime(999, 1, 1, tzinfo=UTC)
    late = datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=13)))
    assert date_key(early) < date_key(late) == "2024-12-31T23:00:00.000000Z"


async def test_memory_store_has_no_sql() -> None:
    store = MemoryStore()

    async def work(tx: Transaction) -> None:
        await tx.fetchall("SELECT 1")

    with pytest.raises(UnsupportedOperation, match="SqliteStore"):
        await store.apply(event(), work)


async def test_a_task_cancelled_while_begin_is_running_leaves_no_open_transaction(tmp_path: Path) -> None:
    """A channel closing under load cancels the delivery task while `BEGIN IMMEDIATE` runs on the store's
    thread. The transaction that BEGIN then opens must be rolled back, or every later event fails with
    'cannot start a transaction within a transaction'."""
    path = tmp_path / "store.sqlite3"
    store = SqliteStore(path, schema=SCHEMA)
    await store.open()
    begun = threading.Event()  # BEGIN is tried on the loop first; this is the one that waits, on the store's thread
    loop_thread = threading.current_thread()
    await store.call(lambda c: c.set_trace_callback(
        lambda sql: begun.set() if sql == "BEGIN IMMEDIATE" and threading.current_thread() is not loop_thread
        else None))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock, so the store's BEGIN waits inside SQLite
    try:
        cancelled = asyncio.create_task(apply(store, event(name="cancelled"), Writes()))
        assert await asyncio.get_running_loop().run_in_executor(None, begun.wait, 10.0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    finally:
        blocker.execute("ROLLBACK")  # the store's BEGIN now completes, after its task is gone
        blocker.close()
    handler = Writes()
    assert await apply(store, event(name="next"), handler) == "applied"
    assert handler.names == ["next"]
    assert await store.query("SELECT name FROM seen") == [("next",)]
    assert not await store.call(lambda c: c.in_transaction)
    await store.close()


async def test_begin_runs_on_the_loop_and_waits_on_the_store_thread_only_for_another_process(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE is tried on the event loop without waiting (no hop to the store's thread per batch);
    only when another process holds the write lock does it wait for it, on the store's thread."""
    path = tmp_path / "store.sqlite3"
    store = SqliteStore(path, schema=SCHEMA)
    await store.open()
    begun: list[str] = []
    await store.call(lambda c: c.set_trace_callback(
        lambda sql: begun.append(threading.current_thread().name) if sql == "BEGIN IMMEDIATE" else None))
    loop_thread = threading.current_thread().name
    assert await apply(store, event(name="first"), Writes()) == "applied"
    assert begun == [loop_thread]
    begun.clear()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process's write lock
    try:
        waiting = asyncio.create_task(apply(store, event(name="second"), Writes()))
        while len(begun) < 2:  # tried on the loop, then again on the store's thread, where it waits
            await asyncio.sleep(0.001)
        assert not waiting.done()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert await waiting == "applied"
    assert begun[0] == loop_thread and begun[1].startswith("consumer-sqlite")
    assert await store.query("SELECT name FROM seen ORDER BY name") == [("first",), ("second",)]
    await store.close()


class Batched:
    """A file SQLite store with group commit, and a handler that writes the product name."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.handler = Writes()

    async def apply(self, current: Event) -> str:
        return await apply(self.store, current, self.handler)


@pytest.fixture
async def batched(tmp_path: Path) -> AsyncIterator[Batched]:
    store = SqliteStore(tmp_path / "batched.sqlite3", schema=SCHEMA, batch_size=4, batch_max_wait=0.05)
    await store.open()
    yield Batched(store)
    await store.close()


def committed(path: Path) -> list[tuple[str, ...]]:
    """What another connection sees: only what was committed."""
    with contextlib.closing(sqlite3.connect(path)) as other:
        return other.execute("SELECT name FROM seen ORDER BY name").fetchall()


async def test_a_full_batch_commits_once_and_only_then_do_its_events_return(tmp_path: Path) -> None:
    path = tmp_path / "full.sqlite3"
    store = SqliteStore(path, schema=SCHEMA, batch_size=4, batch_max_wait=60)  # only a full batch commits
    await store.open()
    batched = Batched(store)
    first = [asyncio.create_task(batched.apply(event(name=n))) for n in ["a", "b", "c"]]
    while batched.store.pending < 3:  # three savepoints released, no COMMIT yet (batch of 4, 50 ms)
        await asyncio.sleep(0.001)
    assert not any(task.done() for task in first)
    assert committed(path) == []
    assert await batched.apply(event(name="d")) == "applied"  # the fourth fills the batch
    assert [await task for task in first] == ["applied"] * 3
    assert committed(path) == [("a",), ("b",), ("c",), ("d",)]
    await store.close()


async def test_a_partial_batch_commits_after_the_max_wait(batched: Batched) -> None:
    assert await batched.apply(event(name="alone")) == "applied"
    assert committed(Path(batched.store.path)) == [("alone",)]


async def test_a_failing_handler_rolls_back_only_its_own_writes(batched: Batched) -> None:
    async def fails(tx: Transaction) -> None:
        await tx.execute("INSERT INTO seen VALUES ('x', 'broken')")
        raise OSError("disk on fire")

    good = asyncio.create_task(batched.apply(event(name="good")))
    with pytest.raises(OSError, match="disk on fire"):
        await batched.store.apply(event(name="bad"), fails)
    assert await good == "applied"
    assert committed(Path(batched.store.path)) == [("good",)]
    # The failed event was not recorded: it can be applied on its retry.
    assert await batched.apply(event(name="bad")) == "applied"


async def test_inside_one_batch_a_resend_is_a_duplicate_and_an_older_event_is_stale(batched: Batched) -> None:
    newer = event("2025-03-18T22:00:00", name="newer")
    older = event("2025-03-18T21:00:00", name="older")
    verdicts = await asyncio.gather(batched.apply(newer), batched.apply(newer), batched.apply(older))
    assert verdicts == ["applied", "duplicate", "stale"]
    assert committed(Path(batched.store.path)) == [("newer",)]


async def test_a_waiter_cancelled_before_the_commit_does_not_stop_the_batch(batched: Batched) -> None:
    waiting = asyncio.create_task(batched.apply(event(name="cancelled-waiter")))
    while batched.store.pending < 1:
        await asyncio.sleep(0.001)
    waiting.cancel()  # a pod stopping: its message stays unacked, the broker redelivers it
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await batched.apply(event(name="other")) == "applied"
    assert committed(Path(batched.store.path)) == [("cancelled-waiter",), ("other",)]
    # The redelivery of the cancelled one is then a duplicate: applied once.
    assert await batched.apply(event(name="cancelled-waiter")) == "duplicate"


async def test_close_commits_what_is_pending(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "close.sqlite3", schema=SCHEMA, batch_size=100, batch_max_wait=60)
    await store.open()
    pending = asyncio.create_task(apply(store, event(name="pending"), Writes()))
    while store.pending < 1:
        await asyncio.sleep(0.001)
    await store.close()
    assert await pending == "applied"
    assert committed(tmp_path / "close.sqlite3") == [("pending",)]


async def test_a_commit_that_fails_fails_every_event_of_its_batch_and_the_store_goes_on(tmp_path: Path) -> None:
    schema = SCHEMA + ("CREATE TABLE IF NOT EXISTS parent (id TEXT PRIMARY KEY);"
                       "CREATE TABLE IF NOT EXISTS child (parent_id TEXT REFERENCES parent (id) "
                       "DEFERRABLE INITIALLY DEFERRED);")
    path = tmp_path / "failing.sqlite3"
    store = SqliteStore(path, schema=schema, batch_size=2, batch_max_wait=60)
    await store.open()

    async def orphan(tx: Transaction) -> None:  # passes its savepoint; the deferred check fails at COMMIT
        await tx.execute("INSERT INTO child VALUES ('nobody')")

    good = asyncio.create_task(apply(store, event(name="good"), Writes()))
    while store.pending < 1:
        await asyncio.sleep(0.001)
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY constraint failed"):
        await store.apply(event(name="orphan"), orphan)
    with pytest.raises(sqlite3.IntegrityError):
        await good  # its batch did not commit: its delivery is retried, not acked
    assert committed(path) == []
    assert not await store.call(lambda c: c.in_transaction)
    handler = Writes()
    done = await asyncio.gather(apply(store, event(name="good"), handler), apply(store, event(name="next"), handler))
    assert done == ["applied", "applied"]  # the retry of "good" is applied, not a duplicate
    assert committed(path) == [("good",), ("next",)]
    await store.close()


async def test_a_delivery_cancelled_inside_its_handler_leaves_the_rest_of_the_batch(batched: Batched) -> None:
    entered = asyncio.Event()

    async def hangs(tx: Transaction) -> None:
        await tx.execute("INSERT INTO seen VALUES ('x', 'cancelled')")
        entered.set()
        await asyncio.Event().wait()

    first = asyncio.create_task(batched.apply(event(name="before")))
    while batched.store.pending < 1:
        await asyncio.sleep(0.001)
    cancelled = asyncio.create_task(batched.store.apply(event(name="cancelled"), hangs))
    await entered.wait()
    cancelled.cancel()  # a channel closing mid-handler
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert await batched.apply(event(name="after")) == "applied"
    assert await first == "applied"
    assert committed(Path(batched.store.path)) == [("after",), ("before",)]
    assert await batched.apply(event(name="cancelled")) == "applied"  # its redelivery was never recorded
