"""Property tests of the HTTP surface, in process (the app, its lifespan and a recording publisher).

Whatever arrives (bodies of any bytes, encoding, size, nesting or integer width; any signature or
custom header, repeated or not), the gateway answers with one of the contract's statuses, publishes
nothing it did not verify, publishes every verified body exactly once, under the SHA-256 of the raw
body, as a message that AMQP can carry, and without the AccessToken unless told to keep it.

The examples are derandomized: the same inputs on every run, so CI never fails by luck and a failure
reproduces at once. `GATEWAY_FUZZ_EXAMPLES=5000` searches further, `GATEWAY_FUZZ_RANDOM=1` draws new inputs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from gateway import wire
from gateway.message import INVALID, Outgoing, parse
from gateway.publisher import InMemoryPublisher, amqp_properties
from gateway.signature import dotnet_ascii
from tests.conftest import TEST_SECRET
from tests.gateway.test_webhook import Client, make

OTHER_SECRET = "rotated-secret-ü"
SECRETS = (TEST_SECRET.encode(), OTHER_SECRET.encode())
ENV = {"TRADEVINE_CONSUMER_SECRET": f"{TEST_SECRET},{OTHER_SECRET}"}
PATHS = ("/webhooks/tradevine", "/webhooks/tradevine/")
STATUSES = {200: "status", 401: "error", 413: "error", 503: "error"}  # status → key of the JSON answer

FUZZ = settings(
    max_examples=int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "100")),
    derandomize=not os.environ.get("GATEWAY_FUZZ_RANDOM"),
    database=None,  # nothing written to .hypothesis/: derandomized runs need no example database
    deadline=None,  # in-process HTTP on a shared CI machine: timing says nothing here
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


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
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=20)


@st.composite
def webhook_payloads(draw: st.DrawFn) -> dict[str, Any]:
    """Webhook-like objects: the fields the gateway reads, of any type, plus anything else."""
    payload: dict[str, Any] = draw(st.dictionaries(st.text(max_size=12), json_values, max_size=4))
    for name, values in (("OrganisationID", huge_integers), ("EventType", st.sampled_from([*wire.EVENT_TYPES, 1])),
                         ("EventObjectId", st.one_of(st.none(), huge_integers)),
                         ("EventDateUtc", st.one_of(st.text(max_size=30), st.just("0001-01-01T00:00:00"))),
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
