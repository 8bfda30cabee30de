"""A delivery as the runner reads it: a thin view of aiormq's `DeliveredMessage`.

The runner subscribes on the AMQP layer under aio-pika (aiormq, which aio-pika is built on): a delivery
then costs one task and no `aio_pika.IncomingMessage` (about thirty attribute writes and a second task per
message: a third of the cost of consuming, as `make bench-consumer` shows). Everything else — connecting,
reconnecting, declaring, publishing — stays aio-pika's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic


class Received:
    """What the runner needs of one delivery, read from the frames as they came."""

    __slots__ = ("_properties", "body", "channel", "delivery_tag", "exchange", "headers", "redelivered",
                 "routing_key")

    def __init__(self, delivered: DeliveredMessage) -> None:
        delivery: Basic.Deliver = delivered.delivery  # type: ignore[assignment]  # consumers only get Deliver
        self.body: bytes = delivered.body
        self.channel: AbstractChannel = delivered.channel
        self.delivery_tag: int = delivery.delivery_tag or 0  # 0 never comes: tags start at 1
        self.exchange: str = delivery.exchange or ""
        self.routing_key: str = delivery.routing_key or ""
        self.redelivered: bool = bool(delivery.redelivered)
        self._properties = properties = delivered.header.properties
        self.headers: dict[str, Any] = dict(properties.headers or {})

    @property
    def message_id(self) -> str | None:
        return self._properties.message_id

    @property
    def type(self) -> str | None:
        return self._properties.message_type

    @property
    def content_type(self) -> str | None:
        return self._properties.content_type

    @property
    def content_encoding(self) -> str | None:
        return self._properties.content_encoding

    @property
    def timestamp(self) -> datetime | None:
        return self._properties.timestamp

    @property
    def app_id(self) -> str | None:
        return self._properties.app_id

    @property
    def correlation_id(self) -> str | None:
        return self._properties.correlation_id

    async def nack(self, *, requeue: bool = True) -> None:
        await self.channel.basic_nack(self.delivery_tag, requeue=requeue)
