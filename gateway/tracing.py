"""W3C trace context (`traceparent`, `tracestate`) and whether tracing is on (stdlib only).

Tracing is configured by the standard `OTEL_*` variables only. It is on when `OTEL_SDK_DISABLED` is not
`true` and either `OTEL_TRACES_EXPORTER` names an exporter other than `none`, or an OTLP endpoint is set
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); off otherwise, which is the
default. Off, nothing of OpenTelemetry is imported: a request's valid `traceparent` (with its
`tracestate`) is passed on unchanged in the message headers, and that is all. On, `gateway.otel` records
spans, which needs the SDK (`pip install 'tradevine-gateway[otel]'`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from gateway.errors import SettingsError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACESTATE_LIMIT = 512  # W3C: pass on at least 512 characters; a longer list is dropped, not cut mid-entry

# version-traceid-parentid-flags, lower-case hex. Version ff is invalid; all-zero ids are invalid. A
# version above 00 may append fields after a dash (W3C: parse what this version knows, pass the rest on).
_TRACEPARENT = re.compile(r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
_TRACESTATE = re.compile(r"[\x20-\x7e]*")
_OFF = frozenset({"", "none"})


def valid_traceparent(value: str) -> bool:
    """True for a W3C `traceparent` this service may continue and pass on."""
    if _TRACEPARENT.match(value) is None:
        return False
    if len(value) == 55:
        return True
    return value[:2] != "00" and value[55] == "-"


def carried(traceparent: str | bytes | None, tracestate: str | bytes | None) -> dict[str, str] | None:
    """The trace headers to pass on unchanged (tracing off), or None when there is no valid `traceparent`.

    An invalid `traceparent` is dropped with its `tracestate` (W3C); a `tracestate` that is not printable
    ASCII or is longer than TRACESTATE_LIMIT is dropped alone.
    """
    if traceparent is None:
        return None
    parent = traceparent.decode("latin-1") if isinstance(traceparent, bytes) else traceparent
    parent = parent.strip(" \t")
    if not valid_traceparent(parent):
        return None
    headers = {TRACEPARENT: parent}
    if tracestate is not None:
        state = tracestate.decode("latin-1") if isinstance(tracestate, bytes) else tracestate
        state = state.strip(" \t")
        if state and len(state) <= TRACESTATE_LIMIT and _TRACESTATE.fullmatch(state):
            headers[TRACESTATE] = state
    return headers


def header_text(value: object) -> str | None:
    """An AMQP header value as text (aio-pika hands long strings over as bytes), else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return None


def enabled(environ: Mapping[str, str]) -> bool:
    """Whether the OTEL_* variables turn tracing on (see the module docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER")
    if exporters is not None:
        return any(name.strip().lower() not in _OFF for name in exporters.split(","))
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def provider_from_environ(environ: Mapping[str, str], service_name: str) -> TracerProvider | None:
    """The SDK's tracer provider configured by OTEL_*, or None when tracing is off.

    Raises `SettingsError` when tracing is on but the SDK or a named exporter is not installed.
    """
    if not enabled(environ):
        return None
    try:
        from gateway import otel
    except ImportError as exc:
        raise SettingsError([_missing(environ, exc)]) from None
    return otel.sdk_provider(environ, service_name)


def _missing(environ: Mapping[str, str], exc: ImportError) -> str:
    named = environ.get("OTEL_TRACES_EXPORTER") or "otlp (OTEL_EXPORTER_OTLP_ENDPOINT is set)"
    return (f"OTEL_TRACES_EXPORTER={named!r} turns tracing on, but OpenTelemetry is not installed ({exc.name}); "
            "install it with pip install 'tradevine-gateway[otel]', or set OTEL_SDK_DISABLED=true.")
