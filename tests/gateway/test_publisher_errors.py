"""AmqpPublisher.publish without a broker: how each channel failure maps to BrokerUnavailable, and that
the in-flight count (which close() drains on) comes back to zero on every path, cancellation included.

The broker-backed behaviour (confirms, returns, restarts) is in tests/integration; these cover the
mapping, which a real broker can only produce some of on demand.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aiormq
import pytest
from pamqp.commands import Basic

from gateway import message, wire
from gateway.errors import BrokerUnavailable
from gateway.publisher import AmqpPublisher

OUTGOING = message.build(b'{"EventType": 95001, "OrganisationId": 1}', table=wire.EVENT_TYPES,
                         received_at=datetime(2026, 1, 1, tzinfo=UTC), source=wire.SOURCE_WEBHOOK,
                         app_id=wire.APP_ID_GATEWAY)


class FakeUnderlay:
    max_content_size = 131_072 - 8  # RabbitMQ's default frame_max, less the frame's own bytes

    def __init__(self, result: Any) -> None:
        self.result = result
        self.calls: list[dict[str, Any]] = []
        self.entered = asyncio.Event()

    async def basic_publish(self, body: bytes, **kwargs: Any) -> Any:
        self.calls.append({"body": body, **kwargs})
        self.entered.set()
        if isinstance(self.result, BaseException):
            raise self.result
        if isinstance(self.result, asyncio.Future):
            return await self.result
        return self.result


class FakeChannel:
    is_closed = False

    def __init__(self, underlay: FakeUnderlay) -> None:
        self.underlay = underlay

    async def get_underlay_channel(self) -> FakeUnderlay:
        return self.underlay


class FakeConnection:
    is_closed = False

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.connected.set()
        self.closed = False

    async def close(self) -> None:
        self.closed = True


def returned() -> aiormq.exceptions.PublishError:
    """What aiormq raises for a mandatory message the exchange could not route (built without a frame)."""
    return aiormq.exceptions.PublishError.__new__(aiormq.exceptions.PublishError)


def publisher_with(result: Any) -> tuple[AmqpPublisher, FakeUnderlay]:
    publisher = AmqpPublisher("amqp://guest:guest@127.0.0.1:1/", timeout=0.5)
    underlay = FakeUnderlay(result)
    publisher._connection = FakeConnection()  # type: ignore[assignment]
    publisher._channels = [FakeChannel(underlay)]  # type: ignore[list-item]
    return publisher, underlay


def assert_drained(publisher: AmqpPublisher) -> None:
    assert publisher._inflight == 0 and publisher._idle.is_set()


async def test_a_confirm_returns_and_publishes_to_the_exchange_with_the_routing_key() -> None:
    publisher, underlay = publisher_with(Basic.Ack())
    await publisher.publish(OUTGOING)
    [call] = underlay.calls
    assert call["body"] == OUTGOING.body and call["exchange"] == wire.EXCHANGE
    assert call["routing_key"] == "product.created" and call["mandatory"] is True and call["timeout"] == 0.5
    assert call["properties"].message_id == OUTGOING.message_id
    assert_drained(publisher)


@pytest.mark.parametrize(("raised", "says"), [
    (TimeoutError(), "no confirm within 0.5s"),
    (returned(), "message returned as unroutable"),
    (aiormq.exceptions.DeliveryError(None, None), "message nacked by the broker"),  # type: ignore[arg-type]
    (aiormq.exceptions.ChannelInvalidStateError("closed"), "connection lost: ChannelInvalidStateError"),
    (ConnectionResetError(), "connection lost: ConnectionResetError"),
    (RuntimeError("writer is None"), "connection lost: RuntimeError"),
])
async def test_each_channel_failure_is_broker_unavailable_with_its_reason(raised: Exception, says: str) -> None:
    publisher, _ = publisher_with(raised)
    with pytest.raises(BrokerUnavailable) as caught:
        await publisher.publish(OUTGOING)
    assert str(caught.value) == says
    assert_drained(publisher)


async def test_a_result_other_than_ack_is_broker_unavailable() -> None:
    publisher, _ = publisher_with(Basic.Nack())
    with pytest.raises(BrokerUnavailable, match="unexpected publish result Nack"):
        await publisher.publish(OUTGOING)
    assert_drained(publisher)


async def test_an_error_outside_the_mapping_is_not_hidden() -> None:
    publisher, _ = publisher_with(ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        await publisher.publish(OUTGOING)
    assert_drained(publisher)


async def test_not_connected_is_broker_unavailable_before_anything_is_sent() -> None:
    publisher, underlay = publisher_with(Basic.Ack())
    publisher._connection.connected.clear()  # type: ignore[union-attr]
    with pytest.raises(BrokerUnavailable, match="not connected"):
        await publisher.publish(OUTGOING)
    assert underlay.calls == [] and publisher._inflight == 0


async def test_cancelled_while_awaiting_the_confirm_leaves_nothing_in_flight() -> None:
    """A client that hangs up cancels the request task mid-confirm: close() must not wait for it."""
    confirm: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    publisher, underlay = publisher_with(confirm)
    task = asyncio.create_task(publisher.publish(OUTGOING))
    await underlay.entered.wait()
    assert publisher._inflight == 1 and not publisher._idle.is_set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_drained(publisher)
    connection = publisher._connection
    await asyncio.wait_for(publisher.close(), 1)  # drains at once: nothing is in flight
    assert connection.closed  # type: ignore[union-attr]


async def test_close_waits_for_an_in_flight_confirm() -> None:
    confirm: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    publisher, underlay = publisher_with(confirm)
    task = asyncio.create_task(publisher.publish(OUTGOING))
    await underlay.entered.wait()
    closing = asyncio.create_task(publisher.close())
    await asyncio.sleep(0)
    assert not closing.done()
    confirm.set_result(Basic.Ack())
    await task
    await asyncio.wait_for(closing, 1)


def test_properties_past_the_frame_max_go_without_the_payload_headers() -> None:
    from gateway.publisher import FrameTooLarge, fitting_properties

    outgoing = message.Outgoing(routing_key="product.created", body=b"{}", message_id="m" * 64,
                                timestamp=datetime(2026, 1, 1, tzinfo=UTC),
                                headers={wire.H_SOURCE: "webhook", wire.H_EVENT_DATE: "d" * 128,
                                         wire.H_EVENT_KEY: "k" * 300})
    whole = fitting_properties(outgoing, 131_072)
    assert whole.headers == outgoing.headers
    size = 12 + len(whole.marshal())
    cut = fitting_properties(outgoing, size - 1)
    assert cut.headers == {wire.H_SOURCE: "webhook",
                           wire.H_TRUNCATED: f"{wire.H_EVENT_DATE},{wire.H_EVENT_KEY}"}
    with pytest.raises(FrameTooLarge):
        fitting_properties(outgoing, 100)


async def test_close_while_a_nacked_channel_is_being_replaced_leaves_no_renewal_behind() -> None:
    """The replacement channel is still being opened when the publisher closes: the renewal is cancelled
    there, and its position is free again (a later nack may renew it)."""
    publisher, _ = publisher_with(aiormq.exceptions.DeliveryError(None, None))  # type: ignore[arg-type]
    opening = asyncio.Event()

    async def channel(**_: Any) -> None:
        opening.set()
        await asyncio.Event().wait()  # never opens

    publisher._connection.channel = channel  # type: ignore[union-attr]
    with pytest.raises(BrokerUnavailable, match="nacked"):
        await publisher.publish(OUTGOING)
    await opening.wait()
    assert publisher._renewing == {0}
    await publisher.close()
    assert publisher._renewing == set() and not publisher._renewals
