"""Run `tradevine-gateway serve` as a real process on a free port, for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import aio_pika
import httpx

from gateway import wire
from tests.conftest import TEST_SECRET
from tests.integration.brokers import free_port


class GatewayProcess:
    """`python -m gateway serve` with the given settings; `url` is its webhook URL."""

    def __init__(self, amqp_url: str, exchange: str, *, extra_env: Mapping[str, str] | None = None,
                 wait_ready: bool = True, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/webhooks/tradevine"
        self.env = {**os.environ, "AMQP_URL": amqp_url, "GATEWAY_EXCHANGE": exchange,
                    "GATEWAY_PORT": str(self.port), "TRADEVINE_CONSUMER_SECRET": TEST_SECRET,
                    **(extra_env or {})}
        self.wait_ready = wait_ready
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> GatewayProcess:
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=self.env,
                                        stdout=log, stderr=log)
        self.wait_until(lambda: self.probe("/readyz" if self.wait_ready else "/healthz") == 200, 20)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def probe(self, path: str) -> int | None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"gateway exited with {self.process.returncode}")
        try:
            return httpx.get(self.base + path, timeout=2).status_code
        except httpx.HTTPError:
            return None

    @staticmethod
    def wait_until(condition: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():  # type: ignore[operator]
                return
            time.sleep(0.05)
        raise TimeoutError(f"condition not met within {timeout}s")

    def stop(self) -> int:
        """SIGTERM, then the exit code.

        uvicorn drains in-flight requests (and so their confirms), runs the lifespan shutdown, then
        re-raises the signal: a clean stop exits with -SIGTERM.
        """
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path else ""


def send(url: str, key: str) -> str:
    """`tradevine-gateway send-test-event` for `key` to `url`, signed with the tests' secret; its stdout."""
    done = subprocess.run([sys.executable, "-m", "gateway", "send-test-event", "--event", key, "--url", url,
                           "--secret", TEST_SECRET], capture_output=True, text=True, timeout=30,
                          cwd=Path(__file__).resolve().parents[2], check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def delete_gateway_topology(url: str, exchange: str) -> None:
    """Remove what a test's gateway declared for its exchange (the gateway declares it on demand)."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await channel.queue_delete(wire.unrouted_name(exchange))
        await channel.exchange_delete(exchange)
        await channel.exchange_delete(wire.unrouted_name(exchange))
