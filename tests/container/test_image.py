"""The project's own image, run as the Kubernetes manifests run it, beside a RabbitMQ container.

Each workload is started with the command, args, environment variable names, user, read-only root
filesystem and writable mounts that `kubectl kustomize deploy/overlays/dev` gives it (read here, so the
test follows the manifests), all capabilities dropped and no-new-privileges. Signed events from the host
go through the gateway container and are counted as applied by both consumer containers; `docker stop`
of each exits 0 within the manifest's grace period.

Needs a Docker engine and the image (`make container-test` builds it and sets IMAGE) and a
RabbitMQ image (RABBITMQ_IMAGE; .ci/docker-rabbitmq builds one): skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from gateway import sample, signature

pytestmark = pytest.mark.container

# Set by `make container-test` right after `make image`, so an image left over from older code is never tested.
IMAGE = os.environ.get("IMAGE", "")
RABBITMQ_IMAGE = os.environ.get("RABBITMQ_IMAGE", "rabbitmq:3.13-management")
SECRET = "container-test-secret"
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


def _docker_ok() -> str | None:
    if not IMAGE:
        return "IMAGE is not set: `make container-test` builds the image and runs these tests"
    if shutil.which("docker") is None:
        return "docker not found"
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return "no Docker engine answers `docker info` (start one, e.g. bash .ci/docker-rabbitmq)"
    for image, how in ((IMAGE, "make image"), (RABBITMQ_IMAGE, "bash .ci/docker-rabbitmq, or docker pull")):
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False).returncode:
            return f"image {image} not present (build or fetch it: {how})"
    return None


@dataclass(frozen=True)
class Workload:
    name: str
    command: list[str]
    env_names: list[str]
    ports: list[int]
    writable: list[str]
    user: int
    read_only: bool
    grace_seconds: int
    probes: dict[str, str]


def workloads() -> dict[str, Workload]:
    """How the dev overlay starts each container."""
    rendered = subprocess.run(["kubectl", "kustomize", "deploy/overlays/dev"], capture_output=True, text=True,
                              check=True).stdout
    found: dict[str, Workload] = {}
    for doc in yaml.safe_load_all(rendered):
        if not doc or doc["kind"] not in ("Deployment", "CronJob"):
            continue
        spec: dict[str, Any] = (doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment"
                                else doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])
        [container] = spec["containers"]
        security = container.get("securityContext", {})
        probes = {kind: container[kind]["httpGet"]["path"] for kind in ("livenessProbe", "readinessProbe")
                  if "httpGet" in container.get(kind, {})}
        found[doc["metadata"]["name"]] = Workload(
            name=doc["metadata"]["name"], command=container.get("command", []) + container.get("args", []),
            env_names=[e["name"] for e in container.get("env", [])],
            ports=[p["containerPort"] for p in container.get("ports", [])],
            writable=[m["mountPath"] for m in container.get("volumeMounts", []) if not m.get("readOnly")],
            user=int(security.get("runAsUser", spec.get("securityContext", {}).get("runAsUser", 0))),
            read_only=bool(security.get("readOnlyRootFilesystem")),
            grace_seconds=int(spec.get("terminationGracePeriodSeconds", 30)), probes=probes)
    return found


class Running:
    def __init__(self, workload: Workload, network: str, env: dict[str, str]) -> None:
        self.workload = workload
        self.name = f"tvg-{workload.name}-{uuid.uuid4().hex[:6]}"
        unknown = set(env) - set(workload.env_names) - {"GATEWAY_EXCHANGE", "CONSUMER_QUEUE", "CONSUMER_RETRY_DELAYS"}
        assert not unknown, f"variables the manifest does not set: {unknown}"
        args = ["docker", "run", "-d", "--name", self.name, "--network", network,
                "--user", str(workload.user), "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
        if workload.read_only:
            args.append("--read-only")
        for path in workload.writable:
            args += ["--tmpfs", f"{path}:uid={workload.user},gid={workload.user},mode=0700"]
        for port in workload.ports:
            args += ["-p", f"127.0.0.1::{port}"]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        subprocess.run([*args, IMAGE, *workload.command], check=True, capture_output=True)

    def url(self, port: int) -> str:
        mapped = subprocess.run(["docker", "port", self.name, str(port)], capture_output=True, text=True,
                                check=True).stdout.split()[0]
        return f"http://{mapped}"

    def logs(self) -> str:
        done = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True, check=False)
        return done.stdout + done.stderr

    def stop(self) -> tuple[int, float]:
        started = time.monotonic()
        subprocess.run(["docker", "stop", "-t", str(self.workload.grace_seconds), self.name], check=True,
                       capture_output=True)
        code = subprocess.run(["docker", "inspect", self.name, "--format", "{{.State.ExitCode}}"],
                              capture_output=True, text=True, check=True).stdout.strip()
        return int(code), time.monotonic() - started

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, check=False)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:
        return 0, ""


def eventually(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def applied(metrics_text: str, consumer: str) -> float:
    prefix = f'tradevine_consumer_messages_total{{consumer="{consumer}",outcome="applied"}}'
    return sum(float(line.split()[-1]) for line in metrics_text.splitlines() if line.startswith(prefix))


@pytest.fixture(scope="module")
def network() -> Iterator[str]:
    if (reason := _docker_ok()) is not None:
        pytest.skip(reason)
    name = f"tvg-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "network", "create", name], check=True, capture_output=True)
    broker = f"tvg-rabbitmq-{uuid.uuid4().hex[:6]}"
    subprocess.run(["docker", "run", "-d", "--name", broker, "--network", name, "--network-alias", "rabbitmq",
                    RABBITMQ_IMAGE], check=True, capture_output=True)
    try:
        eventually(lambda: "Server startup complete" in subprocess.run(
            ["docker", "logs", broker], capture_output=True, text=True, check=False).stdout, "RabbitMQ started")
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", broker], capture_output=True, check=False)
        subprocess.run(["docker", "network", "rm", name], capture_output=True, check=False)


def test_gateway_and_both_consumers_run_as_the_manifests_say_and_events_reach_both(network: str) -> None:
    manifests = workloads()
    amqp = "amqp://guest:guest@rabbitmq:5672/"
    gateway_w = manifests["tradevine-gateway"]
    running = [Running(gateway_w, network, {"AMQP_URL": amqp, "TRADEVINE_CONSUMER_SECRET": SECRET})]
    for service in ("inventory", "orders"):
        w = manifests[f"tradevine-consumer-{service}"]
        running.append(Running(w, network, {"AMQP_URL": amqp,
                                            "CONSUMER_DATABASE": f"/var/lib/tradevine/{service}.sqlite3"}))
    gateway, inventory, orders = running
    try:
        for one in running:
            for kind, path in one.workload.probes.items():
                eventually(lambda one=one, path=path: get(one.url(one.workload.ports[0]) + path)[0] == 200,
                           f"{one.workload.name} {kind} {path} answers 200\n{one.logs()}")
        sent = {"product.updated": 0, "sales_order.created": 0}
        for routing_key in ("product.updated", "product.inventory.ats_updated", "sales_order.created",
                            "sales_order.status_changed"):
            body = sample.encode(sample.body_for(routing_key))
            request = urllib.request.Request(
                gateway.url(8080) + "/webhooks/tradevine", data=body, method="POST",
                headers={"Content-Type": "application/json",
                         "X-Tradevine-Hmac-SHA256": signature.sign(body, SECRET.encode())})
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 200, answer.read()
            sent["product.updated" if routing_key.startswith("product") else "sales_order.created"] += 1
        eventually(lambda: applied(get(inventory.url(8081) + "/metrics")[1], "inventory") == 2,
                   "inventory applied both product events")
        eventually(lambda: applied(get(orders.url(8081) + "/metrics")[1], "orders") == 2,
                   "orders applied both sales-order events")
        for one in running:
            code, seconds = one.stop()
            assert code == 0, (one.workload.name, code, one.logs()[-2000:])
            assert seconds < one.workload.grace_seconds, (one.workload.name, seconds)
            assert "Traceback" not in one.logs()
    finally:
        for one in running:
            one.remove()


def test_the_image_runs_each_workload_as_the_manifests_expect() -> None:
    """Static half: the image's user, ports and working directory agree with every manifest."""
    if (reason := _docker_ok()) is not None:
        pytest.skip(reason)
    config = yaml.safe_load(subprocess.run(["docker", "image", "inspect", IMAGE, "--format", "{{json .Config}}"],
                                           capture_output=True, text=True, check=True).stdout)
    assert config["User"].split(":")[0] == "10001"
    exposed = {int(p.split("/")[0]) for p in config["ExposedPorts"]}
    for workload in workloads().values():
        assert workload.user == 10001 and workload.read_only, workload.name
        assert set(workload.ports) <= exposed, (workload.name, workload.ports, exposed)
        binary = workload.command[0]
        found = subprocess.run(["docker", "run", "--rm", "--entrypoint", "sh", IMAGE, "-c", f"command -v {binary}"],
                               capture_output=True, text=True, check=False)
        assert found.returncode == 0 and found.stdout.strip().startswith("/opt/venv/bin/"), (binary, found)
