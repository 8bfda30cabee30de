"""Where a consumer keeps what it applied: message ids (idempotency) and, per organisation and entity,
the last applied EventDateUtc (the stale guard), written in the same transaction as the handler's own.

`SqliteStore` (a file, the embedded default) and `PostgresStore` (a `postgresql://` URL; several replicas
may share it) group events into one transaction per batch, a savepoint per event, and answer only once
the COMMIT is durable. `MemoryStore` keeps the two guards in dictionaries. Handlers write their SQL once,
with `?` placeholders, for both databases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from consumers.store.base import (
    FRAMEWORK_SCHEMA,
    Clock,
    Migration,
    Params,
    Row,
    SqlStore,
    Store,
    Transaction,
    Verdict,
    Work,
    date_key,
    is_stale,
    utc_now,
)
from consumers.store.memory import MemoryStore
from consumers.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from consumers.store.postgres import PostgresStore

__all__ = [
    "FRAMEWORK_SCHEMA",
    "Clock",
    "MemoryStore",
    "Migration",
    "Params",
    "PostgresStore",
    "Row",
    "SqlStore",
    "SqliteStore",
    "Store",
    "Transaction",
    "Verdict",
    "Work",
    "date_key",
    "is_postgres_url",
    "is_stale",
    "utc_now",
]


def is_postgres_url(database: str) -> bool:
    """CONSUMER_DATABASE names PostgreSQL (a URL) rather than a SQLite file (a path)."""
    return database.startswith(("postgresql://", "postgres://"))


def __getattr__(name: str) -> Any:
    # PostgresStore needs psycopg (the `postgres` extra): imported only when asked for.
    if name == "PostgresStore":
        from consumers.store.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module 'consumers.store' has no attribute {name!r}")
