"""SIGTERM stops a running `tradevine-gateway reconcile` promptly and cleanly, also as PID 1.

As PID 1 in a container (how the CronJob runs it) a signal without a handler does nothing: the kernel
ignores it, and the kubelet kills the run with SIGKILL at the end of the grace period. Where the test
can (root, `unshare`), the reconciler runs as PID 1 of a PID namespace of its own, exactly that case.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aio_pika
import pytest

from gateway.publisher import declare_topology
from gateway.reconcile.cli import EXIT_TERMINATED
from tests.integration.brokers import ScratchBroker
from tests.integration.fake_tradevine import FakeTradevine, product, serving

pytestmark = pytest.mark.integration

EXCHANGE = "test.reconcile.sigterm"
PRODUCTS = 40  # one per page at two calls a second: a run of 20 s unless stopped


def can_be_pid1() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        return False
    return subprocess.run([unshare, "--pid", "--fork", "true"], capture_output=True, check=False).returncode == 0


def reconciler_command() -> list[str]:
    script = Path(sys.executable).with_name("tradevine-gateway")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not within {timeout}s")


def pid1_of(unshare: subprocess.Popen[str]) -> int:
    """The pid (seen from here) of the process `unshare --fork` started, PID 1 in its namespace."""
    children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children")
    wait_until(lambda: children.read_text().split() != [], 10, "unshare's child")
    return int(children.read_text().split()[0])


async def declare(url: str) -> None:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await declare_topology(channel, EXCHANGE)
        queue = await channel.declare_queue(f"{EXCHANGE}.all", durable=True)
        await queue.bind(EXCHANGE, "#")


async def queued(url: str) -> int:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{EXCHANGE}.all", passive=True)
        return queue.declaration_result.message_count or 0


@pytest.fixture(scope="module")
def broker() -> Iterator[ScratchBroker]:
    with ScratchBroker() as node:
        asyncio.run(declare(node.url))
        yield node


@pytest.fixture
def fake() -> Iterator[FakeTradevine]:
    api = FakeTradevine(products=[product(3451582911247568000 + n, "2025-03-18T21:00:00") for n in range(PRODUCTS)])
    with serving(api):
        yield api


@pytest.mark.parametrize("as_pid1", [True, False], ids=["as-pid-1", "as-child"])
def test_sigterm_stops_a_running_reconcile_with_its_connection_closed(
        broker: ScratchBroker, fake: FakeTradevine, as_pid1: bool, tmp_path: Path) -> None:
    if as_pid1 and not can_be_pid1():
        pytest.skip("running as PID 1 needs root and unshare --pid")
    before = asyncio.run(queued(broker.url))
    metrics = tmp_path / "reconciler.prom"
    env = {**os.environ, **fake.credentials.environ(fake.base_url), "AMQP_URL": broker.url,
           "GATEWAY_EXCHANGE": EXCHANGE, "TRADEVINE_API_CALLS_PER_MINUTE": "120",
           "TRADEVINE_API_PAGE_SIZE": "1"}
    command = [*reconciler_command(), "reconcile", "--lookback", "2h", "--until", "2025-03-18T22:00:00Z",
               "--only", "products", "--metrics-file", str(metrics)]
    if as_pid1:
        command = ["unshare", "--pid", "--fork", "--kill-child", *command]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        target = pid1_of(process) if as_pid1 else process.pid
        # Running: connected to the broker, a few pages fetched and published.
        wait_until(lambda: len(fake.ok_calls()) >= 3, 30, "three API pages")
        assert broker.ctl("list_connections", "-q", "name").strip() != ""

        os.kill(target, signal.SIGTERM)
        signalled = time.monotonic()
        out, err = process.communicate(timeout=10)
        stopped_after = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == EXIT_TERMINATED, (process.returncode, err)
    assert stopped_after < 5  # not the kubelet's SIGKILL after the grace period
    assert len(fake.ok_calls()) < PRODUCTS  # it stopped mid-run
    assert "reconcile failed: stopped by SIGTERM; the connections are closed" in err
    assert "result: FAILED: stopped by SIGTERM" in out
    # Every publish before the signal was confirmed and is in the queue; the summary says how many.
    published = asyncio.run(queued(broker.url)) - before
    assert 1 <= published < PRODUCTS
    products_line = next(line for line in out.splitlines() if line.startswith("  products "))
    assert int(products_line.split()[-1]) == published
    assert "tradevine_reconciler_success 0.0" in metrics.read_text()
    # The AMQP connection was closed by the client, not dropped with the process.
    wait_until(lambda: broker.ctl("list_connections", "-q", "name").strip() == "", 5, "no connection left")
    log = broker.log_text()
    if log is not None:
        assert "client unexpectedly closed TCP connection" not in log
        closing = [line for line in log.splitlines() if "closing AMQP connection" in line]
        assert any("tradevine-reconciler" in line for line in closing), closing
