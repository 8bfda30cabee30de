"""The reconciler: durations and times, the window, the bodies it publishes, and a run against a mock API."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer
from prometheus_client import generate_latest

from gateway import wire
from gateway.errors import BrokerUnavailable, SettingsError
from gateway.message import Outgoing
from gateway.publisher import InMemoryPublisher
from gateway.reconcile import cli as reconcile_cli
from gateway.reconcile.client import Page, RateLimiter, TradevineClient
from gateway.reconcile.publish import MODELS, Model, outgoing, updated_code, webhook_body
from gateway.reconcile.run import (
    ModelStats,
    Summary,
    format_summary,
    metrics_registry,
    otel_tracer,
    reconcile,
    terminal_progress,
)
from gateway.reconcile.settings import ReconcilerSettings
from gateway.reconcile.window import Window, parse_duration, parse_time, parse_utc_offset

ORG = 3479979772659009354
PRODUCT_ID = 3451582911247567682
ORDER_ID = 3479979772702215467
UNTIL = datetime(2025, 3, 18, 22, 0, 0, tzinfo=UTC)
WINDOW = Window.ending(UNTIL, timedelta(hours=2))
RECEIVED = datetime(2025, 3, 18, 22, 0, 5, tzinfo=UTC)
ENV = {"TRADEVINE_CONSUMER_KEY": "ck", "TRADEVINE_CONSUMER_SECRET": "cs",
       "TRADEVINE_ACCESS_TOKEN": "at", "TRADEVINE_ACCESS_TOKEN_SECRET": "ats"}


def product(product_id: int, modified: object) -> dict[str, object]:
    return {"ProductID": product_id, "OrganisationID": ORG, "Code": "MSP-152", "QuantityInStock": 100.0,
            "ModifiedDate": modified}


def order(order_id: int, modified: object) -> dict[str, object]:
    return {"SalesOrderID": order_id, "OrganisationID": ORG, "OrderNumber": "SO1042", "Status": 12002,
            "ModifiedDate": modified, "PackLists": []}


# -- parsing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("2h", 7200), ("30m", 1800), ("90s", 90), ("1d", 86400), ("1h30m", 5400), (" 2H ", 7200)])
def test_durations_are_read(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["2x", "", "h", "2", "-1h", "1.5h", "2h foo"])
def test_a_bad_duration_names_the_value_and_the_fix(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert str(caught.value) == (f"{text!r} is not a duration; use a number and a unit (d, h, m or s), "
                                 "e.g. 90s, 30m, 2h, 1d or 1h30m.")


def test_a_zero_duration_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'0h' is not a positive duration; try 2h\."):
        parse_duration("0h")


@pytest.mark.parametrize(("text", "expected"), [
    ("2025-03-18T22:00:00Z", UNTIL), ("2025-03-18T22:00:00", UNTIL),
    ("2025-03-19T11:00:00+13:00", UNTIL), ("2025-03-18T22:00:00.0000000", UNTIL)])
def test_until_is_read_as_utc(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


def test_a_bad_until_names_the_value_and_the_fix() -> None:
    with pytest.raises(ValueError, match=r"^'yesterday' is not an ISO-8601 time; try 2025-03-18T21:00:00Z"):
        parse_time("yesterday")


@pytest.mark.parametrize(("text", "hours"), [("+13:00", 13), ("-05:30", -5.5), ("+12", 12), ("UTC+1300", 13)])
def test_org_offsets_are_read(text: str, hours: float) -> None:
    assert parse_utc_offset(text) == timedelta(hours=hours)


@pytest.mark.parametrize("text", ["13", "+15:00", "+13:75", "NZDT"])
def test_bad_org_offsets_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_utc_offset(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tradevine-gateway reconcile")
    reconcile_cli.add_arguments(p)
    return p


def test_the_command_line_is_read() -> None:
    args = parser().parse_args(["--lookback", "90m", "--until", "2025-03-18T22:00:00Z", "--only",
                                "sales-orders", "--dry-run", "--metrics-file", "/tmp/m.prom", "--page-size", "499"])
    assert (args.lookback, args.until, args.only, args.dry_run, args.metrics_file, args.page_size) == (
        timedelta(minutes=90), UNTIL, "sales-orders", True, "/tmp/m.prom", 499)


@pytest.mark.parametrize(("argv", "message"), [
    (["--lookback", "2x"], "argument --lookback: '2x' is not a duration"),
    (["--lookback", "2h", "--until", "noon"], "argument --until: 'noon' is not an ISO-8601 time"),
    (["--lookback", "2h", "--page-size", "1000"], "argument --page-size: '1000' is not a page size; use 1..499"),
    (["--lookback", "2h", "--only", "orders"], "argument --only: invalid choice: 'orders'"),
    ([], "the following arguments are required: --lookback"),
])
def test_bad_arguments_exit_2_with_the_value_and_the_fix(argv: list[str], message: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parser().parse_args(argv)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


# -- window -------------------------------------------------------------------------------------------


def test_the_window_includes_both_ends() -> None:
    assert WINDOW.contains(datetime(2025, 3, 18, 20, 0, 0, tzinfo=UTC))
    assert WINDOW.contains(UNTIL)
    assert not WINDOW.contains(datetime(2025, 3, 18, 19, 59, 59, 999000, tzinfo=UTC))
    assert not WINDOW.contains(datetime(2025, 3, 18, 22, 0, 0, 1000, tzinfo=UTC))


def test_the_api_query_is_shifted_into_the_organisations_zone_with_an_hour_for_dst() -> None:
    low, high = WINDOW.query_bounds(timedelta(hours=13))
    assert (low, high) == (datetime(2025, 3, 19, 8, 0, 0), datetime(2025, 3, 19, 12, 0, 1))


def test_without_an_offset_the_api_query_covers_every_zone() -> None:
    low, high = WINDOW.query_bounds(None)
    assert (low, high) == (datetime(2025, 3, 18, 6, 0, 0), datetime(2025, 3, 19, 12, 0, 1))


# -- bodies and messages ------------------------------------------------------------------------------


def test_the_updated_code_comes_from_the_active_table() -> None:
    assert updated_code("product.updated", wire.EVENT_TYPES) == 95002
    assert updated_code("sales_order.updated", wire.EVENT_TYPES) == 95007
    overrides = {95020: "product.updated"}
    assert updated_code("product.updated", {**wire.EVENT_TYPES, **overrides}, overrides) == 95020
    remapped = {95002: "product.archived"}
    assert updated_code("product.updated", {**wire.EVENT_TYPES, **remapped}, remapped) is None


def test_a_product_becomes_a_webhook_shaped_body() -> None:
    obj = product(PRODUCT_ID, "2025-03-18T21:14:05.913")
    assert webhook_body("product", obj, 95002) == {
        "OrganisationID": ORG, "EventType": 95002, "EventObjectId": PRODUCT_ID,
        "EventDateUtc": "2025-03-18T21:14:05.913", "Product": obj, "SalesOrder": None}


def test_a_sales_order_becomes_a_webhook_shaped_body() -> None:
    obj = order(ORDER_ID, "2025-03-18T21:30:00")
    assert webhook_body("sales_order", obj, 95007) == {
        "OrganisationID": ORG, "EventType": 95007, "EventObjectId": ORDER_ID,
        "EventDateUtc": "2025-03-18T21:30:00", "Product": None, "SalesOrder": obj}


def test_the_message_is_a_reconciled_event_with_exact_ids() -> None:
    obj = product(PRODUCT_ID, "2025-03-18T21:14:05.913")
    message = outgoing("product", obj, code=95002, table=wire.EVENT_TYPES, received_at=RECEIVED)
    assert message.routing_key == "product.reconciled"
    assert message.app_id == "tradevine-reconciler"
    assert message.message_id == hashlib.sha256(message.body).hexdigest()
    assert message.timestamp == RECEIVED
    assert dict(message.headers) == {
        "tradevine-source": "reconciliation",
        "tradevine-received-at": "2025-03-18T22:00:05.000Z",
        "tradevine-event-type": "95002",
        "tradevine-organisation-id": str(ORG),
        "tradevine-object-id": str(PRODUCT_ID),
        "tradevine-event-date": "2025-03-18T21:14:05.913",
        "tradevine-event-key": f"{ORG}:95002:{PRODUCT_ID}:2025-03-18T21:14:05.913",
    }
    assert message.body.startswith(b'{"OrganisationID":3479979772659009354,"EventType":95002,'
                                   b'"EventObjectId":3451582911247567682,')
    assert b'"QuantityInStock":100.0' in message.body and b"AccessToken" not in message.body
    assert orjson.loads(message.body)["Product"] == obj


def test_the_same_snapshot_always_gives_the_same_message_id() -> None:
    obj = order(ORDER_ID, "2025-03-18T21:30:00")
    first = outgoing("sales_order", obj, code=95007, table=wire.EVENT_TYPES, received_at=RECEIVED)
    again = outgoing("sales_order", obj, code=95007, table=wire.EVENT_TYPES,
                     received_at=RECEIVED + timedelta(hours=1))
    assert first.message_id == again.message_id
    assert first.routing_key == "sales_order.reconciled"


# -- settings -----------------------------------------------------------------------------------------


def test_settings_default_to_the_contract() -> None:
    settings = ReconcilerSettings.from_environ(ENV)
    assert (settings.exchange, settings.org_utc_offset, settings.code_for("product"),
            settings.code_for("sales_order")) == ("tradevine.events", None, 95002, 95007)


def test_event_type_overrides_choose_the_reconciled_code() -> None:
    settings = ReconcilerSettings.from_environ({**ENV, "TRADEVINE_EVENT_TYPES": "95021=sales_order.updated"})
    assert settings.code_for("sales_order") == 95021


def test_every_settings_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        ReconcilerSettings.from_environ({"TRADEVINE_ORG_UTC_OFFSET": "NZDT", "AMQP_URL": "http://x",
                                         "TRADEVINE_EVENT_TYPES": "95002=product.archived"})
    problems = caught.value.problems
    assert len(problems) == 7
    assert "TRADEVINE_ORG_UTC_OFFSET='NZDT' is not a UTC offset; try +13:00 (or -05:30)." in problems
    assert ("TRADEVINE_EVENT_TYPES maps no code to product.updated; reconciled events need one, "
            "e.g. add 95002=product.updated.") in problems


def test_run_exits_2_on_bad_settings_without_any_io() -> None:
    err = io.StringIO()
    args = parser().parse_args(["--lookback", "2h"])
    assert reconcile_cli.run(args, {}, stdout=io.StringIO(), stderr=err) == 2
    assert "TRADEVINE_CONSUMER_KEY is not set" in err.getvalue()


# -- a run against a mock API -------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def api(products: list[dict[str, object]], orders: list[dict[str, object]],
        seen: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        objects = products if request.url.path == "/v1/Product" else orders
        number, size = int(request.url.params["pageNumber"]), int(request.url.params["pageSize"])
        return httpx.Response(200, content=orjson.dumps({
            "TotalCount": len(objects), "PageNumber": number, "PageSize": size,
            "List": objects[(number - 1) * size:number * size]}))

    return handle


async def run_against(products: list[dict[str, object]], orders: list[dict[str, object]], *,
                      dry_run: bool = False, environ: dict[str, str] | None = None,
                      models: tuple[Model, ...] = MODELS,
                      tracer: Tracer | None = None) -> tuple[Summary, InMemoryPublisher, list[httpx.Request]]:
    settings = ReconcilerSettings.from_environ({**ENV, "TRADEVINE_API_PAGE_SIZE": "2", **(environ or {})})
    fake, seen = FakeTime(), list[httpx.Request]()
    publisher = InMemoryPublisher()
    await publisher.start()
    client = TradevineClient(settings.api, transport=httpx.MockTransport(api(products, orders, seen)),
                             limiter=RateLimiter(60, clock=fake.clock, sleep=fake.sleep), sleep=fake.sleep)
    async with client:
        summary = await reconcile(client, None if dry_run else publisher, settings=settings,
                                            window=WINDOW, models=models, now=lambda: RECEIVED,
                                            sleep=fake.sleep, tracer=tracer)
    return summary, publisher, seen


PRODUCTS = [product(PRODUCT_ID + 1, "2025-03-18T19:59:59.999"),   # just before the window
            product(PRODUCT_ID + 2, "2025-03-18T20:00:00"),       # first instant
            product(PRODUCT_ID + 3, "2025-03-18T21:14:05.913"),
            product(PRODUCT_ID + 4, "2025-03-18T22:00:00.001"),   # just after
            product(PRODUCT_ID + 5, None)]                        # no date: skipped, counted
ORDERS = [order(ORDER_ID + 1, "2025-03-18T21:30:00"), order(ORDER_ID + 2, "2025-03-17T10:00:00")]


async def test_only_objects_modified_in_the_window_are_published() -> None:
    summary, publisher, _ = await run_against(PRODUCTS, ORDERS)
    published = [(m.routing_key, orjson.loads(m.body)["EventObjectId"]) for m in publisher.messages]
    assert published == [("product.reconciled", PRODUCT_ID + 2), ("product.reconciled", PRODUCT_ID + 3),
                         ("sales_order.reconciled", ORDER_ID + 1)]
    product_stats, order_stats = summary.stats["product"], summary.stats["sales_order"]
    assert (product_stats.pages, product_stats.listed, product_stats.in_window, product_stats.published,
            product_stats.undated) == (3, 5, 2, 2, 1)
    assert (order_stats.pages, order_stats.listed, order_stats.in_window, order_stats.published) == (1, 2, 1, 1)
    assert summary.api_calls == 4


async def test_without_tracing_reconciled_messages_carry_no_trace_context() -> None:
    _, publisher, _ = await run_against(PRODUCTS, ORDERS)
    assert [k for m in publisher.messages for k in m.headers if k.startswith("trace")] == []


async def test_with_tracing_a_run_is_a_span_and_each_message_carries_its_publish_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _, publisher, _ = await run_against(PRODUCTS, ORDERS, tracer=otel_tracer(provider))
    spans = exporter.get_finished_spans()
    [run] = [s for s in spans if s.name == "reconcile"]
    models = {s.name: s for s in spans if s.name.startswith("reconcile ")}
    publishes = [s for s in spans if s.name == "publish tradevine.events"]
    assert run.parent is None and {s.context.trace_id for s in spans} == {run.context.trace_id}
    assert sorted(models) == ["reconcile product", "reconcile sales_order"]
    assert all(s.parent is not None and s.parent.span_id == run.context.span_id for s in models.values())
    assert (models["reconcile product"].attributes or {})["tradevine.published"] == 2
    assert [s.kind for s in publishes] == [SpanKind.PRODUCER] * 3
    assert [s.parent.span_id if s.parent else None for s in publishes] == [
        models["reconcile product"].context.span_id] * 2 + [models["reconcile sales_order"].context.span_id]
    flags = f"{run.context.trace_flags:02x}"
    assert [m.headers["traceparent"] for m in publisher.messages] == [
        f"00-{s.context.trace_id:032x}-{s.context.span_id:016x}-{flags}" for s in publishes]
    assert [(s.attributes or {})["messaging.message.id"] for s in publishes] == [
        m.message_id for m in publisher.messages]


async def test_the_api_is_asked_for_the_widened_window() -> None:
    _, _, seen = await run_against([], [], environ={"TRADEVINE_ORG_UTC_OFFSET": "+13:00"})
    assert [dict(r.url.params) for r in seen] == [
        {"modifiedFrom": "2025-03-19T08:00:00", "pageNumber": "1", "pageSize": "2"},
        {"modifiedFrom": "2025-03-19T08:00:00", "modifiedTo": "2025-03-19T12:00:01", "pageNumber": "1",
         "pageSize": "2"}]


async def test_an_object_listed_twice_as_pages_shift_is_published_once() -> None:
    twice = product(PRODUCT_ID, "2025-03-18T21:00:00")
    _, publisher, _ = await run_against([twice, product(PRODUCT_ID + 9, "2025-03-18T21:00:00"), twice], [])
    assert len(publisher.messages) == 2


async def test_a_dry_run_counts_and_publishes_nothing() -> None:
    summary, publisher, _ = await run_against(PRODUCTS, ORDERS, dry_run=True)
    assert publisher.messages == []
    assert summary.dry_run
    assert (summary.stats["product"].in_window, summary.stats["product"].published) == (2, 0)


async def test_only_limits_the_run_to_one_model() -> None:
    summary, publisher, seen = await run_against(PRODUCTS, ORDERS, models=("sales_order",))
    assert {r.url.path for r in seen} == {"/v1/SalesOrder"}
    assert [m.routing_key for m in publisher.messages] == ["sales_order.reconciled"]
    assert summary.stats["product"].pages == 0


async def test_a_broker_failure_is_retried_then_raised() -> None:
    settings = ReconcilerSettings.from_environ(ENV)
    fake, publisher = FakeTime(), InMemoryPublisher()
    publisher.fail = "nacked"
    client = TradevineClient(settings.api, transport=httpx.MockTransport(api(PRODUCTS, [], [])),
                             limiter=RateLimiter(60, clock=fake.clock, sleep=fake.sleep), sleep=fake.sleep)
    async with client:
        with pytest.raises(BrokerUnavailable, match="nacked"):
            await reconcile(client, publisher, settings=settings, window=WINDOW, sleep=fake.sleep)


class ConfirmHeld(InMemoryPublisher):
    """The broker has the message, its confirm is on the way: each publish waits for `confirm`."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting, self.confirm = asyncio.Event(), asyncio.Event()

    async def publish(self, message: Outgoing) -> None:
        self.waiting.set()
        await self.confirm.wait()
        await super().publish(message)


async def test_sigterm_while_a_publish_awaits_its_confirm_counts_it_once_confirmed_then_stops() -> None:
    """The summary says how many messages are in the broker: one confirmed after the signal counts too."""
    settings = ReconcilerSettings.from_environ(ENV)
    fake, publisher = FakeTime(), ConfirmHeld()
    summary = Summary(window=WINDOW, models=MODELS, dry_run=False, exchange="tradevine.events")
    client = TradevineClient(settings.api, transport=httpx.MockTransport(api(PRODUCTS, [], [])),
                             limiter=RateLimiter(60, clock=fake.clock, sleep=fake.sleep), sleep=fake.sleep)
    async with client:
        run = asyncio.create_task(reconcile(client, publisher, settings=settings, window=WINDOW,
                                            sleep=fake.sleep, summary=summary))
        await publisher.waiting.wait()
        run.cancel()  # what SIGTERM does
        await asyncio.sleep(0)
        assert not run.done()  # still waiting for the confirm
        publisher.confirm.set()
        with pytest.raises(asyncio.CancelledError):
            await run
    assert len(publisher.messages) == 1
    assert summary.stats["product"].published == 1


# -- output -------------------------------------------------------------------------------------------


def finished_summary() -> Summary:
    summary = Summary(window=WINDOW, models=MODELS, dry_run=False, exchange="tradevine.events")
    summary.stats["product"].pages, summary.stats["product"].listed = 3, 7
    summary.stats["product"].in_window = summary.stats["product"].published = 4
    summary.stats["sales_order"].pages, summary.stats["sales_order"].listed = 2, 4
    summary.stats["sales_order"].in_window = summary.stats["sales_order"].published = 3
    summary.api_calls, summary.api_retries, summary.rate_wait, summary.seconds = 6, 1, 2.0, 3.1
    return summary


def test_the_summary_shows_counts_calls_time_and_metrics() -> None:
    assert format_summary(finished_summary()) == "\n".join([
        "Reconciliation 2025-03-18T20:00:00Z .. 2025-03-18T22:00:00Z (lookback 2h; exchange 'tradevine.events')",
        "  model         pages  listed  in window  published",
        "  products          3       7          4          4",
        "  sales orders      2       4          3          3",
        "  API calls: 6 (1 retried), 2.0s waiting for the rate limit; took 3.1s",
        '  tradevine_reconciler_objects_total{model="product"} 4',
        '  tradevine_reconciler_objects_total{model="sales_order"} 3',
        "  tradevine_reconciler_api_calls_total 6",
        "  result: ok",
    ])


def test_a_failed_run_says_so_in_the_summary() -> None:
    summary = finished_summary()
    summary.error = "RabbitMQ: not connected"
    assert format_summary(summary).endswith("  result: FAILED: RabbitMQ: not connected")


def test_metrics_use_the_contract_names() -> None:
    text = generate_latest(metrics_registry(finished_summary(), ended_at=1742335205.0)).decode()
    for line in ('tradevine_reconciler_objects_total{model="product"} 4.0',
                 'tradevine_reconciler_objects_total{model="sales_order"} 3.0',
                 "tradevine_reconciler_api_calls_total 6.0",
                 "tradevine_reconciler_success 1.0",
                 "tradevine_reconciler_last_run_timestamp_seconds 1.742335205e+09"):
        assert line in text.splitlines()
    assert "_created" not in text


def test_progress_rewrites_one_line_and_ends_it_on_the_last_page() -> None:
    stream = io.StringIO()
    show = terminal_progress(stream)
    stats = ModelStats(in_window=4)
    show("product", Page(number=1, total_count=7, items=[]), 3, stats)
    show("product", Page(number=3, total_count=7, items=[]), 3, stats)
    assert stream.getvalue() == ("\rproducts: page 1/3, 4 in window   "
                                 "\rproducts: page 3/3, 4 in window   \n")
