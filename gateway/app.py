"""The Starlette application: routes, and a lifespan that starts and drains the publisher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway import health
from gateway.metrics import GatewayMetrics
from gateway.publisher import AmqpPublisher, Publisher
from gateway.settings import GatewaySettings
from gateway.webhook import WebhookEndpoint

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

log = logging.getLogger("gateway.app")

SERVICE_NAME = "tradevine-gateway"  # OpenTelemetry's service.name unless OTEL_SERVICE_NAME names one
WEBHOOK_PATH = "/webhooks/tradevine"
WEBHOOK_PATHS = frozenset({WEBHOOK_PATH, WEBHOOK_PATH + "/"})


class GatewayApp(Starlette):
    """Starlette, except that a webhook POST goes straight to its endpoint.

    The endpoint answers every outcome itself, so the middleware stack and the router would only add
    a few function calls and dicts to each event; everything else (probes, 405s) takes the usual path.
    """

    webhook: WebhookEndpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in WEBHOOK_PATHS:
            await self.webhook(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: GatewaySettings, publisher: Publisher | None = None, *,
               metrics: GatewayMetrics | None = None, clock: Callable[[], float] = time.time,
               tracer_provider: TracerProvider | None = None) -> Starlette:
    """Build the app; nothing connects until the lifespan starts. `tracer_provider`: tracing on."""
    publisher = publisher or AmqpPublisher(settings.amqp_url, exchange=settings.exchange,
                                           timeout=settings.publish_timeout)
    metrics = metrics or GatewayMetrics()
    endpoint = WebhookEndpoint(settings, publisher, metrics, clock, tracer_provider)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await publisher.start()
        log.info("gateway_started", extra={"exchange": settings.exchange, "ready": publisher.ready()})
        try:
            yield
        finally:
            await publisher.close()
            if tracer_provider is not None:
                # Here, not at exit: uvicorn re-raises SIGTERM after the shutdown, so no atexit runs.
                await asyncio.to_thread(flush_spans, tracer_provider)
            log.info("gateway_stopped")

    routes = [
        Route(WEBHOOK_PATH, endpoint, methods=["POST"]),
        Route(WEBHOOK_PATH + "/", endpoint, methods=["POST"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
    ]
    app = GatewayApp(routes=routes, lifespan=lifespan)
    app.webhook = endpoint
    app.router.redirect_slashes = False
    app.state.settings = settings
    app.state.publisher = publisher
    app.state.metrics = metrics
    return app


def flush_spans(provider: TracerProvider, timeout_ms: int = 5000) -> None:
    """Export the spans still queued (the SDK's providers can; the API's no-op one has nothing to flush)."""
    flush = getattr(provider, "force_flush", None)
    if flush is not None:
        flush(timeout_ms)


def from_environ() -> Starlette:
    """The app from the process environment, for another ASGI server: `uvicorn --factory gateway.app:from_environ`."""
    import os

    from gateway import logs, tracing

    logs.setup(os.environ.get("GATEWAY_LOG_LEVEL", "info"))
    settings = GatewaySettings.from_environ(os.environ)
    return create_app(settings, tracer_provider=tracing.provider_from_environ(os.environ, SERVICE_NAME))
