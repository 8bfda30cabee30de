"""OpenTelemetry for the gateway, the reconciler and the consumers: imported only when tracing is on.

`gateway.tracing` decides whether tracing is on; this module builds the SDK's tracer provider from the
OTEL_* variables and carries W3C trace context in and out of message headers. The propagator is W3C
trace context, always: `traceparent` and `tracestate` are the contract's header names.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import __version__
from gateway.errors import SettingsError
from gateway.tracing import TRACEPARENT, TRACESTATE, header_text

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

PROPAGATOR = TraceContextTextMapPropagator()  # one for the process: it holds no state

# Attribute names from OpenTelemetry's semantic conventions (messaging, HTTP), and the project's own.
MESSAGING_SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
ROUTING_KEY = "messaging.rabbitmq.destination.routing_key"
MESSAGE_ID = "messaging.message.id"
OPERATION = "messaging.operation.type"
CONSUMER = "tradevine.consumer"
ATTEMPT = "tradevine.attempt"
OUTCOME = "tradevine.outcome"

_OTLP = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
_PACKAGES = {"otlp_proto_http": "opentelemetry-exporter-otlp-proto-http (pip install 'tradevine-gateway[otel]')",
             "otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc"}


def tracer(provider: trace.TracerProvider, name: str) -> Tracer:
    return provider.get_tracer(name, __version__)


def extract(headers: Mapping[str, object]) -> Context | None:
    """The remote parent carried by `headers` (HTTP or AMQP), or None when they carry none."""
    parent = header_text(headers.get(TRACEPARENT))
    if parent is None:
        return None
    carrier = {TRACEPARENT: parent}
    if (state := header_text(headers.get(TRACESTATE))) is not None:
        carrier[TRACESTATE] = state
    return PROPAGATOR.extract(carrier)


def inject(headers: MutableMapping[str, str], context: Context | None = None) -> None:
    """Write `traceparent` (and `tracestate`) for the current span, or `context`'s, into `headers`."""
    PROPAGATOR.inject(headers, context=context)


def sdk_provider(environ: Mapping[str, str], service_name: str) -> SdkTracerProvider:
    """The SDK's tracer provider with a batch processor per exporter named by OTEL_TRACES_EXPORTER.

    The SDK reads its other settings itself (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
    OTEL_TRACES_SAMPLER, OTEL_BSP_*, OTEL_EXPORTER_OTLP_*); `service_name` applies when neither names one.
    """
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    problems: list[str] = []
    exporters: list[SpanExporter] = []
    for name in exporter_names(environ, problems):
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            package = _PACKAGES.get(name, f"a package providing the {name!r} span exporter")
            problems.append(f"OTEL_TRACES_EXPORTER needs the {name!r} exporter, which is not installed; "
                            f"install {package}, or choose another exporter (otlp, console, none).")
            continue
        exporters.append(next(iter(found)).load()())
    if problems:
        raise SettingsError(problems)
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def exporter_names(environ: Mapping[str, str], problems: list[str]) -> list[str]:
    """Entry-point names for OTEL_TRACES_EXPORTER (default `otlp` when only an endpoint is set).

    `otlp` follows OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL, `http/protobuf`
    (the OpenTelemetry specification's default, and what the `otel` extra installs) unless set.
    """
    names: list[str] = []
    for raw in (environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(","):
        name = raw.strip().lower()
        if name in ("", "none"):
            continue
        if name == "otlp":
            variable = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" if environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                        else "OTEL_EXPORTER_OTLP_PROTOCOL")
            protocol = (environ.get(variable) or "http/protobuf").strip()
            if protocol not in _OTLP:
                problems.append(f"{variable}={protocol!r} is not an OTLP protocol; use http/protobuf or grpc.")
                continue
            name = _OTLP[protocol]
        names.append(name)
    return names
