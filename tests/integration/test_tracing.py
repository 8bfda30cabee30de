"""One trace from a webhook to a consumer across a real RabbitMQ: the gateway app and a Runner in this
process, both recording into the SDK's in-memory exporter. Each test prints its span tree (`pytest -s`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from consumers.runner import Runner
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.conftest import TEST_SECRET, fixture_bytes
from tests.gateway.test_webhook import URL, Client, signed
from tests.integration import consumer_apps
from tests.integration.consumer_helpers import Broker, Names, eventually
from tests.integration.consumer_helpers import settings as consumer_settings

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@pytest.fixture
def probe_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PROBE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def traced() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _hex(span_id: int | None) -> str:
    return "-" * 16 if span_id is None else f"{span_id:016x}"


def tree(spans: Sequence[ReadableSpan]) -> str:
    """The spans as an indented tree: name, kind, span id, parent id, and the attributes that tell attempts apart."""
    children: dict[int | None, list[ReadableSpan]] = {}
    ids = {s.context.span_id for s in spans}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent if parent in ids else None, []).append(span)
    lines: list[str] = []

    def walk(span: ReadableSpan, depth: int) -> None:
        attributes = span.attributes or {}
        shown = {k: attributes[k] for k in ("tradevine.attempt", "tradevine.outcome") if k in attributes}
        parent = span.parent.span_id if span.parent is not None else None
        lines.append(f"{'  ' * depth}{span.name} [{span.kind.name}] trace={span.context.trace_id:032x} "
                     f"span={_hex(span.context.span_id)} parent={_hex(parent)}"
                     + (f" {shown}" if shown else ""))
        for child in children.get(span.context.span_id, []):
            walk(child, depth + 1)

    for root in children.get(None, []):
        walk(root, 0)
    return "\n".join(lines)


def named(spans: Sequence[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name.startswith(prefix)), key=lambda s: s.start_time or 0)


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def post_traced(amqp_url: str, names: Names, provider: TracerProvider) -> str:
    """One signed product.created webhook with TRACEPARENT through the real gateway app; its message id."""
    settings = GatewaySettings.from_environ({"TRADEVINE_CONSUMER_SECRET": TEST_SECRET, "AMQP_URL": amqp_url,
                                             "GATEWAY_EXCHANGE": names.exchange})
    body = fixture_bytes("product-created.json")
    async with Client(create_app(settings, tracer_provider=provider)) as client:
        answer = await client.post(URL, content=body, headers=signed(body, traceparent=TRACEPARENT,
                                                                     tracestate="rojo=00f067aa0ba902b7"))
    assert answer.status_code == 200, answer.text
    message_id: str = answer.json()["message_id"]
    return message_id


async def test_one_webhook_is_one_trace_from_the_gateway_span_to_the_consumer_span(
        amqp_url: str, names: Names, probe_dir: Path,
        traced: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = traced
    runner = Runner(consumer_apps.probe, consumer_settings(amqp_url, names, probe_dir / "probe.sqlite3"),
                    tracer_provider=provider)
    async with Broker(amqp_url, names):
        await runner.start()
        try:
            message_id = await post_traced(amqp_url, names, provider)
            await eventually(lambda: len(named(exporter.get_finished_spans(), "process ")) == 1,
                             what="the consumer span")
        finally:
            await runner.stop()
    spans = exporter.get_finished_spans()
    print(f"\nspan tree of one webhook (caller's traceparent {TRACEPARENT}):\n{tree(spans)}")

    assert {f"{s.context.trace_id:032x}" for s in spans} == {TRACE_ID}
    [server] = named(spans, "POST /webhooks/tradevine")
    [verify] = named(spans, "verify signature")
    [publish] = named(spans, f"publish {names.exchange}")
    [process] = named(spans, "process ")
    [handle] = named(spans, "handle ")
    [commit] = named(spans, "commit")
    assert server.kind is SpanKind.SERVER and publish.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert f"{parent_of(server):016x}" == CALLER_SPAN
    assert parent_of(verify) == parent_of(publish) == server.context.span_id
    assert parent_of(process) == publish.context.span_id  # across RabbitMQ, through the message headers
    assert process.parent is not None and process.parent.is_remote
    assert parent_of(handle) == parent_of(commit) == process.context.span_id
    assert process.attributes is not None
    assert {k: process.attributes[k] for k in ("tradevine.consumer", "messaging.rabbitmq.destination.routing_key",
                                               "messaging.message.id", "tradevine.attempt", "tradevine.outcome")} == {
        "tradevine.consumer": "probe", "messaging.rabbitmq.destination.routing_key": "product.created",
        "messaging.message.id": message_id, "tradevine.attempt": 1, "tradevine.outcome": "applied"}
    assert process.parent.trace_state.get("rojo") == "00f067aa0ba902b7"
    assert commit.attributes is not None and commit.attributes["tradevine.outcome"] == "applied"


async def test_a_parked_message_trace_shows_every_attempt(
        amqp_url: str, names: Names, probe_dir: Path,
        traced: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = traced
    (probe_dir / "mode").write_text("fail")
    runner = Runner(consumer_apps.probe, consumer_settings(amqp_url, names, probe_dir / "probe.sqlite3"),
                    tracer_provider=provider)
    async with Broker(amqp_url, names) as broker:
        await runner.start()
        try:
            message_id = await post_traced(amqp_url, names, provider)
            await eventually(lambda: broker.holds(f"{names.queue}.parked", 1), timeout=20, what="parked")
            await eventually(lambda: len(named(exporter.get_finished_spans(), "process ")) == 3,
                             what="three consumer spans")
            parked = await broker.take(f"{names.queue}.parked")
        finally:
            await runner.stop()
    spans = exporter.get_finished_spans()
    print(f"\nspan tree of one webhook whose handler always fails (tiers 1 s, 2 s, then parked):\n{tree(spans)}")

    assert {f"{s.context.trace_id:032x}" for s in spans} == {TRACE_ID}
    [publish] = named(spans, f"publish {names.exchange}")
    attempts = named(spans, "process ")
    assert [(s.attributes or {}).get("tradevine.attempt") for s in attempts] == [1, 2, 3]
    assert [(s.attributes or {}).get("tradevine.outcome") for s in attempts] == ["retried", "retried", "parked"]
    assert {(s.attributes or {}).get("messaging.message.id") for s in attempts} == {message_id}
    # Every attempt continues the gateway's publish span: the tier and parking copies keep the traceparent.
    assert [parent_of(s) for s in attempts] == [publish.context.span_id] * 3
    assert all(not s.status.is_ok for s in attempts)
    for attempt in attempts:
        children = [s for s in spans if parent_of(s) == attempt.context.span_id]
        # Two in-process tries of the handler, then the copy to the next tier or to parking.
        assert sorted(s.name for s in children) == sorted(
            ["handle product.created"] * 2 + [f"publish {names.queue}.retry.1s" if attempt is attempts[0] else
                                               f"publish {names.queue}.retry.2s" if attempt is attempts[1] else
                                               f"publish {names.queue}.parked"])
    assert parked is not None and parked.headers is not None
    traceparent = parked.headers["traceparent"]
    assert (traceparent.decode() if isinstance(traceparent, bytes) else traceparent) == (
        f"00-{TRACE_ID}-{publish.context.span_id:016x}-01")
