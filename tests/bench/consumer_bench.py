"""Consumer throughput: events/s applied into SQLite by the inventory service.

Publishes N realistic product events (created, updated, stock, ATS, deleted; distinct message ids and
products, in date order per product) to an exchange and queue of its own, then starts one inventory
consumer in this process (SQLite in a temporary directory) and times how fast it drains the queue.
The last line printed is one JSON object.

    AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ python tests/bench/consumer_bench.py --events 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika

from consumers.delivery import Metrics
from consumers.runner import Runner, topology_for
from consumers.services.inventory import inventory
from consumers.settings import ConsumerSettings
from consumers.topology import declare
from gateway import message, sample, wire
from gateway.publisher import amqp_message, ensure_topology

KEYS = ("product.created", "product.updated", "product.inventory.warehouse_stock_updated",
        "product.inventory.ats_updated", "product.updated", "product.inventory.ats_updated", "product.deleted")


def events(count: int) -> list[message.Outgoing]:
    """`count` messages: each product gets the KEYS sequence, one second apart."""
    start = datetime(2025, 3, 18, 21, 0, tzinfo=UTC)
    received = datetime.now(UTC)
    built: list[message.Outgoing] = []
    product = 3451582911247500000
    while len(built) < count:
        product += 1
        for step, key in enumerate(KEYS):
            if len(built) == count:
                break
            body = sample.body_for(key, event_date=start + timedelta(seconds=step), object_id=product)
            body["Product"]["QuantityInStock"] = float(100 - step)
            built.append(message.build(sample.encode(body), table=wire.EVENT_TYPES, received_at=received))
    return built


async def publish(url: str, exchange: str, outgoing: list[message.Outgoing]) -> float:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        started = time.perf_counter()
        for offset in range(0, len(outgoing), 500):
            await asyncio.gather(*(target.publish(amqp_message(m), m.routing_key, mandatory=True)
                                   for m in outgoing[offset:offset + 500]))
        return time.perf_counter() - started


async def cleanup(url: str, settings: ConsumerSettings) -> None:
    topology = topology_for(inventory, settings)
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in (topology.queue, topology.parked, *topology.tier_queues, wire.unrouted_name(topology.exchange)):
            await channel.queue_delete(name)
        for name in (topology.exchange, wire.unrouted_name(topology.exchange)):
            await channel.exchange_delete(name)


async def main(count: int, url: str, prefetch: int, concurrency: int) -> dict[str, object]:
    suffix = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as directory:
        database = Path(directory) / "inventory.sqlite3"
        settings = ConsumerSettings(amqp_url=url, exchange=f"bench.consumers.{suffix}",
                                    queue=f"inventory-bench-{suffix}", database=str(database), http_port=0,
                                    prefetch=prefetch, concurrency=concurrency)
        try:
            connection = await aio_pika.connect(url)
            async with connection:
                await ensure_topology(connection, settings.exchange)
                await declare(await connection.channel(), topology_for(inventory, settings))
            outgoing = events(count)
            publish_seconds = await publish(url, settings.exchange, outgoing)
            metrics = Metrics()
            runner = Runner(inventory, settings, metrics=metrics)
            started = time.perf_counter()
            await runner.start()
            while metrics.value("inventory", "applied") + metrics.value("inventory", "stale") < count:
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - started
            await runner.stop()
            outcomes = {o: int(metrics.value("inventory", o))
                        for o in ("applied", "duplicate", "stale", "retried", "parked")}
        finally:
            await cleanup(url, settings)
    return {"consumer_events_per_s": round(count / elapsed, 1), "events": count,
            "seconds": round(elapsed, 3), "publish_events_per_s": round(count / publish_seconds, 1),
            "prefetch": prefetch, "concurrency": concurrency, "sqlite_synchronous": "FULL",
            "outcomes": outcomes}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--prefetch", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(main(args.events, args.amqp_url, args.prefetch, args.concurrency))
    print(f"inventory consumer: {result['events']} events in {result['seconds']} s "
          f"→ {result['consumer_events_per_s']} events/s applied into SQLite ({result['outcomes']})")
    print(json.dumps(result))
