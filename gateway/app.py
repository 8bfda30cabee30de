"""The Starlette application: routes, and a lifespan that starts and drains the publisher."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway import health
from gateway.metrics import GatewayMetrics
from gateway.publisher import AmqpPublisher, Publisher
from gateway.settings import GatewaySettings
from gateway.webhook import WebhookEndpoint

log = logging.getLogger("gateway.app")

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
               metrics: GatewayMetrics | None = None, clock: Callable[[], float] = time.time) -> Starlette:
    """Build the app; nothing connects until the lifespan starts."""
    publisher = publisher or AmqpPublisher(settings.amqp_url, exchange=settings.exchange,
                                           timeout=settings.publish_timeout)
    metrics = metrics or GatewayMetrics()
    endpoint = WebhookEndpoint(settings, publisher, metrics, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await publisher.start()
        log.info("gateway_started", extra={"exchange": settings.exchange, "ready": publisher.ready()})
        try:
            yield
        finally:
            await publisher.close()
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


def from_environ() -> Starlette:
    """The app from the process environment, for another ASGI server: `uvicorn --factory gateway.app:from_environ`."""
    import os

    from gateway import logs

    logs.setup(os.environ.get("GATEWAY_LOG_LEVEL", "info"))
    return create_app(GatewaySettings.from_environ(os.environ))
