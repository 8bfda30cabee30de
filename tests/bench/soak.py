"""Soak: a steady rate through the real gateway into both example consumers, with a broker restart midway.

    make soak                      # 10 minutes at 40 events/s
    SOAK_SECONDS=120 SOAK_RATE=20 make soak

Starts its own RabbitMQ node on free ports (never the shared broker), the gateway and
`tradevine-consumers run inventory` / `orders` as processes (SQLite stores in a temporary directory),
posts signed product.* and sales_order.* events at SOAK_RATE per second, restarts the broker's AMQP side
(stop_app, 5 s, start_app) at half time, then waits for the consumers to drain and prints one JSON line:
accepted, lost (answered 200 but in neither consumer's store), non2xx, p99_ms per minute (200s only),
and the resident memory of the gateway and each consumer after warm-up (the first minute, or a tenth of
a short run) and at the end, with the growth in percent.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway import sample  # noqa: E402
from tests.conftest import sign  # noqa: E402
from tests.integration.brokers import ScratchBroker  # noqa: E402
from tests.integration.consumer_helpers import ConsumerProcess  # noqa: E402
from tests.integration.processes import GatewayProcess  # noqa: E402

KEYS = ("product.created", "product.updated", "sales_order.created", "sales_order.status_changed")
SENDERS = 8


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def applied(database: Path) -> set[str]:
    if not database.exists():
        return set()
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        try:
            return {row[0] for row in db.execute("SELECT message_id FROM consumer_applied")}
        except sqlite3.OperationalError:
            return set()


class SteadyLoad:
    """SENDERS threads together posting `rate` unique signed bodies per second, on a fixed schedule."""

    def __init__(self, url: str, rate: float) -> None:
        self.url, self.rate = url, rate
        self.answers: list[tuple[float, float, int | None, str]] = []  # sent, latency s, status, message id
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(i,), daemon=True) for i in range(SENDERS)]
        self.started = 0.0

    def start(self) -> None:
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _send(self, index: int) -> None:
        interval = SENDERS / self.rate
        due = self.started + index / self.rate
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                due += interval
                with self._lock:
                    number = next(self._numbers)
                key = KEYS[number % len(KEYS)]
                body = sample.encode(sample.body_for(key, object_id=4_000_000_000_000_000_000 + number))
                sent = time.monotonic()
                try:
                    status: int | None = client.post(self.url, content=body, headers={
                        "X-Tradevine-Hmac-SHA256": sign(body), "Content-Type": "application/json"}).status_code
                except httpx.HTTPError:
                    status = None
                self.answers.append((sent, time.monotonic() - sent, status, hashlib.sha256(body).hexdigest()))


def p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1)


def main() -> int:
    seconds = float(os.environ.get("SOAK_SECONDS", "600"))
    rate = float(os.environ.get("SOAK_RATE", "40"))
    warmup = min(60.0, seconds / 10)
    work = Path(tempfile.mkdtemp(prefix="tv-soak-"))
    unique = f"soak-{os.getpid()}"
    exchange = f"soak.{unique}"
    with ScratchBroker() as broker:
        consumers = {}
        for name in ("inventory", "orders"):
            env = {"AMQP_URL": broker.url, "GATEWAY_EXCHANGE": exchange, "CONSUMER_QUEUE": f"{name}-{unique}",
                   "CONSUMER_DATABASE": str(work / f"{name}.sqlite3"), "CONSUMER_HTTP_PORT": "0"}
            consumers[name] = ConsumerProcess(name, env, work / f"{name}.log").start()
        try:
            with GatewayProcess(broker.url, exchange, log_path=work / "gateway.log") as gateway:
                assert gateway.process is not None
                pids = {"gateway": gateway.process.pid,
                        **{name: c.process.pid for name, c in consumers.items() if c.process is not None}}
                time.sleep(3)  # the consumers declare their queues
                load = SteadyLoad(gateway.url, rate)
                load.start()
                time.sleep(warmup)
                rss_start = {name: rss_kib(pid) for name, pid in pids.items()}
                time.sleep(max(0.0, seconds / 2 - warmup))
                broker.stop_app()
                time.sleep(5)
                broker.start_app()
                time.sleep(max(0.0, load.started + seconds - time.monotonic()))
                rss_end = {name: rss_kib(pid) for name, pid in pids.items()}
                load.stop()
            accepted = {a[3] for a in load.answers if a[2] == 200}
            deadline = time.monotonic() + 120
            stored: set[str] = set()
            while time.monotonic() < deadline:
                stored = applied(work / "inventory.sqlite3") | applied(work / "orders.sqlite3")
                if accepted <= stored:
                    break
                time.sleep(1)
        finally:
            for process in consumers.values():
                process.stop()
    minutes: dict[int, list[float]] = {}
    for sent, latency, status, _ in load.answers:
        if status == 200:
            minutes.setdefault(int((sent - load.started) // 60), []).append(latency)
    growth = {name: round(100 * (rss_end[name] - rss_start[name]) / rss_start[name], 1)
              for name in rss_start if rss_start[name]}
    print(json.dumps({
        "seconds": seconds, "rate": rate, "sent": len(load.answers), "accepted": len(accepted),
        "lost": len(accepted - stored), "non2xx": sum(1 for a in load.answers if a[2] != 200),
        "p99_ms": [p99(minutes[m]) for m in sorted(minutes)],
        "rss_start_kib": rss_start, "rss_end_kib": rss_end, "rss_growth_pct": growth}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
