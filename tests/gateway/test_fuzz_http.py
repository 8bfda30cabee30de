"""Property tests of the HTTP surface, in process (the app, its lifespan and a recording publisher).

Whatever arrives (bodies of any bytes, encoding, size, nesting or integer width; any signature or
custom header, repeated or not), the gateway answers with one of the contract's statuses, publishes
nothing it did not verify, publishes every verified body exactly once, under the SHA-256 of the raw
body, as a message that AMQP can carry, and without the AccessToken unless told to keep it.

The examples are derandomized: the same inputs on every run, so CI never fails by luck and a failure
reproduces at once. `make fuzz` (HYPOTHESIS_PROFILE=fuzz) runs 10,000 examples of each; `GATEWAY_FUZZ_EXAMPLES=N` sets
the count, `GATEWAY_FUZZ_RANDOM=1` draws new inputs.

The second half runs the app behind uvicorn with the gateway's own protocol (gateway.edge) on a real
socket: byte streams cut anywhere and sent in pieces, request deadlines, the connection cap, and the
in-flight cap, with header values of any length.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from gateway import wire
from gateway.amqp_properties import amqp_properties
from gateway.app import create_app
from gateway.edge import EdgeProtocol
from gateway.message import INVALID, Outgoing, parse
from gateway.metrics import GatewayMetrics
from gateway.publisher import InMemoryPublisher
from gateway.settings import GatewaySettings
from gateway.signature import dotnet_ascii
from tests.conftest import TEST_SECRET
from tests.gateway.test_webhook import Client, make

OTHER_SECRET = "rotated-secret-ü"
SECRETS = (TEST_SECRET.encode(), OTHER_SECRET.encode())
ENV = {"TRADEVINE_CONSUMER_SECRET": f"{TEST_SECRET},{OTHER_SECRET}"}
PATHS = ("/webhooks/tradevine", "/webhooks/tradevine/")
STATUSES = {200: "status", 401: "error", 413: "error", 503: "error"}  # status → key of the JSON answer

# The quick profile runs with the test suite; `make fuzz` selects "fuzz" (HYPOTHESIS_PROFILE=fuzz): 10,000
# examples of each property. GATEWAY_FUZZ_EXAMPLES overrides either count.
_COMMON: dict[str, Any] = dict(
    derandomize=not os.environ.get("GATEWAY_FUZZ_RANDOM"),
    database=None,  # nothing written to .hypothesis/: derandomized runs need no example database
    deadline=None,  # in-process HTTP on a shared CI machine: timing says nothing here
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("quick", max_examples=100, **_COMMON)
settings.register_profile("fuzz", max_examples=10_000, **_COMMON)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "quick")
FUZZ = settings(settings.get_profile(PROFILE),
                max_examples=int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", settings.get_profile(PROFILE).max_examples)))
# The real-server properties below send a request per example over TCP (and some wait for a deadline).
SOCKET_FUZZ = settings(FUZZ, max_examples=max(20, FUZZ.max_examples // 2))


class Gateway:
    """The app with its lifespan on an event loop of its own, driven from synchronous property tests."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        app, self.publisher = make({**ENV, **(env or {})})
        self.client = Client(app)
        self.runner = asyncio.Runner()

    def __enter__(self) -> Gateway:
        self.runner.__enter__()
        self.runner.run(self.client.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.run(self.client.__aexit__())
        self.runner.__exit__(None, None, None)

    def post(self, body: bytes, headers: list[tuple[bytes, bytes]], *, path: str = PATHS[0],
             streamed: bool = False) -> tuple[httpx.Response, list[Outgoing]]:
        """Answer and what this one request published."""
        before = len(self.publisher.messages)
        content = chunks(body) if streamed else body
        answer = self.runner.run(self.client.post(path, content=content, headers=headers))
        return answer, self.publisher.messages[before:]


async def chunks(body: bytes) -> AsyncIterator[bytes]:
    """The body in pieces, without a Content-Length (chunked on a real connection)."""
    for start in range(0, len(body), 700):
        yield body[start:start + 700]


# --- inputs ------------------------------------------------------------------------------------------

huge_integers = st.one_of(st.integers(), st.integers(min_value=2**53, max_value=10**60),
                          st.integers(max_value=-(2**63), min_value=-(10**60)))
scalars = st.one_of(st.none(), st.booleans(), huge_integers, st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=30))
# Header values near and far past wire.MAX_HEADER_VALUE_BYTES, ASCII or not (up to 4 bytes a character).
long_text = st.one_of(
    st.integers(min_value=100, max_value=140).map(lambda n: "7" * n),
    st.text(min_size=30, max_size=200),
    st.integers(min_value=1_000, max_value=40_000).map(lambda n: "2025-03-18T21:14:07." + "9" * n),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=20)


@st.composite
def webhook_payloads(draw: st.DrawFn) -> dict[str, Any]:
    """Webhook-like objects: the fields the gateway reads, of any type, plus anything else."""
    payload: dict[str, Any] = draw(st.dictionaries(st.text(max_size=12), json_values, max_size=4))
    for name, values in (("OrganisationID", st.one_of(huge_integers, long_text)),
                         ("EventType", st.sampled_from([*wire.EVENT_TYPES, 1])),
                         ("EventObjectId", st.one_of(st.none(), huge_integers, long_text)),
                         ("EventDateUtc", st.one_of(st.text(max_size=30), st.just("0001-01-01T00:00:00"), long_text)),
                         ("Product", json_values), ("SalesOrder", json_values)):
        if draw(st.booleans()):
            payload[name] = draw(st.one_of(values, json_values))
    if draw(st.booleans()):
        payload["AccessToken"] = "token-" + draw(st.uuids()).hex  # a value found nowhere else
    return payload


def nested(depth: int) -> bytes:
    return b'{"AccessToken":"token-deep","EventType":95001,"Product":' + b"[" * depth + b"]" * depth + b"}"


encodings = st.sampled_from(["utf-8", "utf-16", "utf-8-sig", "latin-1", "cp1252"])


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["object", "object", "object", "encoded", "json", "bytes", "deep"]))
    if kind == "object":
        payload = draw(webhook_payloads())
        if draw(st.booleans()):
            return json.dumps(payload, ensure_ascii=draw(st.booleans())).encode()
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    if kind == "encoded":
        text = json.dumps(draw(webhook_payloads()), ensure_ascii=False)
        return text.encode(draw(encodings), errors="replace")
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "deep":
        return nested(draw(st.integers(min_value=1, max_value=5000)))
    return draw(st.binary(max_size=600))


def sign(body: bytes, secret: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


header_bytes = st.binary(max_size=80).map(lambda b: bytes(c for c in b if c not in b"\r\n\x00"))


@st.composite
def signatures(draw: st.DrawFn, body: bytes) -> list[bytes]:
    """Zero, one or several signature header values: right, right in another form, nearly right, junk."""
    def one() -> bytes:
        kind = draw(st.sampled_from(["right", "ascii", "upper", "padded", "flipped", "other", "junk", "empty"]))
        secret = draw(st.sampled_from(SECRETS))
        good = sign(body, secret)
        if kind == "ascii":
            return sign(dotnet_ascii(body), secret).encode()
        if kind == "upper":
            return good.upper().encode()
        if kind == "padded":
            return f"  {good}\t".encode()
        if kind == "flipped":
            at = draw(st.integers(min_value=0, max_value=63))
            return (good[:at] + ("0" if good[at] != "0" else "1") + good[at + 1:]).encode()
        if kind == "other":
            return sign(body, b"not-our-secret").encode()
        if kind == "junk":
            return draw(header_bytes)
        return good.encode() if kind == "right" else b""

    return [one() for _ in range(draw(st.integers(min_value=0, max_value=3)))]


# --- the reference checks ----------------------------------------------------------------------------

def verifies(body: bytes, offered: bytes) -> bool:
    """The contract's rule, written independently of gateway.signature."""
    text = offered.decode("latin-1").strip().lower()
    return any(sign(candidate, secret) == text for secret in SECRETS for candidate in (body, dotnet_ascii(body)))


def check_answer(answer: httpx.Response) -> None:
    assert answer.status_code in STATUSES, (answer.status_code, answer.text)
    assert answer.headers["content-type"] == "application/json"
    assert STATUSES[answer.status_code] in orjson.loads(answer.content)
    if answer.status_code == 503:
        assert answer.headers["retry-after"] == "5"


def check_published(body: bytes, answer: httpx.Response, published: list[Outgoing], *, keep: bool = False) -> None:
    """A 200 means exactly this body was published once, under its SHA-256, in a form AMQP can carry."""
    digest = hashlib.sha256(body).hexdigest()
    assert answer.json() == {"status": "accepted", "message_id": digest}
    assert len(published) == 1
    message = published[0]
    assert message.message_id == digest
    assert all(isinstance(v, str) for v in message.headers.values())
    check_bounded(body, message)
    properties = amqp_properties(message)
    ContentHeader(0, len(message.body), properties).marshal()  # raises if AMQP cannot carry it
    assert properties.marshal() == Basic.Properties.marshal(properties)  # the fast path writes pamqp's bytes
    payload = parse(body)
    if not isinstance(payload, dict):
        assert (message.routing_key, message.body) == ("invalid", body)
        return
    if keep or "AccessToken" not in payload:
        assert message.body == body
        return
    token = payload["AccessToken"]
    if isinstance(token, str) and token.startswith("token-"):
        assert token.encode() not in message.body
    republished = parse(message.body)
    assert republished is not INVALID
    assert republished == {k: v for k, v in payload.items() if k != "AccessToken"}


def check_bounded(body: bytes, message: Outgoing) -> None:
    """Each header value from the payload fits the bound; exactly the cut ones are named in tradevine-truncated."""
    limit = wire.MAX_HEADER_VALUE_BYTES
    payload = parse(body)
    named = message.headers.get(wire.H_TRUNCATED)
    if not isinstance(payload, dict):
        assert named is None
        return
    full = {wire.H_ORGANISATION_ID: wire.id_text(payload.get("OrganisationID")),
            wire.H_EVENT_TYPE: wire.scalar_text(payload.get("EventType")),
            wire.H_OBJECT_ID: wire.id_text(payload.get("EventObjectId")),
            wire.H_EVENT_DATE: wire.scalar_text(payload.get("EventDateUtc"))}
    cut = []
    for name, value in full.items():
        if value is None:
            assert name not in message.headers
            continue
        sent = message.headers[name]
        assert len(sent.encode()) <= limit
        if sent != value:
            cut.append(name)
            assert len(value.encode("utf-8", "surrogatepass")) > limit or not _encodable(value)
            assert value.startswith(sent) or not _encodable(value)
        else:
            assert len(value.encode()) <= limit
    assert named == (",".join([*cut, wire.H_EVENT_KEY]) if cut else None)
    assert len(message.headers[wire.H_EVENT_KEY].encode()) <= 4 * limit + 3


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


# --- the properties ----------------------------------------------------------------------------------

def test_only_verified_bodies_are_published_each_exactly_once() -> None:
    with Gateway() as gateway:
        @FUZZ
        @given(data=st.data(), body=bodies(), path=st.sampled_from(PATHS), streamed=st.booleans(),
               content_type=st.sampled_from([b"application/json", b"text/plain; charset=utf-16", b"", b"*/*"]))
        def check(data: st.DataObject, body: bytes, path: str, streamed: bool, content_type: bytes) -> None:
            offered = data.draw(signatures(body))
            headers = [(b"content-type", content_type)] + [(b"x-tradevine-hmac-sha256", s) for s in offered]
            answer, published = gateway.post(body, headers, path=path, streamed=streamed)

            check_answer(answer)
            good = [verifies(body, s) for s in offered]
            if len(offered) == 1:
                assert (answer.status_code == 200) == good[0]
            if answer.status_code == 200:
                assert any(good)
                check_published(body, answer, published)
            else:
                assert answer.status_code == 401 and not (good and all(good))
                assert answer.json() == {"error": "invalid_signature"}
                assert published == []

        check()


def test_the_size_cap_holds_for_declared_and_streamed_bodies() -> None:
    with Gateway({"GATEWAY_MAX_BODY_BYTES": "1024"}) as gateway:
        @FUZZ
        @given(body=st.one_of(st.binary(min_size=900, max_size=1200), bodies()), streamed=st.booleans(),
               signed=st.booleans())
        def check(body: bytes, streamed: bool, signed: bool) -> None:
            signature = sign(body, SECRETS[0]).encode() if signed else b"0" * 64
            answer, published = gateway.post(body, [(b"x-tradevine-hmac-sha256", signature)], streamed=streamed)

            check_answer(answer)
            if len(body) > 1024:
                assert (answer.status_code, answer.json(), published) == (413, {"error": "body_too_large"}, [])
            elif signed:
                check_published(body, answer, published)
            else:
                assert (answer.status_code, published) == (401, [])

        check()


def test_the_custom_header_must_match_exactly_before_the_signature_counts() -> None:
    expected = b"k-123 \xc3\xa9"  # the value as configured, UTF-8 on the wire
    env = {"TRADEVINE_CUSTOM_HEADER_NAME": "X-Api-Key", "TRADEVINE_CUSTOM_HEADER_VALUE": expected.decode()}
    with Gateway(env) as gateway:
        @FUZZ
        @given(body=bodies(), values=st.lists(st.one_of(st.just(expected), st.just(b" " + expected), header_bytes),
                                               max_size=2),
               name=st.sampled_from([b"x-api-key", b"x-api-key2"]), signed=st.booleans())
        def check(body: bytes, values: list[bytes], name: bytes, signed: bool) -> None:
            signature = sign(body, SECRETS[1]).encode() if signed else b"bad"
            headers = [(b"x-tradevine-hmac-sha256", signature)] + [(name, v) for v in values]
            answer, published = gateway.post(body, headers)

            check_answer(answer)
            offered = values[-1] if values and name == b"x-api-key" else None
            if offered is None or offered.strip() != expected:
                assert (answer.status_code, answer.json(), published) == (401, {"error": "invalid_custom_header"}, [])
            elif not signed:
                assert (answer.status_code, answer.json(), published) == (401, {"error": "invalid_signature"}, [])
            else:
                check_published(body, answer, published)

        check()


def test_keep_access_token_publishes_every_verified_body_byte_for_byte() -> None:
    with Gateway({"GATEWAY_KEEP_ACCESS_TOKEN": "true"}) as gateway:
        @FUZZ
        @given(body=bodies())
        def check(body: bytes) -> None:
            answer, published = gateway.post(body, [(b"x-tradevine-hmac-sha256", sign(body, SECRETS[0]).encode())])

            check_published(body, answer, published, keep=True)
            assert published[0].body == body

        check()


def test_a_failing_broker_gets_503_for_every_verified_body_and_nothing_is_recorded() -> None:
    with Gateway() as gateway:
        assert isinstance(gateway.publisher, InMemoryPublisher)
        gateway.publisher.fail = "no confirm within 3.0s"

        @FUZZ
        @given(body=bodies())
        def check(body: bytes) -> None:
            answer, published = gateway.post(body, [(b"x-tradevine-hmac-sha256", sign(body, SECRETS[0]).encode())])

            check_answer(answer)
            assert (answer.status_code, answer.json(), published) == (503, {"error": "broker_unavailable"}, [])

        check()


def test_publishes_in_flight_never_pass_the_cap() -> None:
    """n signed requests at once against a broker that holds every confirm: at most the cap wait for one,
    every other is answered 503 overloaded at once; released, the held ones are accepted."""

    class Holding(InMemoryPublisher):
        def __init__(self) -> None:
            super().__init__()
            self.release = asyncio.Event()
            self.waiting = 0

        async def publish(self, message: Outgoing) -> None:
            self.waiting += 1
            try:
                await self.release.wait()
            finally:
                self.waiting -= 1
            await super().publish(message)

    @FUZZ
    @given(cap=st.integers(min_value=1, max_value=6), n=st.integers(min_value=0, max_value=12), body=bodies())
    def check(cap: int, n: int, body: bytes) -> None:
        settings_ = GatewaySettings.from_environ({**ENV, "GATEWAY_MAX_IN_FLIGHT": str(cap)})
        publisher = Holding()
        app = create_app(settings_, publisher, metrics=GatewayMetrics())
        signature = sign(body, SECRETS[0]).encode()

        async def run() -> list[httpx.Response]:
            async with Client(app) as client:
                posts = [asyncio.create_task(client.post(PATHS[0], content=body,
                                                         headers=[(b"x-tradevine-hmac-sha256", signature)]))
                         for _ in range(n)]
                while publisher.waiting + sum(p.done() for p in posts) < n:
                    assert publisher.waiting <= cap
                    await asyncio.sleep(0)
                assert publisher.waiting == min(n, cap)
                publisher.release.set()
                return list(await asyncio.gather(*posts))

        answers = asyncio.run(run())
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200] * min(n, cap) + [503] * max(0, n - cap)
        for answer in answers:
            check_answer(answer)
            if answer.status_code == 503:
                assert answer.json() == {"error": "overloaded"}
        assert len(publisher.messages) == min(n, cap)

    check()


# --- behind uvicorn with gateway.edge, on a real socket ---------------------------------------------------

DEADLINE = 0.3  # GATEWAY_REQUEST_TIMEOUT_SECONDS of the served app
SLACK = 2.0  # a shared machine: how much later than the deadline a close may come


class Served:
    """The app behind uvicorn with EdgeProtocol on 127.0.0.1:<free port>, in this thread's own event loop."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.app, self.publisher = make({**ENV, **env})
        self.runner = asyncio.Runner()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(self.app, http=EdgeProtocol, lifespan="on", log_config=None, access_log=False,
                                timeout_keep_alive=5, log_level="critical")
        config.load()
        self.server = uvicorn.Server(config)
        self.server.lifespan = config.lifespan_class(config)

    def __enter__(self) -> Served:
        self.runner.__enter__()
        self.runner.run(self.server.startup(sockets=[self.sock]))
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.force_exit = True
        self.runner.run(self.server.shutdown(sockets=[self.sock]))
        self.runner.__exit__(None, None, None)

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(coroutine)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


async def answer_or_close(reader: asyncio.StreamReader, timeout: float,
                          until_closed: bool = False) -> tuple[int | None, bytes, bool]:
    """(status, body, closed): the first answer on the connection, and whether the gateway then closed it
    (announced with `Connection: close`; with `until_closed`, also waiting for a close after a keep-alive
    answer)."""
    data = b""
    try:
        async with asyncio.timeout(timeout):
            while b"\r\n\r\n" not in data:
                chunk = await reader.read(65536)
                if not chunk:
                    return None, data, True
                data += chunk
            top, _, rest = data.partition(b"\r\n\r\n")
            lines = top.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(headers.get("content-length", "0"))
            while len(rest) < length:
                chunk = await reader.read(65536)
                assert chunk, "closed mid-answer"
                rest += chunk
            closing = headers.get("connection") == "close"
            if closing or until_closed:
                assert await reader.read(1) == b""
                closing = True
            return int(lines[0].split()[1]), rest[:length], closing
    except ConnectionResetError:
        return None, data, True


@st.composite
def wire_requests(draw: st.DrawFn) -> tuple[bytes, bytes, bool]:
    """(body, the bytes of one request, framed with Content-Length or chunked), signed or not."""
    body = draw(bodies())
    signed = draw(st.booleans())
    signature = sign(body, SECRETS[0]) if signed else "0" * 64
    head = (f"POST {draw(st.sampled_from(PATHS))} HTTP/1.1\r\nHost: gateway\r\n"
            f"X-Tradevine-Hmac-SHA256: {signature}\r\n").encode()
    if draw(st.booleans()):
        return body, head + b"Content-Length: %d\r\n\r\n" % len(body) + body, signed
    pieces = [body[i:i + 500] for i in range(0, len(body), 500)]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return body, head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked, signed


def test_every_byte_stream_is_answered_or_cut_off_at_the_deadline() -> None:
    """A request sent whole, in any pieces, is answered as in-process; one cut anywhere is answered 408 (or,
    with nothing sent, closed) within the deadline; junk gets 400; nothing unverified is published."""
    with Served({"GATEWAY_REQUEST_TIMEOUT_SECONDS": str(DEADLINE), "GATEWAY_MAX_BODY_BYTES": "4096"}) as served:
        @SOCKET_FUZZ
        @given(request=wire_requests(), junk=st.one_of(st.none(), st.binary(min_size=1, max_size=200)),
               cut=st.sampled_from([None] * 9 + ["cut"]), data=st.data())
        def check(request: tuple[bytes, bytes, bool], junk: bytes | None, cut: str | None,
                  data: st.DataObject) -> None:
            body, raw, signed = request
            if junk is not None:
                raw = junk
            if cut:
                raw = raw[:data.draw(st.integers(min_value=0, max_value=len(raw) - 1))]
            splits = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(raw)), max_size=4)))
            pieces = [raw[a:b] for a, b in zip([0, *splits], [*splits, len(raw)], strict=True)]
            before = len(served.publisher.messages)

            async def exchange() -> tuple[int | None, bytes, bool, float]:
                reader, writer = await served.connect()
                started = time.monotonic()
                try:
                    for piece in pieces:
                        writer.write(piece)
                        await writer.drain()
                    status, answer, closed = await answer_or_close(reader, DEADLINE + SLACK + 3,
                                                                   until_closed=bool(cut))
                    return status, answer, closed, time.monotonic() - started
                finally:
                    writer.close()

            status, answer, closed, took = served.run(exchange())
            published = served.publisher.messages[before:]
            if junk is not None:
                # Junk that is not a request start is refused at once; junk that could begin one waits.
                assert status in (400, 408, 413, 401, None), (status, answer)
                if status in (408, None):
                    assert closed and took <= DEADLINE + SLACK
                return
            if not cut:
                assert status in (200, 401, 413), (status, answer)
                if status == 200:
                    assert signed and len(published) == 1 and published[0].message_id == hashlib.sha256(
                        body).hexdigest()
                else:
                    assert published == []
                return
            # Cut short: never published, answered 408 (413 comes first for a body declared too large,
            # then the connection is closed at the deadline); nothing at all sent → closed quietly.
            assert published == []
            assert closed and took <= DEADLINE + SLACK
            if raw.strip(b"\r\n"):
                assert status in (408, 413), (status, answer)
                if status == 408:
                    assert orjson.loads(answer) == {"error": "request_timeout"}
                    assert took >= DEADLINE * 0.9
            else:
                assert status is None

        check()


def test_connections_past_the_cap_get_503_then_are_refused() -> None:
    """n connections open at once: the first `cap` are served, the next `overflow` answered 503 overloaded
    with Retry-After and closed, any beyond closed at once; afterwards the gateway serves again."""
    cap = 3
    overflow = 8  # GatewaySettings.connection_overflow for a cap of 3
    with Served({"GATEWAY_MAX_CONNECTIONS": str(cap), "GATEWAY_REQUEST_TIMEOUT_SECONDS": "10"}) as served:
        @SOCKET_FUZZ
        @given(n=st.integers(min_value=0, max_value=cap + overflow + 4), body=bodies())
        def check(n: int, body: bytes) -> None:
            request = (b"POST /webhooks/tradevine HTTP/1.1\r\nHost: g\r\nX-Tradevine-Hmac-SHA256: %s\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (sign(body, SECRETS[0]).encode(), len(body), body))

            async def run() -> list[tuple[int | None, bytes, bool]]:
                opened = [await served.connect() for _ in range(n)]
                try:
                    while len(served.server.server_state.connections) < min(n, cap + overflow):
                        await asyncio.sleep(0.001)
                    for _, writer in opened:
                        with contextlib.suppress(ConnectionError):
                            writer.write(request)
                            await writer.drain()
                    return [await answer_or_close(reader, 10) for reader, _ in opened]
                finally:
                    for _, writer in opened:
                        writer.close()
                    while served.server.server_state.connections:
                        await asyncio.sleep(0.001)

            answers = served.run(run())
            served_ok = [a for a in answers if a[0] == 200]
            overloaded = [a for a in answers if a[0] == 503]
            refused = [a for a in answers if a[0] is None]
            assert len(served_ok) == min(n, cap)
            assert len(overloaded) == min(max(0, n - cap), overflow)
            assert len(refused) == max(0, n - cap - overflow)
            assert all(orjson.loads(a[1]) == {"error": "overloaded"} and a[2] for a in overloaded)

        check()
