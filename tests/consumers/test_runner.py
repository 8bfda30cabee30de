"""The runner's outcome handling without a broker: each delivery ends acked, republished then acked, or
handed back, and the metrics count only what was acked. Deliveries are aiormq's own objects; the channels
are doubles that record what the runner writes."""

from __future__ import annotations

import asyncio
import sqlite3
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
        self.hold: asyncio.Event | None = None  # set: each publish waits for it (its confirm is slow)

    async def publish(self, message: aio_pika.Message, routing_key: str, **_: Any) -> None:
        if self.hold is not None:
            await self.hold.wait()
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


def delivery(channel: AmqpChannel, tag: int, **options: Any) -> Received:
    return Received(deliver(channel, tag, **options))


def deliver(channel: AmqpChannel, tag: int, *, body: bytes | None = None, headers: dict[str, Any] | None = None,
            routing_key: str = "product.updated") -> DeliveredMessage:
    """A delivery as aiormq hands it to the runner's subscription."""
    raw = body if body is not None else sample.encode(sample.body_for(routing_key, event_date=T0, object_id=tag))
    properties = Basic.Properties(message_id=f"m{tag}", message_type=routing_key, headers=headers or {},
                                  content_type=wire.CONTENT_TYPE, delivery_mode=2)
    delivered = DeliveredMessage(
        delivery=Basic.Deliver(consumer_tag="ctag", delivery_tag=tag, redelivered=False, exchange="tradevine",
                               routing_key=routing_key),
        header=ContentHeader(body_size=len(raw), properties=properties), body=raw,
        channel=channel)  # type: ignore[arg-type]
    return delivered


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


# A consumer on SQLite: its deliveries take the staged path (first try in the open batch, acked from the
# COMMIT's callback, no task waiting per delivery).
STOCK_SCHEMA = ("CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY);"
                "CREATE TABLE IF NOT EXISTS parent (id TEXT PRIMARY KEY);"
                "CREATE TABLE IF NOT EXISTS child (parent_id TEXT REFERENCES parent (id) "
                "DEFERRABLE INITIALLY DEFERRED);")
stock = Consumer("stock", bindings=("product.#",), schema=STOCK_SCHEMA,
                 retry=RetryPolicy(attempts=2, tiers=(5, 30)))
stock_mode: dict[str, object] = {}


@stock.handler
async def record(event: Event, tx: Transaction) -> None:
    failures = stock_mode.get("fail_first", set())
    assert isinstance(failures, set)
    if event.message_id in failures:
        failures.discard(event.message_id)
        raise ConnectionError("upstream down")
    if stock_mode.get("orphan") == event.message_id:  # passes its savepoint; the deferred check fails the COMMIT
        stock_mode.pop("orphan")
        await tx.write("INSERT INTO child VALUES ('nobody')")
    tries = stock_mode.setdefault("tries", {})
    assert isinstance(tries, dict)
    tries[event.message_id] = tries.get(event.message_id, 0) + 1
    hangs = stock_mode.get("hang")
    if (isinstance(hangs, asyncio.Event) and tries[event.message_id] > stock_mode.get("hang_from_try", 0)  # type: ignore[operator]
            and stock_mode.get("hang_only", event.message_id) == event.message_id):
        await hangs.wait()
    await tx.write("INSERT INTO seen (id) VALUES (?)", (event.message_id,))


@pytest.fixture
async def on_sqlite(tmp_path: Any) -> Any:
    stock_mode.clear()
    settings = ConsumerSettings(amqp_url="amqp://guest:guest@127.0.0.1:1/", queue="stock", http_port=0,
                                database=str(tmp_path / "stock.sqlite3"), batch_size=64, batch_max_wait_ms=5)
    sleeps: list[float] = []

    async def no_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    built = Runner(stock, settings, metrics=Metrics(), clock=lambda: T0, sleep=no_sleep)
    built._channel = PublishingChannel()  # type: ignore[assignment]
    await built.store.open()
    yield built
    if built.store is not None:
        await built.store.close()


async def stock_runner(tmp_path: Any, **options: Any) -> Runner:
    """The stock consumer on SQLite in `tmp_path` (batches of up to 64, 5 ms unless `options` say otherwise),
    its store open, its copies to tiers and parking recorded, its retry sleeps skipped."""
    settings = ConsumerSettings(amqp_url="amqp://guest:guest@127.0.0.1:1/", queue="stock", http_port=0,
                                database=str(tmp_path / "stock.sqlite3"), **{"batch_max_wait_ms": 5, **options})
    runner = Runner(stock, settings, metrics=Metrics(), sleep=lambda _seconds: asyncio.sleep(0))
    runner._channel = PublishingChannel()  # type: ignore[assignment]
    await runner.store.open()
    return runner


async def seen(runner: Runner) -> list[str]:
    return [row[0] for row in await runner.store.query("SELECT id FROM seen ORDER BY id")]  # type: ignore[attr-defined]


async def test_staged_deliveries_are_acked_by_their_commit_without_a_task_waiting(on_sqlite: Runner) -> None:
    channel = AmqpChannel()
    for tag in (1, 2, 3):
        await on_sqlite._on_delivery(deliver(channel, tag))  # queued for the store's one applier task
    assert on_sqlite._applier is not None and len(on_sqlite._tasks) == 1
    while on_sqlite._applier is not None:  # it stages the three and ends, before the COMMIT
        await asyncio.sleep(0)
    assert channel.acked == [] and on_sqlite._inflight == 3 and not on_sqlite._tasks
    assert on_sqlite.store.pending == 3  # type: ignore[attr-defined]
    await on_sqlite._idle.wait()  # the batch commits after its 5 ms; its callback acks
    assert channel.acked == [(3, True)]
    assert on_sqlite.metrics.value("stock", "applied") == 3
    assert await seen(on_sqlite) == ["m1", "m2", "m3"]


async def test_a_staged_first_try_that_fails_goes_on_with_the_retry_policy(on_sqlite: Runner) -> None:
    stock_mode["fail_first"] = {"m2"}
    channel = AmqpChannel()
    for tag in (1, 2):
        await on_sqlite._on_delivery(deliver(channel, tag))
    await on_sqlite._idle.wait()
    assert sorted(channel.acked) == [(1, False), (2, False)] or channel.acked == [(2, True)]
    assert on_sqlite.metrics.value("stock", "applied") == 2  # the second try of m2 succeeded
    assert await seen(on_sqlite) == ["m1", "m2"]


async def test_a_batch_whose_commit_fails_sends_each_delivery_down_its_retry_path(on_sqlite: Runner) -> None:
    """Nothing of the batch was committed: each of its deliveries is tried again (the policy's second try,
    in a batch of its own), never acked on the strength of the failed COMMIT."""
    stock_mode["orphan"] = "m2"
    channel = AmqpChannel()
    for tag in (1, 2, 3):
        await on_sqlite._on_delivery(deliver(channel, tag))
    await on_sqlite._idle.wait()
    assert on_sqlite.metrics.value("stock", "applied") == 3
    assert await seen(on_sqlite) == ["m1", "m2", "m3"]
    assert max(tag for tag, _ in channel.acked) == 3 and not channel.nacked


async def test_a_delivery_cancelled_while_it_is_staged_is_never_acked(on_sqlite: Runner) -> None:
    """The applier task cancelled in a handler (the drain timeout): that delivery and the two queued behind it
    are never acked (the broker redelivers them); the runner's count is back to zero, and the next
    delivery gets a new applier."""
    stock_mode["hang"] = release = asyncio.Event()
    channel = AmqpChannel()
    for tag in (1, 2, 3):
        await on_sqlite._on_delivery(deliver(channel, tag))
    stuck = on_sqlite._applier
    assert stuck is not None
    while stock_mode.get("tries") != {"m1": 1}:  # inside its handler, in the open batch
        await asyncio.sleep(0.001)
    stuck.cancel()  # as the drain timeout does
    with pytest.raises(asyncio.CancelledError):
        await stuck
    assert on_sqlite._inflight == 0 and on_sqlite._applier is None and not on_sqlite._queue
    stock_mode.pop("hang")
    release.set()
    await on_sqlite._on_delivery(deliver(channel, 4))
    await on_sqlite._idle.wait()
    assert channel.acked == [(4, False)]  # alone: never a multiple ack over the abandoned ones
    assert await seen(on_sqlite) == ["m4"]


async def test_queued_deliveries_are_handed_back_once_the_runner_stops(on_sqlite: Runner) -> None:
    channel = AmqpChannel()
    for tag in (1, 2):
        await on_sqlite._on_delivery(deliver(channel, tag))
    on_sqlite._stopping = True  # stop() began before the applier took them
    await asyncio.wait_for(on_sqlite._idle.wait(), 5)
    assert channel.nacked == [1, 2] and channel.acked == [] and await seen(on_sqlite) == []


async def test_queued_deliveries_of_a_closed_channel_are_left_to_the_broker(on_sqlite: Runner) -> None:
    closed = AmqpChannel()
    closed.is_closed = True  # type: ignore[attr-defined]  # the robust channel is reopening
    await on_sqlite._on_delivery(deliver(closed, 1))
    await on_sqlite._on_delivery(deliver(AmqpChannel(), 1))  # the same message, redelivered on the new channel
    await asyncio.wait_for(on_sqlite._idle.wait(), 5)
    assert closed.acked == [] and closed.nacked == []
    assert await seen(on_sqlite) == ["m1"] and on_sqlite.metrics.value("stock", "applied") == 1


async def test_a_body_that_is_not_an_event_is_parked_off_the_queue(on_sqlite: Runner) -> None:
    channel = AmqpChannel()
    published = on_sqlite._channel.default_exchange  # type: ignore[union-attr]
    published.hold = hold = asyncio.Event()  # the parking copy waits for its confirm
    await on_sqlite._on_delivery(deliver(channel, 1, body=b"not json"))
    await on_sqlite._on_delivery(deliver(channel, 2))
    async with asyncio.timeout(5):
        while on_sqlite.metrics.value("stock", "applied") < 1:  # the queue went on past the parking
            await asyncio.sleep(0.001)
    assert channel.acked == [(2, False)] and not published.published
    hold.set()
    await asyncio.wait_for(on_sqlite._idle.wait(), 5)
    assert [queue for queue, _ in published.published] == ["stock.parked"]
    assert sorted(channel.acked) == [(1, False), (2, False)]


async def test_a_hung_handler_in_the_queue_is_cut_at_its_time_limit_and_the_queue_goes_on(tmp_path: Any) -> None:
    stock_mode.clear()
    stock_mode.update({"hang": asyncio.Event(), "hang_only": "m1"})
    runner = await stock_runner(tmp_path, handler_timeout=0.05)
    channel = AmqpChannel()
    for tag in (1, 2):
        await runner._on_delivery(deliver(channel, tag))
    await asyncio.wait_for(runner._idle.wait(), 5)
    # m1 hung in both its tries (cut each time) and went to the first delay tier; m2 was applied meanwhile.
    assert [(queue, copy.message_id) for queue, copy in runner._channel.default_exchange.published] == [
        ("stock.retry.5s", "m1")]  # type: ignore[union-attr]
    assert await seen(runner) == ["m2"] and runner.metrics.value("stock", "retried") == 1
    assert sorted(tag for tag, _ in channel.acked) == [1, 2]
    await runner.store.close()


async def test_stop_waits_for_the_commit_of_staged_deliveries_and_their_acks(tmp_path: Any) -> None:
    stock_mode.clear()
    runner = await stock_runner(tmp_path, batch_max_wait_ms=200)
    channel = AmqpChannel()
    for tag in (1, 2):
        await runner._on_delivery(deliver(channel, tag))
    while runner.store.pending < 2:  # type: ignore[attr-defined]  # staged by the applier task
        await asyncio.sleep(0.001)
    assert channel.acked == []
    await runner.stop()  # drains: the batch commits (after its 200 ms) and both are acked before it returns
    assert channel.acked == [(2, True)]
    assert runner.metrics.value("stock", "applied") == 2


async def test_a_retry_of_a_staged_delivery_cancelled_by_the_drain_timeout_is_never_acked(tmp_path: Any) -> None:
    """The batch's COMMIT failed, so the delivery went on to its second try in a task of its own; a stop
    whose drain time runs out cancels that task in its handler: nothing acked, nothing committed, and the
    runner's count of deliveries in progress is back to zero."""
    stock_mode.clear()
    stock_mode.update({"orphan": "m1", "hang": asyncio.Event(), "hang_from_try": 1})  # hangs from the 2nd try
    runner = await stock_runner(tmp_path, drain_seconds=1)
    channel = AmqpChannel()
    await runner._on_delivery(deliver(channel, 1))
    while stock_mode.get("tries") != {"m1": 2}:  # the COMMIT failed; the retry is in its handler
        await asyncio.sleep(0.001)
    assert len(runner._tasks) == 1 and runner._inflight == 1
    await runner.stop()
    assert channel.acked == [] and channel.nacked == []
    assert runner._inflight == 0 and not runner._tasks
    assert runner.metrics.value("stock", "applied") == 0
    with sqlite3.connect(tmp_path / "stock.sqlite3") as check:
        assert check.execute("SELECT count(*) FROM seen").fetchone() == (0,)


async def test_a_delivery_cancelled_in_its_second_try_after_a_staged_first_try_failed_is_never_acked(
        on_sqlite: Runner) -> None:
    """The first try failed, so the same task goes on with the retry policy; cancelled in that second try
    (a pod stopping), the delivery is neither acked nor counted, and the runner's count is back to zero."""
    stock_mode.update({"fail_first": {"m1"}, "hang": asyncio.Event()})  # the failing try is not counted
    channel = AmqpChannel()
    await on_sqlite._on_delivery(deliver(channel, 1))
    while stock_mode.get("tries") != {"m1": 1}:  # the second try is in its handler, inside the open batch
        await asyncio.sleep(0.001)
    assert on_sqlite._applier is None and len(on_sqlite._tasks) == 1  # a task of its own, off the queue
    (task,) = on_sqlite._tasks
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert on_sqlite._inflight == 0 and not on_sqlite._tasks
    while on_sqlite.store._batch is not None:  # type: ignore[attr-defined]  # until the batch committed
        await asyncio.sleep(0.001)
    assert channel.acked == [] and channel.nacked == []
    assert on_sqlite.metrics.value("stock", "applied") == 0 and await seen(on_sqlite) == []


class Lanes:
    """A store with two batches open at once (as PostgreSQL's lanes have): deliveries with odd tags join
    batch A, even tags batch B; the test completes each batch's `durable` when it chooses."""

    def __init__(self) -> None:
        self.batches: dict[str, asyncio.Future[None]] = {}
        self.failing: set[str] = set()  # message ids whose event the batch fails (as a batch applied again)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.batches = {"A": loop.create_future(), "B": loop.create_future()}

    async def close(self) -> None:
        pass

    async def stage(self, event: Event, work: Any) -> Any:
        lane = "A" if int(event.message_id[1:]) % 2 else "B"
        failing = event.message_id in self.failing

        class Entry:
            durable = self.batches[lane]

            @staticmethod
            def result() -> str:
                Entry.durable.result()
                if failing:
                    raise ConnectionError("the event failed when its batch was applied again")
                return "applied"

        return Entry()

    async def apply(self, event: Event, work: Any) -> str:
        return "applied"  # the retry's second try succeeds


async def test_interleaved_batches_are_each_acked_by_their_own_commit_and_a_failed_event_goes_on_alone() -> None:
    settings = ConsumerSettings(amqp_url="amqp://guest:guest@127.0.0.1:1/", queue="probe", http_port=0)
    store = Lanes()
    lanes = Runner(probe, settings, metrics=Metrics(), clock=lambda: T0, store=store,  # type: ignore[arg-type]
                   sleep=lambda _seconds: asyncio.sleep(0))
    lanes._channel = PublishingChannel()  # type: ignore[assignment]
    await store.open()
    store.failing = {"m3"}
    channel = AmqpChannel()
    for tag in (1, 2, 3, 4, 5):
        await lanes._on_delivery(deliver(channel, tag))
    assert lanes._inflight == 5 and len(lanes._waiting) == 2  # one list per open batch, not one per delivery
    store.batches["B"].set_result(None)
    while lanes._inflight > 3:  # until their acks are written and counted
        await asyncio.sleep(0)
    assert channel.acked == [(2, False), (4, False)]  # 1 is still open: B's deliveries are acked singly
    assert counted(lanes, "applied") == 2 and lanes._inflight == 3
    store.batches["A"].set_result(None)
    await asyncio.wait_for(lanes._idle.wait(), 5)
    # A's 1 and 5 acked; 3 failed in its batch and went on with its retry policy alone (one try allowed:
    # to the first delay tier), acked once that copy was confirmed.
    assert sorted(tag for tag, _ in channel.acked) == [1, 2, 3, 4, 5] and not channel.nacked
    published = lanes._channel.default_exchange.published  # type: ignore[union-attr]
    assert [(queue, copy.message_id) for queue, copy in published] == [("probe.retry.5s", "m3")]
    assert (counted(lanes, "applied"), counted(lanes, "retried")) == (4, 1)
    assert lanes._inflight == 0 and not lanes._waiting


async def test_a_retry_cancelled_before_it_began_still_finishes_its_delivery(on_sqlite: Runner) -> None:
    """The drain timeout cancels every task, a retry started in the same pass of the loop included: the
    delivery is left unacked, and the runner's count still comes back to zero."""
    channel = AmqpChannel()
    message = delivery(channel, 1)
    acks = on_sqlite._window(message)
    on_sqlite._inflight += 1  # as _on_delivery counts it
    on_sqlite._idle.clear()
    on_sqlite._spawn(on_sqlite._retry(message, acks, on_sqlite._decode(message), ConnectionError("upstream down")))
    (retry,) = on_sqlite._tasks
    retry.cancel()  # before it ran a step
    with pytest.raises(asyncio.CancelledError):
        await retry
    await asyncio.sleep(0)  # the task's done-callback
    assert on_sqlite._inflight == 0 and on_sqlite._idle.is_set() and not on_sqlite._tasks
    assert channel.acked == [] and channel.nacked == [] and "tries" not in stock_mode


async def test_the_applier_cancelled_while_it_hands_a_delivery_back_leaves_the_count_at_zero(on_sqlite: Runner) -> None:
    """Stopping: the applier nacks what is still queued; cancelled in that nack (the drain timed out), the
    delivery and the one behind it stay unacked for the broker to redeliver, and nothing is counted twice."""
    class SlowNack(AmqpChannel):
        async def basic_nack(self, delivery_tag: int, multiple: bool = False, requeue: bool = True,
                             wait: bool = True) -> None:
            await asyncio.Event().wait()  # the nack never goes out

    channel = SlowNack()
    for tag in (1, 2):
        await on_sqlite._on_delivery(deliver(channel, tag))
    on_sqlite._stopping = True
    applier = on_sqlite._applier
    assert applier is not None
    await asyncio.sleep(0.01)  # in the first nack
    applier.cancel()
    with pytest.raises(asyncio.CancelledError):
        await applier
    assert on_sqlite._inflight == 0 and on_sqlite._idle.is_set() and not on_sqlite._queue
    assert channel.acked == [] and await seen(on_sqlite) == []
