"""A real nginx (Debian's nginx-light) in front of the gateway, configured as ingress-nginx configures it.

`Nginx(upstream_port, ...)` writes a config under a temporary prefix and runs `nginx -g 'daemon off;'`
as a child process on free ports (error log and temp files in that prefix). What ingress-nginx
generates for our Ingress (`deploy/components/ingress-tls/ingress.yaml`) and its defaults, with the
times scaled by the caller:

- `client_max_body_size` from the `proxy-body-size` annotation (4m): above the gateway's 2 MiB cap, so
  the gateway answers 413 itself;
- `proxy_connect_timeout` / `proxy_send_timeout` / `proxy_read_timeout` from the annotations (2, 10, 10);
- upstream keep-alive: `keepalive 320` connections, `keepalive_timeout 60s`, `keepalive_requests 10000`,
  `proxy_http_version 1.1` and an empty `Connection` header;
- `proxy_next_upstream error timeout` (ingress-nginx's default), which never retries a POST that was sent;
- the Prefix path `/webhooks/tradevine` as the two locations ingress-nginx writes for it.

`lanes` servers (each its own port and upstream block, so its own keep-alive pool) let several
clients run their own timing side by side.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.integration.brokers import free_port, wait_for_port

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
INGRESS_BODY_SIZE = "4m"

_SERVER = """
    upstream gateway{lane} {{
        server 127.0.0.1:{upstream_port} max_fails=0;
        keepalive 320;
        keepalive_timeout {keepalive_timeout};
        keepalive_requests 10000;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size {body_size};
        client_body_buffer_size 8k;
        keepalive_timeout 75s;
        location = /webhooks/tradevine {{
            include {prefix}/proxy.conf;
            proxy_pass http://gateway{lane};
        }}
        location /webhooks/tradevine/ {{
            include {prefix}/proxy.conf;
            proxy_pass http://gateway{lane};
        }}
        location / {{
            return 404;
        }}
    }}
"""

_PROXY = """
proxy_http_version 1.1;
proxy_set_header Connection "";
proxy_set_header Host $host;
proxy_set_header X-Request-ID $request_id;
proxy_set_header X-Real-IP $remote_addr;
proxy_set_header X-Forwarded-For $remote_addr;
proxy_set_header X-Forwarded-Proto $scheme;
proxy_connect_timeout 2s;
proxy_send_timeout 10s;
proxy_read_timeout 10s;
proxy_buffering off;
proxy_request_buffering on;
proxy_next_upstream error timeout;
proxy_next_upstream_tries 3;
proxy_redirect off;
"""


class Nginx:
    """nginx on free 127.0.0.1 ports proxying to `upstream_port`; use as a context manager."""

    def __init__(self, upstream_port: int, *, keepalive_timeout: str = "60s", lanes: int = 1) -> None:
        self.upstream_port = upstream_port
        self.keepalive_timeout = keepalive_timeout
        self.ports = [free_port() for _ in range(lanes)]
        self.prefix = Path(tempfile.mkdtemp(prefix="tv-nginx-"))
        self.prefix.chmod(0o755)  # workers run as nobody when the master runs as root
        self.process: subprocess.Popen[bytes] | None = None
        self._logs: dict[str, str] = {}  # kept when nginx stops and its prefix is removed

    @property
    def port(self) -> int:
        return self.ports[0]

    def url(self, path: str = "/webhooks/tradevine", lane: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[lane]}{path}"

    def config(self) -> str:
        servers = "".join(_SERVER.format(lane=lane, port=port, upstream_port=self.upstream_port,
                                         keepalive_timeout=self.keepalive_timeout, body_size=INGRESS_BODY_SIZE,
                                         prefix=self.prefix)
                          for lane, port in enumerate(self.ports))
        temp = "\n".join(f"    {kind}_temp_path {self.prefix}/{kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        return (f"worker_processes 1;\npid {self.prefix}/nginx.pid;\nerror_log {self.prefix}/error.log info;\n"
                "events { worker_connections 1024; }\n"
                "http {\n"
                "    log_format upstream '$status $upstream_status $request_method $uri $request_length';\n"
                f"    access_log {self.prefix}/access.log upstream;\n{temp}\n{servers}}}\n")

    def __enter__(self) -> Nginx:
        if NGINX is None:
            raise RuntimeError("nginx is not installed")
        (self.prefix / "proxy.conf").write_text(_PROXY)
        (self.prefix / "nginx.conf").write_text(self.config())
        self.process = subprocess.Popen([NGINX, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"),
                                         "-e", str(self.prefix / "error.log"), "-g", "daemon off;"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            for port in self.ports:
                wait_for_port("127.0.0.1", port, timeout=10)
        except TimeoutError:
            self.__exit__()
            raise RuntimeError(f"nginx did not start: {self.error_log()}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()  # SIGTERM: fast shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None
        self._logs = {name: self._read(name) for name in ("error.log", "access.log")}
        shutil.rmtree(self.prefix, ignore_errors=True)

    def _read(self, name: str) -> str:
        if name in self._logs:
            return self._logs[name]
        path = self.prefix / name
        return path.read_text() if path.exists() else ""

    def error_log(self) -> str:
        return self._read("error.log")

    def access_log(self) -> list[str]:
        """One line per request: `status upstream_status method uri length` (complete once nginx stopped:
        nginx writes a line after the answer has gone out)."""
        return self._read("access.log").splitlines()
