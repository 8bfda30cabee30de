"""What every store shares: the handler's Transaction, the Store protocol, the guard rules, migrations and
the batch of a group commit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Literal, Protocol

from consumers.errors import MigrationError, SettingsError, UnsupportedOperation
from consumers.event import Event
from consumers.event import date_key as date_key  # its home before the store became a package

Verdict = Literal["applied", "duplicate", "stale"]
Row = tuple[Any, ...]
Params = Sequence[object]
Clock = Callable[[], datetime]

# The framework's own tables, the same on SQLite and PostgreSQL: applied message ids, the newest event
# date per entity (the stale guard), applied migrations.
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


def utc_now() -> datetime:
    return datetime.now(UTC)


def is_stale(event: Event, last_applied: str | None) -> bool:
    """Older than the last applied event for its entity. Equal is not stale; undated never is."""
    key = event.date_key
    if key is None or last_applied is None:
        return False
    return key < last_applied


def guarded(event: Event) -> bool:
    """Whether the event moves its entity's stale guard (it names an entity and has a date)."""
    return event.entity is not None and event.date_key is not None


class Transaction(Protocol):
    """What a handler gets: SQL on the consumer's database, inside the event's transaction.

    Placeholders are `?` on every store (PostgreSQL's are adapted), so a handler is written once.

    `write` and `write_many` are for statements whose answer the handler does not need (most writes): on
    PostgreSQL they are sent without waiting, to be answered together at the batch's end, which saves a
    round trip each; an error in one still fails its own event (the store applies the batch again, one
    event at a time, to find it). `execute` returns the row count, so it waits for the answer.
    On SQLite both run at once."""

    async def write(self, sql: str, params: Params = ()) -> None: ...

    async def write_many(self, sql: str, rows: Iterable[Params]) -> None: ...

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


class Staged(Protocol):
    """An event applied inside its batch's open transaction, not yet committed (what a store's `stage`
    returns; SQLite's and PostgreSQL's have one, and `apply` is `stage` followed by waiting for `durable`).
    `durable` completes once the batch's COMMIT did (or failed); `result()` then gives the event's verdict,
    or raises what failed it. The runner stages a delivery's first try and acks it from `durable`'s
    callback, so no task waits for the COMMIT per delivery."""

    durable: asyncio.Future[None]

    def result(self) -> Verdict: ...


async def committed(staged: Staged) -> Verdict:
    """What `apply` returns after `stage`: the verdict once the batch's COMMIT is durable. Every verdict
    waits for it, a duplicate or stale one too (it may rest on this batch's rows); a waiter cancelled
    meanwhile does not cancel the COMMIT."""
    await asyncio.shield(staged.durable)
    return staged.result()


class Applied:
    """A `Staged` whose verdict is known when it is staged (SQLite decides the guards at once)."""

    __slots__ = ("durable", "verdict")

    def __init__(self, durable: asyncio.Future[None], verdict: Verdict) -> None:
        self.durable, self.verdict = durable, verdict

    def result(self) -> Verdict:
        self.durable.result()  # the COMMIT's error, if it failed
        return self.verdict


class SqlStore(Store, Protocol):
    """A store with a database: SQLite or PostgreSQL."""

    async def query(self, sql: str, params: Params = ()) -> list[Row]:
        """Read outside any event transaction (tests, tools); `?` placeholders."""
        ...


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of a consumer's schema: `version` (1, 2, ...) and the SQL that takes the database there.

    The SQL runs once, in the same transaction as the record of its version; write it portably (it runs on
    SQLite and on PostgreSQL): `TEXT`, `INTEGER`, `BIGINT`, `DOUBLE PRECISION`, `ALTER TABLE ... ADD COLUMN`."""

    version: int
    sql: str
    description: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"Migration version {self.version!r} must be a whole number >= 1; try 1.")


def check_migrations(migrations: Sequence[Migration]) -> tuple[Migration, ...]:
    """The migrations in order; versions must rise strictly (1, 2, 3 ...)."""
    ordered = tuple(migrations)
    for before, after in pairwise(ordered):
        if after.version <= before.version:
            raise ValueError(f"migration versions must rise strictly: {before.version} is followed by "
                             f"{after.version}; number them 1, 2, 3 in the order they apply.")
    return ordered


def migration_failed(migration: Migration, where: str, exc: BaseException) -> MigrationError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return MigrationError(f"migration {migration.version} ({migration.description or 'no description'}) failed on "
                          f"{where}: {type(exc).__name__}: {reason}; it was rolled back: fix its SQL (or the "
                          "database) and start again.")


def pending(migrations: Sequence[Migration], current: int, *, where: str) -> list[Migration]:
    """The migrations to apply to a database at version `current`; refuses a database newer than the code."""
    known = migrations[-1].version if migrations else 0
    if current > known:
        raise SettingsError([f"the database {where} is at schema version {current}, newer than this code "
                             f"knows (up to {known}); run the release that migrated it (or a newer one), "
                             "or point CONSUMER_DATABASE at another database."])
    return [m for m in migrations if m.version > current]


class Batch:
    """Events applied in one open transaction, waiting for its COMMIT. `applied_at` (the clock when it
    began, as `date_key` text) is what its events record as their time of application."""

    def __init__(self, applied_at: str) -> None:
        self.applied_at = applied_at
        self.count = 0
        self.durable: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.timer: asyncio.TimerHandle | None = None
        self.committing: asyncio.Task[None] | None = None


def answer(durable: asyncio.Future[None], committed: asyncio.Future[None]) -> None:
    """Give a batch's waiters the COMMIT's answer (a done-callback of the COMMIT's future)."""
    if durable.done():
        return
    if committed.cancelled():
        durable.set_exception(UnsupportedOperation("the store closed before the batch's COMMIT returned."))
    elif (error := committed.exception()) is not None:
        durable.set_exception(error)
    else:
        durable.set_result(None)
