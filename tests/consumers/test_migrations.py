"""Versioned schema migrations on SQLite and PostgreSQL: old schema → new, and a newer database refused."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from consumers import Consumer, Migration, SqliteStore
from consumers.cli import main
from consumers.errors import MigrationError, SettingsError
from consumers.store import SqlStore
from consumers.store.base import check_migrations

V1 = Migration(1, "CREATE TABLE stock (product_id TEXT PRIMARY KEY, quantity DOUBLE PRECISION);", "stock")
V2 = Migration(2, "ALTER TABLE stock ADD COLUMN warehouse TEXT; UPDATE stock SET warehouse = 'WH1';",
               "a warehouse per product")
Opener = Callable[..., SqlStore]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Builds stores on one database (a SQLite file, or a PostgreSQL schema of this test's own)."""
    if request.param == "postgres":
        from consumers.store.postgres import PostgresStore

        url, namespace = request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_namespace")
        return lambda migrations: PostgresStore(url, namespace=namespace, migrations=migrations)
    path = tmp_path / "migrated.sqlite3"
    return lambda migrations: SqliteStore(path, migrations=migrations)


async def versions(store: SqlStore) -> list[tuple[int, str]]:
    return [(int(v), str(d)) for v, d in await store.query(
        "SELECT version, description FROM consumer_migrations ORDER BY version")]


async def test_an_old_schema_is_migrated_to_the_new_one_at_start(opener: Opener) -> None:
    old = opener([V1])
    await old.open()
    await old.query("INSERT INTO stock (product_id, quantity) VALUES (?, ?)", ("3451582911247567682", 5.0))
    await old.close()
    new = opener([V1, V2])
    await new.open()
    assert await new.query("SELECT product_id, quantity, warehouse FROM stock") == [
        ("3451582911247567682", 5.0, "WH1")]
    assert await versions(new) == [(1, "stock"), (2, "a warehouse per product")]
    await new.close()
    again = opener([V1, V2])  # a restart applies nothing twice
    await again.open()
    assert await versions(again) == [(1, "stock"), (2, "a warehouse per product")]
    await again.close()


async def test_a_database_newer_than_the_code_is_refused_with_one_line(opener: Opener) -> None:
    newer = opener([V1, V2])
    await newer.open()
    await newer.close()
    older_code = opener([V1])
    with pytest.raises(SettingsError) as refused:
        await older_code.open()
    message = str(refused.value)
    assert "\n" not in message
    assert "schema version 2, newer than this code knows (up to 1)" in message


async def test_a_failing_migration_applies_nothing_of_itself(opener: Opener) -> None:
    first = opener([V1])
    await first.open()
    await first.close()
    broken = Migration(2, "CREATE TABLE half (id TEXT); INSERT INTO no_such_table VALUES (1);")
    with pytest.raises(MigrationError, match=r"migration 2 .* failed on .*no_such_table.* rolled back"):
        await opener([V1, broken]).open()
    fixed = opener([V1, Migration(2, "CREATE TABLE half (id TEXT);")])
    await fixed.open()  # `half` was not left behind by the failed try
    assert [v for v, _ in await versions(fixed)] == [1, 2]
    await fixed.close()


@pytest.mark.postgres
async def test_replicas_starting_together_apply_each_migration_once(postgres_url: str, pg_namespace: str) -> None:
    from consumers.store.postgres import PostgresStore

    stores = [PostgresStore(postgres_url, namespace=pg_namespace, migrations=[V1, V2]) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))  # V1 has no IF NOT EXISTS: a race would fail
    assert await versions(stores[0]) == [(1, "stock"), (2, "a warehouse per product")]
    for store in stores:
        await store.close()


def test_migration_versions_must_rise() -> None:
    with pytest.raises(ValueError, match="must rise strictly: 2 is followed by 1"):
        check_migrations([Migration(2, ""), Migration(1, "")])
    with pytest.raises(ValueError, match="must be a whole number >= 1"):
        Migration(0, "")
    with pytest.raises(ValueError, match="consumer 'stock'"):
        Consumer("stock", bindings=("product.#",), migrations=[V2, V1])


def test_the_cli_refuses_a_newer_database_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = tmp_path / "inventory.sqlite3"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE consumer_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
                           "applied_at TEXT NOT NULL)")
        connection.execute("INSERT INTO consumer_migrations VALUES (7, 'from the future', '2030-01-01')")
    code = main(["run", "inventory"], {"CONSUMER_DATABASE": str(database), "CONSUMER_HTTP_PORT": "0",
                                       "AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"})
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "schema version 7, newer than this code knows (up to 1)" in err


def test_an_unreachable_postgresql_is_one_line_without_its_password(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "inventory"], {"CONSUMER_DATABASE": "postgresql://app:s3cret@127.0.0.1:1/consumers",
                                       "CONSUMER_HTTP_PORT": "0", "AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"})
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "CONSUMER_DATABASE='postgresql://app:***@127.0.0.1:1/consumers' cannot be reached" in err
    assert "s3cret" not in err
