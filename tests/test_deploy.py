"""deploy/: the prod apply step's refusals, the offline resource checks, and the network policies' intent.

No cluster: the overlays are rendered with `kubectl kustomize` (offline), and deploy/apply-prod.sh runs
against a stand-in `kubectl` that renders with the real one and records every other call.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import ipaddress
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.manifests import Workload, dockerfile, tmpfs, workloads, writable_needed

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = shutil.which("kubectl")
PLACEHOLDER = "webhooks.example.com"

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with its built-in kustomize) is not installed")


def render(overlay: Path) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    out = subprocess.run([KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def checks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_resources", ROOT / "deploy/check_resources.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(ROOT / "deploy/overlays" / name) for name in ("dev", "prod")}


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


# -- deploy/apply-prod.sh -----------------------------------------------------------------------------


@pytest.fixture
def fake_kubectl(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A `kubectl` that renders with the real one; any other call is logged and answered from files."""
    log = tmp_path / "kubectl.log"
    script = tmp_path / "kubectl"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = kustomize ]; then exec {KUBECTL} "$@"; fi
        printf '%s\\n' "$*" >> {log}
        case "$*" in
          *"get secret tradevine-gateway-secrets"*)
            [ -f {tmp_path}/secret-keys ] || {{ echo 'Error from server (NotFound)' >&2; exit 1; }}
            cat {tmp_path}/secret-keys ;;
        esac
        exit 0
        """))
    script.chmod(0o755)
    yield script, log


def apply_prod(*args: str, kubectl: Path | str | None = None, overlay: Path | None = None
               ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECTL": str(kubectl or KUBECTL)}
    if overlay is not None:
        env["OVERLAY"] = str(overlay)
    return subprocess.run(["bash", str(ROOT / "deploy/apply-prod.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


@pytest.fixture
def deploy_copy(tmp_path: Path) -> Callable[[str], Path]:
    """A copy of deploy/ whose prod Ingress host is `host`; returns the prod overlay's path."""

    def make(host: str) -> Path:
        target = tmp_path / "deploy"
        shutil.copytree(ROOT / "deploy", target, ignore=shutil.ignore_patterns("__pycache__"))
        kustomization = target / "overlays/prod/kustomization.yaml"
        kustomization.write_text(kustomization.read_text().replace(f"value: {PLACEHOLDER}", f"value: {host}"))
        return target / "overlays/prod"

    return make


def test_apply_refuses_the_placeholder_host_before_touching_the_cluster(fake_kubectl: tuple[Path, Path]) -> None:
    kubectl, log = fake_kubectl

    done = apply_prod(kubectl=kubectl)

    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"apply-prod: the Ingress host is still the placeholder '{PLACEHOLDER}': set your host name in the "
        "Ingress patch of deploy/overlays/prod/kustomization.yaml (twice), then run again\n")
    assert not log.exists()  # no apply, no get: nothing but `kubectl kustomize`


def test_a_dry_run_refuses_the_placeholder_too_so_the_make_target_fails() -> None:
    done = apply_prod("--dry-run")

    assert done.returncode == 2
    assert "still the placeholder" in done.stderr


def test_the_data_phase_needs_no_host_and_applies_only_namespace_broker_and_postgres() -> None:
    done = apply_prod("--dry-run", "data")

    assert done.returncode == 0, done.stderr
    kinds = {line.split()[0] for line in done.stdout.splitlines()[1:]}
    assert kinds == {"Namespace", "RabbitmqCluster", "Certificate", "Issuer", "User", "Permission", "Cluster"}


def test_with_a_real_host_a_dry_run_lists_everything(deploy_copy: Callable[[str], Path]) -> None:
    overlay = deploy_copy("webhooks.shop.test")

    done = apply_prod("--dry-run", overlay=overlay)

    assert done.returncode == 0, done.stderr
    listed = {tuple(line.split()) for line in done.stdout.splitlines()[1:]}
    assert ("Ingress", "tradevine-gateway") in listed
    assert ("Deployment", "tradevine-consumer-orders") in listed
    assert len(listed) == len(render(overlay))


def test_a_real_host_without_the_secret_is_refused_then_applied_once_it_has_every_key(
        deploy_copy: Callable[[str], Path], fake_kubectl: tuple[Path, Path], tmp_path: Path) -> None:
    kubectl, log = fake_kubectl
    overlay = deploy_copy("webhooks.shop.test")

    missing_secret = apply_prod(kubectl=kubectl, overlay=overlay)
    assert missing_secret.returncode == 2
    assert "the Secret 'tradevine-gateway-secrets' does not exist in namespace 'tradevine'" in missing_secret.stderr

    keys = ["GATEWAY_AMQP_URL", "INVENTORY_AMQP_URL", "ORDERS_AMQP_URL", "TRADEVINE_ACCESS_TOKEN",
            "TRADEVINE_ACCESS_TOKEN_SECRET", "TRADEVINE_CONSUMER_KEY", "TRADEVINE_CONSUMER_SECRET",
            "TRADEVINE_CUSTOM_HEADER_VALUE"]
    (tmp_path / "secret-keys").write_text("\n".join(keys) + "\n")
    one_missing = apply_prod(kubectl=kubectl, overlay=overlay)
    assert one_missing.returncode == 2
    assert "lacks keys the workloads read: RECONCILER_AMQP_URL" in one_missing.stderr
    assert not any(line.startswith("apply") for line in log.read_text().splitlines())

    (tmp_path / "secret-keys").write_text("\n".join([*keys, "RECONCILER_AMQP_URL"]) + "\n")
    log.unlink()
    applied = apply_prod(kubectl=kubectl, overlay=overlay)
    assert applied.returncode == 0, applied.stderr
    get, apply, rollout = log.read_text().splitlines()
    assert get.startswith("-n tradevine get secret tradevine-gateway-secrets ")
    assert apply.startswith("apply -f ") and " -l " not in apply
    assert rollout == "-n tradevine rollout status deployment --timeout=15m"


# -- deploy/check_resources.py ------------------------------------------------------------------------


def problems(checks: ModuleType, overlay: str, docs: list[dict[str, Any]]) -> list[str]:
    found: list[str] = checks.Checker(overlay, docs, checks.load_schemas()).run()
    return found


def test_both_overlays_pass_the_resource_checks(checks: ModuleType, rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert problems(checks, "dev", rendered["dev"]) == []
    assert problems(checks, "prod", rendered["prod"]) == []


Mutation = Callable[[list[dict[str, Any]]], None]


def _set(kind: str, name: str, path: str, value: object) -> Mutation:
    def mutate(docs: list[dict[str, Any]]) -> None:
        node = find(docs, kind, name)
        *parents, last = (part.replace("~1", "/") for part in path.split("/"))  # JSON-pointer style
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return mutate


CONSUMER = "spec/template/spec/containers/0"
PROD_MUTATIONS: dict[str, tuple[Mutation, str]] = {
    "two PostgreSQL instances": (_set("Cluster", "tradevine-orders-db", "spec/instances", 2),
                                 "Cluster/tradevine-orders-db: instances 2"),
    "a typo in a Cluster field": (_set("Cluster", "tradevine-orders-db", "spec/storage/sise", "10Gi"),
                                  "Cluster/tradevine-orders-db: spec.storage: Additional properties"),
    "an unpinned PostgreSQL image": (_set("Cluster", "tradevine-orders-db", "spec/imageName",
                                          "ghcr.io/cloudnative-pg/postgresql:latest"), "pin an exact version"),
    "a consumer on one replica": (_set("Deployment", "tradevine-consumer-inventory", "spec/replicas", 1),
                                  "1 replica(s) on PostgreSQL"),
    "the wrong Secret key": (_set("Deployment", "tradevine-consumer-inventory",
                                  f"{CONSUMER}/env/0/valueFrom/secretKeyRef/key", "password"),
                             "CONSUMER_DATABASE from Secret 'tradevine-inventory-db-app' key 'password'"),
    "Recreate on PostgreSQL": (_set("Deployment", "tradevine-consumer-orders", "spec/strategy", {"type": "Recreate"}),
                               "strategy Recreate on PostgreSQL"),
    "RabbitMQ 3.13": (_set("RabbitmqCluster", "rabbitmq", "spec/image", "rabbitmq:3.13.7-management"),
                      "pin an exact RabbitMQ 4.x version"),
    "plain AMQP left on": (_set("RabbitmqCluster", "rabbitmq", "spec/tls/disableNonTLSListeners", False),
                           "tls.disableNonTLSListeners must be true"),
    "metrics only over TLS": (_set("RabbitmqCluster", "rabbitmq", "spec/rabbitmq/additionalConfig", None),
                              "metrics need 'prometheus.tcp.port = 15692'"),
    "a shared broker user": (_set("Deployment", "tradevine-consumer-orders",
                                  f"{CONSUMER}/env/1/valueFrom/secretKeyRef/key", "INVENTORY_AMQP_URL"),
                             "share AMQP_URL (Secret 'tradevine-gateway-secrets' key 'INVENTORY_AMQP_URL')"),
    "no CA for the broker": (_set("CronJob", "tradevine-reconciler",
                                  "spec/jobTemplate/spec/template/spec/containers/0/volumeMounts", []),
                             "reads AMQP_URL but mounts no CA from the TLS Secret"),
    "a TLS Secret no Certificate makes": (_set("RabbitmqCluster", "rabbitmq", "spec/tls/secretName", "other"),
                                          "tls.secretName 'other' is not the secretName of a Certificate"),
    "a Permission without its User": (_set("User", "tradevine-reconciler", "metadata/name", "someone-else"),
                                      "userReference 'tradevine-reconciler' names no User"),
    "PSA enforce off": (_set("Namespace", "tradevine", "metadata/labels/pod-security.kubernetes.io~1enforce", None),
                        "pod-security.kubernetes.io/enforce is None"),
    "privilege escalation": (_set("Deployment", "tradevine-gateway",
                                  "spec/template/spec/containers/0/securityContext/allowPrivilegeEscalation", True),
                             "container 'gateway': securityContext.allowPrivilegeEscalation must be false"),
    "no seccomp profile": (_set("Deployment", "tradevine-gateway", "spec/template/spec/securityContext/seccompProfile",
                                None), "seccompProfile None"),
    "a mount without its volume": (_set("Deployment", "tradevine-gateway", "spec/template/spec/volumes", []),
                                   "volumeMount 'tmp' names no volume"),
    "no default deny": (_set("NetworkPolicy", "tradevine-default-deny", "spec/policyTypes", ["Ingress"]),
                        "no default-deny policy"),
}


@pytest.mark.parametrize("case", sorted(PROD_MUTATIONS))
def test_each_rule_catches_its_mistake_in_prod(checks: ModuleType, rendered: dict[str, list[dict[str, Any]]],
                                               case: str) -> None:
    mutate, expected = PROD_MUTATIONS[case]
    docs = copy.deepcopy(rendered["prod"])
    mutate(docs)

    found = problems(checks, "prod", docs)

    assert any(expected in p for p in found), found


def test_sqlite_in_dev_must_stay_one_replica_with_recreate(checks: ModuleType,
                                                          rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = copy.deepcopy(rendered["dev"])
    _set("Deployment", "tradevine-consumer-orders", "spec/replicas", 2)(docs)

    assert any("SQLite with 2 replicas" in p for p in problems(checks, "dev", docs))


# -- what the network policies allow ------------------------------------------------------------------


def egress_rules(docs: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    """The egress rules of every NetworkPolicy that selects a pod with `labels` (matchLabels/In only)."""
    rules = []
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        if not all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()):
            continue
        if not all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions") or []):
            continue
        rules += policy["spec"].get("egress") or []
    return rules


def allowed_to_address(rules: list[dict[str, Any]], address: str, port: int) -> bool:
    ip = ipaddress.ip_address(address)
    for rule in rules:
        ports = rule.get("ports")
        if ports and not any(p["port"] == port for p in ports):
            continue
        if "to" not in rule:
            return True
        for peer in rule["to"]:
            block = peer.get("ipBlock")
            if block and ip in ipaddress.ip_network(block["cidr"]) and not any(
                    ip in ipaddress.ip_network(e) for e in block.get("except") or []):
                return True
    return False


def pod_labels(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, str]:
    doc = find(docs, kind, name)
    template = doc["spec"]["jobTemplate"]["spec"]["template"] if kind == "CronJob" else doc["spec"]["template"]
    return dict(template["metadata"]["labels"])


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_only_the_reconciler_reaches_the_internet_and_never_the_metadata_address(
        rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    reconciler = egress_rules(docs, pod_labels(docs, "CronJob", "tradevine-reconciler"))
    assert allowed_to_address(reconciler, "203.0.113.7", 443)
    assert allowed_to_address(reconciler, "2001:db8::7", 443)
    for address in ("169.254.169.254", "10.96.0.1", "172.20.0.10", "192.168.1.1", "100.64.0.1", "fd00:ec2::254"):
        assert not allowed_to_address(reconciler, address, 443), address
    assert not allowed_to_address(reconciler, "203.0.113.7", 80)
    for kind, name in (("Deployment", "tradevine-gateway"), ("Deployment", "tradevine-consumer-orders")):
        rules = egress_rules(docs, pod_labels(docs, kind, name))
        assert not allowed_to_address(rules, "203.0.113.7", 443), name
        assert not allowed_to_address(rules, "169.254.169.254", 80), name
        assert all("to" in rule for rule in rules), name  # in-cluster peers only


# -- the manifests against the image and the code (what tests/container runs, checked without Docker) ---


def container_environ(workload: Workload) -> dict[str, str]:
    """The environment the container starts with: the image's ENV, the manifest's, stand-ins for Secrets."""
    stand_ins = {"AMQP_URL": "amqp://user:password@rabbitmq:5672/", "TRADEVINE_CUSTOM_HEADER_VALUE": "value",
                 "CONSUMER_DATABASE": "postgresql://user:password@postgres:5432/app"}
    return {**dockerfile().env, **workload.env,
            **{name: stand_ins.get(name, "stand-in") for name in workload.secret_env}}


def console_scripts() -> set[str]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return set(tomllib.load(file)["project"]["scripts"])


def served_by_gateway(environ: dict[str, str], path: str) -> int:
    import httpx

    from gateway.app import create_app
    from gateway.publisher import InMemoryPublisher
    from gateway.settings import GatewaySettings

    async def status() -> int:
        app = create_app(GatewaySettings.from_environ(environ), InMemoryPublisher())
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            return (await client.get(path)).status_code

    return asyncio.run(status())


def served_by_consumer(path: str) -> int:
    from prometheus_client import CollectorRegistry

    from consumers.http import HealthServer

    status, _, _ = HealthServer("0.0.0.0", 8081, ready=lambda: True, registry=CollectorRegistry()).answer("GET", path)
    return status


@pytest.fixture(scope="module")
def ours(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Workload]]:
    found = {overlay: workloads(overlay, docs) for overlay, docs in rendered.items()}
    for overlay, by_name in found.items():
        assert set(by_name) == {"tradevine-gateway", "tradevine-consumer-inventory", "tradevine-consumer-orders",
                                "tradevine-reconciler"}, overlay
    return found


def test_the_image_default_and_every_command_are_console_scripts_the_code_accepts(
        ours: dict[str, dict[str, Workload]]) -> None:
    from consumers import cli as consumers_cli
    from consumers.registry import load
    from gateway import cli as gateway_cli

    scripts = console_scripts()
    assert dockerfile().cmd[0] in scripts
    roles = {"tradevine-gateway": ["tradevine-gateway", "serve"],
             "tradevine-consumer-inventory": ["tradevine-consumers", "run", "inventory"],
             "tradevine-consumer-orders": ["tradevine-consumers", "run", "orders"],
             "tradevine-reconciler": ["tradevine-gateway", "reconcile"]}
    for overlay, by_name in ours.items():
        for name, workload in by_name.items():
            script, *args = workload.command
            assert script in scripts, (overlay, name, script)
            assert workload.command[:len(roles[name])] == roles[name], (overlay, name, workload.command)
            parser = gateway_cli.build_parser() if script == "tradevine-gateway" else consumers_cli.build_parser()
            parsed = parser.parse_args(args)  # exits (SystemExit) on an argument the CLI does not know
            if parsed.command == "run":
                assert parsed.name in load(), (overlay, name)


def test_container_ports_are_the_ports_the_services_listen_on_and_the_image_exposes(
        ours: dict[str, dict[str, Workload]]) -> None:
    from consumers.settings import ConsumerSettings
    from gateway.settings import GatewaySettings

    for overlay, by_name in ours.items():
        for name, workload in by_name.items():
            environ = container_environ(workload)
            if workload.command[:2] == ["tradevine-gateway", "serve"]:
                gateway = GatewaySettings.from_environ(environ)
                listens = {(gateway.host, gateway.port)}
            elif workload.command[0] == "tradevine-consumers":
                consumer = ConsumerSettings.from_environ(environ)
                listens = {(consumer.http_host, consumer.http_port)}
            else:
                listens = set()  # the reconciler serves nothing
            assert listens == {("0.0.0.0", port) for port in workload.ports.values()}, (overlay, name)
            assert set(workload.ports.values()) <= dockerfile().exposed, (overlay, name)


def test_probe_paths_are_routes_the_services_answer_200_on_their_own_port(
        ours: dict[str, dict[str, Workload]]) -> None:
    for overlay, by_name in ours.items():
        for name, workload in by_name.items():
            if workload.ports:
                assert {"livenessProbe", "readinessProbe"} <= set(workload.probes), (overlay, name)
            for kind, (path, port) in workload.probes.items():
                assert port in workload.ports.values(), (overlay, name, kind)
                status = (served_by_gateway(container_environ(workload), path) if name == "tradevine-gateway"
                          else served_by_consumer(path))
                assert status == 200, (overlay, name, kind, path)


def test_every_pod_runs_as_the_dockerfile_user_with_a_read_only_root(ours: dict[str, dict[str, Workload]]) -> None:
    image = dockerfile()
    for overlay, by_name in ours.items():
        for name, workload in by_name.items():
            assert (workload.user, workload.read_only) == (image.user, True), (overlay, name)


def test_writable_mounts_are_where_the_code_writes_and_what_the_container_tests_mount_as_tmpfs(
        ours: dict[str, dict[str, Workload]]) -> None:
    for overlay, by_name in ours.items():
        for name, workload in by_name.items():
            mounted = {spec.split(":")[0] for spec in tmpfs(workload)}
            assert mounted == set(workload.writable) == writable_needed(workload), (overlay, name, mounted)
    # The container tests run the dev overlay: its consumers keep SQLite on a mount of their own.
    assert "/var/lib/tradevine" in ours["dev"]["tradevine-consumer-inventory"].writable


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
