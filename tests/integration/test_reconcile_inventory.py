"""End to end: reconciliation reaches the inventory consumer's SQLite store; it never undoes newer webhooks.

A real gateway process, a real `tradevine-consumers run inventory` process, the fake Tradevine API over
HTTP and RabbitMQ: a product change whose webhook never came arrives through `reconcile`, and an older
reconciled snapshot is skipped by the consumer's stale guard instead of overwriting webhook data.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import httpx
import orjson
import pytest

from gateway import wire
from gateway.publisher import declare_topology
from gateway.reconcile import cli as reconcile_cli
from tests.conftest import TEST_SECRET, sign
from tests.integration.fake_tradevine import ORG_ID, FakeTradevine, product, serving
from tests.integration.processes import GatewayProcess

pytestmark = pytest.mark.integration

MISSED = 3451582911247569001   # changed in Tradevine; its webhook never arrived
NEWER = 3451582911247569002    # a webhook brought newer stock than the API's ModifiedDate snapshot
UNTIL = "2025-03-18T22:00:00Z"


@pytest.fixture
def names(amqp_url: str, unique: str) -> Iterator[tuple[str, str]]:
    exchange, queue = f"test.recinv.{unique}", f"inventory-{unique}"
    asyncio.run(_declare(amqp_url, exchange))
    yield exchange, queue
    asyncio.run(_delete(amqp_url, exchange, queue))


async def _declare(url: str, exchange: str) -> None:
    async with await aio_pika.connect(url) as connection:
        await declare_topology(await connection.channel(), exchange)


async def _delete(url: str, exchange: str, queue: str) -> None:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        for name in (queue, f"{queue}.parked", wire.unrouted_name(exchange)):
            await channel.queue_delete(name)
        for name in (exchange, wire.unrouted_name(exchange)):
            await channel.exchange_delete(name)


async def _queue_exists(url: str, queue: str) -> bool:
    async with await aio_pika.connect(url) as connection:
        try:
            await (await connection.channel()).declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return False
        return True


@pytest.fixture
def inventory(amqp_url: str, names: tuple[str, str], tmp_path: Path) -> Iterator[Path]:
    """`tradevine-consumers run inventory` on its own queue, one event at a time; yields its database."""
    exchange, queue = names
    database = tmp_path / "inventory.sqlite3"
    env = {**os.environ, "AMQP_URL": amqp_url, "GATEWAY_EXCHANGE": exchange, "CONSUMER_QUEUE": queue,
           "CONSUMER_DATABASE": str(database), "CONSUMER_HTTP_PORT": "0", "CONSUMER_RETRY_DELAYS": "none",
           "CONSUMER_PREFETCH": "1", "CONSUMER_CONCURRENCY": "1"}
    log = (tmp_path / "inventory.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "consumers", "run", "inventory"], env=env,
                               stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while not asyncio.run(_queue_exists(amqp_url, queue)):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the inventory consumer did not start: {(tmp_path / 'inventory.log').read_text()}")
            time.sleep(0.1)
        yield database
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


def stock(database: Path, product_id: int, timeout: float = 15.0,
          until: tuple[str, ...] = ()) -> tuple[float, str, str] | None:
    """(quantity_in_stock, last_source, last_event_date) once the row exists (and `until` matches)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if database.exists():
            with sqlite3.connect(database) as db:
                try:
                    row = db.execute("SELECT quantity_in_stock, last_source, last_event_date FROM products "
                                     "WHERE organisation_id = ? AND product_id = ?",
                                     (str(ORG_ID), str(product_id))).fetchone()
                except sqlite3.OperationalError:  # schema not created yet
                    row = None
            if row is not None and (not until or row[1] in until):
                return float(row[0]), str(row[1]), str(row[2])
        time.sleep(0.1)
    return None


def run_reconcile(api: FakeTradevine, amqp_url: str, exchange: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    reconcile_cli.add_arguments(parser)
    env = {**api.credentials.environ(api.base_url), "AMQP_URL": amqp_url, "GATEWAY_EXCHANGE": exchange,
           "TRADEVINE_API_CALLS_PER_MINUTE": "600"}
    out = io.StringIO()
    code = reconcile_cli.run(parser.parse_args(["--lookback", "2h", "--until", UNTIL, "--only", "products"]),
                         env, stdout=out, stderr=io.StringIO())
    return code, out.getvalue()


def test_a_missed_product_change_reaches_the_store_and_an_older_snapshot_does_not_overwrite_a_webhook(
        amqp_url: str, names: tuple[str, str], inventory: Path) -> None:
    exchange, _ = names
    # A webhook told the consumer about NEWER's stock at 21:50 (a stock change that did not bump
    # ModifiedDate, as Tradevine's products may do).
    webhook_product = product(NEWER, "2025-03-18T21:00:00", stock=7.0)
    webhook = orjson.dumps({"OrganisationID": ORG_ID, "AccessToken": "secret-token", "EventType": 95002,
                            "EventObjectId": NEWER, "EventDateUtc": "2025-03-18T21:50:00",
                            "Product": webhook_product, "SalesOrder": None})
    with GatewayProcess(amqp_url, exchange) as gateway:
        answer = httpx.post(gateway.url, content=webhook, timeout=10,
                            headers={"X-Tradevine-Hmac-SHA256": sign(webhook, TEST_SECRET)})
        assert answer.status_code == 200
    assert stock(inventory, NEWER) == (7.0, "webhook", "2025-03-18T21:50:00")

    # The API lists NEWER with its older ModifiedDate snapshot (stock 100) and MISSED, never announced.
    api = FakeTradevine(products=[product(NEWER, "2025-03-18T21:00:00", stock=100.0),
                                  product(MISSED, "2025-03-18T21:30:00.250", stock=42.0)])
    with serving(api):
        code, out = run_reconcile(api, amqp_url, exchange)
    assert code == 0, out
    assert "  products          1       2          2          2" in out

    # One event at a time, in order: once MISSED is applied, NEWER's snapshot has been handled too.
    assert stock(inventory, MISSED) == (42.0, "reconciliation", "2025-03-18T21:30:00.250")
    assert stock(inventory, NEWER) == (7.0, "webhook", "2025-03-18T21:50:00")
