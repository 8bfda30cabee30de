"""Fault injection on the gateway under sustained load: the broker stopped and started, the broker blocked.

Each test breaks a scratch RabbitMQ node of its own (never the shared broker) and restores it. The load
is a few threads posting signed, unique, realistic bodies; every answer is recorded with its timing.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import aio_pika
import httpx
import pytest

from gateway import sample, wire
from tests.conftest import sign
from tests.integration.brokers import ScratchBroker
from tests.integration.processes import GatewayProcess

pytestmark = [pytest.mark.integration, pytest.mark.fault]

PUBLISH_TIMEOUT = 2.0  # GATEWAY_PUBLISH_TIMEOUT_SECONDS for these tests (the default is 3)
TRADEVINE_DEADLINE = 5.0
KEYS = tuple(wire.EVENT_TYPES.values())


@dataclass(frozen=True, slots=True)
class Answer:
    sent: float  # time.monotonic()
    done: float
    status: int | None  # None: no HTTP answer at all
    message_id: str

    @property
    def seconds(self) -> float:
        return self.done - self.sent


class Load:
    """`senders` threads posting unique signed bodies (the ten event types in turn) until stopped."""

    _ids = itertools.count(1)  # object ids unique across every Load of the session

    def __init__(self, url: str, *, senders: int = 8, keys: tuple[str, ...] = KEYS,
                 bodies: Iterator[bytes] | None = None) -> None:
        self.url = url
        self.senders = senders
        self.keys = keys
        self.bodies = bodies
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._send, daemon=True) for _ in range(senders)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def join(self, timeout: float = 60) -> None:
        """Wait until the senders are done (given `bodies`, when they are all sent)."""
        for thread in self._threads:
            thread.join(timeout=timeout)

    def body(self) -> bytes:
        with self._lock:
            if self.bodies is not None:
                return next(self.bodies)
            number = next(self._ids)
        key = self.keys[number % len(self.keys)]
        return sample.encode(sample.body_for(key, object_id=3_000_000_000_000_000_000 + number))

    def _send(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    body = self.body()
                except StopIteration:
                    return
                sent = time.monotonic()
                try:
                    status: int | None = client.post(self.url, content=body, headers={
                        "X-Tradevine-Hmac-SHA256": sign(body), "Content-Type": "application/json"}).status_code
                except httpx.HTTPError:
                    status = None
                self.answers.append(Answer(sent, time.monotonic(), status, hashlib.sha256(body).hexdigest()))

    def accepted(self, after: float = 0.0) -> list[Answer]:
        return [a for a in list(self.answers) if a.status == 200 and a.sent >= after]

    def wait_accepted(self, count: int, *, after: float = 0.0, timeout: float = 15.0) -> float:
        """Wait for `count` 200s sent after `after`; returns when the first of them was sent."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(found := self.accepted(after)) >= count:
                return min(a.sent for a in found)
            time.sleep(0.02)
        raise AssertionError(f"fewer than {count} accepted within {timeout}s; answers: {self.summary()}")

    def summary(self) -> dict[int | None, int]:
        counts: dict[int | None, int] = {}
        for answer in list(self.answers):
            counts[answer.status] = counts.get(answer.status, 0) + 1
        return counts


async def declare_bound_queue(url: str, exchange: str, queue: str) -> None:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True)
        await declared.bind(exchange, "#")


async def message_ids(url: str, queue: str, expected: set[str], *, quiet: float = 2.0) -> set[str]:
    """Consume `queue` until every expected id came or nothing more came for `quiet` seconds.

    The queue may hold more than was accepted: a publish whose confirm was lost with the connection
    was answered 503, and may still have been stored (Tradevine then sends it again).
    """
    seen: set[str] = set()
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=500)
        declared = await channel.declare_queue(queue, passive=True)
        async with declared.iterator(no_ack=True) as messages:
            while not expected <= seen:
                try:
                    message = await asyncio.wait_for(messages.__anext__(), quiet)
                except TimeoutError:
                    break
                if message.message_id:
                    seen.add(message.message_id)
    return seen


@pytest.fixture(scope="module")
def broker() -> Iterator[ScratchBroker]:
    with ScratchBroker() as node:
        yield node


def test_a_broker_restart_under_load_loses_nothing_answers_503_meanwhile_and_recovers(
        broker: ScratchBroker, unique: str) -> None:
    exchange, queue = f"test.faults.{unique}", f"test.faults.{unique}.all"
    env = {"GATEWAY_PUBLISH_TIMEOUT_SECONDS": str(PUBLISH_TIMEOUT)}
    with GatewayProcess(broker.url, exchange, extra_env=env) as gateway:
        asyncio.run(declare_bound_queue(broker.url, exchange, queue))
        pid = gateway.process.pid if gateway.process else None
        with Load(gateway.url) as load:
            load.wait_accepted(50)
            try:
                broker.stop_app()
                down_at = time.monotonic()
                load_while_down = len(load.answers)
                time.sleep(3)  # sustained load against a stopped broker
                answered_while_down = len(load.answers) - load_while_down
            finally:
                up_called = time.monotonic()
                broker.start_app()
            back_at = time.monotonic()
            first_accepted = load.wait_accepted(1, after=back_at, timeout=12)
            load.wait_accepted(100, after=first_accepted)
        same_process = gateway.process is not None and gateway.process.pid == pid
    answers = load.answers
    accepted = {a.message_id for a in answers if a.status == 200}
    in_queue = asyncio.run(message_ids(broker.url, queue, accepted))

    assert {a.status for a in answers} <= {200, 503}, load.summary()
    assert accepted - in_queue == set(), f"{len(accepted - in_queue)} accepted messages are not in the queue"
    while_down = [a for a in answers if a.sent >= down_at and a.done <= up_called]
    assert answered_while_down > 10 and len(while_down) > 10
    assert {a.status for a in while_down} == {503}
    assert max(a.seconds for a in while_down) <= PUBLISH_TIMEOUT + 0.5
    assert max(a.seconds for a in answers) < TRADEVINE_DEADLINE
    assert first_accepted - back_at < 10
    assert same_process


def test_a_blocked_broker_gets_503_within_the_deadline_then_2xx_once_unblocked(
        broker: ScratchBroker, unique: str) -> None:
    exchange, queue = f"test.faults.{unique}", f"test.faults.{unique}.all"
    with GatewayProcess(broker.url, exchange) as gateway:  # the default publish timeout: 3 s
        asyncio.run(declare_bound_queue(broker.url, exchange, queue))
        with Load(gateway.url, senders=8) as load:
            load.wait_accepted(20)
            try:
                broker.block()  # a memory alarm: publishes are held, confirms stop
                blocked_at = time.monotonic()
                time.sleep(4)
            finally:
                unblocked_at = time.monotonic()
                broker.unblock()
            load.wait_accepted(20, after=time.monotonic(), timeout=10)
    answers = load.answers
    # Answered while blocked (the alarm takes a moment to reach the connection): all 503s.
    blocked = [a for a in answers if blocked_at + 0.5 <= a.done <= unblocked_at]

    assert {a.status for a in answers} <= {200, 503}, load.summary()
    assert len(blocked) >= 8 and {a.status for a in blocked} == {503}
    assert max(a.seconds for a in blocked) <= 3.0 + 0.5
    assert max(a.seconds for a in answers) < TRADEVINE_DEADLINE
