"""The webhook endpoint: size cap → custom header → signature → parse → publish → answer.

A plain ASGI callable (no Request object per call): it runs on every event Tradevine sends.
Nothing is published before the signature is verified, and 200 comes only after the broker's confirm.
A request's W3C trace context goes on in the message headers; with tracing on (`gateway.tracing`) the
request is a SERVER span with a child for the signature check and a PRODUCER child for publish+confirm.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
from starlette.types import Receive, Scope, Send

from gateway import message, signature, tracing, wire
from gateway.edge import EXTENSION, EdgeState
from gateway.errors import BrokerUnavailable
from gateway.metrics import GatewayMetrics
from gateway.publisher import Publisher
from gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

log = logging.getLogger("gateway.webhook")

SIGNATURE_HEADER = b"x-tradevine-hmac-sha256"
TRACEPARENT_HEADER = b"traceparent"
TRACESTATE_HEADER = b"tracestate"
SERVER_SPAN = "POST /webhooks/tradevine"
RETRY_AFTER_SECONDS = "5"
_JSON = (b"content-type", b"application/json")
_NO_EXTENSIONS: dict[str, EdgeState] = {}


def _error(code: str) -> bytes:
    return orjson.dumps({"error": code})


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes
    outcome: str
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()


# A 413 for a body whose declared length is within DISCARD_FACTOR times the cap keeps the connection:
# the server discards the rest as it arrives (never stored). A proxy such as nginx sends the whole
# body before it reads the answer; closing with the body half-sent breaks its pipe and it answers 502
# instead of our 413. Larger declared bodies, and streamed ones past the cap, are cut off: read no
# further, close.
DISCARD_FACTOR = 4
TOO_LARGE = _Answer(413, _error("body_too_large"), "body_too_large")
TOO_LARGE_CLOSE = _Answer(413, _error("body_too_large"), "body_too_large", ((b"connection", b"close"),))
BAD_HEADER = _Answer(401, _error("invalid_custom_header"), "invalid_custom_header")
BAD_HEADER_CLOSE = _Answer(401, _error("invalid_custom_header"), "invalid_custom_header",
                           ((b"connection", b"close"),))
BAD_SIGNATURE = _Answer(401, _error("invalid_signature"), "invalid_signature")
UNAVAILABLE = _Answer(503, _error("broker_unavailable"), "broker_unavailable",
                      ((b"retry-after", RETRY_AFTER_SECONDS.encode()),))
# Too many publishes awaiting a confirm (GATEWAY_MAX_IN_FLIGHT), or a connection past
# GATEWAY_MAX_CONNECTIONS (that one is closed after the answer).
OVERLOADED = _Answer(503, _error("overloaded"), "overloaded", ((b"retry-after", RETRY_AFTER_SECONDS.encode()),))
OVERLOADED_CLOSE = _Answer(503, _error("overloaded"), "overloaded",
                           ((b"retry-after", RETRY_AFTER_SECONDS.encode()), (b"connection", b"close")))
# The client went away before its body was complete: no answer can reach it. When the request
# deadline closed it (gateway.edge answered 408 and counted it), nothing is counted here.
DISCONNECTED = _Answer(0, b"", "client_disconnected")
TIMED_OUT = _Answer(0, b"", "")


class _Gone(Exception):
    """The client disconnected (or the request deadline closed it) before the body was complete."""


class WebhookEndpoint:
    """ASGI endpoint for `POST /webhooks/tradevine` (and the trailing-slash form)."""

    def __init__(self, settings: GatewaySettings, publisher: Publisher, metrics: GatewayMetrics,
                 clock: Callable[[], float] = time.time, tracer_provider: TracerProvider | None = None) -> None:
        self.settings = settings
        self.publisher = publisher
        self.metrics = metrics
        self.clock = clock
        self.secrets = settings.secret_bytes
        self.max_body = settings.max_body_bytes
        self.max_in_flight = settings.max_in_flight
        self.custom_name = (settings.custom_header_name.lower().encode("latin-1")
                            if settings.custom_header_name else None)
        self.custom_value = (settings.custom_header_value or "").encode("utf-8")
        self.tracer: Tracer | None = None  # None: tracing off, no OpenTelemetry work per request
        if tracer_provider is not None:
            from gateway import otel

            self.tracer = otel.tracer(tracer_provider, "gateway.webhook")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = await (self.handle(scope, receive) if self.tracer is None else self._traced(scope, receive))
        if answer.outcome:
            self.metrics.request(answer.outcome)
        if not answer.status:
            return  # the client is gone
        await send({"type": "http.response.start", "status": answer.status,
                    "headers": [_JSON, (b"content-length", str(len(answer.body)).encode()),
                                *answer.extra_headers]})
        await send({"type": "http.response.body", "body": answer.body})

    async def handle(self, scope: Scope, receive: Receive) -> _Answer:
        length: bytes | None = None
        offered_signature: bytes | None = None
        offered_custom: bytes | None = None
        traceparent: bytes | None = None
        tracestate: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == SIGNATURE_HEADER:
                offered_signature = value
            elif name == self.custom_name:
                offered_custom = value
            elif name == TRACEPARENT_HEADER:
                traceparent = value
            elif name == TRACESTATE_HEADER:  # W3C: several tracestate lines are one comma-separated list
                tracestate = value if tracestate is None else b"%s,%s" % (tracestate, value)

        declared = int(length) if length is not None and length.isdigit() else None
        edge = scope.get("extensions", _NO_EXTENSIONS).get(EXTENSION)
        try:
            body = await self._checked_body(receive, declared, offered_custom, edge)
        except _Gone:
            if edge is not None and edge.timed_out:
                log.warning("webhook_rejected", extra={"reason": "request_timeout"})
                return TIMED_OUT
            log.info("webhook_abandoned", extra={"reason": "client_disconnected"})
            return DISCONNECTED
        if isinstance(body, _Answer):
            return body

        if not (self._verify(body, offered_signature) if self.tracer is None
                else self._verify_traced(body, offered_signature)):
            reason = "missing" if not offered_signature else "mismatch"
            self.metrics.signature_failures.labels(reason).inc()
            log.warning("webhook_rejected", extra={"reason": f"signature_{reason}", "bytes": len(body)})
            return BAD_SIGNATURE

        if self.metrics.publishing >= self.max_in_flight:
            log.warning("webhook_rejected", extra={"reason": "overloaded", "in_flight": self.metrics.publishing})
            return OVERLOADED
        if self.tracer is None:
            trace = None if traceparent is None else tracing.carried(traceparent, tracestate)
            return (await self._publish(body, trace))[0]
        return await self._publish_traced(body)

    async def _checked_body(self, receive: Receive, declared: int | None, offered_custom: bytes | None,
                            edge: EdgeState | None) -> bytes | _Answer:
        """The body, or the answer that comes before it (overloaded, too large, bad custom header).

        Raises _Gone when the client disconnects (or the request deadline closes it) mid-body."""
        if edge is not None and edge.overloaded:
            # A connection past GATEWAY_MAX_CONNECTIONS: read (and drop) what fits, answer, close.
            if declared is None or declared <= self.max_body:
                await self._read(receive)
            return OVERLOADED_CLOSE
        if declared is not None and declared > self.max_body:
            log.warning("webhook_rejected", extra={"reason": "body_too_large", "content_length": declared})
            return TOO_LARGE if declared <= self.max_body * DISCARD_FACTOR else TOO_LARGE_CLOSE

        # Before the body is read: a request without the header costs no body.
        if self.custom_name is not None and not signature.header_ok(offered_custom, self.custom_value):
            reason = "missing" if offered_custom is None else "mismatch"
            log.warning("webhook_rejected", extra={"reason": f"custom_header_{reason}"})
            return (BAD_HEADER if declared is not None and declared <= self.max_body * DISCARD_FACTOR
                    else BAD_HEADER_CLOSE)

        body = await self._read(receive)
        if body is None:
            log.warning("webhook_rejected", extra={"reason": "body_too_large", "limit": self.max_body})
            return TOO_LARGE_CLOSE
        return body

    def _verify(self, body: bytes, offered: bytes | None) -> bool:
        return signature.signature_ok(body, _text(offered), secrets=self.secrets,
                                      ascii_compat=self.settings.ascii_compat)

    async def _publish(self, body: bytes, trace: dict[str, str] | None) -> tuple[_Answer, message.Outgoing]:
        """Build the message (with the trace headers `trace`), publish it, wait for the confirm."""
        now = self.clock()
        outgoing = message.build(body, table=self.settings.event_types,
                                 received_at=datetime.fromtimestamp(now, UTC),
                                 keep_access_token=self.settings.keep_access_token, trace=trace)
        started = time.perf_counter()
        self.metrics.publishing += 1
        try:
            await self.publisher.publish(outgoing)
        except BrokerUnavailable as exc:
            log.warning("publish_failed", extra={"reason": str(exc), "message_id": outgoing.message_id,
                                                 "routing_key": outgoing.routing_key})
            return UNAVAILABLE, outgoing
        finally:
            self.metrics.publishing -= 1
        self.metrics.publish_seconds.observe(time.perf_counter() - started)
        self.metrics.event(outgoing.routing_key,
                           outgoing.headers.get(wire.H_ORGANISATION_ID), now)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("webhook_accepted", extra={"message_id": outgoing.message_id,
                                                 "routing_key": outgoing.routing_key})
        return _Answer(200, b'{"status":"accepted","message_id":"%s"}' % outgoing.message_id.encode(),
                       "accepted"), outgoing

    # --- tracing on: the same steps inside spans -----------------------------------------------------

    async def _traced(self, scope: Scope, receive: Receive) -> _Answer:
        """The request as a SERVER span, continuing the caller's trace when it sent one."""
        from opentelemetry.trace import SpanKind, StatusCode

        from gateway import otel

        assert self.tracer is not None
        parent = otel.extract(_trace_headers(scope["headers"]))
        with self.tracer.start_as_current_span(
                SERVER_SPAN, context=parent, kind=SpanKind.SERVER,
                attributes={"http.request.method": "POST", "http.route": scope["path"],
                            "url.path": scope["path"]}) as span:
            answer = await self.handle(scope, receive)
            if answer.status:  # 0: the client is gone, nothing answered
                span.set_attribute("http.response.status_code", answer.status)
            span.set_attribute(otel.OUTCOME, answer.outcome or "request_timeout")
            if answer.status >= 500:
                span.set_status(StatusCode.ERROR, answer.outcome)
        return answer

    def _verify_traced(self, body: bytes, offered: bytes | None) -> bool:
        from gateway import otel

        assert self.tracer is not None
        with self.tracer.start_as_current_span("verify signature") as span:
            ok = self._verify(body, offered)
            span.set_attribute(otel.OUTCOME, "valid" if ok else "missing" if not offered else "mismatch")
            return ok

    async def _publish_traced(self, body: bytes) -> _Answer:
        """publish+confirm as a PRODUCER span; the message carries this span's context."""
        from opentelemetry.trace import SpanKind, StatusCode

        from gateway import otel

        assert self.tracer is not None
        exchange = self.settings.exchange
        with self.tracer.start_as_current_span(
                f"publish {exchange}", kind=SpanKind.PRODUCER,
                attributes={otel.MESSAGING_SYSTEM: "rabbitmq", otel.DESTINATION: exchange,
                            otel.OPERATION: "send"}) as span:
            trace: dict[str, str] = {}
            otel.inject(trace)
            answer, outgoing = await self._publish(body, trace)
            span.set_attribute(otel.ROUTING_KEY, outgoing.routing_key)
            span.set_attribute(otel.MESSAGE_ID, outgoing.message_id)
            if answer is UNAVAILABLE:
                span.set_status(StatusCode.ERROR, "no confirm from the broker")
        return answer

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the cap (the rest is never read).

        Raises _Gone when the client disconnects first."""
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                raise _Gone
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not event.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _trace_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """`traceparent` and `tracestate` from the request's headers, as text (the propagator's carrier)."""
    found: dict[str, str] = {}
    for name, value in headers:
        if name == TRACEPARENT_HEADER:
            found[tracing.TRACEPARENT] = value.decode("latin-1")
        elif name == TRACESTATE_HEADER:
            text = value.decode("latin-1")
            found[tracing.TRACESTATE] = f"{found[tracing.TRACESTATE]},{text}" if tracing.TRACESTATE in found else text
    return found
