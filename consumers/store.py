"""Where a consumer keeps what it applied: message ids (idempotency) and, per organisation and entity,
the last applied EventDateUtc (the stale guard), written in the same transaction as the handler's own.

`SqliteStore` runs every statement on one dedicated thread (the event loop never blocks on disk), in
WAL mode with `synchronous=FULL`, one short transaction per event. `MemoryStore` keeps the two guards
in dictionaries, for consumers whose effects live elsewhere and for tests.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from consumers.errors import UnsupportedOperation
from consumers.event import Event

T = TypeVar("T")
Verdict = Literal["applied", "duplicate", "stale"]
Row = tuple[Any, ...]
Params = Sequence[object]
Clock = Callable[[], datetime]

FRAMEWORK_SCHEMA = """
CREATE TABLE IF NOT EXISTS consumer_applied (
    message_id   TEXT PRIMARY KEY,
    routing_key  TEXT NOT NULL,
    applied_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS consumer_entity (
    organisation_id TEXT NOT NULL,
    entity          TEXT NOT NULL,
    event_date      TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    PRIMARY KEY (organisation_id, entity)
);
"""


def date_key(moment: datetime) -> str:
    """A UTC datetime as fixed-width text, so SQL compares it in time order."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def utc_now() -> datetime:
    return datetime.now(UTC)


def is_stale(event: Event, last_applied: str | None) -> bool:
    """Older than the last applied event for its entity. Equal is not stale; undated never is."""
    if event.event_date is None or last_applied is None:
        return False
    return date_key(event.event_date) < last_applied


class Transaction(Protocol):
    """What a handler gets: SQL on the consumer's database, inside the event's transaction."""

    async def execute(self, sql: str, params: Params = ()) -> int: ...

    async def executemany(self, sql: str, rows: Iterable[Params]) -> int: ...

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...


Work = Callable[[Transaction], Awaitable[None]]


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def apply(self, event: Event, work: Work) -> Verdict:
        """Skip a duplicate or stale event; else run `work` and record the event, all or nothing."""
        ...


class _SqliteTransaction:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def execute(self, sql: str, params: Params = ()) -> int:
        return await self._store.call(lambda c: c.execute(sql, params).rowcount)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        batch = list(rows)
        return await self._store.call(lambda c: c.executemany(sql, batch).rowcount)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = await self._store.call(lambda c: c.execute(sql, params).fetchone())
        return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        rows: list[Row] = await self._store.call(lambda c: c.execute(sql, params).fetchall())
        return rows


class SqliteStore:
    """SQLite on one thread; `schema` (the consumer's CREATE TABLE IF NOT EXISTS ...) runs at open."""

    def __init__(self, path: str | Path, *, schema: str = "", clock: Clock = utc_now) -> None:
        self.path = str(path)
        self.schema = schema
        self.clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def memory(cls, *, schema: str = "", clock: Clock = utc_now) -> SqliteStore:
        return cls(":memory:", schema=schema, clock=clock)

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="consumer-sqlite")
        try:
            self._connection = await self._run(self._connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                     timeout=10.0)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.executescript(FRAMEWORK_SCHEMA + self.schema)
        return connection

    async def close(self) -> None:
        if self._executor is None:
            return
        async with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None:
                await self._run(connection.close)
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise UnsupportedOperation("the store is not open; call `await store.open()` first.")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the store's thread."""
        connection = self._connection
        if connection is None:
            raise UnsupportedOperation("the store is not open; call `await store.open()` first.")
        return await self._run(partial(fn, connection))

    async def query(self, sql: str, params: Params = ()) -> list[Row]:
        """Read outside any event transaction (tests, tools)."""
        async with self._lock:
            rows: list[Row] = await self.call(lambda c: c.execute(sql, params).fetchall())
            return rows

    def _begin(self, connection: sqlite3.Connection, event: Event) -> Verdict | None:
        connection.execute("BEGIN IMMEDIATE")
        try:
            seen = connection.execute("SELECT 1 FROM consumer_applied WHERE message_id = ?",
                                      (event.message_id,)).fetchone()
            if seen is not None:
                connection.execute("ROLLBACK")
                return "duplicate"
            if event.entity is not None and event.event_date is not None:
                row = connection.execute(
                    "SELECT event_date FROM consumer_entity WHERE organisation_id = ? AND entity = ?",
                    (event.organisation_id or "", event.entity)).fetchone()
                if is_stale(event, row[0] if row else None):
                    connection.execute("ROLLBACK")
                    return "stale"
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return None

    def _record(self, connection: sqlite3.Connection, event: Event, now: datetime) -> None:
        connection.execute("INSERT INTO consumer_applied (message_id, routing_key, applied_at) VALUES (?, ?, ?)",
                           (event.message_id, event.routing_key, date_key(now)))
        if event.entity is not None and event.event_date is not None:
            connection.execute(
                "INSERT INTO consumer_entity (organisation_id, entity, event_date, message_id) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (organisation_id, entity) DO UPDATE SET "
                "event_date = excluded.event_date, message_id = excluded.message_id "
                "WHERE excluded.event_date >= consumer_entity.event_date",
                (event.organisation_id or "", event.entity, date_key(event.event_date), event.message_id))
        connection.execute("COMMIT")

    def _rollback(self, connection: sqlite3.Connection) -> None:
        if connection.in_transaction:
            connection.execute("ROLLBACK")

    async def apply(self, event: Event, work: Work) -> Verdict:
        async with self._lock:
            try:
                # Cancelled while BEGIN runs on the store's thread, the transaction it opens must still be
                # rolled back: the except clause below queues that rollback right behind it.
                verdict = await self.call(lambda c: self._begin(c, event))
                if verdict is not None:
                    return verdict
                await work(_SqliteTransaction(self))
                now = self.clock()
                await self.call(lambda c: self._record(c, event, now))
            except BaseException:
                # Submitted, not awaited: it runs before anything queued after it, even when cancelled.
                if self._connection is not None and self._executor is not None:
                    self._executor.submit(self._rollback, self._connection)
                raise
            return "applied"


class _MemoryTransaction:
    async def execute(self, sql: str, params: Params = ()) -> int:
        raise UnsupportedOperation("MemoryStore has no SQL; use SqliteStore (CONSUMER_DATABASE).")

    async def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        raise UnsupportedOperation("MemoryStore has no SQL; use SqliteStore (CONSUMER_DATABASE).")

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        raise UnsupportedOperation("MemoryStore has no SQL; use SqliteStore (CONSUMER_DATABASE).")

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        raise UnsupportedOperation("MemoryStore has no SQL; use SqliteStore (CONSUMER_DATABASE).")


class MemoryStore:
    """Both guards in dictionaries (lost on restart): for handlers whose effects live elsewhere."""

    def __init__(self) -> None:
        self.applied: set[str] = set()
        self.last: dict[tuple[str, str], str] = {}
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def apply(self, event: Event, work: Work) -> Verdict:
        async with self._lock:
            if event.message_id in self.applied:
                return "duplicate"
            key = (event.organisation_id or "", event.entity or "")
            if event.entity is not None and is_stale(event, self.last.get(key)):
                return "stale"
            await work(_MemoryTransaction())
            self.applied.add(event.message_id)
            if event.entity is not None and event.event_date is not None:
                self.last[key] = max(self.last.get(key, ""), date_key(event.event_date))
            return "applied"
