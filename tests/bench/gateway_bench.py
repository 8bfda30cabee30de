"""Load the gateway, check nothing was lost, and compare with raw confirmed publishing (`make bench`).

By default it starts its own gateway (`python -m gateway serve` on a free port, a unique exchange), binds
a queue to `#`, and then:

1. a load generator in its own process posts realistic, signed, unique bodies (the ten event types,
   product and sales-order sized) at a fixed concurrency for a fixed time, closed loop;
2. every message id answered 2xx must be in the bound queue (lost > 0 fails the run);
3. the limit: the same bodies published from one process with aio-pika, persistent, confirmed and
   mandatory, at the same concurrency, to a fresh exchange with a queue bound to `#`;
4. unless `--no-half-rate`, the gateway again at a fixed rate of half the closed-loop rate (open loop:
   latency counts from the scheduled send time, so a stall is not hidden).

`--rate N` replaces step 1 by a fixed rate of N events/s. `--url` loads an already running gateway
(its exchange from `--exchange`, its secret from TRADEVINE_CONSUMER_SECRET). `--traceparent`: every
request carries its own W3C traceparent. `--tracing`: the gateway it starts traces (OTEL_TRACES_EXPORTER
=otlp, batch span processor, OTLP/HTTP to a sink in this process that counts the spans and discards
them), and every request carries a traceparent. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway import sample, wire  # noqa: E402
from gateway.message import build  # noqa: E402

# Both the gateway and the limit publish into a durable quorum queue bound to `#`: the queue type every
# queue of the contract's topology has (a classic queue on 3.10 stalls confirms for ~100 ms now and then).
BOUND_QUEUE_ARGUMENTS = {"x-queue-type": "quorum"}
SENTINEL = 3999999999999999999  # replaced in each body by a unique 19-digit object id


# --- bodies -----------------------------------------------------------------------------------------

class Bodies:
    """Unique, realistic bodies: the ten event types in a seeded random mix, each with its own object id."""

    def __init__(self, seed: int, run: int) -> None:
        self.templates = [(key, sample.encode(sample.body_for(key, object_id=SENTINEL)))
                          for key in wire.EVENT_TYPES.values()]
        self.marker = str(SENTINEL).encode()
        self.random = random.Random(seed)
        self.prefix = f"3{run % 1_000_000:06d}"
        self.counter = 0

    def next(self) -> tuple[str, bytes]:
        key, template = self.templates[self.random.randrange(len(self.templates))]
        self.counter += 1
        return key, template.replace(self.marker, f"{self.prefix}{self.counter:012d}".encode())

    def sizes(self) -> dict[str, int]:
        return {key: len(body) for key, body in self.templates}


# --- the load generator (its own process) -----------------------------------------------------------

class _Connection(asyncio.Protocol):
    """A minimal keep-alive HTTP/1.1 client: one request at a time, Content-Length responses."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a uvloop transport is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end]).lower()
        length = 0
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            length = int(head[at + 17:head.find(b"\r\n", at + 2) if head.find(b"\r\n", at + 2) > 0 else None])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        body = bytes(self.buffer[end + 4:total])
        del self.buffer[:total]
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result((int(head[9:12]), body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    async def request(self, data: bytes, timeout: float) -> tuple[int, bytes]:
        """Send and wait; a timer (not a wait_for task per request) enforces the timeout."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        timer = loop.call_later(timeout, _expire, waiter)
        self.transport.write(data)
        try:
            return await waiter
        finally:
            timer.cancel()


def _expire(waiter: asyncio.Future[tuple[int, bytes]]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("no answer within the timeout"))


class LoadGenerator:
    def __init__(self, spec: dict[str, Any]) -> None:
        parts = urlsplit(spec["url"])
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path or "/"
        self.secret = spec["secret"].encode()
        self.bodies = Bodies(spec["seed"], spec["run"])
        self.concurrency = spec["concurrency"]
        self.timeout = spec["timeout"]
        self.accepted: list[str] = []
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.recording = False
        self.prelude = (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                        "Content-Type: application/json\r\nUser-Agent: tradevine-bench\r\n").encode()
        self.traceparent = bool(spec.get("traceparent"))

    def _request(self) -> bytes:
        _, body = self.bodies.next()
        signature = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        trace = b""
        if self.traceparent:  # a caller's trace per request: 16 random bytes of trace id, 8 of span id
            ids = os.urandom(24).hex()
            trace = b"traceparent: 00-%s-%s-01\r\n" % (ids[:32].encode(), ids[32:].encode())
        return b"%sContent-Length: %d\r\n%sX-Tradevine-Hmac-SHA256: %s\r\n\r\n%s" % (
            self.prelude, len(body), trace, signature.encode(), body)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_Connection, self.host, self.port)
        return protocol

    async def _send(self, connection: _Connection, started: float) -> _Connection:
        """One request; returns the connection to use next (a new one if this one broke)."""
        data = self._request()
        try:
            if connection.closed:
                connection = await self._connect()
            status, body = await connection.request(data, self.timeout)
        except (OSError, TimeoutError) as exc:
            if self.recording:
                self.errors[type(exc).__name__] += 1
            if connection.transport is not None:
                connection.transport.close()
            with contextlib.suppress(OSError):
                connection = await self._connect()
            return connection
        elapsed = time.perf_counter() - started
        if 200 <= status < 300:
            # {"status":"accepted","message_id":"<64 hex>"}: slicing is cheaper than parsing JSON here.
            self.accepted.append(body[-66:-2].decode())
            if self.recording:
                self.latencies.append(elapsed)
        elif self.recording:
            self.errors[str(status)] += 1
        return connection

    async def closed_loop(self, seconds: float) -> None:
        deadline = time.perf_counter() + seconds

        async def sender() -> None:
            connection = await self._connect()
            while time.perf_counter() < deadline:
                connection = await self._send(connection, time.perf_counter())
            if connection.transport is not None:
                connection.transport.close()

        await asyncio.gather(*(sender() for _ in range(self.concurrency)))

    async def fixed_rate(self, rate: float, seconds: float) -> None:
        """Open loop: request k is due at start + k/rate and its latency counts from then."""
        idle: asyncio.Queue[_Connection] = asyncio.Queue()
        for _ in range(self.concurrency):
            idle.put_nowait(await self._connect())
        start = time.perf_counter()
        total = int(rate * seconds)
        tasks: set[asyncio.Task[None]] = set()

        async def one(due: float) -> None:
            connection = await idle.get()
            idle.put_nowait(await self._send(connection, due))

        sent = 0
        while sent < total:
            due_now = min(total, int((time.perf_counter() - start) * rate) + 1)
            while sent < due_now:
                task = asyncio.create_task(one(start + sent / rate))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            # Sleep until the next request is due (no busy polling: the generator shares the CPUs).
            await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
        if tasks:
            await asyncio.gather(*tasks)
        while not idle.empty():
            connection = idle.get_nowait()
            if connection.transport is not None:
                connection.transport.close()

    async def run(self, spec: dict[str, Any]) -> dict[str, Any]:
        if spec["warmup"] > 0:  # at the load being measured: a closed-loop burst would leave a broker backlog
            if spec.get("rate"):
                await self.fixed_rate(spec["rate"], spec["warmup"])
            else:
                await self.closed_loop(spec["warmup"])
        self.recording = True
        started = time.perf_counter()
        if spec.get("rate"):
            await self.fixed_rate(spec["rate"], spec["duration"])
        else:
            await self.closed_loop(spec["duration"])
        elapsed = time.perf_counter() - started
        Path(spec["ids_path"]).write_text("\n".join(self.accepted))
        return {"elapsed_s": elapsed, "latencies_ms": summary(self.latencies),
                "ok": len(self.latencies), "errors": dict(self.errors), "accepted_total": len(self.accepted)}


def loadgen_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    _use_uvloop()
    result = asyncio.run(LoadGenerator(spec).run(spec))
    print(json.dumps(result))
    return 0


def summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1] * 1000, 2),
            "mean": round(statistics.fmean(ordered) * 1000, 2)}


def _use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --- the broker side: bound queue, verification, the limit ------------------------------------------

async def bind_queue(amqp_url: str, exchange: str, queue: str) -> None:
    import aio_pika

    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True, arguments=BOUND_QUEUE_ARGUMENTS)
        await declared.bind(exchange, "#")


async def collect(amqp_url: str, queue: str, expected: set[str], *, quiet: float = 3.0) -> set[str]:
    """Message ids in `queue` (consumed), until every expected id came or nothing came for `quiet` s."""
    import aio_pika

    seen: set[str] = set()
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=2000)
        declared = await channel.declare_queue(queue, passive=True)
        last = time.monotonic()
        async with declared.iterator(no_ack=True) as messages:
            while not expected <= seen:
                try:
                    message = await asyncio.wait_for(messages.__anext__(), max(0.1, quiet - (time.monotonic() - last)))
                except TimeoutError:
                    break
                if message.message_id:
                    seen.add(message.message_id)
                last = time.monotonic()
    return seen


async def delete(amqp_url: str, *, queues: tuple[str, ...] = (), exchanges: tuple[str, ...] = ()) -> None:
    import aio_pika

    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        for name in queues:
            await channel.queue_delete(name)
        for name in exchanges:
            await channel.exchange_delete(name)


async def limit(amqp_url: str, *, concurrency: int, seconds: float, channels: int, seed: int,
                warmup: float, rate: float | None = None) -> dict[str, Any]:
    """Raw aio-pika: the same bodies and properties as the gateway, persistent, confirmed, mandatory.

    With `rate`, open loop at that rate (at most `concurrency` in flight; latency from the due time).
    """
    import aio_pika

    from gateway.publisher import declare_topology

    exchange_name = f"bench.limit.{uuid.uuid4().hex[:8]}"
    queue_name = f"{exchange_name}.all"
    bodies = Bodies(seed, run=seed)
    latencies: list[float] = []
    confirmed = 0
    recording = False
    async with await aio_pika.connect(amqp_url) as connection:
        pool = [await connection.channel(publisher_confirms=True, on_return_raises=True)
                for _ in range(channels)]
        exchanges = [await declare_topology(pool[0], exchange_name)]
        exchanges += [await channel.get_exchange(exchange_name, ensure=False) for channel in pool[1:]]
        queue = await pool[0].declare_queue(queue_name, durable=True, arguments=BOUND_QUEUE_ARGUMENTS)
        await queue.bind(exchange_name, "#")
        # The gateway's headers for each event type, built once: the limit does no per-message parsing.
        headers = {key: dict(build(body, table=wire.EVENT_TYPES, received_at=_now()).headers)
                   for key, body in bodies.templates}

        async def one(exchange: Any, started: float) -> None:
            nonlocal confirmed
            key, body = bodies.next()
            message = aio_pika.Message(
                body=body, headers=dict(headers[key]), content_type=wire.CONTENT_TYPE,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=hashlib.sha256(body).hexdigest(), timestamp=_now(), type=key,
                app_id=wire.APP_ID_GATEWAY)
            await exchange.publish(message, key, mandatory=True)
            if recording:
                latencies.append(time.perf_counter() - started)
                confirmed += 1

        async def fixed_rate(per_second: float, duration: float) -> None:
            slots = asyncio.Semaphore(concurrency)
            start, total, sent = time.perf_counter(), int(per_second * duration), 0
            tasks: set[asyncio.Task[None]] = set()

            async def due(index: int, at: float) -> None:
                async with slots:
                    await one(exchanges[index % len(exchanges)], at)

            while sent < total:
                for index in range(sent, min(total, int((time.perf_counter() - start) * per_second) + 1)):
                    task = asyncio.create_task(due(index, start + index / per_second))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    sent = index + 1
                await asyncio.sleep(0.0005)
            await asyncio.gather(*tasks)

        async def publisher(index: int, deadline: float) -> None:
            exchange = exchanges[index % len(exchanges)]
            while time.perf_counter() < deadline:
                await one(exchange, time.perf_counter())

        if warmup > 0:
            deadline = time.perf_counter() + warmup
            await asyncio.gather(*(publisher(i, deadline) for i in range(concurrency)))
        recording = True
        started = time.perf_counter()
        if rate:
            await fixed_rate(rate, seconds)
        else:
            deadline = started + seconds
            await asyncio.gather(*(publisher(i, deadline) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
        await pool[0].queue_delete(queue_name)
        await pool[0].exchange_delete(exchange_name)
        await pool[0].exchange_delete(wire.unrouted_name(exchange_name))
        await pool[0].queue_delete(wire.unrouted_name(exchange_name))
    return {"events_per_s": round(confirmed / elapsed, 1), "latencies_ms": summary(latencies),
            "channels": channels}


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


# --- orchestration ----------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live descendants (Linux /proc), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    family, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in family:
                family.add(child)
                frontier.append(child)
    return sum(times.get(p, 0.0) for p in family)


def run_loadgen(spec: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    with tempfile.TemporaryDirectory(prefix="tv-bench-") as folder:
        spec = {**spec, "ids_path": str(Path(folder) / "ids.txt")}
        spec_path = Path(folder) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        done = subprocess.run([sys.executable, __file__, "--loadgen", str(spec_path)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"load generator failed ({done.returncode}):\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        text = Path(spec["ids_path"]).read_text()
        return result, (text.split("\n") if text else [])


class OtlpSink:
    """An OTLP/HTTP trace endpoint that counts what it receives and keeps nothing (for `--tracing`)."""

    def __init__(self) -> None:
        self.requests = 0
        self.spans = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sink.received(data)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def received(self, data: bytes) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        request = ExportTraceServiceRequest.FromString(data)
        self.requests += 1
        self.bytes += len(data)
        self.spans += sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)

    def __enter__(self) -> OtlpSink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def own_gateway(amqp_url: str, exchange: str, log: Path, sink: OtlpSink | None = None) -> Iterator[Any]:
    from tests.integration.processes import GatewayProcess

    env: dict[str, str] = {"OTEL_SDK_DISABLED": "true"}  # tracing off unless asked for, whatever the shell has
    if sink is not None:
        env = {"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL":
               "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_SERVICE_NAME": "tradevine-gateway-bench"}
    with GatewayProcess(amqp_url, exchange, extra_env=env, log_path=log) as gateway:
        yield gateway


def phase(name: str, args: argparse.Namespace, gateway_url: str, secret: str, rate: float | None,
          gateway_pid: int | None, seed: int) -> tuple[dict[str, Any], list[str]]:
    spec = {"url": gateway_url, "secret": secret, "concurrency": args.concurrency, "duration": args.duration,
            "warmup": args.warmup, "rate": rate, "seed": seed, "run": seed, "timeout": 10.0,
            "traceparent": args.traceparent or args.tracing}
    cpu_before = cpu_seconds(gateway_pid) if gateway_pid else 0.0
    result, ids = run_loadgen(spec)
    if gateway_pid:
        used = cpu_seconds(gateway_pid) - cpu_before
        result["gateway_cpu_percent"] = round(100 * used / (result["elapsed_s"] + args.warmup), 1)
        result["gateway_cpu_us_per_event"] = round(1e6 * used / max(1, result["accepted_total"]))
    result["events_per_s"] = round(result["ok"] / result["elapsed_s"], 1)
    lat = result["latencies_ms"]
    print(f"{name}: {result['events_per_s']} events/s accepted, p50 {lat['p50']} ms, p95 {lat['p95']} ms, "
          f"p99 {lat['p99']} ms, max {lat['max']} ms, errors {result['errors'] or 0}"
          + (f", gateway CPU {result['gateway_cpu_percent']}% ({result['gateway_cpu_us_per_event']} us/event)"
             if gateway_pid else ""), flush=True)
    return result, ids


def verify(amqp_url: str, queue: str, ids: list[str]) -> int:
    expected = set(ids)
    seen = asyncio.run(collect(amqp_url, queue, expected))
    lost = len(expected - seen)
    print(f"verified: {len(expected)} accepted ids, {len(expected & seen)} found in {queue}, lost {lost}",
          flush=True)
    return lost


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--loadgen"]:
        return loadgen_main(argv[1])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent senders (and limit publishers)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of measured load per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load first")
    parser.add_argument("--rate", type=float, help="fixed rate in events/s instead of the closed loop")
    parser.add_argument("--no-half-rate", action="store_true",
                        help="skip the fixed-rate phase at half the closed-loop rate")
    parser.add_argument("--no-limit", action="store_true", help="skip the raw aio-pika limit")
    parser.add_argument("--limit-channels", type=int, default=2, help="confirm channels for the limit")
    parser.add_argument("--url", help="an already running gateway's webhook URL (else one is started)")
    parser.add_argument("--exchange", default=os.environ.get("GATEWAY_EXCHANGE", wire.EXCHANGE),
                        help="with --url: the exchange that gateway publishes to")
    parser.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--seed", type=int, default=int(time.time()) % 1_000_000)
    parser.add_argument("--traceparent", action="store_true", help="every request carries a W3C traceparent")
    parser.add_argument("--tracing", action="store_true",
                        help="the gateway traces (OTLP/HTTP to a counting sink); implies --traceparent")
    args = parser.parse_args(argv)

    amqp_url = args.amqp_url
    print(f"tradevine-gateway bench: {os.cpu_count()} cores, concurrency {args.concurrency}, "
          f"{args.duration:g} s per phase (+{args.warmup:g} s warm-up); bodies "
          + ", ".join(f"{k} {v} B" for k, v in Bodies(0, 0).sizes().items() if k.endswith(("created",)))
          + f"; tracing {'on' if args.tracing else 'off'}"
          + (", requests carry a traceparent" if args.traceparent or args.tracing else ""), flush=True)
    queue = f"bench.{uuid.uuid4().hex[:8]}.all"
    results: dict[str, Any] = {}
    lost = 0
    sink: OtlpSink | None = None
    with contextlib.ExitStack() as stack:
        if args.url:
            url, exchange, pid = args.url, args.exchange, None
            secret = (os.environ.get("TRADEVINE_CONSUMER_SECRET") or "").split(",")[0].strip()
            if not secret:
                from tests.conftest import TEST_SECRET

                secret = TEST_SECRET
        else:
            from tests.conftest import TEST_SECRET

            exchange = f"bench.{uuid.uuid4().hex[:8]}"
            log = Path(tempfile.gettempdir()) / f"{exchange}.gateway.log"
            sink = stack.enter_context(OtlpSink()) if args.tracing else None
            gateway = stack.enter_context(own_gateway(amqp_url, exchange, log, sink))
            url, secret, pid = gateway.url, TEST_SECRET, gateway.process.pid
            print(f"gateway: {url} (exchange {exchange}, log {log})", flush=True)
            stack.callback(lambda: asyncio.run(delete(
                amqp_url, queues=(wire.unrouted_name(exchange),),
                exchanges=(exchange, wire.unrouted_name(exchange)))))
        asyncio.run(bind_queue(amqp_url, exchange, queue))
        stack.callback(lambda: asyncio.run(delete(amqp_url, queues=(queue,))))

        main_result, ids = phase("gateway" if not args.rate else f"gateway at {args.rate:g}/s",
                                 args, url, secret, args.rate, pid, args.seed)
        lost += verify(amqp_url, queue, ids)
        results["gateway"] = main_result

        if not args.no_limit:
            limit_result = asyncio.run(limit(amqp_url, concurrency=args.concurrency, seconds=args.duration,
                                             channels=args.limit_channels, seed=args.seed + 1,
                                             warmup=args.warmup))
            lat = limit_result["latencies_ms"]
            print(f"limit (aio-pika, one process, {args.limit_channels} channels): "
                  f"{limit_result['events_per_s']} events/s confirmed, p50 {lat['p50']} ms, p99 {lat['p99']} ms",
                  flush=True)
            results["limit"] = limit_result

        if not args.rate and not args.no_half_rate:
            half = round(main_result["events_per_s"] / 2, 1)
            half_result, half_ids = phase(f"gateway at half rate ({half}/s)", args, url, secret, half, pid,
                                          args.seed + 2)
            lost += verify(amqp_url, queue, half_ids)
            results["half_rate"] = half_result
            if not args.no_limit:
                # The broker's own latency at that rate: what the gateway's tail is to be compared with.
                broker_half = asyncio.run(limit(amqp_url, concurrency=args.concurrency, seconds=args.duration,
                                                channels=args.limit_channels, seed=args.seed + 3, warmup=0,
                                                rate=half))
                lat = broker_half["latencies_ms"]
                print(f"limit at half rate ({half}/s): {broker_half['events_per_s']} events/s confirmed, "
                      f"p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms", flush=True)
                results["limit_half_rate"] = broker_half

    gateway_rate = main_result["events_per_s"]
    limit_rate = results.get("limit", {}).get("events_per_s")
    final = {
        "events_per_s": gateway_rate,
        "p50_ms": main_result["latencies_ms"]["p50"],
        "p95_ms": main_result["latencies_ms"]["p95"],
        "p99_ms": main_result["latencies_ms"]["p99"],
        "errors": sum(main_result["errors"].values()),
        "lost": lost,
        "limit_events_per_s": limit_rate,
        "ratio_to_limit": round(gateway_rate / limit_rate, 3) if limit_rate else None,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
    }
    if "half_rate" in results:
        final.update({"half_rate_events_per_s": results["half_rate"]["events_per_s"],
                      "half_rate_p50_ms": results["half_rate"]["latencies_ms"]["p50"],
                      "half_rate_p99_ms": results["half_rate"]["latencies_ms"]["p99"]})
    if "limit_half_rate" in results:
        final["limit_half_rate_p99_ms"] = results["limit_half_rate"]["latencies_ms"]["p99"]
    final["tracing"] = bool(args.tracing)
    final["traceparent"] = bool(args.traceparent or args.tracing)
    if sink is not None:  # the gateway has stopped (its exit flushes the spans left)
        print(f"tracing: the sink received {sink.spans} spans in {sink.requests} OTLP requests "
              f"({sink.bytes} bytes)", flush=True)
        final["spans_exported"] = sink.spans
    if final["ratio_to_limit"] is not None:
        print(f"ratio gateway / limit: {final['ratio_to_limit']}", flush=True)
    if lost:
        print(f"FAILED: {lost} accepted messages are not in the queue", file=sys.stderr, flush=True)
    print(json.dumps(final), flush=True)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
