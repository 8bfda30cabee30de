"""The runner's outcome handling without a broker: each delivery ends acked, republished then acked, or
handed back, and the metrics count only what was acked. Deliveries are aiormq's own objects; the channels
are doubles that record what the runner writes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from consumers import Consumer, Event, Permanent, RetryPolicy, Transaction
from consumers.acks import AckWindow
from consumers.metrics import Metrics
from consumers.received import Received
from consumers.runner import Runner
from consumers.settings import ConsumerSettings
from gateway import sample, wire

T0 = datetime(2025, 3, 18, 21, 0, tzinfo=UTC)


class AmqpChannel:
    """The consuming channel: records acks and nacks."""

    def __init__(self) -> None:
        self.acked: list[tuple[int, bool]] = []
        self.nacked: list[int] = []
        self.fail_ack: Exception | None = None

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        if self.fail_ack is not None:
            raise self.fail_ack
        self.acked.append((delivery_tag, multiple))

    async def basic_nack(self, delivery_tag: int, multiple: bool = False, requeue: bool = True,
                         wait: bool = True) -> None:
        self.nacked.append(delivery_tag)


class DefaultExchange:
    """The default exchange of the runner's publishing channel: records the copies it is given."""

    def __init__(self) -> None:
        self.published: list[tuple[str, aio_pika.Message]] = []
        self.fail: Exception | None = None

    async def publish(self, message: aio_pika.Message, routing_key: str, **_: Any) -> None:
        if self.fail is not None:
            raise self.fail
        self.published.append((routing_key, message))


class PublishingChannel:
    def __init__(self) -> None:
        self.default_exchange = DefaultExchange()


probe = Consumer("probe", bindings=("product.#",), store="memory",
                 retry=RetryPolicy(attempts=1, tiers=(5, 30)))
mode: dict[str, str] = {"handler": "ok"}


@probe.handler
async def handle(event: Event, tx: Transaction) -> None:
    if mode["handler"] == "transient":
        raise ConnectionError("upstream down")
    if mode["handler"] == "permanent":
        raise Permanent("no such product")


@pytest.fixture
async def runner() -> Any:
    mode["handler"] = "ok"
    settings = ConsumerSettings(amqp_url="amqp://guest:guest@127.0.0.1:1/", queue="probe", http_port=0)
    built = Runner(probe, settings, metrics=Metrics(), clock=lambda: T0)
    built._channel = PublishingChannel()  # type: ignore[assignment]
    await built.store.open()
    yield built
    await built.store.close()


def delivery(channel: AmqpChannel, tag: int, *, body: bytes | None = None, headers: dict[str, Any] | None = None,
             routing_key: str = "product.updated") -> Received:
    raw = body if body is not None else sample.encode(sample.body_for(routing_key, event_date=T0, object_id=tag))
    properties = Basic.Properties(message_id=f"m{tag}", message_type=routing_key, headers=headers or {},
                                  content_type=wire.CONTENT_TYPE, delivery_mode=2)
    delivered = DeliveredMessage(
        delivery=Basic.Deliver(consumer_tag="ctag", delivery_tag=tag, redelivered=False, exchange="tradevine",
                               routing_key=routing_key),
        header=ContentHeader(body_size=len(raw), properties=properties), body=raw,
        channel=channel)  # type: ignore[arg-type]
    return Received(delivered)


async def process(runner: Runner, channel: AmqpChannel, *tags: int, acks: AckWindow | None = None,
                  **options: Any) -> AckWindow:
    acks = acks or AckWindow(channel)
    messages = [delivery(channel, tag, **options) for tag in tags]
    for message in messages:
        acks.track(message.delivery_tag)
    await asyncio.gather(*(runner._process(message, acks) for message in messages))
    return acks


def counted(runner: Runner, outcome: str) -> float:
    return runner.metrics.value("probe", outcome)


async def test_handled_deliveries_are_acked_together_and_counted(runner: Runner) -> None:
    channel = AmqpChannel()
    await process(runner, channel, 1, 2, 3)
    assert channel.acked == [(3, True)]
    assert counted(runner, "applied") == 3


async def test_a_transient_failure_goes_to_the_first_tier_then_is_acked(runner: Runner) -> None:
    mode["handler"] = "transient"
    channel = AmqpChannel()
    await process(runner, channel, 7, headers={"x-death": [{"count": 1}], wire.H_SOURCE: "webhook"})
    (queue, copy), = runner._channel.default_exchange.published  # type: ignore[union-attr]
    assert queue == "probe.retry.5s"
    assert copy.headers[wire.H_ATTEMPT] == "2" and "x-death" not in copy.headers
    assert copy.type == "product.updated" and copy.message_id == "m7"
    assert copy.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert channel.acked == [(7, False)] and counted(runner, "retried") == 1


async def test_a_permanent_failure_is_parked_with_its_error(runner: Runner) -> None:
    mode["handler"] = "permanent"
    channel = AmqpChannel()
    await process(runner, channel, 8)
    (queue, copy), = runner._channel.default_exchange.published  # type: ignore[union-attr]
    assert queue == "probe.parked"
    assert "no such product" in str(copy.headers[wire.H_ERROR])
    assert copy.headers[wire.H_FAILED_AT] == wire.utc_iso(T0)
    assert channel.acked == [(8, False)] and counted(runner, "parked") == 1


async def test_a_body_that_is_not_json_is_parked_without_reaching_the_handler(runner: Runner) -> None:
    channel = AmqpChannel()
    await process(runner, channel, 9, body=b"not json")
    (queue, copy), = runner._channel.default_exchange.published  # type: ignore[union-attr]
    assert queue == "probe.parked" and copy.body == b"not json"
    assert counted(runner, "parked") == 1 and counted(runner, "applied") == 0


async def test_a_copy_the_broker_refused_is_handed_back_not_acked(runner: Runner) -> None:
    """Republishing failed: nack with requeue (the broker redelivers it), never an ack that would drop it."""
    mode["handler"] = "permanent"
    runner._channel.default_exchange.fail = ConnectionError("channel closed")  # type: ignore[union-attr]
    channel = AmqpChannel()
    acks = await process(runner, channel, 4, 5)
    assert channel.nacked == [4, 5] and channel.acked == []
    assert counted(runner, "parked") == 0
    mode["handler"] = "ok"
    await process(runner, channel, 6, acks=acks)  # the run passes the two handed back
    assert channel.acked == [(6, False)]
    assert acks.open == 0


async def test_an_ack_that_cannot_be_written_is_not_counted(runner: Runner) -> None:
    channel = AmqpChannel()
    channel.fail_ack = ConnectionError("channel closed")
    await process(runner, channel, 1, 2)
    assert counted(runner, "applied") == 0  # redelivered later; the guards skip what committed


async def test_a_delivery_cancelled_in_its_handler_is_never_acked(runner: Runner) -> None:
    """A pod stopping cancels handlers: their deliveries stay unacked for the broker to redeliver."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def hangs(event: Event, tx: Transaction) -> None:
        entered.set()
        await release.wait()

    hanging = Consumer("probe", bindings=("product.#",), store="memory")
    hanging.handler(hangs)
    settings = ConsumerSettings(amqp_url="amqp://guest:guest@127.0.0.1:1/", queue="probe", http_port=0)
    stuck = Runner(hanging, settings, metrics=Metrics())
    await stuck.store.open()
    channel = AmqpChannel()
    acks = AckWindow(channel)
    first, second = delivery(channel, 1), delivery(channel, 2)
    acks.track(1)
    acks.track(2)
    task = asyncio.create_task(stuck._process(first, acks))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    await stuck._process(second, acks)
    assert channel.acked == [(2, False)]  # alone: never a multiple ack over the cancelled one
    assert acks.open == 2
    await stuck.store.close()
