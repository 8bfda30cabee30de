"""The public edge against a real gateway process and a real broker: deadlines, caps, hostile payloads.

Each test starts a gateway of its own (settings scaled down: a 1 s request deadline, a handful of
connections) on a free port. Raw sockets play the slow, idle and vanishing clients.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import httpx
import orjson
import pytest
from aio_pika.abc import AbstractQueue

from gateway import sample, wire
from tests.conftest import sign
from tests.integration.brokers import ScratchBroker
from tests.integration.processes import GatewayProcess, delete_gateway_topology

pytestmark = pytest.mark.integration

DEADLINE = 1.0  # GATEWAY_REQUEST_TIMEOUT_SECONDS in these tests
SLACK = 1.0  # a busy shared machine: what "within the deadline" may take beyond it


@pytest.fixture
def exchange(amqp_url: str) -> Iterator[str]:
    name = f"test.edge.{uuid.uuid4().hex[:12]}"
    yield name
    asyncio.run(delete_gateway_topology(amqp_url, name))


@contextlib.contextmanager
def gateway(amqp_url: str, exchange: str, tmp_path: Path, **env: str) -> Iterator[GatewayProcess]:
    settings = {"GATEWAY_REQUEST_TIMEOUT_SECONDS": str(DEADLINE), **env}
    with GatewayProcess(amqp_url, exchange, extra_env=settings, log_path=tmp_path / "gateway.log") as process:
        yield process


@pytest.fixture
async def everything(amqp_url: str, exchange: str) -> AsyncIterator[AbstractQueue]:
    """An exclusive queue bound to `#` on the test's exchange (declared before the gateway starts)."""
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True,
                                       arguments={"alternate-exchange": wire.unrouted_name(exchange)})
        queue = await channel.declare_queue("", exclusive=True)
        await queue.bind(exchange, "#")
        yield queue


def outcomes(process: GatewayProcess) -> dict[str, float]:
    text = httpx.get(process.base + "/metrics", timeout=5).text
    return {m[1]: float(m[2]) for m in re.finditer(r'^tradevine_gateway_requests_total\{outcome="(\w+)"\} (\S+)$',
                                                   text, re.M)}


def wait_for(condition: object, timeout: float = 10.0) -> None:
    GatewayProcess.wait_until(condition, timeout)


def connect(process: GatewayProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", process.port), timeout=10)
    sock.settimeout(10)
    return sock


def head(body_length: int, *, signature: str = "0" * 64, extra: str = "") -> bytes:
    return (f"POST /webhooks/tradevine HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            f"Content-Length: {body_length}\r\nX-Tradevine-Hmac-SHA256: {signature}\r\n{extra}\r\n").encode()


def signed_request(body: bytes, extra: str = "") -> bytes:
    return head(len(body), signature=sign(body), extra=extra) + body


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the gateway sends until it closes the connection."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer (Content-Length framed) from a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed mid-answer"
        rest += chunk
    return int(lines[0].split()[1]), headers, rest[:length]


def post_signed(url: str, body: bytes) -> httpx.Response:
    return httpx.post(url, content=body, headers={"X-Tradevine-Hmac-SHA256": sign(body)}, timeout=10)


def unique_body(key: str = "product.created", **fields: object) -> bytes:
    payload = sample.body_for(key)
    payload.pop("AccessToken", None)  # published byte for byte then
    payload["EventObjectId"] = int(time.time_ns() % 10**18)
    payload.update(fields)
    return sample.encode(payload)


def test_a_slow_body_is_answered_408_within_the_deadline_and_closed(
        amqp_url: str, exchange: str, tmp_path: Path) -> None:
    with gateway(amqp_url, exchange, tmp_path) as process:
        before = outcomes(process).get("request_timeout", 0)
        with connect(process) as sock:
            started = time.monotonic()
            sock.sendall(head(100_000) + b'{"EventTyp')  # 10 bytes of a 100,000-byte body, then nothing
            answer = read_until_closed(sock)
            took = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert answer.endswith(b'{"error":"request_timeout"}')
        assert b"connection: close" in answer.lower()
        assert DEADLINE - 0.1 <= took <= DEADLINE + SLACK, took
        wait_for(lambda: outcomes(process).get("request_timeout", 0) == before + 1)
        assert outcomes(process).get("invalid_signature", 0) == 0


def test_an_idle_and_a_half_header_connection_are_closed_within_the_deadline(
        amqp_url: str, exchange: str, tmp_path: Path) -> None:
    with gateway(amqp_url, exchange, tmp_path) as process:
        with connect(process) as idle, connect(process) as half, connect(process) as trickle:
            started = time.monotonic()
            half.sendall(b"POST /webhooks/tradevine HTTP/1.1\r\nHost: gateway\r\nContent-Le")
            trickle.sendall(b"\r\n")  # blank lines begin no request; they must not hold it open either
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                idle_done, half_done, trickle_done = (
                    pool.submit(lambda s=s: (read_until_closed(s), time.monotonic() - started))  # type: ignore[misc]
                    for s in (idle, half, trickle))
                idle_answer, idle_took = idle_done.result()
                half_answer, half_took = half_done.result()
                trickle_answer, trickle_took = trickle_done.result()
        assert (idle_answer, trickle_answer) == (b"", b"")  # nothing asked, nothing answered: closed
        assert half_answer.startswith(b"HTTP/1.1 408 "), half_answer
        for took in (idle_took, half_took, trickle_took):
            assert DEADLINE - 0.1 <= took <= DEADLINE + SLACK, took


def test_keep_alive_between_requests_follows_its_own_setting(
        amqp_url: str, exchange: str, tmp_path: Path, everything: AbstractQueue) -> None:
    keepalive = 2.5
    with gateway(amqp_url, exchange, tmp_path, GATEWAY_KEEPALIVE_SECONDS=str(keepalive)) as process:
        with connect(process) as sock:
            sock.sendall(signed_request(unique_body()))
            status, _, _ = read_answer(sock)
            answered = time.monotonic()
            assert status == 200
            time.sleep(DEADLINE + 0.3)  # past the request deadline: an idle keep-alive connection stays
            sock.sendall(signed_request(unique_body()))
            status, _, _ = read_answer(sock)
            answered = time.monotonic()
            assert status == 200
            assert read_until_closed(sock) == b""
            idle = time.monotonic() - answered
        assert keepalive - 0.1 <= idle <= keepalive + SLACK, idle


def test_the_connection_cap_answers_503_then_refuses_and_holds_the_descriptors(
        amqp_url: str, exchange: str, tmp_path: Path, everything: AbstractQueue) -> None:
    cap, overflow = 4, 8  # GatewaySettings.connection_overflow: max(8, cap // 10)
    with gateway(amqp_url, exchange, tmp_path, GATEWAY_MAX_CONNECTIONS=str(cap),
                 GATEWAY_REQUEST_TIMEOUT_SECONDS="20") as process:
        assert process.process is not None
        descriptors = Path(f"/proc/{process.process.pid}/fd")

        def open_files() -> int:
            return len(list(descriptors.iterdir()))

        # The readiness probe's socket may still be closing: the fewest seen over half a second.
        samples = []
        until = time.monotonic() + 0.5
        while time.monotonic() < until:
            samples.append(open_files())
            time.sleep(0.02)
        baseline = min(samples)
        held = [connect(process) for _ in range(cap)]
        try:
            wait_for(lambda: open_files() >= baseline + cap)
            with connect(process) as over:
                over.sendall(signed_request(unique_body()))
                status, headers, body = read_answer(over)
                assert (status, orjson.loads(body)) == (503, {"error": "overloaded"})
                assert headers["retry-after"] == "5" and headers["connection"] == "close"
                assert read_until_closed(over) == b""
            # A flood: every connection past cap + overflow is closed at once, none is kept.
            flood = [connect(process) for _ in range(200)]
            try:
                closed = 0
                for sock in flood:
                    sock.settimeout(0.5)
                    with contextlib.suppress(TimeoutError):
                        closed += read_until_closed(sock) == b""
                assert closed >= 200 - overflow
                assert open_files() <= baseline + cap + overflow + 2
            finally:
                for sock in flood:
                    sock.close()
            # The held connections still work, and once they go, new ones are served.
            held[0].sendall(signed_request(unique_body()))
            assert read_answer(held[0])[0] == 200
        finally:
            for sock in held:
                sock.close()
        wait_for(lambda: open_files() <= baseline + 2)
        assert post_signed(process.url, unique_body()).status_code == 200
        assert outcomes(process)["overloaded"] == 1


def test_the_in_flight_cap_answers_503_at_once_while_the_broker_holds_confirms(
        unique: str, tmp_path: Path) -> None:
    limit = 2
    with ScratchBroker() as broker, gateway(broker.url, f"test.edge.{unique}", tmp_path,
                                            GATEWAY_MAX_IN_FLIGHT=str(limit),
                                            GATEWAY_PUBLISH_TIMEOUT_SECONDS="4") as process:
        assert post_signed(process.url, unique_body()).status_code == 200
        broker.block()  # a memory alarm: publishes are held, no confirm comes

        def post() -> tuple[int, dict[str, str], float]:
            started = time.monotonic()
            answer = post_signed(process.url, unique_body())
            return answer.status_code, dict(answer.headers), time.monotonic() - started

        def in_flight() -> float:
            text = httpx.get(process.base + "/metrics", timeout=5).text
            found = re.search(r"^tradevine_gateway_publishes_in_flight (\S+)$", text, re.M)
            return float(found[1]) if found else -1

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            held = [pool.submit(post) for _ in range(limit)]
            wait_for(lambda: in_flight() == limit)
            rejected = [pool.submit(post) for _ in range(6)]
            quick = [f.result() for f in rejected]
            slow = [f.result() for f in held]
        broker.unblock()
        for status, headers, took in quick:
            assert (status, headers["retry-after"]) == (503, "5")
            assert took < 1.0 + SLACK, took
        assert {status for status, _, _ in slow} == {503}  # no confirm within the publish timeout
        counts = outcomes(process)
        assert (counts["overloaded"], counts["broker_unavailable"]) == (6, limit)
        wait_for(lambda: post_signed(process.url, unique_body()).status_code == 200, 30)


async def test_a_300_kb_event_date_is_published_intact_with_the_header_cut(
        amqp_url: str, exchange: str, tmp_path: Path, everything: AbstractQueue) -> None:
    long_date = "2025-03-18T21:14:07.347" + "7" * 300_000
    poison = unique_body(EventDateUtc=long_date)
    normal = unique_body("sales_order.created")
    with gateway(amqp_url, exchange, tmp_path) as process:
        async with httpx.AsyncClient(timeout=10) as client:
            answers = await asyncio.gather(*(
                client.post(process.url, content=body, headers={"X-Tradevine-Hmac-SHA256": sign(body)})
                for body in (poison, normal, poison)))
            assert [a.status_code for a in answers] == [200, 200, 200]
            after = unique_body()
            assert (await client.post(process.url, content=after,
                                      headers={"X-Tradevine-Hmac-SHA256": sign(after)})).status_code == 200
        received = {}
        deadline = time.monotonic() + 10
        while len(received) < 3 and time.monotonic() < deadline:
            message = await everything.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.02)
                continue
            received.setdefault(message.message_id, message)
        log = process.log_text()
    assert set(received) == {hashlib.sha256(b).hexdigest() for b in (poison, normal, after)}
    cut = received[hashlib.sha256(poison).hexdigest()]
    assert cut.body == poison  # the body, and so the whole date, intact
    headers = dict(cut.headers)
    assert headers[wire.H_EVENT_DATE] == long_date[:wire.MAX_HEADER_VALUE_BYTES]
    assert headers[wire.H_TRUNCATED] == f"{wire.H_EVENT_DATE},{wire.H_EVENT_KEY}"
    assert len(str(headers[wire.H_EVENT_KEY]).encode()) <= 4 * wire.MAX_HEADER_VALUE_BYTES + 3
    assert wire.H_TRUNCATED not in dict(received[hashlib.sha256(normal).hexdigest()].headers)
    assert log.count('"broker_connected"') == 1, log  # the shared connection never dropped


def test_a_client_gone_mid_body_is_client_disconnected_not_a_bad_signature(
        amqp_url: str, exchange: str, tmp_path: Path) -> None:
    with gateway(amqp_url, exchange, tmp_path, GATEWAY_REQUEST_TIMEOUT_SECONDS="20") as process:
        body = unique_body()
        with connect(process) as sock:
            sock.sendall(head(len(body), signature=sign(body)) + body[:100])
            time.sleep(0.2)
        wait_for(lambda: outcomes(process).get("client_disconnected", 0) == 1)
        counts = outcomes(process)
        assert counts.get("invalid_signature", 0) == 0 and counts.get("request_timeout", 0) == 0


def test_the_custom_header_is_checked_before_the_body_is_read(
        amqp_url: str, exchange: str, tmp_path: Path) -> None:
    with gateway(amqp_url, exchange, tmp_path, GATEWAY_REQUEST_TIMEOUT_SECONDS="20",
                 TRADEVINE_CUSTOM_HEADER_NAME="X-Shared", TRADEVINE_CUSTOM_HEADER_VALUE="right") as process:
        with connect(process) as sock:
            started = time.monotonic()
            sock.sendall(head(50_000, extra="X-Shared: wrong\r\n"))  # no body at all
            status, _, answer = read_answer(sock)
            assert time.monotonic() - started < 5
        assert (status, orjson.loads(answer)) == (401, {"error": "invalid_custom_header"})
