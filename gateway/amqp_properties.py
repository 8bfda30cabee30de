"""The AMQP properties of an outgoing message, and a lean encoder for them that writes pamqp's bytes."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

from pamqp.commands import Basic

from gateway.message import Outgoing


def amqp_properties(message: Outgoing) -> Basic.Properties:
    """The AMQP properties of `message`, as the gateway publishes it (without aio-pika's Message)."""
    return GatewayProperties(
        content_type=message.content_type,
        headers=dict(message.headers),
        delivery_mode=PERSISTENT,
        message_id=message.message_id,
        timestamp=message.timestamp,
        message_type=message.routing_key,
        app_id=message.app_id,
    )


PERSISTENT = 2
_OURS = 0x8000 | 0x2000 | 0x1000 | 0x0080 | 0x0040 | 0x0020 | 0x0008  # the property flags set above
_FLAGS = struct.pack(">H", _OURS)
_PERSISTENT = bytes((PERSISTENT,))
_LONG = struct.Struct(">I")
_TIMESTAMP = struct.Struct(">Q")


def _short(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError("shortstr over 255 bytes")
    return bytes((len(raw),)) + raw


class GatewayProperties(Basic.Properties):
    """Basic.Properties whose `marshal()` writes the gateway's own fields in one pass.

    pamqp's encoder walks all fourteen properties and dispatches on each value's type; under load that
    was a tenth of the gateway's time. This writes the same bytes (the property tests compare them
    with pamqp's) when only the fields `amqp_properties` sets are used and every header is a string,
    and leaves anything else to pamqp.
    """

    _wire: bytes | None = None

    def marshal(self) -> bytes:
        """The properties' bytes, written once (the publisher measures them before aiormq writes them)."""
        if self._wire is None:
            self._wire = self._marshal()
        return self._wire

    def _marshal(self) -> bytes:
        headers = self.headers
        if (self.content_encoding is not None or self.priority is not None or self.correlation_id is not None
                or self.reply_to is not None or self.expiration is not None or self.user_id is not None
                or self.cluster_id or self.delivery_mode != PERSISTENT or not isinstance(headers, dict)
                or not isinstance(self.timestamp, datetime) or not self.content_type or not self.message_id
                or not self.message_type or not self.app_id):
            return super().marshal()
        try:
            fields = []
            for key in sorted(headers):
                value = headers[key]
                if not isinstance(value, str) or len(key.encode()) > 128:
                    return super().marshal()
                raw = value.encode()
                fields.append(b"%sS%s%s" % (_short(key), _LONG.pack(len(raw)), raw))
            table = b"".join(fields)
            moment = self.timestamp if self.timestamp.tzinfo is not None else self.timestamp.replace(tzinfo=UTC)
            return b"".join((_FLAGS, _short(self.content_type), _LONG.pack(len(table)), table, _PERSISTENT,
                             _short(self.message_id), _TIMESTAMP.pack(int(moment.timestamp())),
                             _short(self.message_type), _short(self.app_id)))
        except ValueError:
            return super().marshal()  # which says what is wrong
