"""`/healthz` (no I/O), `/readyz` (broker channel usable) and `/metrics` on a tiny asyncio server.

No web framework: three GET routes do not need one, and nothing here installs signal handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("consumers.http")
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HealthServer:
    def __init__(self, host: str, port: int, *, ready: Callable[[], bool],
                 registry: CollectorRegistry) -> None:
        self.host, self.port = host, port
        self.ready = ready
        self.registry = registry
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sockets = self._server.sockets
        if sockets and self.port == 0:
            self.port = sockets[0].getsockname()[1]
        log.info("http_listening", extra={"host": self.host, "port": self.port})

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for one request (pure but for `ready()`)."""
        path = path.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "application/json", b'{"error":"method_not_allowed"}'
        if path == "/healthz":
            return 200, "application/json", b'{"status":"ok"}'
        if path == "/readyz":
            if self.ready():
                return 200, "application/json", b'{"status":"ready"}'
            return 503, "application/json", b'{"status":"broker_unavailable"}'
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        return 404, "application/json", b'{"error":"not_found"}'

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            status, content_type, body = self.answer(method, path)
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
                + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError,
                ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
