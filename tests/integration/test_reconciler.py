"""`reconcile` against a fake Tradevine API over real HTTP and a real RabbitMQ."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage

from gateway import wire
from gateway.publisher import declare_topology
from gateway.reconcile import cli as reconcile_cli
from tests.integration.brokers import free_port
from tests.integration.fake_tradevine import ORG_ID, FakeTradevine, product, sales_order, serving

pytestmark = pytest.mark.integration

UNTIL = "2025-03-18T22:00:00Z"
CALLS_PER_MINUTE = 120  # one call every 0.5 s

# Window 2025-03-18T20:00:00Z .. 22:00:00Z (inclusive).
PRODUCTS = [
    product(3451582911247567001, "2025-03-18T19:59:59.997"),   # out: just before
    product(3451582911247567002, "2025-03-18T20:00:00"),       # in: first instant
    product(3451582911247567003, "2025-03-18T20:45:10.5"),
    product(3451582911247567004, "2025-03-17T08:00:00"),       # out: a day old
    product(3451582911247567005, "2025-03-18T21:14:05.913"),
    product(3451582911247567006, "2025-03-18T21:59:59.999"),
    product(3451582911247567007, "2025-03-18T22:00:00.003"),   # out: just after
    product(3451582911247567008, "2025-03-18T22:00:00"),       # in: last instant
]
ORDERS = [
    sales_order(3479979772702215001, "2025-03-18T20:30:00.123"),
    sales_order(3479979772702215002, "2025-03-18T18:30:00"),    # out; listed only when the query spans every zone
    sales_order(3479979772702215003, "2025-03-18T21:45:00"),
    sales_order(3479979772702215004, "2025-03-18T23:30:00"),    # out, after
    sales_order(3479979772702215005, "2025-03-18T21:00:00"),
    sales_order(3479979772702215006, "2025-03-16T10:00:00"),    # out: the API query already drops it
]
IN_WINDOW = {
    "product.reconciled": {3451582911247567002, 3451582911247567003, 3451582911247567005,
                           3451582911247567006, 3451582911247567008},
    "sales_order.reconciled": {3479979772702215001, 3479979772702215003, 3479979772702215005},
}


@pytest.fixture
def fake() -> Iterator[FakeTradevine]:
    api = FakeTradevine(products=[dict(p) for p in PRODUCTS], sales_orders=[dict(o) for o in ORDERS])
    with serving(api):
        yield api


@pytest.fixture
def exchange(amqp_url: str, unique: str) -> Iterator[str]:
    """A fresh exchange (with its unrouted pair) and a queue `<exchange>.all` bound to `#`."""
    name = f"test.reconcile.{unique}"
    asyncio.run(_declare(amqp_url, name))
    yield name
    asyncio.run(_delete(amqp_url, name))


async def _declare(url: str, name: str) -> None:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await declare_topology(channel, name)
        queue = await channel.declare_queue(f"{name}.all", durable=False, auto_delete=False)
        await queue.bind(name, "#")


async def _delete(url: str, name: str) -> None:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        for queue in (f"{name}.all", wire.unrouted_name(name)):
            await channel.queue_delete(queue)
        for exchange in (name, wire.unrouted_name(name)):
            await channel.exchange_delete(exchange)


def drain(url: str, queue: str, timeout: float = 3.0) -> list[AbstractIncomingMessage]:
    async def get_all() -> list[AbstractIncomingMessage]:
        messages: list[AbstractIncomingMessage] = []
        async with await aio_pika.connect(url) as connection:
            channel = await connection.channel()
            source = await channel.declare_queue(queue, passive=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                message = await source.get(no_ack=True, fail=False)
                if message is None:
                    if messages:
                        break
                    await asyncio.sleep(0.05)
                    continue
                messages.append(message)
        return messages

    return asyncio.run(get_all())


def environ(api: FakeTradevine, amqp_url: str, exchange: str, **extra: str) -> dict[str, str]:
    return {**api.credentials.environ(api.base_url), "AMQP_URL": amqp_url, "GATEWAY_EXCHANGE": exchange,
            "TRADEVINE_API_CALLS_PER_MINUTE": str(CALLS_PER_MINUTE), "TRADEVINE_API_PAGE_SIZE": "3",
            **extra}


def run(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="tradevine-gateway reconcile")
    reconcile_cli.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = reconcile_cli.run(parser.parse_args(argv), env, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_publishes_exactly_the_objects_in_the_window_within_the_rate_limit(
        fake: FakeTradevine, amqp_url: str, exchange: str) -> None:
    fake.throttle_call_numbers = {2}  # the second call is answered 429 with Retry-After: 1

    code, out, err = run(["--lookback", "2h", "--until", UNTIL],
                         environ(fake, amqp_url, exchange, TRADEVINE_ORG_UTC_OFFSET="+13:00"))

    assert (code, err) == (0, "")
    messages = drain(amqp_url, f"{exchange}.all")
    published: dict[str, set[int]] = {}
    for message in messages:
        assert message.routing_key is not None
        published.setdefault(message.routing_key, set()).add(orjson.loads(message.body)["EventObjectId"])
    assert published == IN_WINDOW
    assert len(messages) == 8  # each exactly once
    originals = {o["ProductID"]: o for o in PRODUCTS} | {o["SalesOrderID"]: o for o in ORDERS}
    for message in messages:
        body = orjson.loads(message.body)
        model = "Product" if message.routing_key == "product.reconciled" else "SalesOrder"
        other = "SalesOrder" if model == "Product" else "Product"
        obj = originals[body["EventObjectId"]]
        code_text = "95002" if model == "Product" else "95007"
        assert body == {"OrganisationID": ORG_ID, "EventType": int(code_text),
                        "EventObjectId": body["EventObjectId"], "EventDateUtc": obj["ModifiedDate"],
                        model: obj, other: None}
        assert (message.app_id, message.type, message.content_type) == (
            "tradevine-reconciler", message.routing_key, "application/json")
        assert message.message_id == hashlib.sha256(message.body).hexdigest()
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        headers = dict(message.headers)
        assert str(headers.pop(wire.H_RECEIVED_AT)).endswith("Z")
        object_id = str(body["EventObjectId"])
        assert headers == {
            wire.H_SOURCE: "reconciliation",
            wire.H_EVENT_TYPE: code_text,
            wire.H_ORGANISATION_ID: str(ORG_ID),
            wire.H_OBJECT_ID: object_id,
            wire.H_EVENT_DATE: obj["ModifiedDate"],
            wire.H_EVENT_KEY: f"{ORG_ID}:{code_text}:{object_id}:{obj['ModifiedDate']}",
        }

    # The sales-order query was asked in the organisation's zone, widened by an hour.
    order_queries = [c.query for c in fake.calls if c.path == "/v1/SalesOrder"]
    assert {(q["modifiedFrom"], q["modifiedTo"]) for q in order_queries} == {
        ("2025-03-19T08:00:00", "2025-03-19T12:00:01")}

    # 429 was waited out (Retry-After: 1), and no two calls came closer than the limit allows.
    statuses = [c.status for c in fake.calls]
    assert statuses == [200, 429, 200, 200, 200]
    times = [c.at for c in fake.calls]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[1] >= 0.95  # the retry after the 429
    assert min(gaps) >= 60 / CALLS_PER_MINUTE - 0.1
    assert (len(times) - 1) / (times[-1] - times[0]) <= CALLS_PER_MINUTE / 60 * 1.1

    assert "  products          3       8          5          5" in out
    assert "  sales orders      1       3          3          3" in out
    assert "API calls: 5 (1 retried)" in out
    assert 'tradevine_reconciler_objects_total{model="product"} 5' in out
    assert "result: ok" in out


def test_a_dry_run_without_a_known_zone_counts_the_same_and_publishes_nothing(
        fake: FakeTradevine, amqp_url: str, exchange: str, tmp_path: Path) -> None:
    metrics = tmp_path / "reconciler.prom"

    code, out, err = run(["--lookback", "2h", "--until", UNTIL, "--dry-run", "--metrics-file", str(metrics)],
                         environ(fake, amqp_url, exchange))

    assert (code, err) == (0, "")
    assert drain(amqp_url, f"{exchange}.all", timeout=0.5) == []
    assert "dry run, nothing published" in out
    assert "  products          3       8          5          -" in out
    assert "  sales orders      2       4          3          -" in out  # the query spans every zone
    text = metrics.read_text()
    assert 'tradevine_reconciler_objects_total{model="product"} 5.0' in text
    assert 'tradevine_reconciler_objects_total{model="sales_order"} 3.0' in text
    assert "tradevine_reconciler_api_calls_total 5.0" in text
    assert "tradevine_reconciler_success 1.0" in text


def test_only_sales_orders_touches_only_that_endpoint(fake: FakeTradevine, amqp_url: str, exchange: str) -> None:
    code, _, _ = run(["--lookback", "2h", "--until", UNTIL, "--only", "sales-orders"],
                     environ(fake, amqp_url, exchange, TRADEVINE_ORG_UTC_OFFSET="+13:00"))

    assert code == 0
    assert {c.path for c in fake.calls} == {"/v1/SalesOrder"}
    assert {m.routing_key for m in drain(amqp_url, f"{exchange}.all")} == {"sales_order.reconciled"}


def test_a_wrong_secret_is_a_clear_error_and_publishes_nothing(
        fake: FakeTradevine, amqp_url: str, exchange: str, tmp_path: Path) -> None:
    metrics = tmp_path / "reconciler.prom"
    env = environ(fake, amqp_url, exchange, TRADEVINE_CONSUMER_SECRET="not-the-right-secret")

    code, out, err = run(["--lookback", "2h", "--until", UNTIL, "--metrics-file", str(metrics)], env)

    assert code == 1
    assert [c.status for c in fake.calls] == [401]  # refused, not retried
    assert err.startswith("reconcile failed: Tradevine refused the OAuth credentials (HTTP 401) for GET "
                          "v1/Product; check TRADEVINE_CONSUMER_KEY, TRADEVINE_CONSUMER_SECRET")
    for secret in ("not-the-right-secret", fake.credentials.access_token_secret, fake.credentials.access_token):
        assert secret not in out + err
    assert "result: FAILED" in out
    assert "tradevine_reconciler_success 0.0" in metrics.read_text()
    assert drain(amqp_url, f"{exchange}.all", timeout=0.5) == []


def test_an_unreachable_broker_fails_before_any_api_call(fake: FakeTradevine, exchange: str) -> None:
    env = environ(fake, f"amqp://guest:guest@127.0.0.1:{free_port()}/", exchange)

    code, _out, err = run(["--lookback", "2h", "--until", UNTIL], env)

    assert code == 1
    assert fake.calls == []
    assert "reconcile failed: RabbitMQ: cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:" in err
    assert "check AMQP_URL" in err
