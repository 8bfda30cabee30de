"""Failure paths against a real RabbitMQ: in-process tries, each delay tier, parking, replay, topology clash."""

from __future__ import annotations

import asyncio
import io
import os
from datetime import datetime
from pathlib import Path

import aio_pika
import pytest

from consumers.cli import main
from consumers.errors import TopologyError
from consumers.runner import Runner
from gateway import wire
from tests.integration import consumer_apps
from tests.integration.consumer_helpers import (
    APP,
    T0,
    Broker,
    Names,
    body,
    eventually,
    outgoing,
    rows,
    running,
)
from tests.integration.consumer_helpers import settings as consumer_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def probe_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PROBE_DIR", str(tmp_path))
    return tmp_path


def calls(probe_dir: Path) -> list[tuple[str, str, str]]:
    path = probe_dir / "calls"
    lines = path.read_text().splitlines() if path.exists() else []
    return [tuple(line.split(" ")) for line in lines]  # type: ignore[misc]


async def cli(names: Names, amqp_url: str, *argv: str) -> tuple[int, str]:
    """The CLI function, in a thread (it runs its own event loop)."""
    out = io.StringIO()
    environ = {**os.environ, "AMQP_URL": amqp_url, "GATEWAY_EXCHANGE": names.exchange,
               "CONSUMER_QUEUE": names.queue, "CONSUMER_RETRY_DELAYS": "1,2"}
    code = await asyncio.to_thread(main, ["--app", APP, *argv], environ, out)
    return code, out.getvalue()


async def test_a_failing_handler_walks_every_tier_then_parks_with_error_headers_and_replays(
        amqp_url: str, names: Names, probe_dir: Path) -> None:
    (probe_dir / "mode").write_text("fail")
    database = probe_dir / "probe.sqlite3"
    message = outgoing(body("product.updated", date=T0))
    async with (Broker(amqp_url, names) as broker,
                running(consumer_apps.probe, consumer_settings(amqp_url, names, database)) as runner):
        await broker.publish(message)
        await eventually(lambda: broker.holds(f"{names.queue}.parked", 1), timeout=20, what="parked")
        # Two in-process tries per delivery; the first delivery, then one per tier (1 s, 2 s).
        assert [(c[1], c[2]) for c in calls(probe_dir)] == [("1", "webhook")] * 2 + [("2", "webhook")] * 2 + [
            ("3", "webhook")] * 2
        assert {c[0] for c in calls(probe_dir)} == {message.message_id}
        # Counted once the ack follows the confirmed copy, a moment after the copy is visible.
        await eventually(lambda: runner.metrics.value("probe", "parked") == 1, what="parked counted")
        assert runner.metrics.value("probe", "retried") == 2

        code, out = await cli(names, amqp_url, "parked", "list", "probe")
        assert code == 0 and message.message_id[:16] in out and "OSError: probe failure on attempt 3" in out
        code, out = await cli(names, amqp_url, "parked", "show", "probe")
        assert code == 0 and '"tradevine-error": "OSError: probe failure on attempt 3"' in out
        assert '"tradevine-attempt": "3"' in out and '"tradevine-failed-at": "' in out
        assert '"Code": "MSP-152"' in out and "AccessToken" not in out
        code, out = await cli(names, amqp_url, "parked", "replay", "probe", "--dry-run")
        assert code == 0 and "would replay 1 message(s)" in out
        assert await broker.count(f"{names.queue}.parked") == 1

        (probe_dir / "mode").write_text("ok")
        code, out = await cli(names, amqp_url, "parked", "replay", "probe", "--limit", "5")
        assert code == 0 and f"replayed 1 message(s) from {names.queue}.parked to {names.queue}" in out
        await eventually(lambda: rows(database, "SELECT message_id, routing_key, source, attempt FROM probe_applied")
                         == [(message.message_id, "product.updated", "replay", 1)], what="replayed and applied")
        assert await broker.count(f"{names.queue}.parked") == 0


async def test_a_permanent_error_parks_at_once(amqp_url: str, names: Names, probe_dir: Path) -> None:
    (probe_dir / "mode").write_text("permanent")
    async with (Broker(amqp_url, names) as broker,
                running(consumer_apps.probe, consumer_settings(amqp_url, names, probe_dir / "p.sqlite3")) as runner):
        message = outgoing(body("sales_order.created", date=T0))
        await broker.publish(message)
        await eventually(lambda: broker.holds(f"{names.queue}.parked", 1), what="parked")
        assert len(calls(probe_dir)) == 1 and runner.metrics.value("probe", "retried") == 0
        parked = await broker.take(f"{names.queue}.parked")
        assert parked is not None and parked.message_id == message.message_id and parked.type == "sales_order.created"
        headers = parked.headers or {}
        assert headers[wire.H_ERROR] == "Permanent: probe cannot handle this"
        assert headers[wire.H_ATTEMPT] == "1" and headers[wire.H_SOURCE] == "webhook"
        assert datetime.fromisoformat(str(headers[wire.H_FAILED_AT]).replace("Z", "+00:00")).tzinfo is not None


async def test_a_body_that_is_not_json_is_parked_not_dropped(amqp_url: str, names: Names, probe_dir: Path) -> None:
    async with (Broker(amqp_url, names) as broker,
                running(consumer_apps.probe, consumer_settings(amqp_url, names, probe_dir / "p.sqlite3"))):
        await broker.publish(outgoing(b"\x00 not json", routing_key="product.updated"))
        await eventually(lambda: broker.holds(f"{names.queue}.parked", 1), what="parked")
        assert calls(probe_dir) == []


async def test_purge_removes_parked_messages(amqp_url: str, names: Names, probe_dir: Path) -> None:
    (probe_dir / "mode").write_text("permanent")
    async with (Broker(amqp_url, names) as broker,
                running(consumer_apps.probe, consumer_settings(amqp_url, names, probe_dir / "p.sqlite3"))):
        for minute in range(3):
            await broker.publish(outgoing(body("product.updated", date=T0.replace(minute=minute))))
        await eventually(lambda: broker.holds(f"{names.queue}.parked", 3), what="three parked")
        assert await cli(names, amqp_url, "parked", "purge", "probe", "--limit", "1") == (
            0, f"purged 1 message(s) from {names.queue}.parked\n")
        assert await cli(names, amqp_url, "parked", "purge", "probe") == (
            0, f"purged 2 message(s) from {names.queue}.parked\n")


async def test_parked_list_pages_and_lists_both_copies_of_a_message_parked_twice(
        amqp_url: str, names: Names, probe_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (probe_dir / "mode").write_text("permanent")
    twice = outgoing(body("product.updated", date=T0))
    others = [outgoing(body("product.updated", date=T0.replace(minute=m))) for m in (1, 2)]
    async with (Broker(amqp_url, names) as broker,
                running(consumer_apps.probe, consumer_settings(amqp_url, names, probe_dir / "p.sqlite3"))):
        # At-least-once republishing can deliver (and so park) one message twice.
        for message in (twice, twice, *others):
            await broker.publish(message)
        await eventually(lambda: broker.holds(f"{names.queue}.parked", 4), what="four parked")

    code, out = await cli(names, amqp_url, "parked", "list", "probe")
    assert code == 0 and out.count(twice.message_id[:16]) == 2, out
    assert out.endswith(f"4 parked message(s) in {names.queue}.parked\n")

    monkeypatch.setattr("consumers.parked.PAGE", 3)
    code, out = await cli(names, amqp_url, "parked", "list", "probe")
    assert code == 0 and len(out.splitlines()) == 4, out
    assert out.endswith(f"showing the first 3 of 4 parked message(s) in {names.queue}.parked; "
                        "1 more (--limit N shows more)\n")
    code, out = await cli(names, amqp_url, "parked", "show", "probe", "--limit", "1")
    assert code == 0 and "3 more" in out and out.count('"message_id"') == 1

    code, out = await cli(names, amqp_url, "parked", "replay", "probe", "--dry-run")
    assert code == 0 and out.count(twice.message_id[:16]) == 2 and "would replay 4 message(s)" in out
    async with Broker(amqp_url, names) as broker:
        assert await broker.count(f"{names.queue}.parked") == 4


async def test_a_queue_declared_with_other_arguments_is_a_clear_error(
        amqp_url: str, names: Names, probe_dir: Path) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(names.queue, durable=True, arguments={"x-queue-type": "quorum"})
    runner = Runner(consumer_apps.probe, consumer_settings(amqp_url, names, probe_dir / "p.sqlite3"))
    with pytest.raises(TopologyError) as raised:
        await runner.start()
    text = str(raised.value)
    assert f"queue {names.queue!r} already exists with a different" in text
    assert "delete the queue" in text and "CONSUMER_QUEUE" in text


async def test_a_handler_past_the_drain_deadline_is_cancelled_and_its_message_kept(
        amqp_url: str, names: Names, probe_dir: Path) -> None:
    (probe_dir / "mode").write_text("wait")
    database = probe_dir / "p.sqlite3"
    async with Broker(amqp_url, names) as broker:
        runner = Runner(consumer_apps.probe, consumer_settings(amqp_url, names, database, drain_seconds=0.2))
        await runner.start()
        await broker.publish(outgoing(body("product.updated", date=T0)))
        await eventually(lambda: len(calls(probe_dir)) == 1, what="handler started")
        await runner.stop()
        await eventually(lambda: broker.holds(names.queue, 1), what="message back in the queue")
        assert rows(database, "SELECT * FROM probe_applied") == []
