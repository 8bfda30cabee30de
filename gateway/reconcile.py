"""Reconciliation: objects changed in a time window, from the REST API, published as webhook-shaped events.

`tradevine-gateway reconcile --lookback 2h` lists the products and sales orders whose `ModifiedDate`
falls in the window and publishes each as a webhook body (`EventType` = the "updated" code) with
routing key `product.reconciled` / `sales_order.reconciled` and `tradevine-source: reconciliation`.
It keeps no state: overlapping windows are safe because consumers are idempotent and stale-guarded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal, TextIO

import orjson
from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from gateway import tracing, wire
from gateway.api_client import ApiSettings, Page, TradevineClient
from gateway.errors import ApiAuthError, ApiError, BrokerUnavailable, SettingsError
from gateway.message import Outgoing, build
from gateway.publisher import AmqpPublisher, Publisher
from gateway.settings import EnvReader, redact_url

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

Model = Literal["product", "sales_order"]
MODELS: Final[tuple[Model, ...]] = ("product", "sales_order")
ONLY_CHOICES: Final[Mapping[str, Model]] = {"products": "product", "sales-orders": "sales_order"}
ROUTING_KEYS: Final[Mapping[Model, str]] = {
    "product": wire.RK_PRODUCT_RECONCILED, "sales_order": wire.RK_SALES_ORDER_RECONCILED}
UPDATED_KEYS: Final[Mapping[Model, str]] = {
    "product": "product.updated", "sales_order": "sales_order.updated"}
ID_FIELDS: Final[Mapping[Model, str]] = {"product": "ProductID", "sales_order": "SalesOrderID"}
LABELS: Final[Mapping[Model, str]] = {"product": "products", "sales_order": "sales orders"}

# Without TRADEVINE_ORG_UTC_OFFSET the API query is widened enough for any zone (UTC-12 … UTC+14);
# with it, by one hour either side for a daylight-saving change.
UNKNOWN_ZONE_MARGIN: Final = timedelta(hours=14)
DST_MARGIN: Final = timedelta(hours=1)

SERVICE_NAME: Final = "tradevine-reconciler"  # OpenTelemetry service.name unless OTEL_SERVICE_NAME names one
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
# SIGTERM (a pod deleted, a node drained, the Job's deadline): the run stops where it is, closes its
# connections and exits with the shell's code for "terminated by SIGTERM", 128 + 15.
EXIT_TERMINATED: Final = 128 + signal.SIGTERM

_DURATION_PART = re.compile(r"(\d+)\s*([dhms])")
_UNITS: Final = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_OFFSET = re.compile(r"^(?:UTC)?([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------------
# Parsing (pure)


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `2h`, `1d` or a combination such as `1h30m` → a positive timedelta."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION_PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{text!r} is not a duration; use a number and a unit (d, h, m or s), "
                         "e.g. 90s, 30m, 2h, 1d or 1h30m.")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration; try 2h.")
    return timedelta(seconds=seconds)


def parse_time(text: str) -> datetime:
    """An ISO-8601 time as aware UTC; without an offset it is read as UTC."""
    parsed = wire.parse_event_date(text.strip())
    if parsed is None:
        raise ValueError(f"{text!r} is not an ISO-8601 time; try 2025-03-18T21:00:00Z "
                         "(UTC when no offset is given).")
    return parsed


def parse_utc_offset(text: str) -> timedelta:
    """`+13:00`, `-05:30`, `+12`, `UTC+1300` → a timedelta within ±14 h."""
    match = _OFFSET.match(text.strip())
    if not match or int(match.group(3) or 0) >= 60:
        raise ValueError(f"{text!r} is not a UTC offset; try +13:00 (or -05:30).")
    sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3) or 0)
    offset = timedelta(hours=hours, minutes=minutes)
    if offset > timedelta(hours=14):
        raise ValueError(f"{text!r} is outside -14:00..+14:00; try +13:00.")
    return -offset if sign == "-" else offset


def _duration_arg(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _time_arg(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _page_size_arg(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        size = 0
    if not 1 <= size <= 499:
        raise argparse.ArgumentTypeError(f"{text!r} is not a page size; use 1..499, e.g. 200.")
    return size


# ---------------------------------------------------------------------------------------------------
# Window and bodies (pure)


@dataclass(frozen=True, slots=True)
class Window:
    """The real window, in UTC: `since <= ModifiedDate <= until`."""

    since: datetime
    until: datetime

    @classmethod
    def ending(cls, until: datetime, lookback: timedelta) -> Window:
        return cls(since=until - lookback, until=until)

    def contains(self, moment: datetime) -> bool:
        return self.since <= moment <= self.until

    def query_bounds(self, org_offset: timedelta | None) -> tuple[datetime, datetime]:
        """Naive bounds for Tradevine's date filters, which it reads in the organisation's zone."""
        since, until = self.since.astimezone(UTC), self.until.astimezone(UTC)
        if org_offset is None:
            low, high = since - UNKNOWN_ZONE_MARGIN, until + UNKNOWN_ZONE_MARGIN
        else:
            low, high = since + org_offset - DST_MARGIN, until + org_offset + DST_MARGIN
        # The API gets whole seconds: round the upper bound up.
        return low.replace(tzinfo=None), (high + timedelta(seconds=1)).replace(tzinfo=None)


def modified_at(obj: Mapping[str, object]) -> datetime | None:
    """An object's `ModifiedDate` (UTC, sent without an offset) or None when absent or unreadable."""
    return wire.parse_event_date(obj.get("ModifiedDate"))


def updated_code(key: str, table: Mapping[int, str],
                 preferred: Mapping[int, str] | None = None) -> int | None:
    """The event code for `key` (e.g. `product.updated`): one from `preferred` (the operator's
    `TRADEVINE_EVENT_TYPES`) wins over the built-in table; the lowest code when several map to it."""
    for source in (preferred or {}, table):
        codes = sorted(code for code, routing_key in source.items() if routing_key == key)
        if codes and codes[0] in table:
            return codes[0]
    return None


def webhook_body(model: Model, obj: Mapping[str, object], code: int) -> dict[str, object]:
    """The body Tradevine would have sent for an "updated" event about `obj` (no AccessToken)."""
    return {
        "OrganisationID": obj.get("OrganisationID"),
        "EventType": code,
        "EventObjectId": obj.get(ID_FIELDS[model]),
        "EventDateUtc": obj.get("ModifiedDate"),
        "Product": obj if model == "product" else None,
        "SalesOrder": obj if model == "sales_order" else None,
    }


def outgoing(model: Model, obj: Mapping[str, object], *, code: int, table: Mapping[int, str],
             received_at: datetime, trace: Mapping[str, str] | None = None) -> Outgoing:
    """The message for one reconciled object; `message_id` is the SHA-256 of the body published."""
    payload = webhook_body(model, obj, code)
    raw = orjson.dumps(payload)
    return build(raw, table=table, received_at=received_at, source=wire.SOURCE_RECONCILIATION,
                 app_id=wire.APP_ID_RECONCILER, routing_key=ROUTING_KEYS[model], payload=payload, trace=trace)


# ---------------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcilerSettings:
    api: ApiSettings
    amqp_url: str = field(default="amqp://guest:guest@localhost:5672/", repr=False)
    exchange: str = wire.EXCHANGE
    publish_timeout: float = 3.0
    event_types: Mapping[int, str] = field(default_factory=lambda: dict(wire.EVENT_TYPES))
    event_type_overrides: Mapping[int, str] = field(default_factory=dict)
    org_utc_offset: timedelta | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ReconcilerSettings:
        env = EnvReader(environ)
        api = ApiSettings.read(env)
        overrides: dict[int, str] = {}
        try:
            overrides = wire.parse_event_types(env.raw("TRADEVINE_EVENT_TYPES") or "")
        except ValueError as exc:
            env.problems.append(f"TRADEVINE_EVENT_TYPES: {exc}")
        table = {**wire.EVENT_TYPES, **overrides}
        for key in UPDATED_KEYS.values():
            if updated_code(key, table, overrides) is None:
                env.problems.append(f"TRADEVINE_EVENT_TYPES maps no code to {key}; reconciled events "
                                    f"need one, e.g. add {_builtin_code(key)}={key}.")
        offset: timedelta | None = None
        if (offset_text := env.raw("TRADEVINE_ORG_UTC_OFFSET")) is not None:
            try:
                offset = parse_utc_offset(offset_text)
            except ValueError as exc:
                env.problems.append(f"TRADEVINE_ORG_UTC_OFFSET={exc}")
        settings = cls(
            api=api,
            amqp_url=env.amqp_url(),
            exchange=env.text("GATEWAY_EXCHANGE", wire.EXCHANGE),
            publish_timeout=env.number("GATEWAY_PUBLISH_TIMEOUT_SECONDS", 3.0, low=0.05, high=60.0,
                                       example=3.0),
            event_types=table,
            event_type_overrides=overrides,
            org_utc_offset=offset,
        )
        env.check()
        return settings

    def code_for(self, model: Model) -> int:
        code = updated_code(UPDATED_KEYS[model], self.event_types, self.event_type_overrides)
        assert code is not None, "checked in from_environ"
        return code


def _builtin_code(key: str) -> int:
    return next(code for code, routing_key in wire.EVENT_TYPES.items() if routing_key == key)


# ---------------------------------------------------------------------------------------------------
# The run


@dataclass(slots=True)
class ModelStats:
    pages: int = 0
    listed: int = 0
    in_window: int = 0
    published: int = 0
    undated: int = 0


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


def _no_progress(model: Model, page: Page, page_size: int, stats: ModelStats) -> None:
    return None


async def _publish(publisher: Publisher, message: Outgoing,
                   sleep: Callable[[float], Awaitable[None]]) -> None:
    """Publish with confirms; a broker blip (reconnecting robust connection) gets two more tries."""
    retrying = AsyncRetrying(stop=stop_after_attempt(3), wait=wait_exponential(multiplier=0.5, max=2),
                             retry=retry_if_exception_type(BrokerUnavailable), sleep=sleep, reraise=True)
    async for attempt in retrying:
        with attempt:
            await publisher.publish(message)


async def reconcile(client: TradevineClient, publisher: Publisher | None, *, settings: ReconcilerSettings,
                    window: Window, models: tuple[Model, ...] = MODELS, page_size: int | None = None,
                    summary: Summary | None = None, progress: Progress = _no_progress,
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
                        await _publish(publisher, message, sleep)
                    else:
                        await _publish_traced(tracer, publisher, model, obj, code=code, settings=settings,
                                              received_at=now(), sleep=sleep)
                    stats.published += 1
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
        await _publish(publisher, message, sleep)


# ---------------------------------------------------------------------------------------------------
# Output


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


def _lookback_text(delta: timedelta) -> str:
    seconds, parts = int(delta.total_seconds()), []
    for unit, size in _UNITS.items():
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def format_summary(summary: Summary) -> str:
    """The text `reconcile` prints: window, per-model counts, API use, time and the key metrics."""
    window = summary.window
    target = "dry run, nothing published" if summary.dry_run else f"exchange {summary.exchange!r}"
    lines = [
        f"Reconciliation {_iso(window.since)} .. {_iso(window.until)} "
        f"(lookback {_lookback_text(window.until - window.since)}; {target})",
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


# ---------------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `reconcile` options."""
    parser.add_argument("--lookback", required=True, type=_duration_arg, metavar="DURATION",
                        help="how far back from --until to look, e.g. 90s, 30m, 2h, 1d")
    parser.add_argument("--until", type=_time_arg, default=None, metavar="TIME",
                        help="end of the window, ISO-8601 (UTC unless an offset is given); default now")
    parser.add_argument("--only", choices=sorted(ONLY_CHOICES), default=None,
                        help="reconcile one model only")
    parser.add_argument("--dry-run", action="store_true",
                        help="fetch and count, publish nothing")
    parser.add_argument("--metrics-file", default=None, metavar="PATH",
                        help="also write the run's metrics as a Prometheus text file")
    parser.add_argument("--page-size", type=_page_size_arg, default=None, metavar="N",
                        help="objects per API page, 1..499 (default TRADEVINE_API_PAGE_SIZE or 200)")


async def _connect(settings: ReconcilerSettings) -> AmqpPublisher:
    publisher = AmqpPublisher(settings.amqp_url, exchange=settings.exchange,
                              timeout=settings.publish_timeout, channels=1,
                              connection_name=wire.APP_ID_RECONCILER)
    await publisher.start()
    if not publisher.ready():
        await publisher.close()
        raise BrokerUnavailable(f"cannot reach RabbitMQ at {redact_url(settings.amqp_url)}; "
                                "check AMQP_URL and that the broker is running.")
    return publisher


class Terminated(Exception):
    """SIGTERM arrived; the run stopped where it was."""


class _Termination:
    """SIGTERM handling for one run: a flag before the event loop runs, a cancellation inside it.

    As PID 1 in a container the default action of SIGTERM does nothing (the kernel ignores it), so
    without a handler the run would go on until the kubelet's SIGKILL at the end of the grace period.
    """

    def __init__(self) -> None:
        self.received = False
        self._task: asyncio.Task[None] | None = None

    def on_signal(self, signum: int = signal.SIGTERM, frame: object = None) -> None:
        if self.received:
            return
        self.received = True
        if self._task is not None:
            self._task.cancel()

    def attach(self, task: asyncio.Task[None]) -> None:
        self._task = task
        if self.received:
            task.cancel()


async def _run(summary: Summary, settings: ReconcilerSettings, page_size: int | None,
               progress: Progress, termination: _Termination | None = None,
               tracer_provider: TracerProvider | None = None) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    handled = termination is not None and task is not None and threading.current_thread() is threading.main_thread()
    if handled:
        assert termination is not None and task is not None
        loop.add_signal_handler(signal.SIGTERM, termination.on_signal)
        termination.attach(task)
    try:
        publisher = None if summary.dry_run else await _connect(settings)
        try:
            async with TradevineClient(settings.api) as client:
                await reconcile(client, publisher, settings=settings, window=summary.window,
                                models=summary.models, page_size=page_size, summary=summary,
                                progress=progress, tracer=None if tracer_provider is None else
                                otel_tracer(tracer_provider))
        finally:
            if publisher is not None:
                await publisher.close()
    except asyncio.CancelledError:
        if termination is not None and termination.received:
            raise Terminated from None
        raise
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGTERM)


def run(args: argparse.Namespace, environ: Mapping[str, str], *, stdout: TextIO | None = None,
        stderr: TextIO | None = None) -> int:
    """Run `reconcile` and return the exit code: 0 done, 1 failed (API or broker), 2 bad settings,
    143 stopped by SIGTERM (connections closed; what was published stays published)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        settings = ReconcilerSettings.from_environ(environ)
        tracer_provider = tracing.provider_from_environ(environ, SERVICE_NAME)
    except SettingsError as exc:
        print(exc, file=err)
        return EXIT_USAGE
    until = args.until or datetime.now(UTC)
    models: tuple[Model, ...] = (ONLY_CHOICES[args.only],) if args.only else MODELS
    summary = Summary(window=Window.ending(until, args.lookback), models=models, dry_run=args.dry_run,
                      exchange=settings.exchange)
    progress = terminal_progress(err) if err.isatty() else _no_progress
    started = time.monotonic()
    termination = _Termination()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, termination.on_signal) if in_main_thread else None
    try:
        asyncio.run(_run(summary, settings, args.page_size, progress, termination, tracer_provider))
    except Terminated:
        summary.error = ("stopped by SIGTERM; the connections are closed and what was published stays "
                         "published; the next run covers this window again")
    except ApiAuthError as exc:
        summary.error = str(exc)
    except ApiError as exc:
        summary.error = f"Tradevine API: {exc}"
    except BrokerUnavailable as exc:
        summary.error = f"RabbitMQ: {exc}"
    except KeyboardInterrupt:
        summary.error = "interrupted"
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if tracer_provider is not None:
            tracer_provider.shutdown()  # exports the run's spans before the process ends
    summary.seconds = time.monotonic() - started
    print(format_summary(summary), file=out)
    if summary.error:
        print(f"reconcile failed: {summary.error}", file=err)
    if args.metrics_file:
        try:
            write_to_textfile(args.metrics_file, metrics_registry(summary))
        except OSError as exc:
            print(f"cannot write --metrics-file {args.metrics_file!r}: {exc.strerror}; "
                  "choose a writable path.", file=err)
            return EXIT_FAILED
    if termination.received and not summary.ok:
        return EXIT_TERMINATED
    return EXIT_OK if summary.ok else EXIT_FAILED
