"""W3C trace context in and out of the gateway, with tracing off (passed on unchanged) and on (spans)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway import otel, tracing
from gateway.app import create_app
from gateway.errors import SettingsError
from gateway.metrics import GatewayMetrics
from gateway.publisher import InMemoryPublisher
from gateway.settings import GatewaySettings
from tests.conftest import TEST_SECRET
from tests.gateway.test_webhook import URL, Client, signed

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
PARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.mark.parametrize("value", [
    PARENT,
    f"00-{TRACE_ID}-{PARENT_ID}-00",
    f"01-{TRACE_ID}-{PARENT_ID}-01-future-field",  # a later version may append fields
    f"01-{TRACE_ID}-{PARENT_ID}-01",
])
def test_a_w3c_traceparent_is_valid(value: str) -> None:
    assert tracing.valid_traceparent(value)


@pytest.mark.parametrize("value", [
    "",
    f"ff-{TRACE_ID}-{PARENT_ID}-01",                  # version ff is forbidden
    f"00-{'0' * 32}-{PARENT_ID}-01",                   # all-zero trace id
    f"00-{TRACE_ID}-{'0' * 16}-01",                    # all-zero parent id
    f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",           # upper-case hex
    f"00-{TRACE_ID}-{PARENT_ID}-01-extra",             # version 00 has exactly four fields
    f"01-{TRACE_ID}-{PARENT_ID}-01x",                  # a later version's extra field needs a dash
    f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",              # short trace id
    f"00_{TRACE_ID}_{PARENT_ID}_01",
])
def test_a_malformed_traceparent_is_not_valid(value: str) -> None:
    assert not tracing.valid_traceparent(value)


def test_carried_passes_a_valid_traceparent_and_its_tracestate_unchanged() -> None:
    assert tracing.carried(PARENT.encode(), b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE") == {
        "traceparent": PARENT, "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"}
    assert tracing.carried(PARENT, None) == {"traceparent": PARENT}
    assert tracing.carried(None, b"rojo=1") is None


def test_carried_drops_an_invalid_traceparent_with_its_tracestate() -> None:
    assert tracing.carried(b"00-nothex-00f067aa0ba902b7-01", b"rojo=1") is None


def test_carried_drops_a_tracestate_that_is_too_long_or_not_printable() -> None:
    assert tracing.carried(PARENT, "a=" + "x" * tracing.TRACESTATE_LIMIT) == {"traceparent": PARENT}
    assert tracing.carried(PARENT, b"rojo=1\x00") == {"traceparent": PARENT}
    assert tracing.carried(PARENT, b"") == {"traceparent": PARENT}


@pytest.mark.parametrize(("environ", "on"), [
    ({}, False),
    ({"OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "none,console"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "false"}, True),
])
def test_tracing_is_on_only_when_otel_variables_name_an_exporter_or_an_endpoint(
        environ: dict[str, str], on: bool) -> None:
    assert tracing.enabled(environ) is on
    if not on:
        assert tracing.provider_from_environ(environ, "svc") is None


def test_the_otlp_exporter_follows_the_protocol_variables() -> None:
    problems: list[str] = []
    assert otel.exporter_names({"OTEL_TRACES_EXPORTER": "otlp"}, problems) == ["otlp_proto_http"]
    assert otel.exporter_names({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
                               problems) == ["otlp_proto_grpc"]
    assert otel.exporter_names({"OTEL_TRACES_EXPORTER": "console,none"}, problems) == ["console"]
    assert problems == []
    assert otel.exporter_names({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"},
                               problems) == []
    assert problems == ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='udp' is not an OTLP protocol; "
                        "use http/protobuf or grpc."]


def test_an_exporter_that_is_not_installed_is_one_clear_settings_error() -> None:
    with pytest.raises(SettingsError) as caught:
        tracing.provider_from_environ({"OTEL_TRACES_EXPORTER": "zipkin"}, "svc")
    assert str(caught.value) == ("OTEL_TRACES_EXPORTER needs the 'zipkin' exporter, which is not installed; install "
                                 "a package providing the 'zipkin' span exporter, or choose another exporter "
                                 "(otlp, console, none).")


def test_the_default_service_name_applies_unless_otel_service_name_names_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    provider = tracing.provider_from_environ({"OTEL_TRACES_EXPORTER": "console"}, "tradevine-gateway")
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "tradevine-gateway"
    provider.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge-gateway")
    provider = tracing.provider_from_environ({"OTEL_TRACES_EXPORTER": "console"}, "tradevine-gateway")
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "edge-gateway"
    provider.shutdown()


def test_tracing_off_imports_nothing_of_opentelemetry() -> None:
    code = ("import sys, gateway.app, gateway.webhook, gateway.reconcile.cli, consumers.runner, consumers.delivery\n"
            "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
            "print(loaded)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# --- through the endpoint ------------------------------------------------------------------------------

def make(provider: TracerProvider | None = None) -> tuple[Client, InMemoryPublisher]:
    settings = GatewaySettings.from_environ({"TRADEVINE_CONSUMER_SECRET": TEST_SECRET})
    publisher = InMemoryPublisher()
    app = create_app(settings, publisher, metrics=GatewayMetrics(), clock=lambda: 1_700_000_000.0,
                     tracer_provider=provider)
    return Client(app), publisher


def in_memory() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_tracing_off_passes_the_request_trace_context_on_unchanged(product_body: bytes) -> None:
    client, publisher = make()
    async with client:
        answer = await client.post(URL, content=product_body,
                                   headers=signed(product_body, traceparent=PARENT, tracestate="rojo=1"))
    assert answer.status_code == 200
    headers = publisher.messages[0].headers
    assert (headers["traceparent"], headers["tracestate"]) == (PARENT, "rojo=1")


async def test_tracing_off_and_no_or_a_bad_traceparent_adds_no_trace_header(product_body: bytes) -> None:
    client, publisher = make()
    async with client:
        await client.post(URL, content=product_body, headers=signed(product_body))
        await client.post(URL, content=product_body,
                          headers=signed(product_body, traceparent="00-xyz-00f067aa0ba902b7-01", tracestate="a=1"))
    assert [sorted(k for k in m.headers if k.startswith("trace")) for m in publisher.messages] == [[], []]


async def test_tracing_on_continues_the_request_trace_in_spans_and_in_the_message(product_body: bytes) -> None:
    provider, exporter = in_memory()
    client, publisher = make(provider)
    async with client:
        answer = await client.post(URL, content=product_body,
                                   headers=signed(product_body, traceparent=PARENT, tracestate="rojo=1"))
    assert answer.status_code == 200
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert sorted(spans) == ["POST /webhooks/tradevine", "publish tradevine.events", "verify signature"]
    server, verify, publish = (spans["POST /webhooks/tradevine"], spans["verify signature"],
                               spans["publish tradevine.events"])
    assert server.kind is SpanKind.SERVER and publish.kind is SpanKind.PRODUCER
    assert {f"{s.context.trace_id:032x}" for s in spans.values()} == {TRACE_ID}
    assert server.parent is not None and f"{server.parent.span_id:016x}" == PARENT_ID
    assert server.parent.is_remote
    assert verify.parent is not None and verify.parent.span_id == server.context.span_id
    assert publish.parent is not None and publish.parent.span_id == server.context.span_id
    assert server.attributes is not None and publish.attributes is not None and verify.attributes is not None
    assert (server.attributes["http.response.status_code"], server.attributes["tradevine.outcome"]) == (200,
                                                                                                       "accepted")
    assert verify.attributes["tradevine.outcome"] == "valid"
    message = publisher.messages[0]
    assert publish.attributes["messaging.message.id"] == message.message_id
    assert publish.attributes["messaging.rabbitmq.destination.routing_key"] == "product.created"
    assert message.headers["traceparent"] == f"00-{TRACE_ID}-{publish.context.span_id:016x}-01"
    assert message.headers["tracestate"] == "rojo=1"


async def test_tracing_on_starts_a_trace_when_the_request_carries_none(product_body: bytes) -> None:
    provider, exporter = in_memory()
    client, publisher = make(provider)
    async with client:
        await client.post(URL, content=product_body, headers=signed(product_body))
    spans = {span.name: span for span in exporter.get_finished_spans()}
    server, publish = spans["POST /webhooks/tradevine"], spans["publish tradevine.events"]
    assert server.parent is None
    trace_id, flags = f"{server.context.trace_id:032x}", f"{publish.context.trace_flags:02x}"
    assert publisher.messages[0].headers["traceparent"] == f"00-{trace_id}-{publish.context.span_id:016x}-{flags}"
    assert "tracestate" not in publisher.messages[0].headers


async def test_tracing_on_a_bad_signature_is_a_span_without_a_publish(product_body: bytes) -> None:
    provider, exporter = in_memory()
    client, publisher = make(provider)
    async with client:
        answer = await client.post(URL, content=product_body,
                                   headers={"X-Tradevine-Hmac-SHA256": "00" * 32, "traceparent": PARENT})
    assert answer.status_code == 401 and publisher.messages == []
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert sorted(spans) == ["POST /webhooks/tradevine", "verify signature"]
    assert spans["verify signature"].attributes == {"tradevine.outcome": "mismatch"}
    assert spans["POST /webhooks/tradevine"].attributes is not None
    assert spans["POST /webhooks/tradevine"].attributes["tradevine.outcome"] == "invalid_signature"


async def test_tracing_on_a_broker_failure_marks_the_spans_as_errors(product_body: bytes) -> None:
    provider, exporter = in_memory()
    client, publisher = make(provider)
    async with client:
        publisher.fail = "no confirm within 3.0s"
        answer = await client.post(URL, content=product_body, headers=signed(product_body))
    assert answer.status_code == 503
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert spans["publish tradevine.events"].status.is_ok is False
    assert spans["POST /webhooks/tradevine"].status.description == "broker_unavailable"


async def test_the_lifespan_shutdown_exports_the_spans_still_queued(product_body: bytes) -> None:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=600_000))
    client, _ = make(provider)
    async with client:
        await client.post(URL, content=product_body, headers=signed(product_body))
        assert exporter.get_finished_spans() == ()  # still queued: the batch waits ten minutes
    assert len(exporter.get_finished_spans()) == 3
    provider.shutdown()
