"""SQLite with group commit: every statement that may wait (BEGIN, COMMIT) on one dedicated thread, WAL mode
with `synchronous=FULL`, one transaction per batch and a savepoint per event."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TypeVar

from consumers.errors import UnsupportedOperation
from consumers.event import Event
from consumers.store.base import (
    FRAMEWORK_SCHEMA,
    Applied,
    Batch,
    Clock,
    Migration,
    Params,
    Row,
    Verdict,
    Work,
    answer,
    check_migrations,
    committed,
    date_key,
    migration_failed,
    pending,
    utc_now,
)

T = TypeVar("T")
BUSY_SECONDS = 10.0  # how long BEGIN IMMEDIATE waits for another process's write lock
# SQLite's defaults are sized for a small database: a 2 MiB page cache, reads with pread, a checkpoint
# every 1,000 WAL pages. A consumer's tables outgrow that within hours (a message id per event), and each
# event's statements, run on the event loop, then read pages from the disk cache one system call at a
# time: with a 30 MB database that cost the loop 8-20 % more CPU per event. So: a 16 MiB cache, reads
# through a memory map of up to 256 MiB (file pages, which the kernel may reclaim), a checkpoint every
# 8,192 pages (32 MiB of WAL; a page changed by many batches is copied once), the WAL cut back to 64 MiB.
TUNING = ("PRAGMA cache_size = -16384", "PRAGMA mmap_size = 268435456", "PRAGMA wal_autocheckpoint = 8192",
          "PRAGMA journal_size_limit = 67108864")



def statements(script: str) -> list[str]:
    """A script split into complete SQL statements (semicolons inside literals stay where they are)."""
    found: list[str] = []
    chunk = ""
    for part in script.split(";"):
        chunk += part + ";"
        if sqlite3.complete_statement(chunk):
            if chunk.strip(" \t\n;"):
                found.append(chunk.strip())
            chunk = ""
    if chunk.strip(" \t\n;"):
        found.append(chunk.strip())
    return found


class _SqliteTransaction:
    """The handler's SQL, run inline on the event loop: inside a transaction that already holds SQLite's
    write lock, a statement touches only the page cache and costs less than a hop to another thread.
    Only BEGIN (which may wait for the lock) and COMMIT (which waits for the disk) leave the loop."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self.cursor = cursor  # one cursor for every statement: a new one per statement costs

    async def write(self, sql: str, params: Params = ()) -> None:
        self.cursor.execute(sql, params)

    async def write_many(self, sql: str, rows: Iterable[Params]) -> None:
        self.cursor.executemany(sql, rows)

    async def execute(self, sql: str, params: Params = ()) -> int:
        return self.cursor.execute(sql, params).rowcount

    async def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        return self.cursor.executemany(sql, list(rows)).rowcount

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = self.cursor.execute(sql, params).fetchone()
        return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        rows: list[Row] = self.cursor.execute(sql, params).fetchall()
        return rows


class SqliteStore:
    """SQLite with group commit. At open, `schema` (CREATE TABLE IF NOT EXISTS ...) runs, then the
    `migrations` the database has not had yet, each in a transaction with the record of its version.

    Events are applied one at a time, each in its own savepoint of a shared transaction, and committed
    together: when `batch_size` events have joined, or `batch_max_wait` seconds after the first. `apply`
    returns only once the COMMIT is durable (WAL, `synchronous=FULL`), so the runner acks only then. A
    handler that fails rolls back its own savepoint; the others commit. `batch_size=1` commits each event
    on its own."""

    serial = True  # one connection applies one event at a time: the runner stages deliveries in order from a queue

    def __init__(self, path: str | Path, *, schema: str = "", migrations: Sequence[Migration] = (),
                 clock: Clock = utc_now, batch_size: int = 64, batch_max_wait: float = 0.005) -> None:
        if batch_size < 1 or batch_max_wait < 0:
            raise ValueError(f"batch_size={batch_size!r} must be >= 1 and batch_max_wait={batch_max_wait!r} >= 0.")
        self.path = str(path)
        self.schema = schema
        self.migrations = check_migrations(migrations)
        self.clock = clock
        self.batch_size = batch_size
        self.batch_max_wait = batch_max_wait
        self._executor: ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None
        self._transaction: _SqliteTransaction | None = None  # the loop's statements (the event's, not BEGIN or COMMIT)
        self._lock = asyncio.Lock()
        self._batch: Batch | None = None
        self._behind: asyncio.Future[None] | None = None  # the last statement handed to the store's thread

    @property
    def pending(self) -> int:
        """Events applied in the open transaction, waiting for its COMMIT."""
        return self._batch.count if self._batch is not None else 0

    @classmethod
    def memory(cls, *, schema: str = "", migrations: Sequence[Migration] = (),
               clock: Clock = utc_now) -> SqliteStore:
        return cls(":memory:", schema=schema, migrations=migrations, clock=clock, batch_size=1)

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="consumer-sqlite")
        try:
            self._connection = await self._run(self._connect)
            self._transaction = _SqliteTransaction(self._connection.cursor())
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                     timeout=BUSY_SECONDS)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        for pragma in TUNING:
            connection.execute(pragma)
        try:
            connection.executescript(FRAMEWORK_SCHEMA + self.schema)
            self._migrate(connection)
            # From here on only BEGIN IMMEDIATE can meet another process's lock (WAL: reads and COMMIT do
            # not wait): tried without waiting on the loop, then waiting on the store's thread (`_begin`).
            connection.execute("PRAGMA busy_timeout = 0")
        except BaseException:
            connection.close()
            raise
        return connection

    def _migrate(self, connection: sqlite3.Connection) -> None:
        """Apply the missing migrations in one transaction; BEGIN IMMEDIATE makes a second process wait."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            current = connection.execute("SELECT coalesce(max(version), 0) FROM consumer_migrations").fetchone()[0]
            for migration in pending(self.migrations, int(current), where=repr(self.path)):
                try:
                    for statement in statements(migration.sql):
                        connection.execute(statement)
                except sqlite3.Error as exc:
                    raise migration_failed(migration, repr(self.path), exc) from exc
                connection.execute("INSERT INTO consumer_migrations (version, description, applied_at) "
                                   "VALUES (?, ?, ?)", (migration.version, migration.description,
                                                        date_key(self.clock())))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        async with self._lock:
            if self._batch is not None:
                await self._commit_locked(self._batch)  # whoever waits for it gets its answer
            connection, self._connection = self._connection, None
            self._transaction = None
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

    def _guards(self, cursor: sqlite3.Cursor, event: Event, applied_at: str) -> Verdict | None:
        """Record the event in the open savepoint, both guards at once: the message id unless seen (else a
        duplicate), then the entity's date unless the stored one is newer (else stale, and the caller rolls
        the savepoint back). Two writes instead of two reads and two writes; the handler's failure rolls
        them back with its own."""
        inserted = cursor.execute(
            "INSERT INTO consumer_applied (message_id, routing_key, applied_at) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING", (event.message_id, event.routing_key, applied_at)).rowcount
        if not inserted:
            return "duplicate"
        if event.entity is not None and event.date_key is not None:
            moved = cursor.execute(
                "INSERT INTO consumer_entity (organisation_id, entity, event_date, message_id) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (organisation_id, entity) DO UPDATE SET "
                "event_date = excluded.event_date, message_id = excluded.message_id "
                "WHERE excluded.event_date >= consumer_entity.event_date",
                (event.organisation_id or "", event.entity, event.date_key, event.message_id)).rowcount
            if not moved:
                return "stale"
        return None

    @staticmethod
    def _begin_waiting(connection: sqlite3.Connection) -> None:
        """On the store's thread: BEGIN IMMEDIATE, waiting up to BUSY_SECONDS for another process's lock."""
        connection.execute(f"PRAGMA busy_timeout = {int(BUSY_SECONDS * 1000)}")
        try:
            connection.execute("BEGIN IMMEDIATE")
        finally:
            connection.execute("PRAGMA busy_timeout = 0")

    def _rollback(self, connection: sqlite3.Connection) -> None:
        if connection.in_transaction:
            connection.execute("ROLLBACK")

    async def _begin(self, connection: sqlite3.Connection) -> Batch:
        """Open the next batch's transaction (under the lock). BEGIN IMMEDIATE is tried at once, on the loop,
        without waiting (busy_timeout 0): the write lock is free unless another process holds it. Only then
        does it wait for the lock, on the store's thread; cancelled there, the transaction it opens is rolled
        back by a rollback queued right behind it. Whatever a cancelled task left running on the store's
        thread (a COMMIT, that BEGIN and its rollback) finishes first: the connection takes one statement
        at a time."""
        if self._behind is not None and not self._behind.done():
            await asyncio.wait([self._behind])  # not cancelled with this task
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY:
                raise
            assert self._executor is not None
            loop = asyncio.get_running_loop()
            waiting = self._behind = loop.run_in_executor(self._executor, self._begin_waiting, connection)
            waiting.add_done_callback(_retrieved)  # its error is raised here, unless this task was cancelled
            try:
                await asyncio.shield(waiting)
            except BaseException:
                self._behind = loop.run_in_executor(self._executor, self._rollback, connection)
                self._behind.add_done_callback(_retrieved)
                raise
        batch = self._batch = Batch(date_key(self.clock()))
        if self.batch_size > 1:
            batch.timer = asyncio.get_running_loop().call_later(self.batch_max_wait, self._commit_soon, batch)
        return batch

    def _commit_soon(self, batch: Batch) -> None:
        if batch.committing is None:
            batch.committing = asyncio.get_running_loop().create_task(self._commit(batch))

    def _commit_or_rollback(self, connection: sqlite3.Connection) -> None:
        """On the store's thread: COMMIT, or, when it fails (a deferred constraint, a full disk), ROLLBACK."""
        try:
            connection.execute("COMMIT")
        except sqlite3.Error:
            self._rollback(connection)
            raise

    async def _commit(self, batch: Batch) -> None:
        async with self._lock:
            await self._commit_locked(batch)

    async def _commit_locked(self, batch: Batch) -> None:
        if self._batch is not batch:
            return  # already committed
        self._batch = None
        if batch.timer is not None:
            batch.timer.cancel()
        connection = self._connection
        assert connection is not None and self._executor is not None
        committed = self._behind = asyncio.get_running_loop().run_in_executor(
            self._executor, self._commit_or_rollback, connection)
        # The waiters get COMMIT's answer from the future itself, so a cancelled committer cannot
        # leave them hanging; the next BEGIN waits for it (`_behind`).
        committed.add_done_callback(partial(answer, batch.durable))
        await asyncio.wait([committed])

    async def stage(self, event: Event, work: Work) -> Applied:
        lock = self._lock
        await lock.acquire()  # not `async with`: this runs once per event, and the wrapper costs
        try:
            connection, transaction = self._connection, self._transaction
            if connection is None or transaction is None:
                raise UnsupportedOperation("the store is not open; call `await store.open()` first.")
            cursor = transaction.cursor
            batch = self._batch or await self._begin(connection)
            cursor.execute("SAVEPOINT event")
            try:
                verdict = self._guards(cursor, event, batch.applied_at)
                if verdict is None:
                    await work(transaction)
                    verdict = "applied"
                elif verdict == "stale":
                    cursor.execute("ROLLBACK TO event")  # the message id recorded by the guard goes
            except BaseException:
                # Only this event's writes go; the batch and its other events stay.
                cursor.execute("ROLLBACK TO event")
                cursor.execute("RELEASE event")
                raise
            cursor.execute("RELEASE event")
            batch.count += 1
            if batch.count >= self.batch_size:
                self._commit_soon(batch)
            return Applied(batch.durable, verdict)
        finally:
            lock.release()

    async def apply(self, event: Event, work: Work) -> Verdict:
        return await committed(await self.stage(event, work))


def _retrieved(done: asyncio.Future[None]) -> None:
    """Mark a statement's error as seen when the task that awaited it is gone (cancelled)."""
    if not done.cancelled():
        done.exception()
