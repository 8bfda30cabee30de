"""Probes and metrics: `/healthz` (no I/O), `/readyz` (the broker channel), `/metrics` (Prometheus)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    if request.app.state.publisher.ready():
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "broker_unavailable"}, status_code=503)


async def metrics(request: Request) -> Response:
    gateway_metrics = request.app.state.metrics
    gateway_metrics.broker_up.set(1 if request.app.state.publisher.ready() else 0)
    return Response(generate_latest(gateway_metrics.registry), media_type=CONTENT_TYPE_LATEST)
