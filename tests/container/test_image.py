"""The project's own image, run as the Kubernetes manifests run it, beside a RabbitMQ container (testcontainers:
`DockerContainer` and `Network` for the image, `RabbitMqContainer` for the broker).

Each workload is started with the command, args, environment (the ConfigMap it reads, its own values,
and test values for exactly the variables it takes from Secrets), user, read-only root filesystem and
writable mounts that `kubectl kustomize deploy/overlays/dev` gives it (read by tests/manifests.py, so
the test follows the manifests), all capabilities dropped and no-new-privileges. Signed events from the
host go through the gateway container and are counted as applied by both consumer containers;
`docker stop` of each exits 0 within the manifest's grace period, also while a request is waiting for
the broker (held by a memory alarm), which is still answered 200; the reconciler runs once against the
fake Tradevine API and its events arrive; the prod overlay's consumers keep their state in PostgreSQL
(the host's server, reached through tests/container/relay.py), two inventory replicas applying each
event once.

Needs a Docker engine and the image (`make container-test` builds it and sets IMAGE) and a
RabbitMQ image (RABBITMQ_IMAGE; .ci/docker-rabbitmq builds one): skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aio_pika
import orjson
import psycopg
import pytest
from testcontainers.community.rabbitmq import RabbitMqContainer
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from gateway import sample, signature, wire
from gateway.publisher import declare_topology
from tests import postgres
from tests.container.relay import relaying
from tests.integration.fake_tradevine import FakeTradevine, product, sales_order, serving
from tests.manifests import Workload, dockerfile, tmpfs, workloads

pytestmark = pytest.mark.container

# Set by `make container-test` right after `make image`, so an image left over from older code is never tested.
IMAGE = os.environ.get("IMAGE", "")
RABBITMQ_IMAGE = os.environ.get("RABBITMQ_IMAGE", "rabbitmq:3.13-management")

SECRET = "container-test-secret"
HEADER_VALUE = "container-test-header-value"
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


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check).stdout.strip()


@dataclass(frozen=True)
class Stack:
    network: Network
    broker: RabbitMqContainer  # `rabbitmq` on the network
    host_amqp_url: str  # the broker from the host, for declaring and reading queues
    host_address: str  # the host on the network (its gateway): where containers reach a server of the test
    amqp_url: str = "amqp://guest:guest@rabbitmq:5672/"

    def rabbitmqctl(self, *args: str) -> None:
        code, output = self.broker.exec(["rabbitmqctl", *args])
        assert code == 0, output


class Running:
    """One container of the image, started as `workload` says; `secrets` are the values of its Secret refs."""

    def __init__(self, workload: Workload, stack: Stack, secrets: dict[str, str], **overrides: str) -> None:
        self.workload = workload
        self.name = f"tvg-{workload.name}-{uuid.uuid4().hex[:6]}"
        assert set(secrets) == set(workload.secret_env), (workload.name, sorted(workload.secret_env))
        unknown = set(overrides) - workload.env_names
        assert not unknown, f"variables the manifest does not set: {unknown}"
        self.env = {**workload.env, **secrets, **overrides}
        self.container = (
            DockerContainer(IMAGE).with_name(self.name).with_network(stack.network)
            .with_command(list(workload.command)).with_envs(**self.env)
            .with_kwargs(user=str(workload.user), cap_drop=["ALL"], security_opt=["no-new-privileges"],
                         read_only=workload.read_only))
        for mount in tmpfs(workload):  # `path:options`, as `docker run --tmpfs` takes it
            path, _, options = mount.partition(":")
            self.container.with_tmpfs_mount(path, options)
        for port in workload.ports.values():
            self.container.with_exposed_ports(port)
        self.container.start()

    def url(self, port: int) -> str:
        return f"http://{self.container.get_container_host_ip()}:{self.container.get_exposed_port(port)}"

    def logs(self) -> str:
        out, err = self.container.get_logs()
        return out.decode(errors="replace") + err.decode(errors="replace")

    def stop(self) -> tuple[int, float]:
        """`docker stop` with the manifest's grace period: the exit code and the seconds it took."""
        started = time.monotonic()
        self.container.get_wrapped_container().stop(timeout=self.workload.grace_seconds)
        return self.exit_code(), time.monotonic() - started

    def wait(self, timeout: float) -> int:
        """The exit code of a container that ends by itself (a job), within `timeout` seconds."""
        eventually(lambda: self.state()["Status"] == "exited",
                   f"{self.workload.name} exits\n{self.logs()[-3000:]}", timeout)
        return self.exit_code()

    def state(self) -> dict[str, object]:
        wrapped = self.container.get_wrapped_container()
        wrapped.reload()
        found: dict[str, object] = wrapped.attrs["State"]
        return found

    def exit_code(self) -> int:
        return int(str(self.state()["ExitCode"]))

    def remove(self) -> None:
        self.container.stop()  # testcontainers' stop removes the container


def stop_cleanly(running: list[Running]) -> None:
    """`docker stop` each: exit 0 within the manifest's grace period, no traceback logged."""
    for one in running:
        code, seconds = one.stop()
        assert code == 0, (one.workload.name, code, one.logs()[-2000:])
        assert seconds < one.workload.grace_seconds, (one.workload.name, seconds)
        assert "Traceback" not in one.logs()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:
        return 0, ""


def eventually(condition: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def metric(metrics_text: str, prefix: str) -> float:
    return sum(float(line.split()[-1]) for line in metrics_text.splitlines() if line.startswith(prefix))


def applied(metrics_text: str, consumer: str) -> float:
    return metric(metrics_text, f'tradevine_consumer_messages_total{{consumer="{consumer}",outcome="applied"}}')


def probes_answer(one: Running) -> None:
    for kind, (path, port) in one.workload.probes.items():
        eventually(lambda path=path, port=port: get(one.url(port) + path)[0] == 200,
                   f"{one.workload.name} {kind} {path} answers 200\n{one.logs()}")


def gateway_secrets(stack: Stack) -> dict[str, str]:
    return {"AMQP_URL": stack.amqp_url, "TRADEVINE_CONSUMER_SECRET": SECRET,
            "TRADEVINE_CUSTOM_HEADER_VALUE": HEADER_VALUE}


def post_event(gateway: Running, routing_key: str, object_id: int | None = None) -> tuple[int, bytes]:
    body = sample.encode(sample.body_for(routing_key, object_id=object_id))
    request = urllib.request.Request(
        gateway.url(gateway.workload.ports["http"]) + "/webhooks/tradevine", data=body, method="POST",
        headers={"Content-Type": "application/json", "X-Tradevine-Hmac-SHA256": signature.sign(body, SECRET.encode()),
                 gateway.env["TRADEVINE_CUSTOM_HEADER_NAME"]: HEADER_VALUE})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def _declare_queue(url: str, exchange: str, queue: str, binding: str) -> None:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await declare_topology(channel, exchange)
        declared = await channel.declare_queue(queue, durable=False, auto_delete=False)
        await declared.bind(exchange, binding)


async def _read_queue(url: str, queue: str) -> list[tuple[str, dict[str, object], str]]:
    """Routing key, body and source header of every message in `queue` (consumed)."""
    found = []
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        source = await channel.declare_queue(queue, passive=True)
        while (message := await source.get(no_ack=True, fail=False)) is not None:
            found.append((message.routing_key or "", orjson.loads(message.body),
                          str(message.headers.get(wire.H_SOURCE))))
    return found


@pytest.fixture(scope="module")
def manifests() -> dict[str, Workload]:
    return workloads("dev")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if (reason := _docker_ok()) is not None:
        pytest.skip(reason)
    network = Network().create()
    broker = RabbitMqContainer(RABBITMQ_IMAGE).with_network(network).with_network_aliases("rabbitmq")
    try:
        broker.start()  # returns once a client can connect
        params = broker.get_connection_params()
        yield Stack(network=network, broker=broker,
                    host_amqp_url=f"amqp://guest:guest@{params.host}:{params.port}/",
                    host_address=docker("network", "inspect", network.name, "--format",
                                        "{{(index .IPAM.Config 0).Gateway}}"))
    finally:
        broker.stop()
        network.remove()


def test_gateway_and_both_consumers_run_as_the_manifests_say_and_events_reach_both(
        stack: Stack, manifests: dict[str, Workload]) -> None:
    running = [Running(manifests["tradevine-gateway"], stack, gateway_secrets(stack))]
    for service in ("inventory", "orders"):
        running.append(Running(manifests[f"tradevine-consumer-{service}"], stack, {"AMQP_URL": stack.amqp_url}))
    gateway, inventory, orders = running
    try:
        for one in running:
            probes_answer(one)
        for routing_key in ("product.updated", "product.inventory.ats_updated", "sales_order.created",
                            "sales_order.status_changed"):
            status, answer = post_event(gateway, routing_key)
            assert status == 200, answer
        eventually(lambda: applied(get(inventory.url(8081) + "/metrics")[1], "inventory") == 2,
                   "inventory applied both product events")
        eventually(lambda: applied(get(orders.url(8081) + "/metrics")[1], "orders") == 2,
                   "orders applied both sales-order events")
        stop_cleanly(running)
    finally:
        for one in running:
            one.remove()


def test_docker_stop_lets_a_request_waiting_for_the_broker_finish_with_200_and_exits_0(
        stack: Stack, manifests: dict[str, Workload]) -> None:
    # An exchange of its own: the held message must not reach the consumers of the other tests.
    exchange = f"tvg.sigterm.{uuid.uuid4().hex[:8]}"
    gateway = Running(manifests["tradevine-gateway"], stack, gateway_secrets(stack), GATEWAY_EXCHANGE=exchange)
    asyncio.run(_declare_queue(stack.host_amqp_url, exchange, f"{exchange}.all", "#"))
    port = gateway.workload.ports["http"]
    answered: list[tuple[int, bytes]] = []
    stopped: list[tuple[int, float]] = []
    try:
        probes_answer(gateway)
        # A memory alarm: the broker stops reading from publishing connections, so no confirm comes.
        stack.rabbitmqctl("set_vm_memory_high_watermark", "0")
        sender = threading.Thread(target=lambda: answered.append(post_event(gateway, "product.updated")))
        sender.start()
        eventually(lambda: metric(get(gateway.url(port) + "/metrics")[1],
                                  "tradevine_gateway_publishes_in_flight") == 1, "the publish is in flight", 10)
        stopper = threading.Thread(target=lambda: stopped.append(gateway.stop()))
        stopper.start()
        eventually(lambda: "Waiting for connections to close" in gateway.logs(),
                   "after SIGTERM, uvicorn waits for the request", 10)
        assert answered == [] and sender.is_alive()  # still waiting for the confirm
        stack.rabbitmqctl("set_vm_memory_high_watermark", "0.4")
        sender.join(30)
        stopper.join(gateway.workload.grace_seconds + 10)
        assert len(answered) == 1 and answered[0][0] == 200, (answered, gateway.logs()[-3000:])
        assert orjson.loads(answered[0][1])["status"] == "accepted"
        [(code, seconds)] = stopped
        assert code == 0, (code, gateway.logs()[-2000:])
        assert seconds < gateway.workload.grace_seconds, seconds
        assert "Traceback" not in gateway.logs()
        [(routing_key, _, source)] = asyncio.run(_read_queue(stack.host_amqp_url, f"{exchange}.all"))
        assert (routing_key, source) == ("product.updated", "webhook")
    finally:
        stack.rabbitmqctl("set_vm_memory_high_watermark", "0.4")
        gateway.remove()


def test_the_reconciler_runs_once_against_the_fake_api_and_its_events_arrive(
        stack: Stack, manifests: dict[str, Workload]) -> None:
    reconciler = manifests["tradevine-reconciler"]
    exchange = f"tvg.reconcile.{uuid.uuid4().hex[:8]}"
    queue = f"{exchange}.reconciled"
    asyncio.run(_declare_queue(stack.host_amqp_url, exchange, queue, "#.reconciled"))
    now = datetime.now(UTC).replace(tzinfo=None)

    def ago(minutes: int) -> str:
        return (now - timedelta(minutes=minutes)).isoformat(timespec="milliseconds")

    # `--lookback 2h`, as the CronJob runs it: two of each in the window, one of each before it.
    fake = FakeTradevine(
        products=[product(3451582911247567101, ago(10)), product(3451582911247567102, ago(100)),
                  product(3451582911247567103, ago(300))],
        sales_orders=[sales_order(3479979772702215101, ago(20)), sales_order(3479979772702215102, ago(110)),
                      sales_order(3479979772702215103, ago(24 * 60))])
    with serving(fake, host=stack.host_address):
        creds = fake.credentials.environ(fake.base_url)
        one = Running(reconciler, stack, {"AMQP_URL": stack.amqp_url,
                                          **{k: v for k, v in creds.items() if k in reconciler.secret_env}},
                      TRADEVINE_API_BASE=creds["TRADEVINE_API_BASE"], GATEWAY_EXCHANGE=exchange)
        try:
            code = one.wait(120)
            assert code == 0, one.logs()[-3000:]
            assert "result: ok" in one.logs()
            assert "Traceback" not in one.logs()
        finally:
            one.remove()
    published = asyncio.run(_read_queue(stack.host_amqp_url, queue))
    assert sorted((key, body["EventObjectId"], source) for key, body, source in published) == [
        ("product.reconciled", 3451582911247567101, "reconciliation"),
        ("product.reconciled", 3451582911247567102, "reconciliation"),
        ("sales_order.reconciled", 3479979772702215101, "reconciliation"),
        ("sales_order.reconciled", 3479979772702215102, "reconciliation"),
    ]
    assert fake.ok_calls() and all(c.status == 200 for c in fake.calls)  # OAuth signatures verified


def test_the_prod_consumers_keep_their_state_in_postgresql_two_inventory_replicas_applying_each_event_once(
        stack: Stack, manifests: dict[str, Workload]) -> None:
    # The prod overlay's consumers: CONSUMER_DATABASE from a Secret (the CloudNativePG URI), /tmp the only
    # writable path. The host's PostgreSQL is reached through a relay on the Docker network's gateway.
    prod = workloads("prod")
    server = postgres.server_url()
    if (problem := postgres.reachable(server)) is not None:
        message = f"no PostgreSQL at {server} ({problem}); run `bash deploy/local/postgres.sh`"
        if postgres.required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    parts = urllib.parse.urlsplit(server)
    products = {3451582911247568001 + n for n in range(6)}
    orders_sent = {3479979772702216001 + n for n in range(3)}
    with postgres.database(server, "tvg_container") as database, \
            relaying(stack.host_address, (parts.hostname or "127.0.0.1", parts.port or 5432)) as port:
        name = urllib.parse.urlsplit(database).path
        in_container = urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}@{stack.host_address}:{port}",
                                                              path=name))
        secrets = {"AMQP_URL": stack.amqp_url, "CONSUMER_DATABASE": in_container}
        consumers = [Running(prod["tradevine-consumer-inventory"], stack, secrets),
                     Running(prod["tradevine-consumer-inventory"], stack, secrets),
                     Running(prod["tradevine-consumer-orders"], stack, secrets)]
        running = [Running(manifests["tradevine-gateway"], stack, gateway_secrets(stack)), *consumers]
        try:
            for one in running:
                probes_answer(one)
            gateway = running[0]
            for object_id in sorted(products):
                status, answer = post_event(gateway, "product.updated", object_id)
                assert status == 200, answer
            for object_id in sorted(orders_sent):
                status, answer = post_event(gateway, "sales_order.created", object_id)
                assert status == 200, answer

            def applied_by(name: str) -> float:
                return sum(applied(get(one.url(8081) + "/metrics")[1], name) for one in consumers)

            eventually(lambda: applied_by("inventory") == len(products), "the inventory replicas applied 6")
            eventually(lambda: applied_by("orders") == len(orders_sent), "orders applied 3")
            with psycopg.connect(database) as connection:  # each consumer's tables in a schema of its name
                stored_products = {int(r[0]) for r in connection.execute("SELECT product_id FROM inventory.products")}
                stored_orders = {int(r[0]) for r in connection.execute("SELECT sales_order_id FROM orders.orders")}
                applied_rows = [connection.execute(f"SELECT count(*) FROM {schema}.consumer_applied").fetchone()
                                for schema in ("inventory", "orders")]
            assert (stored_products, stored_orders) == (products, orders_sent)
            assert applied_rows == [(len(products),), (len(orders_sent),)]
            stop_cleanly(running)
        finally:
            for one in running:
                one.remove()


def test_the_image_runs_each_workload_as_the_manifests_expect(manifests: dict[str, Workload]) -> None:
    """Static half: the built image has the Dockerfile's user and ports, and each command on its PATH."""
    if (reason := _docker_ok()) is not None:
        pytest.skip(reason)
    config = orjson.loads(docker("image", "inspect", IMAGE, "--format", "{{json .Config}}"))
    built = dockerfile()
    assert int(config["User"].split(":")[0]) == built.user
    assert {int(p.split("/")[0]) for p in config["ExposedPorts"]} == built.exposed
    for workload in manifests.values():
        assert workload.user == built.user and workload.read_only, workload.name
        binary = workload.command[0]
        found = subprocess.run(["docker", "run", "--rm", "--entrypoint", "sh", IMAGE, "-c", f"command -v {binary}"],
                               capture_output=True, text=True, check=False)
        assert found.returncode == 0 and found.stdout.strip().startswith("/opt/venv/bin/"), (binary, found)
