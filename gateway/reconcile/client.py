"""A small async client for Tradevine's REST API: OAuth 1.0a signing, paging, rate limit and retries.

Every request is signed with HMAC-SHA1 in the `Authorization` header (oauthlib), waits for the
client-side rate limiter (by default 60 calls a minute, spaced evenly), and is retried with backoff on
429, 5xx and transport errors, honouring `Retry-After`. A 401 raises `ApiAuthError`; messages never
carry secrets or tokens.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote, urlencode, urlsplit

import httpx
from oauthlib.oauth1 import (  # type: ignore[import-untyped]  # no stubs shipped
    SIGNATURE_HMAC_SHA1,
    SIGNATURE_TYPE_AUTH_HEADER,
    Client,
)
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from gateway import message
from gateway.errors import ApiAuthError, ApiError
from gateway.wire import EnvReader

DEFAULT_API_BASE: Final = "https://api.tradevine.com"
MAX_PAGE_SIZE: Final = 499
MAX_RETRY_AFTER_SECONDS: Final = 120.0

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Json = Mapping[str, object]


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiSettings:
    """Credentials and limits for the Tradevine REST API (secrets never appear in `repr`)."""

    consumer_key: str
    consumer_secret: str = field(repr=False)
    access_token: str = field(repr=False)
    access_token_secret: str = field(repr=False)
    base_url: str = DEFAULT_API_BASE
    calls_per_minute: int = 60
    page_size: int = 200
    timeout: float = 30.0
    max_attempts: int = 5

    @classmethod
    def read(cls, env: EnvReader) -> ApiSettings:
        """Read the `TRADEVINE_*` API settings; problems are collected in `env`, not raised."""
        key = env.required("TRADEVINE_CONSUMER_KEY",
                           "set it to your Tradevine API application's consumer key.")
        secrets = env.required(
            "TRADEVINE_CONSUMER_SECRET",
            "set it to your Tradevine API application's consumer secret (several, comma-separated, "
            "during rotation: the first signs API calls).")
        token = env.required("TRADEVINE_ACCESS_TOKEN",
                             "set it to the access token Tradevine issued for the organisation.")
        token_secret = env.required("TRADEVINE_ACCESS_TOKEN_SECRET",
                                    "set it to the access token secret Tradevine issued with the token.")
        base = env.text("TRADEVINE_API_BASE", DEFAULT_API_BASE).rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            env.problems.append(f"TRADEVINE_API_BASE={base!r} is not an http(s) URL; try {DEFAULT_API_BASE}.")
        return cls(
            consumer_key=key,
            consumer_secret=next((s.strip() for s in secrets.split(",") if s.strip()), ""),
            access_token=token,
            access_token_secret=token_secret,
            base_url=base,
            calls_per_minute=env.integer("TRADEVINE_API_CALLS_PER_MINUTE", 60, low=1, high=6000, example=60),
            page_size=env.integer("TRADEVINE_API_PAGE_SIZE", 200, low=1, high=MAX_PAGE_SIZE, example=200),
            timeout=env.number("TRADEVINE_API_TIMEOUT_SECONDS", 30.0, low=0.1, high=600.0, example=30.0),
            max_attempts=env.integer("TRADEVINE_API_MAX_ATTEMPTS", 5, low=1, high=20, example=5),
        )


class RateLimiter:
    """At most `calls` starts in any `period` seconds, spaced at least `period / calls` apart.

    Even spacing keeps bursts away from Tradevine's per-minute limit; the sliding window is the hard
    guarantee. `clock` and `sleep` are injectable so tests never wait.
    """

    def __init__(self, calls: int, period: float = 60.0, *, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        if calls < 1 or period <= 0:
            raise ValueError("a rate limit needs at least one call per positive period")
        self.calls = calls
        self.period = period
        self.interval = period / calls
        self.clock = clock
        self.sleep = sleep
        self.starts: collections.deque[float] = collections.deque(maxlen=calls)
        self.waited = 0.0
        self._lock = asyncio.Lock()

    def delay(self, now: float) -> float:
        """Seconds to wait before a call may start at `now` (pure)."""
        if not self.starts:
            return 0.0
        earliest = self.starts[-1] + self.interval
        if len(self.starts) == self.calls:
            earliest = max(earliest, self.starts[0] + self.period)
        return max(0.0, earliest - now)

    async def acquire(self) -> None:
        async with self._lock:
            while (wait := self.delay(self.clock())) > 0:
                self.waited += wait
                await self.sleep(wait)
            self.starts.append(self.clock())


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a paged listing."""

    number: int
    total_count: int
    items: Sequence[Json]


class _Retryable(Exception):
    """A 429, a 5xx or a transport failure: worth another try."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or an HTTP date), capped; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def backoff(state: RetryCallState) -> float:
    """Wait before the next attempt: the server's `Retry-After` if it sent one, else 1, 2, 4… ≤ 30 s."""
    outcome = state.outcome
    exc = outcome.exception() if outcome is not None else None
    if isinstance(exc, _Retryable) and exc.retry_after is not None:
        return exc.retry_after
    return float(min(30, 2 ** (state.attempt_number - 1)))


def _excerpt(response: httpx.Response, limit: int = 200) -> str:
    text = " ".join(response.text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def api_time(moment: datetime) -> str:
    """A naive `YYYY-MM-DDTHH:MM:SS`, the form Tradevine's date filters read (in the caller's zone)."""
    return moment.replace(tzinfo=None, microsecond=0).isoformat()


class TradevineClient:
    """Signed, rate-limited, retried GETs against the Tradevine REST API.

    `transport` is the test seam (an `httpx.MockTransport`); `calls` counts every HTTP request sent,
    retries included, and `retries` the requests that were tried again.
    """

    def __init__(self, settings: ApiSettings, *, transport: httpx.AsyncBaseTransport | None = None,
                 limiter: RateLimiter | None = None, sleep: Sleep = asyncio.sleep) -> None:
        self.settings = settings
        self.limiter = limiter or RateLimiter(settings.calls_per_minute, sleep=sleep)
        self.sleep = sleep
        self.calls = 0
        self.retries = 0
        self._oauth = Client(
            settings.consumer_key,
            client_secret=settings.consumer_secret,
            resource_owner_key=settings.access_token,
            resource_owner_secret=settings.access_token_secret,
            signature_method=SIGNATURE_HMAC_SHA1,
            signature_type=SIGNATURE_TYPE_AUTH_HEADER,
        )
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(settings.timeout, connect=min(settings.timeout, 10.0)),
            headers={"Accept": "application/json", "User-Agent": "tradevine-gateway-reconciler"},
            follow_redirects=False,
        )

    async def __aenter__(self) -> TradevineClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def url(self, path: str, params: Mapping[str, object]) -> str:
        query = urlencode([(k, str(v)) for k, v in params.items() if v is not None], quote_via=quote)
        return f"{self.settings.base_url}/{path.lstrip('/')}" + (f"?{query}" if query else "")

    def _signed_headers(self, url: str) -> dict[str, str]:
        _, headers, _ = self._oauth.sign(url, http_method="GET")
        return {"Authorization": str(headers["Authorization"])}

    async def _send(self, path: str, url: str) -> Json:
        await self.limiter.acquire()
        self.calls += 1
        try:
            response = await self._http.get(url, headers=self._signed_headers(url))
        except httpx.TimeoutException as exc:
            raise _Retryable(f"GET {path} timed out after {self.settings.timeout:g}s "
                             f"({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise _Retryable(f"GET {path} failed: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Retryable(f"GET {path} answered HTTP {status}",
                             retry_after_seconds(response.headers.get("Retry-After")))
        if status == 401:
            raise ApiAuthError(
                f"Tradevine refused the OAuth credentials (HTTP 401) for GET {path}; check "
                "TRADEVINE_CONSUMER_KEY, TRADEVINE_CONSUMER_SECRET (the first one signs), "
                "TRADEVINE_ACCESS_TOKEN and TRADEVINE_ACCESS_TOKEN_SECRET, and that the access token "
                "was issued to this consumer key.")
        if status != 200:
            raise ApiError(f"GET {path} answered HTTP {status}: {_excerpt(response)}")
        payload = message.parse(response.content)
        if not isinstance(payload, dict):
            raise ApiError(f"GET {path} answered HTTP 200 with something other than a JSON object: "
                           f"{_excerpt(response)}")
        return payload

    async def get(self, path: str, params: Mapping[str, object] | None = None) -> Json:
        """GET `path` (relative to the base URL) and return the JSON object it answers."""
        url = self.url(path, params or {})
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=backoff,
            retry=retry_if_exception_type(_Retryable),
            sleep=self.sleep,
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._send(path, url)
        except _Retryable as exc:
            raise ApiError(f"{exc.reason}; gave up after {self.settings.max_attempts} attempts "
                           "(TRADEVINE_API_MAX_ATTEMPTS).") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _count_retry(self, state: RetryCallState) -> None:
        self.retries += 1

    async def pages(self, path: str, params: Mapping[str, object] | None = None, *,
                    page_size: int | None = None) -> AsyncIterator[Page]:
        """Every page of a `{TotalCount, PageNumber, PageSize, List}` listing, from page 1."""
        size = min(max(1, page_size or self.settings.page_size), MAX_PAGE_SIZE)
        number, seen = 1, 0
        while True:
            payload = await self.get(path, {**(params or {}), "pageNumber": number, "pageSize": size})
            items = payload.get("List")
            total = payload.get("TotalCount")
            if not isinstance(items, list) or not isinstance(total, int) or isinstance(total, bool):
                raise ApiError(f"GET {path} page {number} is not a paged listing "
                               "(expected TotalCount, PageNumber, PageSize and List).")
            objects = [item for item in items if isinstance(item, dict)]
            seen += len(items)
            yield Page(number=number, total_count=total, items=objects)
            answered = payload.get("PageSize")
            step = answered if isinstance(answered, int) and not isinstance(answered, bool) and answered > 0 \
                else size
            if not items or seen >= total or number * step >= total:
                return
            number += 1

    def sales_orders(self, modified_from: datetime, modified_to: datetime, *,
                     page_size: int | None = None) -> AsyncIterator[Page]:
        """`GET v1/SalesOrder` pages; the bounds are naive times in the organisation's zone."""
        return self.pages("v1/SalesOrder", {"modifiedFrom": api_time(modified_from),
                                            "modifiedTo": api_time(modified_to)}, page_size=page_size)

    def products(self, modified_from: datetime | None = None, *,
                 page_size: int | None = None) -> AsyncIterator[Page]:
        """`GET v1/Product` pages; `modifiedFrom` is sent in case it is honoured, never relied on."""
        params = {"modifiedFrom": api_time(modified_from)} if modified_from is not None else {}
        return self.pages("v1/Product", params, page_size=page_size)
