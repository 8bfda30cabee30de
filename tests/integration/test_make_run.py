"""`make run`'s script as a newcomer runs it: ready line, a second run on taken ports, Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def free_ports(count: int) -> list[int]:
    holders = [socket.socket() for _ in range(count)]
    try:
        for holder in holders:
            holder.bind(("127.0.0.1", 0))
        return [holder.getsockname()[1] for holder in holders]
    finally:
        for holder in holders:
            holder.close()


def environment(amqp_url: str, ports: list[int], state: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "CONSUMER_", "TRADEVINE_"))}
    environ.update({"AMQP_URL": amqp_url, "GATEWAY_PORT": str(ports[0]), "INVENTORY_HTTP_PORT": str(ports[1]),
                    "ORDERS_HTTP_PORT": str(ports[2]), "TRADEVINE_STATE_DIR": str(state)})
    return environ


def wait_for(path: Path, text: str, process: subprocess.Popen[bytes], seconds: float = 90) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        output = path.read_text(errors="replace")
        if text in output:
            return output
        assert process.poll() is None, f"run.sh exited early:\n{output}"
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} within {seconds}s:\n{path.read_text(errors='replace')}")


def test_ready_line_second_run_refused_and_ctrl_c_stops_everything(amqp_url: str, tmp_path: Path) -> None:
    ports = free_ports(3)
    environ = environment(amqp_url, ports, tmp_path / "state")
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(["bash", "deploy/local/run.sh"], cwd=ROOT, env=environ, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output = wait_for(log, "ready in", process)
        assert f"http://127.0.0.1:{ports[0]}/webhooks/tradevine" in output
        assert f"http://127.0.0.1:{ports[2]}/metrics" in output

        second = subprocess.run(["bash", "deploy/local/run.sh"], cwd=ROOT, env=environ, capture_output=True,
                                text=True, timeout=60, check=False)
        assert second.returncode == 2, second.stderr
        assert "Traceback" not in second.stderr
        lines = second.stderr.strip().splitlines()
        assert lines == [f"make run: GATEWAY_PORT={ports[0]}: 127.0.0.1:{ports[0]} is already in use; stop what "
                         f"listens there or choose another port, e.g. GATEWAY_PORT={ports[0] + 10}.",
                         f"make run: INVENTORY_HTTP_PORT={ports[1]}: 127.0.0.1:{ports[1]} is already in use; stop "
                         f"what listens there or choose another port, e.g. INVENTORY_HTTP_PORT={ports[1] + 10}.",
                         f"make run: ORDERS_HTTP_PORT={ports[2]}: 127.0.0.1:{ports[2]} is already in use; stop what "
                         f"listens there or choose another port, e.g. ORDERS_HTTP_PORT={ports[2] + 10}."]

        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        assert process.wait(timeout=60) is not None
        assert log.read_text(errors="replace").rstrip().endswith("stopped")
        left = subprocess.run(["pgrep", "-g", str(process.pid)], capture_output=True, text=True, check=False)
        assert left.stdout.strip() == "", f"still running in the group: {left.stdout}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
