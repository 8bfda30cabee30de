"""`python -m consumers run` as a real process: SIGKILL mid-handler, SIGTERM drain, crash loops."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.parked import describe
from tests.integration.consumer_helpers import (
    APP,
    T0,
    Broker,
    ConsumerProcess,
    Names,
    body,
    eventually,
    outgoing,
    rows,
)

pytestmark = [pytest.mark.integration, pytest.mark.fault]


@pytest.fixture
def processes() -> Iterator[list[ConsumerProcess]]:
    started: list[ConsumerProcess] = []
    yield started
    for process in started:
        process.stop()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def ended_or_parked(process: ConsumerProcess, broker: Broker, parked: str) -> bool:
    return (process.process is not None and process.process.poll() is not None) or await broker.holds(parked, 1)


async def requeued_or_parked(broker: Broker, queue: str, parked: str) -> bool:
    return await broker.holds(queue, 1) or await broker.holds(parked, 1)


class Probe:
    """Starts probe consumer processes for one test, all sharing a database and a control directory."""

    def __init__(self, amqp_url: str, names: Names, directory: Path, processes: list[ConsumerProcess],
                 **env: str) -> None:
        self.directory = directory
        self.database = directory / "probe.sqlite3"
        self.log = directory / "consumer.log"
        self.processes = processes
        self.env = {"AMQP_URL": amqp_url, "GATEWAY_EXCHANGE": names.exchange, "CONSUMER_QUEUE": names.queue,
                    "CONSUMER_DATABASE": str(self.database), "CONSUMER_HTTP_PORT": "0",
                    "CONSUMER_RETRY_DELAYS": "1,2", "CONSUMER_CONCURRENCY": "1", "PROBE_DIR": str(directory),
                    **env}

    def mode(self, mode: str) -> None:
        (self.directory / "mode").write_text(mode)

    def start(self) -> ConsumerProcess:
        process = ConsumerProcess("probe", self.env, self.log, app=APP).start()
        self.processes.append(process)
        return process

    async def start_consuming(self, broker: Broker, queue: str) -> ConsumerProcess:
        """Start a process and wait until the broker sees it consuming `queue`."""
        process = self.start()
        await eventually(lambda: broker.consumers(queue), what="consumer up")
        return process

    def calls(self) -> list[str]:
        return lines(self.directory / "calls")

    def applied(self) -> list[tuple[str, ...]]:
        return [tuple(r) for r in rows(self.database, "SELECT message_id, source FROM probe_applied")]


async def test_a_consumer_killed_mid_handler_gets_the_message_again_and_applies_it_once(
        amqp_url: str, names: Names, tmp_path: Path, processes: list[ConsumerProcess]) -> None:
    probe = Probe(amqp_url, names, tmp_path, processes)
    probe.mode("wait")
    async with Broker(amqp_url, names) as broker:
        first = await probe.start_consuming(broker, names.queue)
        message = outgoing(body("product.updated", date=T0))
        await broker.publish(message)
        await eventually(lambda: len(probe.calls()) == 1, what="handler started")
        first.signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        second = probe.start()
        await eventually(lambda: len(probe.calls()) == 2, what="redelivered")
        (tmp_path / "release").touch()
        await eventually(lambda: probe.applied() == [(message.message_id, "webhook")], what="applied")
        await eventually(lambda: broker.holds(names.queue, 0), what="acked")
        second.signal(signal.SIGTERM)
        assert await second.wait() == 0
        assert rows(probe.database, "SELECT message_id FROM consumer_applied") == [(message.message_id,)]
        assert await broker.count(f"{names.queue}.parked") == 0


async def test_sigterm_finishes_the_handler_in_flight_acks_it_and_exits_0(
        amqp_url: str, names: Names, tmp_path: Path, processes: list[ConsumerProcess]) -> None:
    probe = Probe(amqp_url, names, tmp_path, processes)
    probe.mode("wait")
    async with Broker(amqp_url, names) as broker:
        first = await probe.start_consuming(broker, names.queue)
        in_flight = outgoing(body("product.updated", date=T0))
        waiting = outgoing(body("product.updated", date=T0.replace(minute=5)))
        await broker.publish(in_flight)
        await eventually(lambda: len(probe.calls()) == 1, what="handler started")
        await broker.publish(waiting)  # prefetched behind the busy handler (concurrency 1)
        first.signal(signal.SIGTERM)
        await eventually(lambda: "consumer_draining" in probe.log.read_text(), what="draining")
        (tmp_path / "release").touch()
        assert await first.wait() == 0
        assert probe.applied() == [(in_flight.message_id, "webhook")]
        assert await broker.count(names.queue) == 1  # the waiting one went back, untouched
        probe.mode("ok")
        second = probe.start()
        await eventually(lambda: len(probe.applied()) == 2, what="second applied")
        second.signal(signal.SIGTERM)
        assert await second.wait() == 0
        assert sorted(probe.applied()) == sorted([(in_flight.message_id, "webhook"), (waiting.message_id, "webhook")])
        assert [c.split(" ")[0] for c in probe.calls()].count(in_flight.message_id) == 1


async def test_the_delivery_limit_stops_a_crash_loop_by_parking_the_message(
        amqp_url: str, names: Names, tmp_path: Path, processes: list[ConsumerProcess]) -> None:
    probe = Probe(amqp_url, names, tmp_path, processes, PROBE_DELIVERY_LIMIT="2")
    probe.mode("die")
    parked = f"{names.queue}.parked"
    async with Broker(amqp_url, names) as broker:
        message = outgoing(body("product.updated", date=T0))
        runs = 0
        while not await broker.holds(parked, 1):
            assert runs < 6, "the message never reached the parking queue"
            process = probe.start()
            runs += 1
            if runs == 1:
                await eventually(lambda: broker.consumers(names.queue), what="consumer up")
                await broker.publish(message)
            await eventually(lambda p=process: ended_or_parked(p, broker, parked), what="crash or parked")
            process.stop()
            # The broker returns the message to the queue or, past the limit, dead-letters it to the parking
            # queue, a moment after the crash: decide whether to start another run only once either happened.
            await eventually(lambda: requeued_or_parked(broker, names.queue, parked), what="requeued or parked")
        assert runs == 3 and len(probe.calls()) == 3
        found = await broker.take(parked)
        assert found is not None
        described = describe(found)
        assert described.message_id == message.message_id and described.routing_key == "product.updated"
        assert "x-delivery-limit" in described.error
