"""One run: page through the objects changed in the window, publish those inside it, count everything;
the summary it prints and the metrics it writes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, TextIO

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.publisher import Publisher
from gateway.reconcile.client import Page, TradevineClient
from gateway.reconcile.publish import ID_FIELDS, MODELS, ROUTING_KEYS, Model, outgoing, publish_confirmed
from gateway.reconcile.settings import ReconcilerSettings
from gateway.reconcile.window import Window, duration_text, modified_at

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

LABELS: Final[Mapping[Model, str]] = {"product": "products", "sales_order": "sales orders"}
CONFIRM_GRACE: Final = 2.0  # seconds a publish in flight at SIGTERM may still take to be confirmed


@dataclass(slots=True)
class ModelStats:
    pages: int = 0
    listed: int = 0
    in_window: int = 0
    published: int = 0
    undated: int = 0

    def count_published(self) -> None:
        self.published += 1


@dataclass(slots=True)
class Summary:
    window: Window
    models: tuple[Model, ...]
    dry_run: bool
    exchange: str
    stats: dict[Model, ModelStats] = field(default_factory=lambda: {m: ModelStats() for m in MODELS})
    api_calls: int = 0
    api_retries: int = 0
    rate_wait: float = 0.0
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


Progress = Callable[[Model, Page, int, ModelStats], None]


def no_progress(model: Model, page: Page, page_size: int, stats: ModelStats) -> None:
    return None


async def reconcile(client: TradevineClient, publisher: Publisher | None, *, settings: ReconcilerSettings,
                    window: Window, models: tuple[Model, ...] = MODELS, page_size: int | None = None,
                    summary: Summary | None = None, progress: Progress = no_progress,
                    now: Callable[[], datetime] = lambda: datetime.now(UTC),
                    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                    tracer: Tracer | None = None) -> Summary:
    """Fetch every object of `models` changed in `window` and publish it (`publisher=None`: count only).

    Raises `ApiError` or `BrokerUnavailable`; `summary` (if given) holds the counts so far either way.
    With a `tracer` (tracing on) the run is a span, each model a child, and each published object a
    PRODUCER grandchild whose context the message carries (`traceparent`).
    """
    summary = summary or Summary(window=window, models=models, dry_run=publisher is None,
                                 exchange=settings.exchange)
    with (contextlib.nullcontext() if tracer is None else tracer.start_as_current_span(
            "reconcile", attributes={"tradevine.window.since": _iso(window.since),
                                     "tradevine.window.until": _iso(window.until),
                                     "tradevine.dry_run": publisher is None})):
        await _reconcile(client, publisher, settings=settings, window=window, models=models,
                         page_size=page_size, summary=summary, progress=progress, now=now, sleep=sleep,
                         tracer=tracer)
    return summary


async def _reconcile(client: TradevineClient, publisher: Publisher | None, *, settings: ReconcilerSettings,
                     window: Window, models: tuple[Model, ...], page_size: int | None, summary: Summary,
                     progress: Progress, now: Callable[[], datetime], sleep: Callable[[float], Awaitable[None]],
                     tracer: Tracer | None) -> None:
    size = page_size or settings.api.page_size
    low, high = window.query_bounds(settings.org_utc_offset)
    for model in models:
        with (contextlib.nullcontext() if tracer is None else
              tracer.start_as_current_span(f"reconcile {model}")) as model_span:
            try:
                await _reconcile_model(client, publisher, model, settings=settings, window=window, low=low,
                                       high=high, size=size, summary=summary, progress=progress, now=now,
                                       sleep=sleep, tracer=tracer)
            finally:
                if model_span is not None:
                    stats = summary.stats[model]
                    model_span.set_attributes({"tradevine.pages": stats.pages, "tradevine.listed": stats.listed,
                                               "tradevine.in_window": stats.in_window,
                                               "tradevine.published": stats.published})


async def _completed(publishing: Awaitable[None], count: Callable[[], None]) -> None:
    """Await a publish and `count()` it once confirmed. Cancelled meanwhile (SIGTERM), the publish in flight
    may already be in the broker's queue: it gets CONFIRM_GRACE seconds to be confirmed, so the summary
    counts what was published; then the cancellation goes on."""
    task = asyncio.ensure_future(publishing)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            await asyncio.wait([task], timeout=CONFIRM_GRACE)
        if task.done() and not task.cancelled() and task.exception() is None:
            count()
        else:
            task.cancel()
        raise
    count()


async def _reconcile_model(client: TradevineClient, publisher: Publisher | None, model: Model, *,
                           settings: ReconcilerSettings, window: Window, low: datetime, high: datetime, size: int,
                           summary: Summary, progress: Progress, now: Callable[[], datetime],
                           sleep: Callable[[float], Awaitable[None]], tracer: Tracer | None) -> None:
    stats = summary.stats[model]
    code = settings.code_for(model)
    seen: set[tuple[object, object]] = set()
    pages = client.products(low, page_size=size) if model == "product" \
        else client.sales_orders(low, high, page_size=size)
    try:
        async for page in pages:
            stats.pages += 1
            stats.listed += len(page.items)
            for obj in page.items:
                moment = modified_at(obj)
                if moment is None:
                    stats.undated += 1
                    continue
                identity = (obj.get(ID_FIELDS[model]), obj.get("ModifiedDate"))
                if not window.contains(moment) or identity in seen:
                    continue  # outside the window, or listed twice as pages shifted
                seen.add(identity)
                stats.in_window += 1
                if publisher is not None:
                    if tracer is None:
                        message = outgoing(model, obj, code=code, table=settings.event_types,
                                           received_at=now())
                        publishing = publish_confirmed(publisher, message, sleep)
                    else:
                        publishing = _publish_traced(tracer, publisher, model, obj, code=code, settings=settings,
                                                     received_at=now(), sleep=sleep)
                    await _completed(publishing, stats.count_published)
            progress(model, page, size, stats)
    finally:
        summary.api_calls, summary.api_retries = client.calls, client.retries
        summary.rate_wait = client.limiter.waited


def otel_tracer(provider: TracerProvider) -> Tracer:
    from gateway import otel

    return otel.tracer(provider, "gateway.reconcile")


async def _publish_traced(tracer: Tracer, publisher: Publisher, model: Model, obj: Mapping[str, object], *,
                          code: int, settings: ReconcilerSettings, received_at: datetime,
                          sleep: Callable[[float], Awaitable[None]]) -> None:
    from opentelemetry.trace import SpanKind

    from gateway import otel

    with tracer.start_as_current_span(
            f"publish {settings.exchange}", kind=SpanKind.PRODUCER,
            attributes={otel.MESSAGING_SYSTEM: "rabbitmq", otel.DESTINATION: settings.exchange,
                        otel.OPERATION: "send", otel.ROUTING_KEY: ROUTING_KEYS[model]}) as span:
        trace: dict[str, str] = {}
        otel.inject(trace)
        message = outgoing(model, obj, code=code, table=settings.event_types, received_at=received_at, trace=trace)
        span.set_attribute(otel.MESSAGE_ID, message.message_id)
        await publish_confirmed(publisher, message, sleep)


class _RunMetrics(Collector):
    """The counts of one finished run (no `_created` series: a text file holds one run)."""

    def __init__(self, summary: Summary, ended_at: float) -> None:
        self.summary = summary
        self.ended_at = ended_at

    def collect(self) -> Iterator[Metric]:
        summary = self.summary
        objects = CounterMetricFamily(
            "tradevine_reconciler_objects", "Objects changed in the window and published "
            "(counted only, under --dry-run), by model.", labels=["model"])
        pages = CounterMetricFamily("tradevine_reconciler_pages", "API pages fetched, by model.",
                                    labels=["model"])
        for model in MODELS:
            objects.add_metric([model], summary.stats[model].in_window)
            pages.add_metric([model], summary.stats[model].pages)
        yield objects
        yield pages
        yield CounterMetricFamily("tradevine_reconciler_api_calls",
                                  "Tradevine API requests sent, retries included.", value=summary.api_calls)
        yield GaugeMetricFamily("tradevine_reconciler_success",
                                "1 when the run finished without error, else 0.", value=int(summary.ok))
        yield GaugeMetricFamily("tradevine_reconciler_duration_seconds", "How long the run took.",
                                value=round(summary.seconds, 3))
        yield GaugeMetricFamily("tradevine_reconciler_last_run_timestamp_seconds",
                                "When the run ended (Unix time).", value=self.ended_at)
        yield GaugeMetricFamily("tradevine_reconciler_window_end_timestamp_seconds",
                                "The end of the run's window (Unix time).",
                                value=summary.window.until.timestamp())


def metrics_registry(summary: Summary, *, ended_at: float | None = None) -> CollectorRegistry:
    """The run's metrics in a registry of their own (for `--metrics-file`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RunMetrics(summary, time.time() if ended_at is None else ended_at))
    return registry


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def format_summary(summary: Summary) -> str:
    """The text `reconcile` prints: window, per-model counts, API use, time and the key metrics."""
    window = summary.window
    target = "dry run, nothing published" if summary.dry_run else f"exchange {summary.exchange!r}"
    lines = [
        f"Reconciliation {_iso(window.since)} .. {_iso(window.until)} "
        f"(lookback {duration_text(window.until - window.since)}; {target})",
        f"  {'model':<13}{'pages':>6}{'listed':>8}{'in window':>11}{'published':>11}",
    ]
    for model in summary.models:
        s = summary.stats[model]
        published = "-" if summary.dry_run else str(s.published)
        lines.append(f"  {LABELS[model]:<13}{s.pages:>6}{s.listed:>8}{s.in_window:>11}{published:>11}")
        if s.undated:
            lines.append(f"    ({s.undated} {LABELS[model]} without a readable ModifiedDate were skipped)")
    lines.append(f"  API calls: {summary.api_calls} ({summary.api_retries} retried), "
                 f"{summary.rate_wait:.1f}s waiting for the rate limit; took {summary.seconds:.1f}s")
    for model in MODELS:
        count = summary.stats[model].in_window
        lines.append(f'  tradevine_reconciler_objects_total{{model="{model}"}} {count}')
    lines.append(f"  tradevine_reconciler_api_calls_total {summary.api_calls}")
    lines.append(f"  result: FAILED: {summary.error}" if summary.error else "  result: ok")
    return "\n".join(lines)


def terminal_progress(stream: TextIO) -> Progress:
    """A one-line progress indicator, rewritten in place."""

    def show(model: Model, page: Page, page_size: int, stats: ModelStats) -> None:
        total_pages = max(1, -(-page.total_count // page_size))
        stream.write(f"\r{LABELS[model]}: page {page.number}/{total_pages}, "
                     f"{stats.in_window} in window   ")
        if page.number >= total_pages:
            stream.write("\n")
        stream.flush()

    return show
