"""A RabbitMQ node of the test's own, for tests that stop, restart or block the broker.

On a machine with Debian's `rabbitmq-server` it starts a second node on a free port (the shared broker
is never touched); elsewhere it runs a testcontainers container (`RABBITMQ_IMAGE`). Either way
`stop_app()`/`start_app()` restart the AMQP side of the node, which is what clients see of a broker
restart, and `block()`/`unblock()` raise a memory alarm so the broker stops confirming publishes.
`ScratchBroker(tls=...)` also opens a TLS listener (`tls_url`, amqps://) with the given certificate
(local nodes only); `ScratchBroker(prometheus=True)` enables the rabbitmq_prometheus plugin on a free
port (`prometheus_url`, local nodes only); `ctl(...)` runs any rabbitmqctl command against the node.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.integration.tls import ServerCertificate

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, *, timeout: float, up: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not come {'up' if up else 'down'} within {timeout}s")


class ScratchBroker:
    """A disposable RabbitMQ node; use as a context manager."""

    def __init__(self, *, tls: ServerCertificate | None = None, prometheus: bool = False) -> None:
        self.url = ""
        self.tls = tls
        self.prometheus = prometheus
        self.prometheus_url = ""
        self.tls_url = ""
        self.tls_port = 0
        self._node: str | None = None
        self._dir: Path | None = None
        self._container: Any = None
        self.port = 0

    def __enter__(self) -> ScratchBroker:
        if (RABBITMQ_BIN / "rabbitmq-server").exists() and os.geteuid() == 0:
            self._start_local()
        else:
            self._start_container()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # A local node runs as the rabbitmq user, sharing its Erlang cookie with rabbitmqctl.
    def _as_rabbitmq(self, command: str, *, timeout: float = 60) -> str:
        assert self._dir is not None
        env = (f"HOME=/var/lib/rabbitmq RABBITMQ_NODENAME={self._node} RABBITMQ_NODE_PORT={self.port} "
               f"RABBITMQ_DIST_PORT={self._dist_port} RABBITMQ_MNESIA_BASE={self._dir}/mnesia "
               f"RABBITMQ_LOG_BASE={self._dir}/log RABBITMQ_ENABLED_PLUGINS_FILE={self._dir}/enabled_plugins "
               f"RABBITMQ_CONFIG_FILE={self._dir}/rabbitmq.conf RABBITMQ_PID_FILE={self._dir}/pid")
        done = subprocess.run(["su", "rabbitmq", "-s", "/bin/sh", "-c", f"cd {self._dir} && env {env} {command}"],
                              capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{command!r} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout

    def ctl(self, *args: str) -> str:
        """Run `rabbitmqctl ARGS` against this node; its output."""
        if self._container is not None:
            return self._ctl(*args)
        return self._ctl(*(shlex.quote(a) for a in args))  # through a shell, as the rabbitmq user

    def _ctl(self, *args: str) -> str:
        if self._container is not None:
            code, output = self._container.exec(["rabbitmqctl", *args])
            if code != 0:
                raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {output!r}")
            return output.decode() if isinstance(output, bytes) else str(output)
        return self._as_rabbitmq(f"{RABBITMQ_BIN}/rabbitmqctl -n {self._node} {' '.join(args)}")

    def _start_local(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="tv-rabbit-"))
        self.port, self._dist_port = free_port(), free_port()
        self._node = f"tvtest-{uuid.uuid4().hex[:8]}@localhost"
        config = f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users.guest = false\n"
        if self.tls is not None:
            self.tls_port = free_port()
            files = {kind: self._dir / f"server-{kind}.pem" for kind in ("ca", "cert", "key")}
            for kind, path in files.items():  # the node runs as rabbitmq: it needs its own readable copies
                shutil.copyfile(getattr(self.tls, kind), path)
                shutil.chown(path, "rabbitmq", "rabbitmq")
            config += (f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
                       f"ssl_options.cacertfile = {files['ca']}\nssl_options.certfile = {files['cert']}\n"
                       f"ssl_options.keyfile = {files['key']}\n"
                       "ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n")
        if self.prometheus:
            self.prometheus_url = f"http://127.0.0.1:{free_port()}"
            config += f"prometheus.tcp.ip = 127.0.0.1\nprometheus.tcp.port = {self.prometheus_url.rsplit(':', 1)[1]}\n"
            (self._dir / "enabled_plugins").write_text("[rabbitmq_prometheus].\n")
            shutil.chown(self._dir / "enabled_plugins", "rabbitmq", "rabbitmq")
        (self._dir / "rabbitmq.conf").write_text(config)
        shutil.chown(self._dir, "rabbitmq", "rabbitmq")
        self._as_rabbitmq(f"{RABBITMQ_BIN}/rabbitmq-server -detached")
        self._as_rabbitmq(f"{RABBITMQ_BIN}/rabbitmqctl -n {self._node} wait {self._dir}/pid --timeout 60",
                          timeout=90)
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        if self.tls is not None:
            self.tls_url = f"amqps://guest:guest@localhost:{self.tls_port}/"

    def _start_container(self) -> None:
        if self.tls is not None or self.prometheus:
            raise RuntimeError("a TLS listener or the prometheus plugin needs a local rabbitmq-server (run as root), "
                               "not a container")
        from testcontainers.rabbitmq import RabbitMqContainer

        self._container = RabbitMqContainer(os.environ.get("RABBITMQ_IMAGE", "rabbitmq:3.13-management"))
        self._container.start()
        host = self._container.get_container_host_ip()
        self.port = int(self._container.get_exposed_port(5672))
        self.url = f"amqp://guest:guest@{host}:{self.port}/"

    def log_text(self) -> str | None:
        """The node's log so far (local nodes only; None for a container)."""
        if self._dir is None or self._node is None:
            return None
        return "".join(path.read_text(errors="replace") for path in sorted((self._dir / "log").glob("*.log")))

    def stop_app(self) -> None:
        """Stop the broker application: connections drop and new ones are refused."""
        self._ctl("stop_app")

    def start_app(self) -> None:
        self._ctl("start_app")
        self._ctl("await_startup")

    def block(self) -> None:
        """Raise a memory alarm: the broker blocks publishers and stops confirming."""
        self._ctl("set_vm_memory_high_watermark", "0.000001")

    def unblock(self) -> None:
        self._ctl("set_vm_memory_high_watermark", "0.4")

    def close(self) -> None:
        if self._container is not None:
            self._container.stop()
            self._container = None
        elif self._node is not None:
            try:
                self._as_rabbitmq(f"{RABBITMQ_BIN}/rabbitmqctl -n {self._node} stop")
            finally:
                self._node = None
                if self._dir is not None:
                    shutil.rmtree(self._dir, ignore_errors=True)
