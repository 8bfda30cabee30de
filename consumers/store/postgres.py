"""PostgreSQL with group commit, for one or several replicas of a consumer on one database (psycopg 3).

Each consumer keeps its tables in a PostgreSQL schema of its own (its name, e.g. `inventory`), so the
consumers of a deployment may share one database. Events are applied one at a time on one connection, each
in a savepoint of the batch's transaction; the guards take row locks, so replicas agree:

- `INSERT INTO consumer_applied ... ON CONFLICT DO NOTHING`: a message id another replica holds uncommitted
  waits for that replica's COMMIT, then counts as a duplicate (or goes ahead if it rolled back);
- `INSERT INTO consumer_entity ... ON CONFLICT DO UPDATE ... WHERE excluded.event_date >= event_date`: the
  entity's row stays locked until COMMIT, and an older event sees the newest committed date: stale.

A deadlock or serialization failure between replicas rolls back the event's savepoint, commits the rest of
the batch (which frees its locks) and applies the event again in the next batch: never a parked message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterable, Sequence
from functools import partial
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.pq import TransactionStatus

from consumers.errors import SettingsError, UnsupportedOperation
from consumers.event import Event
from consumers.store.base import (
    Clock,
    Migration,
    Params,
    Row,
    Verdict,
    Work,
    check_migrations,
    date_key,
    guarded,
    pending,
    utc_now,
)
from consumers.store.sqlite import _answer, _Batch
from gateway.settings import redact_url

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
CREATE TABLE IF NOT EXISTS consumer_migrations (
    version     INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at  TEXT NOT NULL
);
"""

RECORD_APPLIED = ("INSERT INTO consumer_applied (message_id, routing_key, applied_at) VALUES (%s, %s, %s) "
                  "ON CONFLICT DO NOTHING")
MOVE_GUARD = ("INSERT INTO consumer_entity (organisation_id, entity, event_date, message_id) "
              "VALUES (%s, %s, %s, %s) ON CONFLICT (organisation_id, entity) DO UPDATE SET "
              "event_date = excluded.event_date, message_id = excluded.message_id "
              "WHERE excluded.event_date >= consumer_entity.event_date")
# Conflicts between replicas that a second try resolves.
TRANSIENT = (errors.DeadlockDetected, errors.SerializationFailure, errors.LockNotAvailable)

_adapted: dict[str, str] = {}


def adapt(query: str) -> str:
    """`?` placeholders → psycopg's `%s` (and a literal `%` → `%%`), outside quotes and comments."""
    found = _adapted.get(query)
    if found is not None:
        return found
    out: list[str] = []
    quote: str | None = None
    i, n = 0, len(query)
    while i < n:
        char = query[i]
        if quote is not None:
            out.append("%%" if char == "%" else char)
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
            out.append(char)
        elif query.startswith("--", i):
            end = query.find("\n", i)
            end = n if end < 0 else end
            out.append(query[i:end].replace("%", "%%"))
            i = end
            continue
        elif char == "?":
            out.append("%s")
        elif char == "%":
            out.append("%%")
        else:
            out.append(char)
        i += 1
    adapted = "".join(out)
    if len(_adapted) < 4096:
        _adapted[query] = adapted
    return adapted


class _PostgresTransaction:
    """The handler's SQL on the batch's connection; statements are prepared after a few uses (psycopg)."""

    def __init__(self, connection: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        self._cursor = connection.cursor()

    async def execute(self, sql: str, params: Params = ()) -> int:
        await self._cursor.execute(adapt(sql), tuple(params))
        return self._cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        listed = [tuple(row) for row in rows]
        if not listed:
            return 0
        await self._cursor.executemany(adapt(sql), listed)
        return self._cursor.rowcount

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        await self._cursor.execute(adapt(sql), tuple(params))
        return await self._cursor.fetchone()

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        await self._cursor.execute(adapt(sql), tuple(params))
        return await self._cursor.fetchall()


Connection = psycopg.AsyncConnection[tuple[object, ...]]


class PostgresStore:
    """PostgreSQL with group commit (see the module's docstring). `namespace` is the PostgreSQL schema the
    consumer's tables live in (its name by default); `schema` and `migrations` as for `SqliteStore`, applied
    under an advisory lock so that replicas starting together take turns."""

    def __init__(self, url: str, *, namespace: str, schema: str = "", migrations: Sequence[Migration] = (),
                 clock: Clock = utc_now, batch_size: int = 64, batch_max_wait: float = 0.005,
                 conflict_tries: int = 10) -> None:
        if batch_size < 1 or batch_max_wait < 0:
            raise ValueError(f"batch_size={batch_size!r} must be >= 1 and batch_max_wait={batch_max_wait!r} >= 0.")
        self.url = url
        self.namespace = namespace
        self.schema = schema
        self.migrations = check_migrations(migrations)
        self.clock = clock
        self.batch_size = batch_size
        self.batch_max_wait = batch_max_wait
        self.conflict_tries = conflict_tries
        self.conflicts = 0  # events applied again after a deadlock or serialization failure
        self._connection: Connection | None = None
        self._opened = False
        self._lock = asyncio.Lock()
        self._batch: _Batch | None = None

    @property
    def pending(self) -> int:
        """Events applied in the open transaction, waiting for its COMMIT."""
        return self._batch.count if self._batch is not None else 0

    def _where(self) -> str:
        return f"CONSUMER_DATABASE={redact_url(self.url)!r}"

    async def _connect(self) -> Connection:
        try:
            connection = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SettingsError([f"{self._where()} cannot be reached ({reason}); check the host, port, user, "
                                 "password and database, e.g. postgresql://user:password@host:5432/consumers."]
                                ) from None
        try:
            await connection.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.namespace)))
        except BaseException:
            await connection.close()
            raise
        return connection

    async def open(self) -> None:
        if self._opened:
            return
        connection = await self._connect()
        try:
            await self._migrate(connection)
        except BaseException:
            await connection.close()
            raise
        self._connection = connection
        self._opened = True

    async def _migrate(self, connection: Connection) -> None:
        """Create the consumer's schema and tables, then apply the missing migrations, in one transaction
        under an advisory lock (per namespace): a second replica starting at the same time waits, then
        finds them applied."""
        await connection.execute("BEGIN")
        try:
            await connection.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                                     (f"tradevine-consumers:{self.namespace}",))
            await connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.namespace)))
            await connection.execute(FRAMEWORK_SCHEMA)
            if self.schema.strip():
                await connection.execute(self.schema)  # the consumer's own SQL, without parameters
            cursor = await connection.execute("SELECT coalesce(max(version), 0) FROM consumer_migrations")
            found = await cursor.fetchone()
            current = int(str(found[0])) if found else 0
            where = f"{redact_url(self.url)} (schema {self.namespace})"
            for migration in pending(self.migrations, current, where=where):
                await connection.execute(migration.sql)
                await connection.execute("INSERT INTO consumer_migrations (version, description, applied_at) "
                                         "VALUES (%s, %s, %s)",
                                         (migration.version, migration.description, date_key(self.clock())))
            await connection.execute("COMMIT")
        except BaseException:
            await _rollback(connection)
            raise

    async def close(self) -> None:
        if not self._opened:
            return
        async with self._lock:
            if self._batch is not None:
                await self._commit_locked(self._batch)  # whoever waits for it gets its answer
            connection, self._connection = self._connection, None
            self._opened = False
            if connection is not None:
                await connection.close()

    async def query(self, sql_text: str, params: Params = ()) -> list[Row]:
        """Read outside any event transaction (tests, tools); `?` placeholders."""
        async with self._lock:
            connection = await self._ready()
            cursor = connection.cursor()
            await cursor.execute(adapt(sql_text), tuple(params))
            return await cursor.fetchall() if cursor.description is not None else []

    async def _ready(self) -> Connection:
        """The store's connection; a new one if the last was lost (a server restart, a failover)."""
        if not self._opened:
            raise UnsupportedOperation("the store is not open; call `await store.open()` first.")
        if self._connection is None or self._connection.closed or self._connection.broken:
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    await self._connection.close()
            self._connection = None
            self._connection = await self._connect()
        return self._connection

    async def _begin(self, connection: Connection) -> _Batch:
        try:
            await connection.execute("BEGIN")
        except BaseException:
            # Cancelled while BEGIN ran: psycopg waits for its answer, so the transaction may be open.
            await _shielded(_rollback(connection))
            raise
        batch = self._batch = _Batch()
        if self.batch_size > 1:
            batch.timer = asyncio.get_running_loop().call_later(self.batch_max_wait, self._commit_soon, batch)
        return batch

    def _commit_soon(self, batch: _Batch) -> None:
        if batch.committing is None:
            batch.committing = asyncio.get_running_loop().create_task(self._commit(batch))

    async def _commit(self, batch: _Batch) -> None:
        async with self._lock:
            await self._commit_locked(batch)

    async def _commit_locked(self, batch: _Batch) -> None:
        if self._batch is not batch:
            return  # already committed
        self._batch = None
        if batch.timer is not None:
            batch.timer.cancel()
        connection = self._connection
        assert connection is not None
        # COMMIT runs as a task of its own: a cancelled committer cannot cut it short, and the waiters get
        # its answer from the task itself.
        committed = asyncio.ensure_future(_commit_or_rollback(connection))
        committed.add_done_callback(partial(_answer, batch.durable))
        await asyncio.wait([committed])

    async def apply(self, event: Event, work: Work) -> Verdict:
        async with self._lock:
            tries = 0
            while True:
                connection = await self._ready()
                batch = self._batch or await self._begin(connection)
                try:
                    verdict = await self._apply_one(connection, event, work)
                except TRANSIENT:
                    tries += 1
                    if tries >= self.conflict_tries:
                        raise
                    self.conflicts += 1
                    # Another replica waits for a lock this batch holds: commit what we have, try again.
                    await self._commit_locked(batch)
                    continue
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    if connection.broken or connection.closed:
                        self._fail(batch, exc)
                    raise
                break
            batch.count += 1
            if batch.count >= self.batch_size:
                self._commit_soon(batch)
            durable = batch.durable
        # Every verdict waits for the COMMIT: a duplicate or stale verdict may rest on this batch's rows.
        await asyncio.shield(durable)
        return verdict

    def _fail(self, batch: _Batch, error: BaseException) -> None:
        """The connection is gone and its transaction with it: every event of the batch fails (retried)."""
        if self._batch is batch:
            self._batch = None
            if batch.timer is not None:
                batch.timer.cancel()
        if not batch.durable.done():
            batch.durable.set_exception(error)

    async def _apply_one(self, connection: Connection, event: Event, work: Work) -> Verdict:
        cursor = connection.cursor()
        await cursor.execute("SAVEPOINT event")
        try:
            await cursor.execute(RECORD_APPLIED, (event.message_id, event.routing_key, date_key(self.clock())))
            if cursor.rowcount == 0:
                return "duplicate"  # nothing written
            if guarded(event):
                assert event.event_date is not None and event.entity is not None
                await cursor.execute(MOVE_GUARD, (event.organisation_id or "", event.entity,
                                                  date_key(event.event_date), event.message_id))
                if cursor.rowcount == 0:
                    await cursor.execute("ROLLBACK TO SAVEPOINT event")  # the message id goes too
                    return "stale"
            await work(_PostgresTransaction(connection))
        except BaseException:
            # Only this event's writes go; the batch and its other events stay.
            await _shielded(_undo(connection))
            raise
        return "applied"


async def _shielded(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run a cleanup to its end even if the task awaiting it is cancelled again."""
    task = asyncio.ensure_future(cleanup)
    with contextlib.suppress(BaseException):
        await asyncio.shield(task)


async def _undo(connection: Connection) -> None:
    if connection.closed or connection.broken:
        return
    if connection.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        try:
            await connection.execute("ROLLBACK TO SAVEPOINT event")
        except psycopg.Error:
            await _rollback(connection)


async def _rollback(connection: Connection) -> None:
    if connection.closed or connection.broken:
        return
    if connection.info.transaction_status != TransactionStatus.IDLE:
        with contextlib.suppress(psycopg.Error):
            await connection.execute("ROLLBACK")


async def _commit_or_rollback(connection: Connection) -> None:
    """COMMIT, and make sure it was one: on a transaction in error, PostgreSQL answers COMMIT by rolling back."""
    if connection.info.transaction_status == TransactionStatus.INERROR:
        await _rollback(connection)
        raise UnsupportedOperation("the batch's transaction failed before COMMIT; its events are retried.")
    try:
        cursor = await connection.execute("COMMIT")
    except BaseException:
        await _rollback(connection)
        raise
    if cursor.statusmessage != "COMMIT":
        raise UnsupportedOperation(f"COMMIT answered {cursor.statusmessage!r}: the batch was rolled back; "
                                   "its events are retried.")
