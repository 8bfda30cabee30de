"""A fake Tradevine REST API served over real HTTP (Starlette on uvicorn, in a thread) for reconciler tests.

It verifies every request's OAuth 1.0a HMAC-SHA1 signature with oauthlib's server-side signature
functions and the same credentials (401 otherwise), pages `v1/Product` and `v1/SalesOrder` like
Tradevine (`TotalCount`, `PageNumber`, `PageSize`, `List`), reads `modifiedFrom`/`modifiedTo` on sales
orders in the organisation's zone, ignores them on products, can answer 429 once, and records when
each call arrived.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson
import uvicorn
from oauthlib.common import Request as OAuthRequest  # type: ignore[import-untyped]
from oauthlib.oauth1.rfc5849 import signature, utils  # type: ignore[import-untyped]
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ORG_ID = 3479979772659009354


@dataclass(frozen=True)
class Credentials:
    consumer_key: str = "fake-consumer-key"
    consumer_secret: str = "fake-consumer-secret"
    access_token: str = "fake-access-token"
    access_token_secret: str = "fake-access-token-secret"

    def environ(self, base_url: str) -> dict[str, str]:
        return {"TRADEVINE_CONSUMER_KEY": self.consumer_key,
                "TRADEVINE_CONSUMER_SECRET": self.consumer_secret,
                "TRADEVINE_ACCESS_TOKEN": self.access_token,
                "TRADEVINE_ACCESS_TOKEN_SECRET": self.access_token_secret,
                "TRADEVINE_API_BASE": base_url}


@dataclass
class Call:
    at: float
    path: str
    query: Mapping[str, str]
    status: int


@dataclass
class FakeTradevine:
    """State of the fake API; mutate `products`/`sales_orders` between runs."""

    credentials: Credentials = field(default_factory=Credentials)
    products: list[dict[str, object]] = field(default_factory=list)
    sales_orders: list[dict[str, object]] = field(default_factory=list)
    org_utc_offset: timedelta = timedelta(hours=13)
    throttle_call_numbers: set[int] = field(default_factory=set)  # 1-based call numbers answered 429
    max_page_size: int = 499
    calls: list[Call] = field(default_factory=list)
    nonces: set[str] = field(default_factory=set)
    base_url: str = ""

    # -- HTTP ---------------------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/Product", self._products, methods=["GET"]),
            Route("/v1/SalesOrder", self._sales_orders, methods=["GET"]),
        ])

    async def _products(self, request: Request) -> Response:
        return self._answer(request, self.products, org_dates=False)

    async def _sales_orders(self, request: Request) -> Response:
        return self._answer(request, self.sales_orders, org_dates=True)

    def _answer(self, request: Request, objects: Sequence[dict[str, object]], *, org_dates: bool) -> Response:
        number = len(self.calls) + 1
        query = dict(request.query_params)
        status, response = self._handle(request, query, number, objects, org_dates)
        self.calls.append(Call(at=time.monotonic(), path=request.url.path, query=query, status=status))
        return response

    def _handle(self, request: Request, query: Mapping[str, str], number: int,
                objects: Sequence[dict[str, object]], org_dates: bool) -> tuple[int, Response]:
        if not self.signature_ok(request):
            return 401, _json({"Message": "Authorization has been denied for this request."}, 401)
        if number in self.throttle_call_numbers:
            return 429, _json({"Message": "Rate limit exceeded."}, 429, {"Retry-After": "1"})
        try:
            page_number = int(query.get("pageNumber", "1"))
            page_size = min(int(query.get("pageSize", "20")), self.max_page_size)
        except ValueError:
            return 400, _json({"Message": "The request is invalid."}, 400)
        selected = list(objects)
        if org_dates:  # Tradevine reads these filters in the organisation's own zone
            low, high = _local(query.get("modifiedFrom")), _local(query.get("modifiedTo"))
            selected = [o for o in selected
                        if (low is None or self._org_time(o) >= low) and (high is None or self._org_time(o) <= high)]
        start = (page_number - 1) * page_size
        body = {"TotalCount": len(selected), "PageNumber": page_number, "PageSize": page_size,
                "List": selected[start:start + page_size]}
        return 200, _json(body, 200)

    def _org_time(self, obj: Mapping[str, object]) -> datetime:
        return datetime.fromisoformat(str(obj["ModifiedDate"])) + self.org_utc_offset

    # -- OAuth 1.0a ---------------------------------------------------------------------------------

    def signature_ok(self, request: Request) -> bool:
        """Verify HMAC-SHA1 over method, URL and parameters with oauthlib's server-side functions."""
        header = request.headers.get("authorization", "")
        if not header.startswith("OAuth "):
            return False
        # Header values arrive percent-encoded (RFC 5849 section 3.5.1).
        oauth = {k: utils.unescape(v) for k, v in utils.parse_authorization_header(header)}
        creds = self.credentials
        if (oauth.get("oauth_consumer_key") != creds.consumer_key
                or oauth.get("oauth_token") != creds.access_token
                or oauth.get("oauth_signature_method") != "HMAC-SHA1"
                or oauth.get("oauth_nonce") in self.nonces):
            return False
        uri = str(request.url)
        params = signature.collect_parameters(uri_query=request.url.query, headers={"Authorization": header},
                                              exclude_oauth_signature=True)
        oauth_request = OAuthRequest(uri, http_method=request.method, headers={"Authorization": header})
        oauth_request.params = params
        oauth_request.signature = oauth.get("oauth_signature", "")
        if not signature.verify_hmac_sha1(oauth_request, creds.consumer_secret, creds.access_token_secret):
            return False
        self.nonces.add(oauth["oauth_nonce"])
        return True

    # -- what the tests look at ---------------------------------------------------------------------

    def ok_calls(self) -> list[Call]:
        return [c for c in self.calls if c.status == 200]


def _json(body: object, status: int, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers=dict(headers or {}))


def _local(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@contextmanager
def serving(fake: FakeTradevine, host: str = "127.0.0.1") -> Iterator[FakeTradevine]:
    """Serve `fake` on a free port of `host` for the duration of the block; sets `fake.base_url`.

    `host`: an address the client reaches, e.g. a Docker network's gateway for a container.
    """
    sock = socket.socket()
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(fake.app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake Tradevine API did not start")
        time.sleep(0.02)
    fake.base_url = f"http://{host}:{port}"
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


# -- object factories ---------------------------------------------------------------------------------


def product(product_id: int, modified: str, *, stock: float = 10.0, code: str | None = None) -> dict[str, object]:
    return {"ProductID": product_id, "OrganisationID": ORG_ID, "Code": code or f"SKU-{product_id % 10000}",
            "Name": f"Product {product_id % 10000}", "QuantityInStock": stock,
            "QuantityAvailableToSell": stock, "QuantityAvailableToShip": stock, "IsArchived": False,
            "CreatedDate": "2025-01-01T00:00:00", "ModifiedDate": modified,
            "PerWarehouseInventory": [{"WarehouseID": 3479979772661223344, "WarehouseCode": "WH1",
                                       "QuantityInStockSnapshot": stock,
                                       "QuantityAvailableToSell": stock,
                                       "QuantityAvailableToShip": stock}]}


def sales_order(order_id: int, modified: str, *, status: int = 12002) -> dict[str, object]:
    return {"SalesOrderID": order_id, "OrganisationID": ORG_ID, "OrderNumber": f"SO{order_id % 10000}",
            "Status": status, "CreatedDate": "2025-01-01T00:00:00", "ModifiedDate": modified,
            "CompletedDate": None, "SalesOrderLines": [], "PackLists": []}
