"""A real PostgreSQL for tests: the server from TEST_POSTGRES_URL (or 127.0.0.1:5432), a database per use."""

from __future__ import annotations

import contextlib
import os
import urllib.parse
import uuid
from collections.abc import Iterator

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    return os.environ.get("TEST_POSTGRES_URL") or DEFAULT_URL


def required() -> bool:
    """CI and `make test` must have PostgreSQL; elsewhere its tests are skipped when none answers."""
    return bool(os.environ.get("TEST_POSTGRES_URL") or os.environ.get("CI"))


def reachable(url: str) -> str | None:
    """None if a connection works, else why not."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True):
            return None
    except Exception as exc:  # psycopg.Error, or a bad URL
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def database(url: str, prefix: str = "tvg_test") -> Iterator[str]:
    """A new, empty database on the server at `url` (dropped afterwards); yields its URL."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]  # a generated name
    try:
        yield with_database(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
