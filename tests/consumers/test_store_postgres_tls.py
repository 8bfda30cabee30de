"""PostgresStore over TLS (as CloudNativePG serves it): the store reads libpq's answers itself, so a TLS
layer that holds bytes the socket no longer shows must not stall it. A server of its own, started here."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers import Transaction
from consumers.store.postgres import PostgresStore
from tests import postgres
from tests.consumers.test_store import SCHEMA, event

pytestmark = pytest.mark.postgres


def _as_postgres(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def run(command: list[str]) -> None:
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-500:]}")


@pytest.fixture(scope="module")
def tls_server() -> Iterator[str]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found or shutil.which("openssl") is None:
        message = "needs PostgreSQL's initdb and openssl (Debian: apt-get install postgresql openssl)"
        if postgres.required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    bindir = Path(found[-1]).parent
    home = Path(tempfile.mkdtemp(prefix="tvg-pgtls-"))  # not pytest's: the postgres user must reach it
    data = home / "data"
    if os.geteuid() == 0:
        shutil.chown(home, "postgres")
    run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]))
    run(["openssl", "req", "-new", "-x509", "-days", "2", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", str(data / "server.key"), "-out", str(data / "server.crt")])
    for name in ("server.key", "server.crt"):
        if os.geteuid() == 0:
            shutil.chown(data / name, "postgres")
        (data / name).chmod(0o600)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = f"-p {port} -k {home} -c ssl=on -c listen_addresses=127.0.0.1 -c fsync=off"
    run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(home / "log"), "-o", options, "-w",
                      "start"]))
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=require"
    finally:
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


async def test_thousands_of_large_writes_and_a_large_read_over_tls(tls_server: str) -> None:
    store = PostgresStore(tls_server, namespace="tls", schema=SCHEMA, batch_size=64)
    await store.open()
    connection = store.lanes[0].connection
    assert connection is not None and connection.pgconn.ssl_in_use
    big = "x" * 3000  # several statements to a TLS record, and records split across reads

    async def writes(tx: Transaction) -> None:
        await tx.write("INSERT INTO seen VALUES (?, ?)", (big, big))

    events = [event(f"2025-03-18T21:{n // 60:02d}:{n % 60:02d}", name=f"n{n}") for n in range(2000)]
    verdicts = await asyncio.gather(*(store.apply(current, writes) for current in events))
    assert verdicts.count("applied") + verdicts.count("stale") == len(events)
    rows = await store.query("SELECT message_id, name FROM seen")  # ~12 MB back
    assert len(rows) == verdicts.count("applied") and all(name == big for _, name in rows)
    await store.close()
