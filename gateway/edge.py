"""The gateway's HTTP connections: uvicorn's httptools protocol with a request deadline and a connection cap.

uvicorn alone bounds neither how long a request may take nor how many connections stay open:
`timeout_keep_alive` only runs between requests, `limit_concurrency` answers 503 (without Retry-After)
but still lets every connection in, and httptools sets no limit on the size of a request head. So:

- Deadline (`GATEWAY_REQUEST_TIMEOUT_SECONDS`): a request's head and body must have arrived within it,
  counted from its first byte (for the first request of a connection, from the connection itself).
  A connection that sent nothing is then closed; one that sent part of a request is answered 408 and
  closed. Between requests the idle keep-alive (`GATEWAY_KEEPALIVE_SECONDS`) applies, as before.
- Cap (`GATEWAY_MAX_CONNECTIONS`): a connection past the cap is answered 503 + Retry-After (its first
  request, then it is closed); past the cap plus a small overflow it is closed at once, so the process
  never holds more than cap + overflow client sockets.
- A request head over `MAX_HEAD_BYTES` is answered 431 and closed.

What the webhook endpoint needs to know (is this connection over the cap, did the deadline pass) it
finds in `scope["extensions"][EXTENSION]`.
"""

from __future__ import annotations

import asyncio
from asyncio import TimerHandle
from collections.abc import Callable
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

EXTENSION = "tradevine.edge"
MAX_HEAD_BYTES = 65_536  # request line and headers; a Tradevine request's are under 1 KB


def _raw_answer(status: bytes, error: bytes) -> bytes:
    body = b'{"error":"%s"}' % error
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (
        status, len(body), body)


REQUEST_TIMEOUT = _raw_answer(b"408 Request Timeout", b"request_timeout")
HEAD_TOO_LARGE = _raw_answer(b"431 Request Header Fields Too Large", b"headers_too_large")


class EdgeState:
    """Per request, shared with the app through the scope."""

    __slots__ = ("overloaded", "timed_out")

    def __init__(self, overloaded: bool) -> None:
        self.overloaded = overloaded
        self.timed_out = False


class Limits:
    __slots__ = ("count", "max_connections", "refuse_above", "request_timeout")

    def __init__(self, request_timeout: float, max_connections: int, overflow: int,
                 count: Callable[[str], None]) -> None:
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.refuse_above = max_connections + overflow
        self.count = count


def limits_of(app: Any) -> Limits:
    """The limits of the gateway app behind uvicorn's wrappers (settings and metrics in its state)."""
    while not hasattr(getattr(app, "state", None), "settings") and hasattr(app, "app"):
        app = app.app
    state: Any = getattr(app, "state", None)
    if not hasattr(state, "settings"):
        raise RuntimeError("gateway.edge.EdgeProtocol serves only the gateway app (gateway.app.create_app)")
    settings, metrics = state.settings, state.metrics
    return Limits(settings.request_timeout, settings.max_connections, settings.connection_overflow,
                  metrics.request)


class EdgeProtocol(HttpToolsProtocol):
    """`uvicorn.run(app, http=EdgeProtocol)` (or `--http gateway.edge:EdgeProtocol`)."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits: Limits | None = getattr(config, "_tradevine_limits", None)
        if limits is None:
            limits = limits_of(self.app)
            config._tradevine_limits = limits  # type: ignore[attr-defined]  # once per server
        self.limits = limits
        self._deadline: TimerHandle | None = None
        self._in_message = False  # between the first byte of a request and its last
        self._head_done = False  # the current request's headers are complete
        self._head_bytes = 0
        self._over = False  # past the cap: answer 503, then close
        self._edge: EdgeState | None = None

    # --- the connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        open_now = len(self.connections)
        if open_now > self.limits.max_connections:
            if open_now > self.limits.refuse_above:
                transport.close()  # refused: no request read, no descriptor kept
                return
            self._over = True
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_message:
            if not self._head_done:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                    self._disarm()
                    self.transport.write(HEAD_TOO_LARGE)
                    self.transport.close()
        elif (self._deadline is None and self.timeout_keep_alive_task is None
              and (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing()):
            # Bytes that began no request (blank lines) stopped the keep-alive timer: they do not
            # keep the connection open past the request deadline either.
            self._arm()

    # --- parser callbacks --------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_message, self._head_done, self._head_bytes = True, False, 0
        if self._deadline is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._head_done = True
        self._edge = EdgeState(self._over)
        self.scope["extensions"] = {EXTENSION: self._edge}  # type: ignore[dict-item]
        super().on_headers_complete()
        if self._over and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_message = False
        self._disarm()
        cycle = self.cycle
        if (cycle is not None and cycle.response_complete and self.timeout_keep_alive_task is None
                and not self.pipeline and not self.transport.is_closing()):
            # The body ended after its answer (a 413 or 401 sent early): idle from now on. uvicorn
            # armed the keep-alive timer at the answer, and the body's bytes stopped it.
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self.timeout_keep_alive_handler)

    # --- the deadline ------------------------------------------------------------------------------

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.limits.request_timeout, self._deadline_passed)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        transport = self.transport
        if transport.is_closing():
            return
        cycle = self.cycle
        if not self._in_message:
            if cycle is None or cycle.response_complete:
                transport.close()  # nothing (or only blank lines) arrived: close quietly
            return  # else the previous request is being answered; its own timeouts hold
        if self.pipeline:
            transport.close()  # a pipelined request too slow to arrive: no answer can be slotted in
            return
        if self._head_done and cycle is not None:
            if cycle.response_started:
                transport.close()  # answered already (413, 401): the rest of the body came too late
                return
            # The app is waiting for the body: it will see a disconnect, and must not answer.
            cycle.disconnected = True
            if self._edge is not None:
                self._edge.timed_out = True
            cycle.message_event.set()
        self.limits.count("request_timeout")
        transport.write(REQUEST_TIMEOUT)
        transport.close()
