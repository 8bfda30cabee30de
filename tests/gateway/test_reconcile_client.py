"""The Tradevine REST client: signing, paging, the rate limiter, retries and errors (no network, no sleeping)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from urllib.parse import parse_qsl, urlsplit

import httpx
import orjson
import pytest
from oauthlib.common import Request as OAuthRequest  # type: ignore[import-untyped]
from oauthlib.oauth1.rfc5849 import signature, utils  # type: ignore[import-untyped]

from gateway.errors import ApiAuthError, ApiError, SettingsError
from gateway.reconcile.client import (
    ApiSettings,
    Page,
    RateLimiter,
    TradevineClient,
    api_time,
    retry_after_seconds,
)
from gateway.wire import EnvReader

BIG_ID = 3479979772659009354  # above 2**53: a float would change it

SETTINGS = ApiSettings(consumer_key="ck-public", consumer_secret="cs-very-secret",
                       access_token="at-token-value", access_token_secret="ats-very-secret",
                       base_url="https://api.example.test", calls_per_minute=60, page_size=3, timeout=5.0,
                       max_attempts=4)


class FakeTime:
    """A monotonic clock and an async sleep that only moves the clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def signature_valid(request: httpx.Request, settings: ApiSettings = SETTINGS) -> bool:
    header = request.headers["Authorization"]
    oauth = {k: utils.unescape(v) for k, v in utils.parse_authorization_header(header)}
    oauth_request = OAuthRequest(str(request.url), http_method=request.method)
    oauth_request.params = signature.collect_parameters(uri_query=request.url.query.decode(),
                                                        headers={"Authorization": header})
    oauth_request.signature = oauth["oauth_signature"]
    return bool(oauth["oauth_consumer_key"] == settings.consumer_key
            and oauth["oauth_token"] == settings.access_token
            and oauth["oauth_signature_method"] == "HMAC-SHA1"
            and signature.verify_hmac_sha1(oauth_request, settings.consumer_secret,
                                           settings.access_token_secret))


def listing(objects: list[dict[str, object]]) -> Callable[[httpx.Request], httpx.Response]:
    """A paged endpoint over `objects` that also checks each request's signature."""

    def handle(request: httpx.Request) -> httpx.Response:
        if not signature_valid(request):
            return httpx.Response(401, json={"Message": "Authorization has been denied for this request."})
        number = int(request.url.params["pageNumber"])
        size = int(request.url.params.get("pageSize", "20"))
        body = {"TotalCount": len(objects), "PageNumber": number, "PageSize": size,
                "List": objects[(number - 1) * size:number * size]}
        return httpx.Response(200, content=orjson.dumps(body))

    return handle


def client_for(handler: Callable[[httpx.Request], httpx.Response], fake: FakeTime,
               settings: ApiSettings = SETTINGS) -> TradevineClient:
    limiter = RateLimiter(settings.calls_per_minute, clock=fake.clock, sleep=fake.sleep)
    return TradevineClient(settings, transport=httpx.MockTransport(handler), limiter=limiter, sleep=fake.sleep)


def recording() -> tuple[list[httpx.Request], Callable[[httpx.Request], httpx.Response]]:
    """An empty listing that keeps every request it was sent."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return listing([])(request)

    return seen, handle


async def collect(client: TradevineClient, path: str = "v1/Product") -> list[Page]:
    return [page async for page in client.pages(path)]


# -- rate limiter -------------------------------------------------------------------------------------


async def test_rate_limiter_spaces_calls_evenly_without_sleeping_for_real() -> None:
    fake = FakeTime()
    limiter = RateLimiter(60, clock=fake.clock, sleep=fake.sleep)
    starts = []
    for _ in range(4):
        await limiter.acquire()
        starts.append(fake.now)
    assert [b - a for a, b in pairwise(starts)] == [1.0, 1.0, 1.0]
    assert fake.sleeps == [1.0, 1.0, 1.0]


async def test_rate_limiter_does_not_wait_when_calls_are_already_far_apart() -> None:
    fake = FakeTime()
    limiter = RateLimiter(60, clock=fake.clock, sleep=fake.sleep)
    await limiter.acquire()
    fake.now += 5
    await limiter.acquire()
    assert fake.sleeps == []


def test_rate_limiter_never_allows_more_than_the_limit_in_any_period() -> None:
    limiter = RateLimiter(3, period=60.0)
    limiter.starts.extend([0.0, 20.0, 40.0])
    assert limiter.delay(41.0) == 19.0  # the fourth call waits until the first leaves the window
    assert limiter.delay(60.0) == 0.0


async def test_rate_limiter_keeps_a_long_run_within_the_rate() -> None:
    fake = FakeTime()
    limiter = RateLimiter(120, clock=fake.clock, sleep=fake.sleep)
    starts = []
    for _ in range(300):
        await limiter.acquire()
        starts.append(fake.now)
    for i, start in enumerate(starts):
        in_a_minute = [s for s in starts[i:] if s < start + 60]
        assert len(in_a_minute) <= 120


def test_rate_limiter_rejects_a_zero_rate() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)


# -- signing and paging -------------------------------------------------------------------------------


async def test_requests_are_signed_with_hmac_sha1_in_the_authorization_header() -> None:
    seen, handle = recording()
    async with client_for(handle, FakeTime()) as client:
        await client.get("v1/Product", {"modifiedFrom": "2025-03-18T21:14:05", "pageNumber": 1})
    request = seen[0]
    assert request.headers["Authorization"].startswith("OAuth ")
    assert 'oauth_signature_method="HMAC-SHA1"' in request.headers["Authorization"]
    assert signature_valid(request)
    assert "oauth_" not in str(request.url)  # parameters travel in the header only
    assert dict(parse_qsl(urlsplit(str(request.url)).query)) == {
        "modifiedFrom": "2025-03-18T21:14:05", "pageNumber": "1"}


async def test_a_wrong_secret_fails_verification() -> None:
    wrong = ApiSettings(consumer_key=SETTINGS.consumer_key, consumer_secret="not-the-secret",
                        access_token=SETTINGS.access_token, access_token_secret=SETTINGS.access_token_secret,
                        base_url=SETTINGS.base_url)
    async with client_for(listing([]), FakeTime(), wrong) as client:
        with pytest.raises(ApiAuthError):
            await client.get("v1/Product")


async def test_pages_are_fetched_until_total_count_is_reached() -> None:
    objects: list[dict[str, object]] = [{"ProductID": BIG_ID + i} for i in range(7)]
    seen: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(int(request.url.params["pageNumber"]))
        return listing(objects)(request)

    async with client_for(handle, FakeTime()) as client:
        pages = await collect(client)
    assert seen == [1, 2, 3]
    assert [len(p.items) for p in pages] == [3, 3, 1]
    assert [item["ProductID"] for p in pages for item in p.items] == [BIG_ID + i for i in range(7)]


async def test_a_smaller_page_size_answered_by_the_server_is_followed() -> None:
    objects = [{"ProductID": i} for i in range(5)]

    def handle(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["pageNumber"])
        body = {"TotalCount": 5, "PageNumber": number, "PageSize": 2,
                "List": objects[(number - 1) * 2:number * 2]}
        return httpx.Response(200, content=orjson.dumps(body))

    async with client_for(handle, FakeTime()) as client:
        pages = await collect(client)
    assert [len(p.items) for p in pages] == [2, 2, 1]


async def test_an_empty_page_ends_the_listing_even_if_total_count_says_more() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=orjson.dumps(
            {"TotalCount": 50, "PageNumber": 1, "PageSize": 3, "List": []}))

    async with client_for(handle, FakeTime()) as client:
        pages = await collect(client)
    assert len(pages) == 1


async def test_ids_stay_exact_integers_and_never_become_floats() -> None:
    raw = b'{"TotalCount":1,"PageNumber":1,"PageSize":3,"List":[{"ProductID":3479979772659009354}]}'

    async with client_for(lambda r: httpx.Response(200, content=raw), FakeTime()) as client:
        pages = await collect(client)
    product_id = pages[0].items[0]["ProductID"]
    assert type(product_id) is int
    assert product_id == BIG_ID


async def test_sales_orders_send_the_window_as_naive_times() -> None:
    seen, handle = recording()
    async with client_for(handle, FakeTime()) as client:
        low, high = datetime(2025, 3, 19, 8, 0, 0, 250000), datetime(2025, 3, 19, 12, 0, 1)
        _ = [page async for page in client.sales_orders(low, high, page_size=499)]
    params = seen[0].url.params
    assert seen[0].url.path == "/v1/SalesOrder"
    assert (params["modifiedFrom"], params["modifiedTo"]) == ("2025-03-19T08:00:00", "2025-03-19T12:00:01")
    assert (params["pageNumber"], params["pageSize"]) == ("1", "499")


def test_api_time_drops_the_zone_and_fraction() -> None:
    assert api_time(datetime(2025, 3, 18, 21, 14, 5, 913000, tzinfo=UTC)) == "2025-03-18T21:14:05"


# -- retries and errors -------------------------------------------------------------------------------


async def test_429_is_retried_after_the_retry_after_seconds() -> None:
    fake = FakeTime()
    answers = [httpx.Response(429, headers={"Retry-After": "7"}),
               httpx.Response(200, content=b'{"TotalCount":0,"PageNumber":1,"PageSize":3,"List":[]}')]
    async with client_for(lambda r: answers.pop(0), fake) as client:
        pages = await collect(client)
    assert len(pages) == 1
    assert 7.0 in fake.sleeps
    assert (client.calls, client.retries) == (2, 1)


async def test_5xx_is_retried_with_growing_backoff_then_gives_up_clearly() -> None:
    fake = FakeTime()
    async with client_for(lambda r: httpx.Response(503, text="busy"), fake) as client:
        with pytest.raises(ApiError) as caught:
            await client.get("v1/Product")
    assert client.calls == SETTINGS.max_attempts
    assert fake.sleeps == [1.0, 2.0, 4.0]  # backoff; the rate limiter had nothing left to add
    assert str(caught.value) == ("GET v1/Product answered HTTP 503; gave up after 4 attempts "
                                 "(TRADEVINE_API_MAX_ATTEMPTS).")


async def test_a_timeout_is_retried_and_named() -> None:
    fake = FakeTime()

    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with client_for(handle, fake) as client:
        with pytest.raises(ApiError, match=r"GET v1/Product timed out after 5s \(ReadTimeout\)"):
            await client.get("v1/Product")
    assert client.calls == SETTINGS.max_attempts


async def test_401_is_a_clear_auth_error_without_secrets_or_tokens() -> None:
    async with client_for(lambda r: httpx.Response(401, text="denied"), FakeTime()) as client:
        with pytest.raises(ApiAuthError) as caught:
            await client.get("v1/Product")
    text = str(caught.value)
    assert "HTTP 401" in text and "TRADEVINE_CONSUMER_SECRET" in text
    for secret in ("cs-very-secret", "ats-very-secret", "at-token-value"):
        assert secret not in text
    assert client.calls == 1  # never retried


async def test_other_4xx_is_an_api_error_quoting_the_answer() -> None:
    async with client_for(lambda r: httpx.Response(400, text='{"Message":"bad pageSize"}'),
                          FakeTime()) as client:
        with pytest.raises(ApiError, match=r'answered HTTP 400: \{"Message":"bad pageSize"\}'):
            await client.get("v1/Product")


async def test_a_200_that_is_not_a_listing_is_an_api_error() -> None:
    async with client_for(lambda r: httpx.Response(200, text="<html>maintenance</html>"),
                          FakeTime()) as client:
        with pytest.raises(ApiError, match="something other than a JSON object"):
            await client.get("v1/Product")
    async with client_for(lambda r: httpx.Response(200, json={"Items": []}), FakeTime()) as client:
        with pytest.raises(ApiError, match="not a paged listing"):
            await collect(client)


@pytest.mark.parametrize(("value", "seconds"), [
    ("1", 1.0), (" 2.5 ", 2.5), ("0", 0.0), ("-3", 0.0), ("100000", 120.0), ("soon", None), (None, None),
    ("", None)])
def test_retry_after_is_read_as_capped_seconds(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value) == seconds


def test_retry_after_may_be_an_http_date() -> None:
    now = datetime(2025, 3, 18, 21, 0, 0, tzinfo=UTC)
    later = now + timedelta(seconds=30)
    assert retry_after_seconds(later.strftime("%a, %d %b %Y %H:%M:%S GMT"), now=now) == 30.0


# -- settings -----------------------------------------------------------------------------------------


def read(environ: dict[str, str]) -> tuple[ApiSettings, list[str]]:
    env = EnvReader(environ)
    settings = ApiSettings.read(env)
    return settings, env.problems


def test_missing_credentials_are_all_reported_together() -> None:
    _, problems = read({"TRADEVINE_API_CALLS_PER_MINUTE": "fast"})
    assert [p.split(" ", 1)[0] for p in problems] == [
        "TRADEVINE_CONSUMER_KEY", "TRADEVINE_CONSUMER_SECRET", "TRADEVINE_ACCESS_TOKEN",
        "TRADEVINE_ACCESS_TOKEN_SECRET", "TRADEVINE_API_CALLS_PER_MINUTE='fast'"]
    with pytest.raises(SettingsError):
        env = EnvReader({})
        ApiSettings.read(env)
        env.check()


def test_the_first_of_several_consumer_secrets_signs() -> None:
    settings, problems = read({"TRADEVINE_CONSUMER_KEY": "k", "TRADEVINE_CONSUMER_SECRET": " new , old ",
                               "TRADEVINE_ACCESS_TOKEN": "t", "TRADEVINE_ACCESS_TOKEN_SECRET": "ts"})
    assert problems == []
    assert settings.consumer_secret == "new"
    assert (settings.base_url, settings.calls_per_minute, settings.page_size) == (
        "https://api.tradevine.com", 60, 200)


def test_settings_never_show_secrets_in_repr() -> None:
    text = repr(SETTINGS)
    assert "cs-very-secret" not in text and "ats-very-secret" not in text and "at-token-value" not in text


def test_a_bad_api_base_and_page_size_are_reported() -> None:
    _, problems = read({"TRADEVINE_CONSUMER_KEY": "k", "TRADEVINE_CONSUMER_SECRET": "s",
                        "TRADEVINE_ACCESS_TOKEN": "t", "TRADEVINE_ACCESS_TOKEN_SECRET": "ts",
                        "TRADEVINE_API_BASE": "api.tradevine.com", "TRADEVINE_API_PAGE_SIZE": "500"})
    assert problems == [
        "TRADEVINE_API_BASE='api.tradevine.com' is not an http(s) URL; try https://api.tradevine.com.",
        "TRADEVINE_API_PAGE_SIZE='500' is outside 1..499; try 200."]
