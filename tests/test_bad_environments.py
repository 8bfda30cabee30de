"""Every settings and start-up error of every command: exit 2, one line naming the bad value and the fix,
no traceback. Each row runs the real command in a fresh interpreter."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

GATEWAY = [sys.executable, "-m", "gateway", "serve"]
CONSUMER = [sys.executable, "-m", "consumers", "run", "inventory"]
# The port a row needs taken is filled in by the `taken_port` fixture.
TAKEN = "{taken}"

CASES = [
    # (command, environment, what the one line must contain)
    (GATEWAY, {"GATEWAY_LOG_LEVEL": "verbose"}, ["GATEWAY_LOG_LEVEL='verbose'", "use one of debug"]),
    (GATEWAY, {"GATEWAY_PORT": "80a"}, ["GATEWAY_PORT='80a'", "try 8080"]),
    (GATEWAY, {"GATEWAY_PORT": TAKEN}, ["GATEWAY_PORT=" + TAKEN, "already in use", "e.g. GATEWAY_PORT="]),
    (GATEWAY, {"GATEWAY_PUBLISH_TIMEOUT_SECONDS": "9"}, ["GATEWAY_PUBLISH_TIMEOUT_SECONDS='9'", "try 3.0"]),
    (GATEWAY, {"GATEWAY_REQUEST_TIMEOUT_SECONDS": "5s"}, ["GATEWAY_REQUEST_TIMEOUT_SECONDS='5s'", "try 3.0"]),
    (GATEWAY, {"GATEWAY_MAX_CONNECTIONS": "1000000"},
     ["GATEWAY_MAX_CONNECTIONS=1000000 needs", "ulimit -n", "e.g. GATEWAY_MAX_CONNECTIONS="]),
    (GATEWAY, {"TRADEVINE_CONSUMER_SECRET": ""}, ["TRADEVINE_CONSUMER_SECRET is not set", "consumer secret"]),
    (CONSUMER, {"CONSUMER_LOG_LEVEL": "verbose"}, ["CONSUMER_LOG_LEVEL='verbose'", "use one of debug"]),
    (CONSUMER, {"CONSUMER_HTTP_PORT": TAKEN}, ["CONSUMER_HTTP_PORT=" + TAKEN, "already in use"]),
    (CONSUMER, {"CONSUMER_PREFETCH": "0"}, ["CONSUMER_PREFETCH='0'", "try 128"]),
    (CONSUMER, {"CONSUMER_HANDLER_TIMEOUT_SECONDS": "soon"}, ["CONSUMER_HANDLER_TIMEOUT_SECONDS='soon'", "try 60"]),
    (CONSUMER, {"CONSUMER_DATABASE": "/proc/no-such-dir/inventory.sqlite3", "CONSUMER_HTTP_PORT": "0"},
     ["CONSUMER_DATABASE='/proc/no-such-dir/inventory.sqlite3' cannot be opened", "writable directory"]),
    (CONSUMER, {"AMQP_URL": "amqp://guest:secret@127.0.0.1:1/"},
     ["cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:1/", "Connection refused", "check AMQP_URL"]),
    ([sys.executable, "-m", "consumers", "run", "invntory"], {}, ["'invntory'"]),
]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize(("command", "overrides", "expected"), CASES,
                         ids=[f"{c[2]}-{next(iter(o), 'unknown-name')}" for c, o, _ in CASES])
def test_a_bad_environment_is_one_line_with_the_value_and_the_fix_and_exit_2(
        command: list[str], overrides: dict[str, str], expected: list[str], taken_port: int) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "CONSUMER_", "TRADEVINE_"))}
    environ.update({"TRADEVINE_CONSUMER_SECRET": "test-secret", "GATEWAY_PORT": "0", "CONSUMER_HTTP_PORT": "0",
                    "AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"})
    environ.update({k: v.replace(TAKEN, str(taken_port)) for k, v in overrides.items()})
    done = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=60, check=False)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and ":secret@" not in done.stderr
    assert len(lines) == 1, lines
    for part in expected:
        assert part.replace(TAKEN, str(taken_port)) in lines[0], (part, lines[0])
