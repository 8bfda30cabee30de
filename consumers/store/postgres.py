"""PostgreSQL with group commit, for one or several replicas of a consumer on one database (psycopg 3).

Each consumer keeps its tables in a PostgreSQL schema of its own (its name, e.g. `inventory`), so the
consumers of a deployment may share one database. Events are applied one at a time on one connection, in
the batch's transaction; the guards take row locks, so replicas agree:

- `INSERT INTO consumer_applied ... ON CONFLICT DO NOTHING`: a message id another replica holds uncommitted
  waits for that replica's COMMIT, then counts as a duplicate (or goes ahead if it rolled back);
- `INSERT INTO consumer_entity ... ON CONFLICT DO UPDATE ... WHERE excluded.event_date >= event_date`: the
  entity's row stays locked until COMMIT, and an older event sees the newest committed date: stale.

**Pipelined.** The connection stays in libpq's pipeline mode: statements are sent without waiting for their
answers, and a batch waits for the server twice (before and at its COMMIT), not four times per event. A
round trip costs more CPU than the statements of a typical handler (on both sides), so this is what makes a
consumer keep up. An event's guard statement is sent and its handler runs at once, optimistically: nearly
every event is neither a duplicate nor stale. Before the COMMIT the store reads every guard's answer; if one
says duplicate or stale after its handler ran, or a statement failed, the batch is rolled back and applied
again carefully (each guard answered before its handler, each event's statements answered before the
next event), which gives every event its exact verdict and pins an error on the event that caused it. An
event that is likely a duplicate or stale (redelivered, a retry, a message id the lane committed lately,
or not newer than the entity's last date in the batch or committed lately) is applied carefully from the
start. `tx.write` queues a statement; `tx.execute` and the reads wait for the answer (a round trip).

There is no savepoint per event: when an event fails (its handler raised or was cancelled, or one of its
statements failed), the batch is rolled back and its other events applied again (guards and handlers) in a
new transaction, so only the failed event's writes go. A deadlock or serialization failure with another
replica rolls the batch back (which frees its locks, so the other replica goes ahead) and applies it again:
never a parked message.

The driver: psycopg 3 opens, cancels and closes the connection, and loads the rows a handler reads; the
store sends statements and reads answers itself through psycopg's libpq binding (`psycopg.pq`), in pipeline
mode. Measured with the inventory service's statements, client + server CPU per event: 670 µs awaited one
by one on asyncpg, 230 to 280 µs through psycopg's pipelined cursor (which waits on the socket through the
event loop for each statement), about 130 µs sent directly (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Coroutine, Iterable, Sequence
from functools import partial
from typing import Any

import psycopg
from psycopg import errors, pq
from psycopg.adapt import PyFormat, Transformer

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
    committed,
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
TRANSIENT = (errors.DeadlockDetected, errors.SerializationFailure, errors.LockNotAvailable)

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


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'




class _Answer:
    """Where a statement's answer arrives (after the sync that covers it)."""

    __slots__ = ("connection", "result")

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.result: pq.abc.PGresult | None = None

    @property
    def rowcount(self) -> int:
        return self.result.command_tuples if self.result is not None and self.result.command_tuples is not None else -1

    @property
    def statusmessage(self) -> str:
        return self.result.command_status.decode() if self.result is not None and self.result.command_status else ""

    def rows(self) -> list[Row]:
        """Its rows, as Python values (psycopg's loaders); [] for a statement without rows."""
        result = self.result
        if result is None or result.status != pq.ExecStatus.TUPLES_OK:
            return []
        loader = self.connection.loader  # one per connection: answers are read one at a time
        loader.set_pgresult(result)
        return loader.load_rows(0, result.ntuples, tuple)


class _Prepare:
    """The answer to a PREPARE: if it failed, the statement is prepared again on its next use."""

    __slots__ = ("sql",)

    def __init__(self, sql: str) -> None:
        self.sql = sql


_SYNC = object()  # where a sync's answer is due
_DISCARD = object()  # the answer to a statement nobody reads (its error still counts)
# Statements prepared per connection: handlers use a handful; SQL built per event (IN lists of every
# length) goes unprepared past this, rather than filling the server's memory.
PREPARED_MAX = 256
# Events whose statements are handed to the socket together (one send() each time); the batch's sync sends
# the rest. Every event: ~190 µs of consumer CPU per event in `make bench-consumer`; every 8: ~150 to 170 µs,
# with no loss of speed (the server still works while the lane goes on).
FLUSH_EVERY = 8


class Connection:
    """One PostgreSQL connection in libpq's pipeline mode, driven directly (psycopg's `pq` layer): `send`
    puts a statement on its way (prepared on first use, on this connection) without waiting, and returns
    where its answer will arrive; `sync` sends what is buffered and waits until everything sent has been
    answered, raising the first error among them (as psycopg's error class). psycopg opens, cancels and
    closes the connection; a statement costs a few microseconds here, against 30 to 60 µs through psycopg's
    cursor, which waits on the socket through the event loop for every statement."""

    def __init__(self, raw: psycopg.AsyncConnection[Any]) -> None:
        self.raw = raw
        self.pgconn = raw.pgconn
        self._prepared: dict[str, bytes] = {}
        self._names = 0
        self._dumper = Transformer.from_context(raw)  # psycopg's adapters, in PostgreSQL's text format
        self._text: list[list[PyFormat]] = []  # [PyFormat.TEXT] * n, by n: built once
        self.loader = Transformer.from_context(raw)  # psycopg's loaders, for the rows read
        self._expected: deque[object] = deque()  # _Answer, _Prepare, _DISCARD or _SYNC, in the order sent
        self._syncs_sent = 0
        self._syncs_read = 0
        self._reading = asyncio.Lock()
        self._end_due = False  # a statement's answer was read, not yet the None that ends it
        self._error: psycopg.Error | None = None  # the first error since the last sync read

    @classmethod
    async def open(cls, url: str, *, namespace: str) -> Connection:
        raw = await psycopg.AsyncConnection.connect(
            url, autocommit=True, application_name=f"tradevine-consumer-{namespace}"[:63],
            options=f"-c search_path={quote_ident(namespace)}")
        raw.pgconn.enter_pipeline_mode()
        return cls(raw)

    def _statement(self, sql: str) -> bytes | None:
        """The name of the statement prepared for `sql` (preparing it now); None once PREPARED_MAX are."""
        name = self._prepared.get(sql)
        if name is None:
            if len(self._prepared) >= PREPARED_MAX:
                return None
            self._names += 1
            name = self._prepared[sql] = f"tvg_{self._names}".encode()
            self.pgconn.send_prepare(name, sql.encode())
            self._expected.append(_Prepare(sql))
        return name

    def send(self, sql: str, params: Params = (), *, prepare: bool = True) -> _Answer:
        answer = _Answer(self)
        self._send(sql, params, prepare, answer)
        return answer

    def write(self, sql: str, params: Params = (), *, prepare: bool = True) -> None:
        """Send a statement whose answer nobody reads (an error in it still comes out of the next sync)."""
        self._send(sql, params, prepare, _DISCARD)

    def _send(self, sql: str, params: Params, prepare: bool, answer: object) -> None:
        try:
            values = self._dumper.dump_sequence(params, self._formats(len(params)))
        except psycopg.ProgrammingError as exc:
            kinds = ", ".join(sorted({type(value).__name__ for value in params}))
            raise TypeError(f"a SQL parameter could not be sent ({exc}; the parameters' types: {kinds}); pass str, "
                            "int, float, bool, None, Decimal, bytes, a date/time, a list, or JSON text as str."
                            ) from None
        name = self._statement(sql) if prepare else None
        if name is not None:
            self.pgconn.send_query_prepared(name, values)
        else:
            self.pgconn.send_query_params(sql.encode(), values or None)
        self._expected.append(answer)

    def _formats(self, count: int) -> list[PyFormat]:
        while len(self._text) <= count:
            self._text.append([PyFormat.TEXT] * len(self._text))
        return self._text[count]

    def flush(self) -> None:
        """Hand what is buffered to the socket if it takes it now, so the server starts on it."""
        with contextlib.suppress(psycopg.Error):
            self.pgconn.flush()

    async def sync(self) -> None:
        self.pgconn.pipeline_sync()
        self._expected.append(_SYNC)
        self._syncs_sent += 1
        mine = self._syncs_sent
        async with self._reading:
            error: psycopg.Error | None = None
            while self._syncs_read < mine:
                try:
                    await self._read_until_sync()
                except psycopg.Error as exc:
                    if self.is_closed():
                        raise
                    error = error or exc
            if error is not None:
                raise error

    async def _read_until_sync(self) -> None:
        """Read the answers up to the next sync; raise the first error among them. What it has read stays
        on the connection (`_end_due`, `_error`), so a reader cancelled halfway leaves the next one to go on
        from there."""
        await self._flush()
        while True:
            if self._end_due:
                await self._result()  # the None that ends each statement's answers
                self._end_due = False
            result = await self._result()
            if result is None:
                raise psycopg.OperationalError("the connection to PostgreSQL ended before its answers arrived")
            expected = self._expected.popleft()
            if expected is _SYNC:
                self._syncs_read += 1
                error, self._error = self._error, None
                if error is not None:
                    raise error
                return
            status = result.status
            self._end_due = True
            if status == pq.ExecStatus.FATAL_ERROR and self._error is None:
                self._error = errors.error_from_result(result, encoding=self.raw.info.encoding)
            if isinstance(expected, _Prepare):
                if status != pq.ExecStatus.COMMAND_OK:  # failed or skipped: prepare it again next time
                    self._prepared.pop(expected.sql, None)
            elif isinstance(expected, _Answer) and status != pq.ExecStatus.PIPELINE_ABORTED:
                expected.result = result

    async def _result(self) -> pq.abc.PGresult | None:
        pgconn = self.pgconn
        while pgconn.is_busy():
            await self._wait(write=False)
            pgconn.consume_input()
        return pgconn.get_result()

    async def _flush(self) -> None:
        pgconn = self.pgconn
        while pgconn.flush():
            if await self._wait(write=True):
                pgconn.consume_input()  # the server's answers, so that it can go on reading ours

    async def _wait(self, *, write: bool) -> bool:
        """Until the socket can be read (True) or, with `write`, written."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[bool] = loop.create_future()
        fd = self.pgconn.socket

        def done(readable: bool) -> None:
            if not ready.done():
                ready.set_result(readable)

        loop.add_reader(fd, done, True)
        if write:
            loop.add_writer(fd, done, False)
        try:
            return await ready
        finally:
            loop.remove_reader(fd)
            if write:
                loop.remove_writer(fd)

    async def run(self, sql: str, params: Params = (), *, prepare: bool = False) -> _Answer:
        """Send and wait for the answer (migrations, tools)."""
        answer = self.send(sql, params, prepare=prepare)
        await self.sync()
        return answer

    def is_closed(self) -> bool:
        return self.raw.closed or self.raw.broken or self.pgconn.status != pq.ConnStatus.OK

    def is_in_transaction(self) -> bool:
        return self.pgconn.transaction_status != pq.TransactionStatus.IDLE

    def backend_pid(self) -> int:
        return self.pgconn.backend_pid

    async def cancel(self) -> None:
        """Ask the server to stop the statement it runs for this connection (a cancelled handler's)."""
        with contextlib.suppress(Exception):
            await self.raw.cancel_safe(timeout=5)

    async def close(self) -> None:
        await self.raw.close()


class _PostgresTransaction:
    """The handler's SQL on the batch's connection, in pipeline mode: `write` sends a statement and goes on;
    `execute` and the reads wait for their answer."""

    def __init__(self, lane: _Lane, connection: Connection) -> None:
        self._lane, self._connection = lane, connection

    async def write(self, sql: str, params: Params = ()) -> None:
        self._connection.write(adapt(sql), params)

    async def write_many(self, sql: str, rows: Iterable[Params]) -> None:
        query = adapt(sql)
        for row in rows:
            self._connection.write(query, row)

    async def execute(self, sql: str, params: Params = ()) -> int:
        answer = self._connection.send(adapt(sql), params)
        await self._lane.sync(self._connection)
        return answer.rowcount

    async def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        query = adapt(sql)
        answers = [self._connection.send(query, row) for row in rows]
        await self._lane.sync(self._connection)
        return sum(answer.rowcount for answer in answers)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        answer = self._connection.send(adapt(sql), params)
        await self._lane.sync(self._connection)
        found = answer.rows()
        return found[0] if found else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        answer = self._connection.send(adapt(sql), params)
        await self._lane.sync(self._connection)
        return answer.rows()


class PostgresStore:
    """PostgreSQL with group commit (see the module's docstring). `namespace` is the PostgreSQL schema the
    consumer's tables live in (its name by default); `schema` and `migrations` as for `SqliteStore`, applied
    under an advisory lock so that replicas starting together take turns.

    `connections` lanes apply events side by side, each on its own connection with its own batch; an event
    goes to the lane of its entity (organisation and entity id), so the events of one entity stay in order
    on one lane and lanes do not wait for each other's row locks."""

    def __init__(self, url: str, *, namespace: str, schema: str = "", migrations: Sequence[Migration] = (),
                 clock: Clock = utc_now, batch_size: int = 64, batch_max_wait: float = 0.005,
                 connections: int = 1, conflict_tries: int = 10) -> None:
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
    def serial(self) -> bool:
        """One lane applies one event at a time: the runner stages deliveries in order from a queue."""
        return len(self.lanes) == 1

    @property
    def conflicts(self) -> int:
        """Batches applied again after a deadlock or serialization failure with another replica."""
        return sum(lane.conflicts for lane in self.lanes)

    @property
    def pending(self) -> int:
        """Events applied in open transactions, waiting for their COMMIT."""
        return sum(lane.pending for lane in self.lanes)

    def _where(self) -> str:
        return f"CONSUMER_DATABASE={redact_url(self.url)!r}"

    async def connect(self) -> Connection:
        try:
            return await Connection.open(self.url, namespace=self.namespace)
        except (OSError, psycopg.Error, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SettingsError([f"{self._where()} cannot be reached ({reason}); check the host, port, user, "
                                 "password and database, e.g. postgresql://user:password@host:5432/consumers."]
                                ) from None

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
        await connection.run("BEGIN")
        try:
            await connection.run("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                                 (f"tradevine-consumers:{self.namespace}",))
            await connection.run(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.namespace)}")
            for statement in _statements(FRAMEWORK_SCHEMA):
                await connection.run(statement)
            if self.schema.strip():
                for statement in _statements(self.schema):  # the consumer's own SQL, without parameters
                    await connection.run(statement)
            found = (await connection.run("SELECT coalesce(max(version), 0) FROM consumer_migrations")).rows()
            current = int(found[0][0]) if found else 0
            where = f"{redact_url(self.url)} (schema {self.namespace})"
            for migration in pending(self.migrations, current, where=where):
                try:
                    for statement in _statements(migration.sql):
                        await connection.run(statement)
                except psycopg.Error as exc:
                    raise migration_failed(migration, where, exc) from exc
                await connection.run("INSERT INTO consumer_migrations (version, description, applied_at) "
                                     "VALUES ($1, $2, $3)",
                                     (migration.version, migration.description, date_key(self.clock())))
            await connection.run("COMMIT")
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

    async def stage(self, event: Event, work: Work) -> _Entry:
        if not self._opened:
            raise UnsupportedOperation("the store is not open; call `await store.open()` first.")
        return await self.lane_for(event).stage(event, work)

    async def apply(self, event: Event, work: Work) -> Verdict:
        return await committed(await self.stage(event, work))


def _statements(script: str) -> list[str]:
    """A script's statements, one by one (the extended protocol, which pipeline mode uses, runs one per
    message). Splits on `;` outside quotes, comments and dollar quotes."""
    found: list[str] = []
    start, i, n = 0, 0, len(script)
    while i < n:
        char = script[i]
        if char in "'\"":
            end = script.find(char, i + 1)
            i = n if end < 0 else end + 1
            continue
        if script.startswith("--", i):
            end = script.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if script.startswith("/*", i):
            end = script.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        if char == "$":
            close = script.find("$", i + 1)
            tag = script[i:close + 1] if close > 0 else ""
            if tag and (tag == "$$" or tag[1:-1].replace("_", "").isalnum()) and not tag[1].isdigit():
                end = script.find(tag, close + 1)
                i = n if end < 0 else end + len(tag)
                continue
        if char == ";":
            if script[start:i].strip():
                found.append(script[start:i].strip())
            start = i + 1
        i += 1
    if script[start:].strip():
        found.append(script[start:].strip())
    return found


class _Entry:
    """One event of a batch, kept so the batch can be applied again after another event failed in it.
    `guard` is where its guards' answer arrives while that answer is still to be checked."""

    __slots__ = ("durable", "error", "event", "guard", "verdict", "work")

    def __init__(self, event: Event, work: Work) -> None:
        self.event, self.work = event, work
        self.verdict: Verdict = "applied"
        self.guard: _Answer | None = None
        self.error: BaseException | None = None
        self.durable: asyncio.Future[None]  # its batch's, once staged

    def result(self) -> Verdict:
        """After `durable`: the verdict as the batch that committed saw it (had it to be applied again), or
        the error this event met there."""
        self.durable.result()  # the COMMIT's error, if it failed
        if self.error is not None:
            raise self.error
        return self.verdict


class _PgBatch(Batch):
    def __init__(self, applied_at: str) -> None:
        super().__init__(applied_at)
        self.entries: list[_Entry] = []
        self.ids: set[str] = set()
        self.dates: dict[tuple[str, str], str] = {}  # entity → the newest date among the batch's events

    def add(self, entry: _Entry) -> None:
        self.entries.append(entry)
        self.count += 1
        event = entry.event
        self.ids.add(event.message_id)
        if event.entity is not None and event.date_key is not None:
            key = (event.organisation_id or "", event.entity)
            if event.date_key > self.dates.get(key, ""):
                self.dates[key] = event.date_key


# How many message ids, and entities with their newest date, a lane remembers from its committed batches
# (about 3 MB each): an identical resend or an older event that arrives within that many is recognised
# before its handler runs.
REMEMBERED = 16_384


class _Lane:
    """One connection of a PostgresStore, with its batch: events applied one at a time, committed together."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.connection: Connection | None = None
        self.conflicts = 0
        self.rebuilds = 0  # batches applied again, carefully, after one of their events failed or was skipped
        self.closed = True
        self.lock = asyncio.Lock()
        self.batch: _PgBatch | None = None
        # A sync, COMMIT, rollback or rebuild that outlived the task that started it (cancelled while awaiting
        # it): the connection answers in order, so the next statement waits for it.
        self.running: asyncio.Future[None] | None = None
        # What this lane committed lately (message ids; entity → newest date), oldest first.
        self.seen_ids: dict[str, None] = {}
        self.seen_dates: dict[tuple[str, str], str] = {}
        self.unflushed = 0  # events whose statements wait in libpq's buffer

    @property
    def pending(self) -> int:
        return self.batch.count if self.batch is not None else 0

    def likely_skipped(self, batch: _PgBatch, event: Event) -> bool:
        """Whether the event is likely a duplicate or stale: redelivered, a retry, a message id seen lately,
        or not newer than an event of its entity in this batch or committed lately. Its guards are then
        answered before its handler runs; the guards alone decide, this only saves a rebuild."""
        message_id = event.message_id
        if event.redelivered or event.attempt > 1 or message_id in batch.ids or message_id in self.seen_ids:
            return True
        if event.entity is None or event.date_key is None:
            return False
        key = (event.organisation_id or "", event.entity)
        newest = batch.dates.get(key) or self.seen_dates.get(key)
        return newest is not None and event.date_key <= newest

    def remember(self, batch: _PgBatch) -> None:
        """After the batch committed: its message ids and its entities' newest dates."""
        ids, dates = self.seen_ids, self.seen_dates
        for message_id in batch.ids:
            ids.pop(message_id, None)
            ids[message_id] = None
        for key, newest in batch.dates.items():
            dates.pop(key, None)
            dates[key] = newest
        while len(ids) > REMEMBERED:
            del ids[next(iter(ids))]
        while len(dates) > REMEMBERED:
            del dates[next(iter(dates))]

    async def close(self) -> None:
        async with self.lock:
            if self.batch is not None:
                await self._commit_locked(self.batch)  # whoever waits for it gets its answer
            await self._settled()
            connection, self.connection, self.closed = self.connection, None, True
            if connection is not None:
                await connection.close()

    async def query(self, sql_text: str, params: Params = ()) -> list[Row]:
        async with self.lock:
            connection = await self._ready()
            answer = connection.send(adapt(sql_text), params)
            await self.sync(connection)
            return answer.rows()

    async def sync(self, connection: Connection) -> None:
        """Wait for the answers to everything sent. A task cancelled meanwhile leaves the wait running (the
        lane's next statement waits for it) and asks the server to stop what it runs for us."""
        task = asyncio.ensure_future(connection.sync())
        task.add_done_callback(_retrieved)
        self.running = task
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                asyncio.ensure_future(connection.cancel()).add_done_callback(_retrieved)
            raise

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
                with contextlib.suppress(Exception):
                    await self.connection.close()
            self.connection = None
            self.connection = await self.store.connect()
        return self.connection

    async def _begin(self, connection: Connection) -> _PgBatch:
        connection.write("BEGIN", prepare=False)  # answered with the batch's first sync
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
        # The check and the COMMIT run as a task of their own: a cancelled committer cannot cut them short,
        # and the waiters get the answer from the task itself.
        committed = asyncio.ensure_future(self._check_and_commit(connection, batch))
        committed.add_done_callback(partial(answer, batch.durable))
        self.running = committed
        await asyncio.wait([committed])

    async def _check_and_commit(self, connection: Connection, batch: _PgBatch) -> None:
        """Read every answer of the batch; if a guard skipped an event whose handler ran, or a statement
        failed, apply the batch again carefully; then COMMIT."""
        try:
            await connection.sync()
            redo = False
            for entry in batch.entries:
                if entry.guard is not None:
                    entry.verdict, entry.guard = _verdict(entry.event, entry.guard), None
                    redo = redo or entry.verdict != "applied"
        except psycopg.Error as exc:
            if connection.is_closed():
                raise
            redo = True
            if isinstance(exc, TRANSIENT):
                self.conflicts += 1
                log.info("store_conflict_retried", extra={"error": type(exc).__name__, "pending": batch.count})
        if redo:
            await self._rebuild(connection, batch, raise_errors=True)
        await _commit_or_rollback(connection)
        self.remember(batch)

    def _close_batch(self, batch: _PgBatch) -> None:
        if self.batch is batch:
            self.batch = None
        if batch.timer is not None:
            batch.timer.cancel()

    async def stage(self, event: Event, work: Work) -> _Entry:
        async with self.lock:
            connection = await self._ready()
            batch = self.batch or await self._begin(connection)
            entry = _Entry(event, work)
            try:
                added = await self._apply_one(connection, batch, entry)
            except Exception as exc:
                if connection.is_closed():  # the connection is gone and its transaction with it
                    self._fail(batch, exc)
                raise
            if not added:
                batch.add(entry)
            if batch.count >= self.store.batch_size:
                self._commit_soon(batch)
            entry.durable = batch.durable
            return entry

    def _fail(self, batch: _PgBatch, error: BaseException) -> None:
        """The batch's transaction is gone: every event of the batch fails (and is retried)."""
        self._close_batch(batch)
        if not batch.durable.done():
            batch.durable.set_exception(error)

    async def _apply_one(self, connection: Connection, batch: _PgBatch, entry: _Entry) -> bool:
        """Apply the event in the batch's transaction; True if that took a rebuild, which added it."""
        careful = self.likely_skipped(batch, entry.event)
        try:
            await self._guarded(connection, batch, entry, careful=careful)
        except BaseException as exc:
            if isinstance(exc, psycopg.Error) and not connection.is_closed():
                # An answer that arrived while this event's statements were sent or waited for: the error
                # may be an earlier event's, or a conflict with another replica. Applying the batch again
                # carefully, this one included, pins it on its event (or waits the conflict out).
                if isinstance(exc, TRANSIENT):
                    self.conflicts += 1
                batch.add(entry)
                await self._shielded(self._rebuild(connection, batch))
                return True
            # Only this event's writes go; the batch's other events stay (applied again).
            await self._shielded(self._rebuild(connection, batch))
            raise
        return False

    async def _guarded(self, connection: Connection, batch: _PgBatch, entry: _Entry, *, careful: bool) -> None:
        """Both guards, then the handler. Careful: the guards' answer first (the handler runs only for an
        event to apply), and the handler's statements answered before returning. Else the guards' answer is
        left for the COMMIT to check."""
        event = entry.event
        if guarded(event):
            guard = connection.send(GUARDS, (event.message_id, event.routing_key, batch.applied_at,
                                             event.organisation_id or "", event.entity, event.date_key))
        else:
            guard = connection.send(RECORD, (event.message_id, event.routing_key, batch.applied_at))
        if careful:
            await self.sync(connection)
            entry.verdict, entry.guard = _verdict(event, guard), None
            if entry.verdict != "applied":
                return
        else:
            entry.verdict, entry.guard = "applied", guard
        await entry.work(_PostgresTransaction(self, connection))
        if careful:
            await self.sync(connection)
        else:
            self.unflushed += 1
            if self.unflushed >= FLUSH_EVERY:  # the server starts on them while the next events are handled
                self.unflushed = 0
                connection.flush()

    async def _rebuild(self, connection: Connection, batch: _PgBatch, *, raise_errors: bool = False) -> None:
        """Roll the batch back and apply its events again, carefully, in a new transaction. An event that
        fails there gets its own error (it goes to its retry path) and the rest is applied again without
        it; a conflict with another replica rolls back and starts again. If the batch cannot be rebuilt
        (the connection is lost, a step was cancelled), it fails: each of its events is retried."""
        await _rollback(connection)
        live = [entry for entry in batch.entries if entry.error is None]
        if not live:  # nothing to keep: no transaction either
            self._close_batch(batch)
            if not batch.durable.done():
                batch.durable.set_result(None)
            if raise_errors:  # the COMMIT that follows has no transaction to end
                connection.write("BEGIN", prepare=False)
            return
        self.rebuilds += 1
        conflicts = 0
        try:
            while live:
                if connection.is_closed():
                    raise UnsupportedOperation("the connection to PostgreSQL was lost with the batch's transaction.")
                connection.write("BEGIN", prepare=False)
                for entry in live:
                    try:
                        await self._guarded(connection, batch, entry, careful=True)
                    except TRANSIENT:
                        conflicts += 1
                        self.conflicts += 1
                        if conflicts >= self.store.conflict_tries:
                            raise
                        break
                    except Exception as exc:
                        if connection.is_closed():
                            raise
                        entry.error = exc
                        break
                else:
                    return
                await _rollback(connection)  # and again, without the event that failed
                live = [entry for entry in live if entry.error is None]
            connection.write("BEGIN", prepare=False)  # every event failed: an empty transaction
        except BaseException as exc:
            await _rollback(connection)
            error = exc if isinstance(exc, Exception) else UnsupportedOperation(
                "applying the batch again was cancelled; its events are retried.")
            self._fail(batch, error)
            if raise_errors or not isinstance(exc, Exception):
                raise

    async def _shielded(self, cleanup: Coroutine[Any, Any, None]) -> None:
        """Run a cleanup to its end even if the task awaiting it is cancelled again (the lane's next
        statement then waits for it)."""
        task = self.running = asyncio.ensure_future(cleanup)
        with contextlib.suppress(BaseException):
            await asyncio.shield(task)


def _verdict(event: Event, guard: _Answer) -> Verdict:
    """The guards' answer (after a sync)."""
    if not guarded(event):
        return "applied" if guard.rowcount > 0 else "duplicate"
    found = guard.rows()
    assert found
    seen, moved, recorded = found[0]
    if recorded:
        return "applied"
    return "duplicate" if seen or moved else "stale"


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Mark a background task's error as seen (its awaiter may have been cancelled)."""
    if not task.cancelled():
        task.exception()


async def _rollback(connection: Connection) -> None:
    """ROLLBACK, whether or not a transaction looks open, after collecting every answer still due (errors
    included: they belong to the transaction being rolled back)."""
    if connection.is_closed():
        return
    try:
        with contextlib.suppress(psycopg.Error):
            await connection.sync()
        await connection.run("ROLLBACK")
    except Exception:
        await connection.close()  # a connection we cannot bring back to a known state is not used again


async def _commit_or_rollback(connection: Connection) -> None:
    """COMMIT, and make sure it was one: on a transaction in error, PostgreSQL answers COMMIT by rolling back."""
    try:
        answer = await connection.run("COMMIT")
    except BaseException:
        await _rollback(connection)
        raise
    status = answer.statusmessage
    if status != "COMMIT":
        raise UnsupportedOperation(f"COMMIT answered {status!r}: the batch was rolled back; its events are retried.")
