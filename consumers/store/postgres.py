"""PostgreSQL with group commit, for one or several replicas of a consumer on one database (asyncpg).

Each consumer keeps its tables in a PostgreSQL schema of its own (its name, e.g. `inventory`), so the
consumers of a deployment may share one database. Events are applied one at a time on one connection, in
the batch's transaction; the guards take row locks, so replicas agree:

- `INSERT INTO consumer_applied ... ON CONFLICT DO NOTHING`: a message id another replica holds uncommitted
  waits for that replica's COMMIT, then counts as a duplicate (or goes ahead if it rolled back);
- `INSERT INTO consumer_entity ... ON CONFLICT DO UPDATE ... WHERE excluded.event_date >= event_date`: the
  entity's row stays locked until COMMIT, and an older event sees the newest committed date: stale.

There is no savepoint per event (it would cost a round trip per event, a fifth of the work): when an event
fails — its handler raised, it was cancelled, or a deadlock or serialization failure with another replica
aborted the transaction — the batch is rolled back and its other events applied again (guards and handlers)
in a new transaction, so only the failed event's writes go. After a conflict between replicas the rebuilt
batch commits (which frees its locks) and the event is applied again in the next batch: never a parked
message.

The driver is asyncpg: measured against psycopg 3 (with its C speedups) on the same statements, it spends
about half the CPU per statement (~50 µs against ~105 µs here), and a consumer is CPU bound once commits are
grouped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterable, Sequence
from functools import partial
from typing import Any, Protocol

import asyncpg
from asyncpg import exceptions as errors

from consumers.errors import SettingsError, UnsupportedOperation
from consumers.event import Event
from consumers.store.base import (
    FRAMEWORK_SCHEMA,
    Batch,
    Clock,
    Migration,
    Params,
    Row,
    Verdict,
    Work,
    answer,
    check_migrations,
    date_key,
    guarded,
    migration_failed,
    pending,
    utc_now,
)
from gateway.wire import redact_url

# Both guards in one statement (one round trip), for an event that names an entity and has a date:
# `seen` (committed before this statement), `moved` (unless seen: the entity's row, locked until COMMIT,
# moved to this event's date unless it is older than the row's), `recorded` (the message id, only if the
# guard moved; waits for another replica's uncommitted insert of the same id). Applied when recorded; a
# duplicate when seen, or moved but not recorded (another replica just committed it, having moved the row
# to the same date and id: nothing to undo); else stale (nothing written).
GUARDS = ("WITH seen AS (SELECT 1 FROM consumer_applied WHERE message_id = $1), "
          "moved AS (INSERT INTO consumer_entity (organisation_id, entity, event_date, message_id) "
          "SELECT $4, $5, $6, $1 WHERE NOT EXISTS (SELECT 1 FROM seen) "
          "ON CONFLICT (organisation_id, entity) DO UPDATE SET "
          "event_date = excluded.event_date, message_id = excluded.message_id "
          "WHERE excluded.event_date >= consumer_entity.event_date RETURNING 1), "
          "recorded AS (INSERT INTO consumer_applied (message_id, routing_key, applied_at) "
          "SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM moved) AND NOT EXISTS (SELECT 1 FROM seen) "
          "ON CONFLICT DO NOTHING RETURNING 1) "
          "SELECT EXISTS (SELECT 1 FROM seen), EXISTS (SELECT 1 FROM moved), EXISTS (SELECT 1 FROM recorded)")
# An event without entity or date has only the idempotency guard.
RECORD = ("INSERT INTO consumer_applied (message_id, routing_key, applied_at) VALUES ($1, $2, $3) "
          "ON CONFLICT DO NOTHING")
# Conflicts between replicas that a second try resolves.
TRANSIENT = (errors.DeadlockDetectedError, errors.SerializationError, errors.LockNotAvailableError)

log = logging.getLogger("consumers.store")
_adapted: dict[str, str] = {}


def adapt(query: str) -> str:
    """`?` placeholders → PostgreSQL's `$1, $2, ...`, outside quotes and comments."""
    found = _adapted.get(query)
    if found is not None:
        return found
    out: list[str] = []
    quote: str | None = None
    number = 0
    i, n = 0, len(query)
    while i < n:
        char = query[i]
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif query.startswith("--", i):
            end = query.find("\n", i)
            end = n if end < 0 else end
            out.append(query[i:end])
            i = end
            continue
        elif char == "?":
            number += 1
            out.append(f"${number}")
            i += 1
            continue
        out.append(char)
        i += 1
    adapted = "".join(out)
    if len(_adapted) < 4096:
        _adapted[query] = adapted
    return adapted


def rowcount(status: str) -> int:
    """The row count in a command tag: `INSERT 0 3` → 3, `UPDATE 2` → 2; -1 when it has none."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else -1


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _PostgresTransaction:
    """The handler's SQL on the batch's connection; asyncpg prepares each statement once and keeps it."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def execute(self, sql: str, params: Params = ()) -> int:
        return rowcount(await self._connection.execute(adapt(sql), *params))

    async def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        listed = list(rows)
        if len(listed) == 1:  # the usual case (one warehouse, one line): a plain execute costs less
            return rowcount(await self._connection.execute(adapt(sql), *listed[0]))
        if listed:
            await self._connection.executemany(adapt(sql), listed)
        return -1  # asyncpg does not report it

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        found = await self._connection.fetchrow(adapt(sql), *params)
        return tuple(found) if found is not None else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return [tuple(row) for row in await self._connection.fetch(adapt(sql), *params)]


class Connection(Protocol):
    """The part of asyncpg's Connection this store uses (asyncpg ships no type information)."""

    async def execute(self, query: str, *args: object) -> str: ...

    async def executemany(self, query: str, args: Iterable[Sequence[object]]) -> None: ...

    async def fetch(self, query: str, *args: object) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: object) -> Any: ...

    async def fetchval(self, query: str, *args: object) -> Any: ...

    async def close(self) -> None: ...

    def is_closed(self) -> bool: ...

    def is_in_transaction(self) -> bool: ...

    def terminate(self) -> None: ...


class PostgresStore:
    """PostgreSQL with group commit (see the module's docstring). `namespace` is the PostgreSQL schema the
    consumer's tables live in (its name by default); `schema` and `migrations` as for `SqliteStore`, applied
    under an advisory lock so that replicas starting together take turns.

    `connections` lanes apply events side by side, each on its own connection with its own batch; an event
    goes to the lane of its entity (organisation and entity id), so the events of one entity stay in order
    on one lane and lanes do not wait for each other's row locks."""

    def __init__(self, url: str, *, namespace: str, schema: str = "", migrations: Sequence[Migration] = (),
                 clock: Clock = utc_now, batch_size: int = 64, batch_max_wait: float = 0.005,
                 connections: int = 4, conflict_tries: int = 10) -> None:
        if batch_size < 1 or batch_max_wait < 0 or connections < 1:
            raise ValueError(f"batch_size={batch_size!r} and connections={connections!r} must be >= 1 and "
                             f"batch_max_wait={batch_max_wait!r} >= 0.")
        self.url = url
        self.namespace = namespace
        self.schema = schema
        self.migrations = check_migrations(migrations)
        self.clock = clock
        self.batch_size = batch_size
        self.batch_max_wait = batch_max_wait
        self.conflict_tries = conflict_tries
        self.lanes = [_Lane(self) for _ in range(connections)]
        self._opened = False

    @property
    def conflicts(self) -> int:
        """Events applied again after a deadlock or serialization failure with another replica."""
        return sum(lane.conflicts for lane in self.lanes)

    @property
    def pending(self) -> int:
        """Events applied in open transactions, waiting for their COMMIT."""
        return sum(lane.pending for lane in self.lanes)

    def _where(self) -> str:
        return f"CONSUMER_DATABASE={redact_url(self.url)!r}"

    async def connect(self) -> Connection:
        try:
            connection: Connection = await asyncpg.connect(
                self.url, server_settings={"search_path": quote_ident(self.namespace),
                                           "application_name": f"tradevine-consumer-{self.namespace}"[:63]})
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SettingsError([f"{self._where()} cannot be reached ({reason}); check the host, port, user, "
                                 "password and database, e.g. postgresql://user:password@host:5432/consumers."]
                                ) from None
        return connection

    async def open(self) -> None:
        if self._opened:
            return
        connections: list[Connection] = []
        try:
            connections.append(await self.connect())
            await self._migrate(connections[0])
            for _ in self.lanes[1:]:
                connections.append(await self.connect())
        except BaseException:
            for connection in connections:
                await connection.close()
            raise
        for lane, connection in zip(self.lanes, connections, strict=True):
            lane.connection, lane.closed = connection, False
        self._opened = True

    async def _migrate(self, connection: Connection) -> None:
        """Create the consumer's schema and tables, then apply the missing migrations, in one transaction
        under an advisory lock (per namespace): a second replica starting at the same time waits, then
        finds them applied."""
        await connection.execute("BEGIN")
        try:
            await connection.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                                     f"tradevine-consumers:{self.namespace}")
            await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.namespace)}")
            await connection.execute(FRAMEWORK_SCHEMA)
            if self.schema.strip():
                await connection.execute(self.schema)  # the consumer's own SQL, without parameters
            current = int(await connection.fetchval("SELECT coalesce(max(version), 0) FROM consumer_migrations"))
            where = f"{redact_url(self.url)} (schema {self.namespace})"
            for migration in pending(self.migrations, current, where=where):
                try:
                    await connection.execute(migration.sql)
                except asyncpg.PostgresError as exc:
                    raise migration_failed(migration, where, exc) from exc
                await connection.execute("INSERT INTO consumer_migrations (version, description, applied_at) "
                                         "VALUES ($1, $2, $3)",
                                         migration.version, migration.description, date_key(self.clock()))
            await connection.execute("COMMIT")
        except BaseException:
            await _rollback(connection)
            raise

    async def close(self) -> None:
        if not self._opened:
            return
        for lane in self.lanes:
            await lane.close()  # after the events that hold its lock; commits what is pending
        self._opened = False

    async def query(self, sql_text: str, params: Params = ()) -> list[Row]:
        """Read outside any event transaction (tests, tools); `?` placeholders."""
        return await self.lanes[0].query(sql_text, params)

    def lane_for(self, event: Event) -> _Lane:
        if len(self.lanes) == 1:
            return self.lanes[0]
        key = (event.organisation_id or "", event.entity) if event.entity is not None else event.message_id
        return self.lanes[hash(key) % len(self.lanes)]

    async def apply(self, event: Event, work: Work) -> Verdict:
        if not self._opened:
            raise UnsupportedOperation("the store is not open; call `await store.open()` first.")
        return await self.lane_for(event).apply(event, work)


class _Entry:
    """One event of a batch, kept so the batch can be applied again after another event failed in it."""

    __slots__ = ("event", "verdict", "work")

    def __init__(self, event: Event, work: Work, verdict: Verdict) -> None:
        self.event, self.work, self.verdict = event, work, verdict


class _PgBatch(Batch):
    def __init__(self, applied_at: str) -> None:
        super().__init__(applied_at)
        self.entries: list[_Entry] = []


class _Lane:
    """One connection of a PostgresStore, with its batch: events applied one at a time, committed together."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.connection: Connection | None = None
        self.conflicts = 0
        self.rebuilds = 0  # batches applied again after one of their events failed
        self.closed = True
        self.lock = asyncio.Lock()
        self.batch: _PgBatch | None = None
        # A COMMIT, a rollback or a rebuild that outlived the task that started it (cancelled while awaiting
        # it): asyncpg runs one statement at a time per connection, so the next one waits for it.
        self.running: asyncio.Future[None] | None = None

    @property
    def pending(self) -> int:
        return self.batch.count if self.batch is not None else 0

    async def close(self) -> None:
        async with self.lock:
            if self.batch is not None:
                await self._commit_locked(self.batch)  # whoever waits for it gets its answer
            connection, self.connection, self.closed = self.connection, None, True
            if connection is not None:
                await connection.close()

    async def query(self, sql_text: str, params: Params = ()) -> list[Row]:
        async with self.lock:
            connection = await self._ready()
            return [tuple(row) for row in await connection.fetch(adapt(sql_text), *params)]

    async def _settled(self) -> None:
        """Wait for a statement another (cancelled) task left running on the connection."""
        if self.running is not None:
            await asyncio.wait([self.running])
            self.running = None

    async def _ready(self) -> Connection:
        """The lane's connection; a new one if the last was lost (a server restart, a failover)."""
        await self._settled()
        if self.closed:
            raise UnsupportedOperation("the store is not open; call `await store.open()` first.")
        if self.connection is None or self.connection.is_closed():
            if self.connection is not None:
                self.connection.terminate()
            self.connection = None
            self.connection = await self.store.connect()
        return self.connection

    async def _begin(self, connection: Connection) -> _PgBatch:
        try:
            await connection.execute("BEGIN")
        except BaseException:
            # Cancelled while BEGIN ran: the server may have opened the transaction all the same.
            await self._shielded(_rollback(connection))
            raise
        batch = self.batch = _PgBatch(date_key(self.store.clock()))
        if self.store.batch_size > 1:
            batch.timer = asyncio.get_running_loop().call_later(self.store.batch_max_wait, self._commit_soon, batch)
        return batch

    def _commit_soon(self, batch: _PgBatch) -> None:
        if batch.committing is None:
            batch.committing = asyncio.get_running_loop().create_task(self._commit(batch))

    async def _commit(self, batch: _PgBatch) -> None:
        async with self.lock:
            await self._commit_locked(batch)

    async def _commit_locked(self, batch: _PgBatch) -> None:
        await self._settled()  # e.g. the rebuild after a cancelled event: it may have failed the batch
        if self.batch is not batch:
            return  # already committed, or failed
        self._close_batch(batch)
        connection = self.connection
        assert connection is not None
        # COMMIT runs as a task of its own: a cancelled committer cannot cut it short, and the waiters get
        # its answer from the task itself.
        committed = asyncio.ensure_future(_commit_or_rollback(connection))
        committed.add_done_callback(partial(answer, batch.durable))
        self.running = committed
        await asyncio.wait([committed])

    def _close_batch(self, batch: _PgBatch) -> None:
        if self.batch is batch:
            self.batch = None
        if batch.timer is not None:
            batch.timer.cancel()

    async def apply(self, event: Event, work: Work) -> Verdict:
        async with self.lock:
            tries = 0
            while True:
                connection = await self._ready()
                batch = self.batch or await self._begin(connection)
                try:
                    verdict = await self._apply_one(connection, batch, event, work)
                except TRANSIENT as exc:
                    tries += 1
                    if tries >= self.store.conflict_tries:
                        raise
                    self.conflicts += 1
                    log.info("store_conflict_retried", extra={
                        "message_id": event.message_id, "routing_key": event.routing_key, "try": tries,
                        "error": type(exc).__name__, "pending": batch.count})
                    # Another replica waits for a lock this batch holds: commit what we have, try again.
                    await self._commit_locked(batch)
                    continue
                except Exception as exc:
                    if connection.is_closed():  # the connection is gone and its transaction with it
                        self._fail(batch, exc)
                    raise
                break
            entry = _Entry(event, work, verdict)
            batch.entries.append(entry)
            batch.count += 1
            if batch.count >= self.store.batch_size:
                self._commit_soon(batch)
            durable = batch.durable
        # Every verdict waits for the COMMIT: a duplicate or stale verdict may rest on this batch's rows.
        await asyncio.shield(durable)
        return entry.verdict  # as the batch that committed saw it, had it to be applied again

    def _fail(self, batch: _PgBatch, error: BaseException) -> None:
        """The batch's transaction is gone: every event of the batch fails (and is retried)."""
        self._close_batch(batch)
        if not batch.durable.done():
            batch.durable.set_exception(error)

    async def _apply_one(self, connection: Connection, batch: _PgBatch, event: Event, work: Work) -> Verdict:
        try:
            return await self._guarded(connection, batch.applied_at, event, work)
        except BaseException:
            # Only this event's writes go; the batch's other events stay (applied again).
            await self._shielded(self._rebuild(connection, batch))
            raise

    async def _guarded(self, connection: Connection, applied_at: str, event: Event, work: Work) -> Verdict:
        """Both guards, then, unless the event is a duplicate or stale (nothing written then), its handler."""
        if not guarded(event):
            if rowcount(await connection.execute(RECORD, event.message_id, event.routing_key, applied_at)) == 0:
                return "duplicate"
        else:
            seen, moved, recorded = await connection.fetchrow(
                GUARDS, event.message_id, event.routing_key, applied_at, event.organisation_id or "", event.entity,
                event.date_key)
            if not recorded:
                return "duplicate" if seen or moved else "stale"
        await work(_PostgresTransaction(connection))
        return "applied"

    async def _rebuild(self, connection: Connection, batch: _PgBatch) -> None:
        """Roll the batch back and apply its events again in a new transaction (the failed one is not among
        them). If that fails too, the batch fails: each of its events is retried by its consumer's policy."""
        await _rollback(connection)
        if not batch.entries:  # nothing to keep: no transaction either
            self._close_batch(batch)
            if not batch.durable.done():
                batch.durable.set_result(None)
            return
        self.rebuilds += 1
        try:
            if connection.is_closed():
                raise UnsupportedOperation("the connection to PostgreSQL was lost with the batch's transaction.")
            await connection.execute("BEGIN")
            for entry in batch.entries:
                entry.verdict = await self._guarded(connection, batch.applied_at, entry.event, entry.work)
        except BaseException as exc:
            await _rollback(connection)
            self._fail(batch, exc if isinstance(exc, Exception) else UnsupportedOperation(
                "applying the batch again was cancelled; its events are retried."))
            if not isinstance(exc, Exception):
                raise

    async def _shielded(self, cleanup: Coroutine[Any, Any, None]) -> None:
        """Run a cleanup to its end even if the task awaiting it is cancelled again (the lane's next
        statement then waits for it)."""
        task = self.running = asyncio.ensure_future(cleanup)
        with contextlib.suppress(BaseException):
            await asyncio.shield(task)


async def _rollback(connection: Connection) -> None:
    """ROLLBACK, whether or not a transaction looks open: after a cancelled statement asyncpg runs this one
    only once the server has answered that statement (which may have been a BEGIN)."""
    if connection.is_closed():
        return
    try:
        await connection.execute("ROLLBACK")
    except Exception:
        connection.terminate()  # a connection we cannot bring back to a known state is not used again


async def _commit_or_rollback(connection: Connection) -> None:
    """COMMIT, and make sure it was one: on a transaction in error, PostgreSQL answers COMMIT by rolling back."""
    try:
        status = await connection.execute("COMMIT")
    except BaseException:
        await _rollback(connection)
        raise
    if status != "COMMIT":
        raise UnsupportedOperation(f"COMMIT answered {status!r}: the batch was rolled back; its events are retried.")
