"""Consumer throughput: events/s applied by the inventory service into SQLite and PostgreSQL, against the limit.

Publishes N realistic product events (created, updated, stock, ATS, deleted; distinct message ids and
products, in date order per product) to an exchange of its own; then, in each of R rounds (fresh events and
fresh quorum queues each round, as the limit gets):

1. the limit: raw aio-pika draining the same messages from the same kind of queue (quorum), one ack
   per message, at the same prefetch, doing nothing else; and the same one layer down (aiormq, on which
   aio-pika is built and where the runner subscribes), reported for comparison;
2. one inventory consumer in this process (SQLite in a temporary directory, `synchronous=FULL`, group
   commit: acks only after the batch's COMMIT) draining them;
3. the same on PostgreSQL (a database of its own on the server at --postgres-url / TEST_POSTGRES_URL,
   created and dropped; the server's default `synchronous_commit=on`), from a queue of its own.

The process's garbage collector is tuned as the consumer's `run` command tunes it (`consumers.tuning`), for
every phase, the limit's too. The aio-pika limit is measured before and after each consumer, and the
consumer's ratio is its rate over the mean of those two: on a shared machine the speed drifts within
seconds, and a limit taken only before would compare the consumer with another moment. Each side's clock
runs from its subscription (`consume`) to its last delivery settled; connecting, opening the store and
declaring queues are outside both. The figures printed are the medians over the rounds.

The last line printed is one JSON object: limit_events_per_s, limit_aiormq_events_per_s, sqlite_events_per_s,
postgres_events_per_s, sqlite_ratio, postgres_ratio, ratios_per_round, rates_per_round, lost (events not
accounted for as applied, stale or duplicate, or products missing from a store; every round and store added
up).

    AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        python tests/bench/consumer_bench.py --events 5000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
from aiormq.abc import DeliveredMessage

from consumers.metrics import Metrics
from consumers.runner import Runner, topology_for
from consumers.services.inventory import inventory
from consumers.settings import ConsumerSettings
from consumers.topology import declare
from consumers.tuning import tune_process
from gateway import message, sample, wire
from gateway.amqp_properties import amqp_properties
from gateway.publisher import ensure_topology

KEYS = ("product.created", "product.updated", "product.inventory.warehouse_stock_updated",
        "product.inventory.ats_updated", "product.updated", "product.inventory.ats_updated", "product.deleted")


def events(count: int, first_product: int = 3451582911247500000) -> list[message.Outgoing]:
    """`count` messages: each product gets the KEYS sequence, one second apart."""
    start = datetime(2025, 3, 18, 21, 0, tzinfo=UTC)
    received = datetime.now(UTC)
    built: list[message.Outgoing] = []
    product = first_product
    while len(built) < count:
        product += 1
        for step, key in enumerate(KEYS):
            if len(built) == count:
                break
            body = sample.body_for(key, event_date=start + timedelta(seconds=step), object_id=product)
            body["Product"]["QuantityInStock"] = float(100 - step)
            built.append(message.build(sample.encode(body), table=wire.EVENT_TYPES, received_at=received))
    return built


async def publish(url: str, exchange: str, outgoing: list[message.Outgoing], *, queue: str | None = None) -> float:
    """Through the exchange (to every bound queue), or straight into `queue`."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        underlay = await channel.get_underlay_channel()
        started = time.perf_counter()
        for offset in range(0, len(outgoing), 500):  # with the gateway's own properties
            await asyncio.gather(*(underlay.basic_publish(m.body, exchange="" if queue else exchange,
                                                          routing_key=queue or m.routing_key,
                                                          properties=amqp_properties(m), mandatory=True)
                                   for m in outgoing[offset:offset + 500]))
        return time.perf_counter() - started


async def cleanup(url: str, settings: ConsumerSettings) -> None:
    """Delete a run's queues."""
    topology = topology_for(inventory, settings)
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in (topology.queue, topology.parked, *topology.tier_queues):
            await channel.queue_delete(name)


async def remove_exchange(url: str, exchange: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(wire.unrouted_name(exchange))
        for name in (exchange, wire.unrouted_name(exchange)):
            await channel.exchange_delete(name)


async def limit(url: str, exchange: str, outgoing: list[message.Outgoing], prefetch: int, *,
                layer: str = "aio-pika") -> float:
    """Consume and ack every message of a quorum queue, one ack per message, doing nothing else: through
    aio-pika's `Queue.consume` (the limit the ratios use), or on the AMQP layer beneath it (aiormq's
    `basic_consume`, where the runner subscribes), for comparison."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(f"{exchange}.limit", durable=True,
                                            arguments={"x-queue-type": "quorum"})
        await publish(url, exchange, outgoing, queue=queue.name)
        done = asyncio.Event()
        acked = 0
        underlay = await channel.get_underlay_channel()

        async def on_message(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal acked
            await incoming.ack()
            acked += 1
            if acked == len(outgoing):
                done.set()

        async def on_delivery(delivered: DeliveredMessage) -> None:
            nonlocal acked
            await underlay.basic_ack(delivered.delivery_tag or 0)
            acked += 1
            if acked == len(outgoing):
                done.set()

        started = time.perf_counter()
        if layer == "aio-pika":
            tag = await queue.consume(on_message)
        else:
            tag = (await underlay.basic_consume(queue.name, on_delivery)).consumer_tag or ""
        await done.wait()
        elapsed = time.perf_counter() - started
        await underlay.basic_cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
        return elapsed


def cpu_seconds() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


class Timed(Runner):
    """The runner, noting when it subscribes: its clock starts there, as the limit's starts at `consume`
    (connecting, opening the store and declaring the queues are not part of either)."""

    subscribed: float | None = None

    async def _subscribe(self) -> None:
        if self.subscribed is None:
            self.subscribed = time.perf_counter()
        await super()._subscribe()


class Counted(Metrics):
    """The runner's metrics, noting when the `count`-th delivery got its final outcome (the limit's clock
    stops at its last ack in the same way, rather than at the next look at a counter)."""

    FINAL = ("applied", "stale", "duplicate", "parked")

    def __init__(self, count: int) -> None:
        super().__init__()
        self.expected, self.final = count, 0
        self.done = asyncio.Event()
        self.finished = 0.0

    def count(self, consumer: str, outcome: str, deliveries: int = 1) -> None:
        super().count(consumer, outcome, deliveries)
        if outcome in self.FINAL:
            self.final += deliveries
            if self.final >= self.expected and not self.done.is_set():
                self.finished = time.perf_counter()
                self.done.set()


async def drain(runner: Timed, metrics: Counted) -> tuple[float, float]:
    """Start the consumer on its full queue; seconds from its subscription until every event has an
    outcome, and this process's CPU seconds meanwhile (all its threads, from before the start)."""
    cpu = cpu_seconds()
    await runner.start()
    await metrics.done.wait()
    assert runner.subscribed is not None
    elapsed = metrics.finished - runner.subscribed
    cpu = cpu_seconds() - cpu
    await runner.stop()
    return elapsed, cpu


def outcomes_of(metrics: Metrics) -> dict[str, int]:
    return {o: int(metrics.value("inventory", o)) for o in ("applied", "duplicate", "stale", "retried", "parked")}


def postgres_products(url: str) -> tuple[int, str]:
    """Products in the inventory schema, and the server's synchronous_commit (durable when `on`)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        found = connection.execute("SELECT count(*) FROM inventory.products").fetchone()
        synchronous = connection.execute("SHOW synchronous_commit").fetchone()
    return (int(found[0]) if found else 0), str(synchronous[0] if synchronous else "?")


async def main(count: int, url: str, postgres_server: str | None, settings_overrides: dict[str, int],
               rounds: int = 5) -> dict[str, object]:
    """`rounds` rounds of: the limit, then each consumer followed by the limit again, on `count` fresh events
    each; the figures are the medians over the rounds (each ratio against the limit measured on either side
    of it, so a noisy neighbour that slows that moment moves both sides of the ratio)."""
    suffix = uuid.uuid4().hex[:8]
    exchange = f"bench.consumers.{suffix}"
    limits: dict[str, list[float]] = {"aio-pika": [], "aiormq": []}
    rates: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    outcomes: dict[str, dict[str, int]] = {}
    lost: dict[str, int] = {}
    async with contextlib.AsyncExitStack() as stack:
        database = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "inventory.sqlite3"
        common: dict[str, Any] = {"amqp_url": url, "exchange": exchange, "http_port": 0, **settings_overrides}
        databases = {"sqlite": str(database)}
        if postgres_server:
            sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: find `tests`
            from tests import postgres

            databases["postgres"] = stack.enter_context(postgres.database(postgres_server, "tvg_bench"))
        settings = ConsumerSettings(database=str(database), **common)
        connection = await aio_pika.connect(url)
        async with connection:
            await ensure_topology(connection, exchange)
        stack.push_async_callback(remove_exchange, url, exchange)
        for number in range(rounds):
            # Fresh queues each round, as the limit's: a quorum queue's log grows with every message it
            # took, so a queue kept across rounds would slow its consumer round after round.
            runs = {name: ConsumerSettings(queue=f"inventory-bench-{name}-{suffix}-{number}", database=where, **common)
                    for name, where in databases.items()}
            outgoing = events(count, first_product=3451582911247500000 + number * count)
            try:
                connection = await aio_pika.connect(url)
                async with connection:
                    channel = await connection.channel()
                    for chosen in runs.values():
                        await declare(channel, topology_for(inventory, chosen))
                limits["aiormq"].append(count / await limit(url, exchange, outgoing, settings.prefetch, layer="aiormq"))
                around = [count / await limit(url, exchange, outgoing, settings.prefetch)]
                await publish(url, exchange, outgoing)  # routed to every run's queue
                for name, chosen in runs.items():
                    metrics = Counted(count)
                    elapsed, used = await drain(Timed(inventory, chosen, metrics=metrics), metrics)
                    # Each consumer between two measurements of the limit: its ratio is against their mean.
                    around.append(count / await limit(url, exchange, outgoing, settings.prefetch))
                    rates.setdefault(name, []).append(count / elapsed)
                    ratios.setdefault(name, []).append(count / elapsed / statistics.mean(around[-2:]))
                    cpu.setdefault(name, []).append(used / count * 1e6)
                    for outcome, value in outcomes_of(metrics).items():
                        outcomes.setdefault(name, {}).setdefault(outcome, 0)
                        outcomes[name][outcome] += value
                limits["aio-pika"].extend(around)
            finally:
                for chosen in runs.values():
                    await cleanup(url, chosen)
        products = rounds * len({m.headers["tradevine-object-id"] for m in events(count)})
        rows = {"sqlite": sqlite3.connect(database).execute("SELECT count(*) FROM products").fetchone()[0]}
        synchronous = "?"
        if "postgres" in databases:
            rows["postgres"], synchronous = postgres_products(databases["postgres"])
    for name, o in outcomes.items():
        lost[name] = rounds * count - o["applied"] - o["stale"] - o["duplicate"] + (products - rows[name])
    result: dict[str, object] = {"limit_events_per_s": round(statistics.median(limits["aio-pika"]), 1),
                                 "limit_aiormq_events_per_s": round(statistics.median(limits["aiormq"]), 1)}
    for name in databases:
        result[f"{name}_events_per_s"] = round(statistics.median(rates[name]), 1)
        result[f"{name}_ratio"] = round(statistics.median(ratios[name]), 3)
        result[f"{name}_cpu_us_per_event"] = round(statistics.median(cpu[name]))  # the consumer process
    result.update({
        "lost": sum(lost.values()), "events": count, "rounds": rounds,
        "ratios_per_round": {name: [round(r, 3) for r in values] for name, values in ratios.items()},
        "rates_per_round": {"limit": [round(r) for r in limits["aio-pika"]],
                            **{name: [round(r) for r in values] for name, values in rates.items()}},
        "prefetch": settings.prefetch, "concurrency": settings.concurrency, "batch_size": settings.batch_size,
        "batch_max_wait_ms": settings.batch_max_wait_ms, "sqlite_synchronous": "FULL",
        "postgres_synchronous_commit": synchronous if "postgres" in databases else None,
        "outcomes": outcomes})
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="events per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (limit, then each store); medians reported")
    parser.add_argument("--prefetch", type=int, help="CONSUMER_PREFETCH (default: the setting's default)")
    parser.add_argument("--concurrency", type=int, help="CONSUMER_CONCURRENCY")
    parser.add_argument("--batch-size", type=int, help="CONSUMER_BATCH_SIZE")
    parser.add_argument("--batch-max-wait-ms", type=int, help="CONSUMER_BATCH_MAX_WAIT_MS")
    parser.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--postgres-url", default=os.environ.get("TEST_POSTGRES_URL") or None,
                        help="a PostgreSQL server (its own database is created and dropped); default "
                             "TEST_POSTGRES_URL; without one only SQLite runs")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    tune_process()  # as the consumer's CLI does: for the whole process, the limit's consumer too
    chosen = {k: v for k, v in {"prefetch": args.prefetch, "concurrency": args.concurrency,
                                "batch_size": args.batch_size, "batch_max_wait_ms": args.batch_max_wait_ms}.items()
              if v is not None}
    result = asyncio.run(main(args.events, args.amqp_url, args.postgres_url, chosen, args.rounds))
    print(f"limit (aio-pika consume + ack): {result['limit_events_per_s']} events/s; inventory into SQLite: "
          f"{result['sqlite_events_per_s']} events/s (ratio {result['sqlite_ratio']}); into PostgreSQL: "
          f"{result.get('postgres_events_per_s', 'not run')} events/s (ratio {result.get('postgres_ratio')}); "
          f"lost {result['lost']}")
    print(json.dumps(result))
