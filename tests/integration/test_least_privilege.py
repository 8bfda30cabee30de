"""Least privilege: each workload under its own broker user, with the prod overlay's permission patterns.

The patterns are read from the rendered prod overlay (`kubectl kustomize deploy/overlays/prod`, one
`Permission` per workload), so a change to the manifests is tested here. On a broker node of the
test's own (the names are the production ones: `tradevine.events`, `inventory`, `orders`), one user
per workload gets exactly those patterns; then:

- not too narrow: gateway → inventory + orders end to end (all ten event types reach both stores),
  parking through the default exchange, and the reconciler's publishes, each under its own user;
- not too wide: the gateway's user can neither delete nor read a consumer's queue, a consumer's user
  cannot publish to the exchange or touch the other consumer's queues, the reconciler's user can only
  publish to the exchange;
- a consumer under the wrong user stops at start with one line naming the permissions it needs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import pytest
import yaml

from gateway import sample, wire
from tests.integration.brokers import ScratchBroker
from tests.integration.consumer_helpers import ROOT, Broker, ConsumerProcess, Names, eventually, outgoing, rows
from tests.integration.fake_tradevine import FakeTradevine, product, sales_order, serving
from tests.integration.processes import GatewayProcess, send

pytestmark = pytest.mark.integration

GATEWAY, RECONCILER = "tradevine-gateway", "tradevine-reconciler"
CONSUMERS = {"inventory": "tradevine-consumer-inventory", "orders": "tradevine-consumer-orders"}
KEYS = [key for key in wire.EVENT_TYPES.values()]
Operation = Callable[[aio_pika.abc.AbstractChannel], Awaitable[Any]]


def prod_permissions() -> dict[str, dict[str, str]]:
    """{user name: {configure, write, read}} from the `Permission` objects of the rendered prod overlay."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed: cannot render deploy/overlays/prod")
    rendered = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy/overlays/prod")], capture_output=True,
                              text=True, check=True, timeout=60).stdout
    found: dict[str, dict[str, str]] = {}
    for document in yaml.safe_load_all(rendered):
        if document and document.get("kind") == "Permission":
            spec = document["spec"]
            user = spec.get("user") or spec["userReference"]["name"]
            assert user not in found, f"more than one Permission for {user}: keep one per workload"
            assert spec["vhost"] == "/", spec
            found[user] = {kind: spec["permissions"][kind] for kind in ("configure", "write", "read")}
    assert sorted(found) == sorted([GATEWAY, RECONCILER, *CONSUMERS.values()]), found
    return found


class Users:
    """The scratch node, and an AMQP URL per workload user (`guest` stays the test's own admin)."""

    def __init__(self, broker: ScratchBroker, permissions: dict[str, dict[str, str]]) -> None:
        self.admin = broker.url
        self.permissions = permissions
        self.urls: dict[str, str] = {}
        parts = urllib.parse.urlsplit(broker.url)
        for user, allowed in permissions.items():
            password = f"{user}-password"
            broker.ctl("add_user", user, password)
            broker.ctl("set_permissions", "-p", "/", user, allowed["configure"], allowed["write"], allowed["read"])
            netloc = f"{user}:{password}@{parts.hostname}:{parts.port}"
            self.urls[user] = urllib.parse.urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture(scope="module")
def users() -> Iterator[Users]:
    permissions = prod_permissions()
    with ScratchBroker() as broker:
        yield Users(broker, permissions)


@pytest.fixture
def gateway(users: Users, tmp_path: Path) -> Iterator[GatewayProcess]:
    with GatewayProcess(users.urls[GATEWAY], wire.EXCHANGE, log_path=tmp_path / "gateway.log") as process:
        yield process


@pytest.fixture
def consumers(users: Users, gateway: GatewayProcess, tmp_path: Path) -> Iterator[dict[str, Path]]:
    """inventory and orders as processes, each under its own user, once the gateway declared the exchange."""
    databases: dict[str, Path] = {}
    started: list[ConsumerProcess] = []
    for name, user in CONSUMERS.items():
        databases[name] = tmp_path / f"{name}.sqlite3"
        env = {"AMQP_URL": users.urls[user], "CONSUMER_DATABASE": str(databases[name]),
               "CONSUMER_HTTP_PORT": "0", "CONSUMER_RETRY_DELAYS": "1", "GATEWAY_EXCHANGE": wire.EXCHANGE}
        started.append(ConsumerProcess(name, env, tmp_path / f"{name}.log").start())
    yield databases
    for process in started:
        process.signal(signal.SIGTERM)
    for process in started:
        code = asyncio.run(process.wait())
        process.stop()
        assert code == 0, process.log.read_text()


@pytest.fixture
async def admin(users: Users) -> AsyncIterator[Broker]:
    async with Broker(users.admin, Names(wire.EXCHANGE, "inventory")) as broker:
        yield broker


def applied(database: Path) -> list[str]:
    return sorted(r[0] for r in rows(database, "SELECT routing_key FROM consumer_applied"))


async def test_gateway_consumers_and_reconciler_work_under_their_own_users(
        users: Users, gateway: GatewayProcess, consumers: dict[str, Path], admin: Broker) -> None:
    for queue in CONSUMERS:
        await eventually(lambda q=queue: admin.consumers(q), what=f"{queue} consuming")  # type: ignore[misc]
    for key in KEYS:
        assert send(gateway.url, key).startswith('200 {"status":"accepted"')
    product_keys = sorted(k for k in KEYS if k.startswith("product."))
    order_keys = sorted(k for k in KEYS if k.startswith("sales_order."))
    await eventually(lambda: applied(consumers["inventory"]) == product_keys
                     and applied(consumers["orders"]) == order_keys, what="all ten applied")

    # A body that is not a JSON object is parked at once: the consumer moves it to inventory.parked
    # through the default exchange, under its own user.
    await admin.publish(outgoing(b"[]", routing_key="product.updated"))
    await eventually(lambda: admin.holds("inventory.parked", 1), what="the malformed event parked")

    # The reconciler publishes product.reconciled and sales_order.reconciled under its own user.
    api = FakeTradevine(products=[product(3451582911247567002, "2025-03-18T21:00:00")],
                        sales_orders=[sales_order(3479979772702215001, "2025-03-18T21:30:00")])
    with serving(api):
        env = {**api.credentials.environ(api.base_url), "AMQP_URL": users.urls[RECONCILER],
               "GATEWAY_EXCHANGE": wire.EXCHANGE}
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "gateway", "reconcile", "--lookback", "2h",
                             "--until", "2025-03-18T22:00:00Z"], env={**os.environ, **env}, cwd=ROOT,
            capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    await eventually(lambda: "product.reconciled" in applied(consumers["inventory"])
                     and "sales_order.reconciled" in applied(consumers["orders"]), what="reconciled applied")
    for queue in CONSUMERS:
        assert await admin.count(f"{queue}.parked") == (1 if queue == "inventory" else 0)
    assert await admin.count(wire.unrouted_name(wire.EXCHANGE)) == 0


async def refused(url: str, operation: Operation) -> str:
    """Run `operation` on a fresh channel as that user; return the broker's ACCESS_REFUSED text."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as refusal:
            await operation(channel)
        return str(refusal.value)


def delete_queue(name: str) -> Operation:
    return lambda channel: channel.queue_delete(name)


def get_from(name: str) -> Operation:
    async def get(channel: aio_pika.abc.AbstractChannel) -> Any:
        queue = await channel.declare_queue(name, passive=True)
        return await queue.get(fail=False)
    return get


def publish_to(exchange: str, routing_key: str) -> Operation:
    async def publish(channel: aio_pika.abc.AbstractChannel) -> Any:
        target = (channel.default_exchange if exchange == "" else
                  await channel.get_exchange(exchange, ensure=False))
        message = aio_pika.Message(sample.encode(sample.body_for("product.created")))
        return await target.publish(message, routing_key=routing_key)  # confirmed: a refusal raises
    return publish


def declare_queue(name: str) -> Operation:
    return lambda channel: channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})


def delete_exchange(name: str) -> Operation:
    return lambda channel: channel.exchange_delete(name)


def bind(queue: str, exchange: str, key: str) -> Operation:
    async def do(channel: aio_pika.abc.AbstractChannel) -> Any:
        return await (await channel.declare_queue(queue, passive=True)).bind(exchange, key)
    return do


async def test_the_patterns_are_not_too_wide(users: Users, gateway: GatewayProcess, consumers: dict[str, Path],
                                             admin: Broker) -> None:
    for queue in CONSUMERS:
        await eventually(lambda q=queue: admin.consumers(q), what=f"{queue} consuming")  # type: ignore[misc]
    url = users.urls
    denied: list[tuple[str, Operation]] = [
        # The internet-facing gateway: nothing but its exchange.
        (GATEWAY, delete_queue("inventory")),
        (GATEWAY, delete_queue("orders.parked")),
        (GATEWAY, get_from("inventory")),
        (GATEWAY, get_from("orders.parked")),
        (GATEWAY, publish_to("", "inventory")),
        (GATEWAY, declare_queue("gateway-side-queue")),
        (GATEWAY, bind("tradevine.events.unrouted", "amq.topic", "#")),
        # A consumer: its own queues only; it cannot inject events or touch the other consumer's
        # queues. (It can publish through the default exchange into any queue by name: RabbitMQ checks
        # write on the exchange, not the queue. docs/operations.md says so.)
        (CONSUMERS["inventory"], publish_to(wire.EXCHANGE, "sales_order.created")),
        (CONSUMERS["inventory"], delete_exchange(wire.EXCHANGE)),
        (CONSUMERS["inventory"], delete_queue("orders")),
        (CONSUMERS["inventory"], get_from("orders.parked")),
        (CONSUMERS["inventory"], get_from(wire.unrouted_name(wire.EXCHANGE))),
        (CONSUMERS["orders"], delete_queue("inventory.parked")),
        (CONSUMERS["orders"], bind("orders", wire.unrouted_name(wire.EXCHANGE), "")),
        # The reconciler: publish to the exchange, nothing else.
        (RECONCILER, delete_exchange(wire.EXCHANGE)),
        (RECONCILER, delete_queue("inventory")),
        (RECONCILER, get_from("inventory")),
        (RECONCILER, publish_to("", "inventory")),
        (RECONCILER, declare_queue("reconciler-side-queue")),
    ]
    for user, operation in denied:
        text = await refused(url[user], operation)
        assert "ACCESS_REFUSED" in text and f"user '{user}'" in text, text
    # Nothing changed: every queue is still there, the side queues were never created.
    for queue in ("inventory", "inventory.parked", "orders", "orders.parked"):
        assert await admin.count(queue) >= 0, queue
    for queue in ("gateway-side-queue", "reconciler-side-queue"):
        assert await admin.count(queue) == -1, queue
    # The same operations are allowed where the patterns say so (so the refusals above are not
    # an artefact of how the test asks): the inventory user may read and publish into its own queue.
    async with await aio_pika.connect(url[CONSUMERS["inventory"]]) as connection:
        channel = await connection.channel()
        await publish_to("", "inventory.parked")(channel)
        assert await get_from("inventory.parked")(channel) is not None


async def test_a_consumer_under_another_users_permissions_stops_with_the_patterns_it_needs(
        users: Users, gateway: GatewayProcess, tmp_path: Path) -> None:
    process = ConsumerProcess("inventory", {"AMQP_URL": users.urls[CONSUMERS["orders"]],
                                            "CONSUMER_DATABASE": str(tmp_path / "inventory.sqlite3"),
                                            "CONSUMER_HTTP_PORT": "0"}, tmp_path / "wrong-user.log").start()
    try:
        assert await process.wait() == 1
    finally:
        process.stop()
    lines = [line for line in process.log.read_text().splitlines() if line.startswith("tradevine-consumers:")]
    assert len(lines) == 1, process.log.read_text()
    assert "ACCESS_REFUSED" in lines[0] and "configure '^inventory(\\.retry\\.[0-9]+s|\\.parked)?$'" in lines[0]
    assert "Traceback" not in process.log.read_text()


async def test_a_consumer_started_before_the_gateway_says_the_exchange_is_missing(users: Users,
                                                                                  tmp_path: Path) -> None:
    # An exchange nobody declared yet stands for a first deployment where the consumers start first.
    process = ConsumerProcess("inventory", {"AMQP_URL": users.urls[CONSUMERS["inventory"]],
                                            "GATEWAY_EXCHANGE": "tradevine.not-declared-yet",
                                            "CONSUMER_DATABASE": str(tmp_path / "inventory.sqlite3"),
                                            "CONSUMER_HTTP_PORT": "0"}, tmp_path / "early.log").start()
    try:
        assert await process.wait() == 1
    finally:
        process.stop()
    text = process.log.read_text()
    assert ("exchange 'tradevine.not-declared-yet' does not exist and this RabbitMQ user may not declare it"
            in text), text
    assert "start the gateway first" in text and "Traceback" not in text
