"""How the Kubernetes manifests start each of our containers, and what the Dockerfile gives them.

One reading of `kubectl kustomize deploy/overlays/NAME` for two users: the container tests
(tests/container) start the image exactly so (command, environment, user, read-only root, writable
mounts as tmpfs), and tests/test_deploy.py checks, without Docker, that both overlays agree with the
image and the code (console scripts, ports, probe paths, user, writable paths). A change to a manifest
reaches both, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
POD_KINDS = ("Deployment", "CronJob")


@dataclass(frozen=True)
class Workload:
    """One container of ours as an overlay runs it."""

    name: str  # the Deployment's or CronJob's name
    kind: str
    image: str
    command: list[str]  # command + args
    env: dict[str, str]  # literal values: the ConfigMaps it reads whole (envFrom), then its own `env`
    secret_env: list[str]  # names whose values come from Secrets (the tests supply them)
    ports: dict[str, int]  # port name → containerPort
    writable: list[str]  # mount paths not mounted readOnly
    user: int
    read_only: bool
    grace_seconds: int
    probes: dict[str, tuple[str, int]] = field(default_factory=dict)  # kind → (path, port number)

    @property
    def env_names(self) -> set[str]:
        return set(self.env) | set(self.secret_env)


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise FileNotFoundError("kubectl (with its built-in kustomize) is not installed")
    out = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy/overlays" / overlay)], capture_output=True,
                         text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def workloads(overlay: str = "dev", docs: list[dict[str, Any]] | None = None) -> dict[str, Workload]:
    """Every Deployment and CronJob container that runs our image, by workload name."""
    docs = render(overlay) if docs is None else docs
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    found: dict[str, Workload] = {}
    for doc in docs:
        if doc["kind"] not in POD_KINDS:
            continue
        spec: dict[str, Any] = (doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment"
                                else doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])
        for container in spec["containers"]:
            if not container.get("image", "").split("@")[0].split(":")[0].endswith("tradevine-gateway"):
                continue  # not our image (none so far; an operator's sidecar would be)
            env: dict[str, str] = {}
            for source in container.get("envFrom", []):
                env.update(config_maps[source["configMapRef"]["name"]])
            secret_env = []
            for variable in container.get("env", []):
                if "value" in variable:
                    env[variable["name"]] = str(variable["value"])
                else:
                    secret_env.append(variable["name"])
            ports = {p.get("name", str(p["containerPort"])): p["containerPort"] for p in container.get("ports", [])}
            probes = {}
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                if "httpGet" in container.get(kind, {}):
                    get = container[kind]["httpGet"]
                    port = get["port"]
                    probes[kind] = (get["path"], ports[port] if isinstance(port, str) else int(port))
            security = container.get("securityContext", {})
            user = security.get("runAsUser", spec.get("securityContext", {}).get("runAsUser"))
            found[doc["metadata"]["name"]] = Workload(
                name=doc["metadata"]["name"], kind=doc["kind"], image=container["image"],
                command=container.get("command", []) + container.get("args", []), env=env,
                secret_env=secret_env, ports=ports,
                writable=sorted(m["mountPath"] for m in container.get("volumeMounts", []) if not m.get("readOnly")),
                user=-1 if user is None else int(user), read_only=bool(security.get("readOnlyRootFilesystem")),
                grace_seconds=int(spec.get("terminationGracePeriodSeconds", 30)), probes=probes)
    return found


def tmpfs(workload: Workload) -> list[str]:
    """The `docker run --tmpfs` values the container tests give for the writable volumes the manifest mounts."""
    return [f"{path}:uid={workload.user},gid={workload.user},mode=0700" for path in workload.writable]


def writable_needed(workload: Workload) -> set[str]:
    """Where the code writes: temporary files, and a consumer's SQLite database (a path, not a URL)."""
    needed = {"/tmp"}
    database = workload.env.get("CONSUMER_DATABASE")
    if database is not None and "://" not in database:
        needed.add(str(Path(database).parent))
    return needed


@dataclass(frozen=True)
class Image:
    """What the Dockerfile's last stage sets: user, exposed ports, environment, working directory."""

    user: int
    exposed: set[int]
    env: dict[str, str]
    workdir: str
    cmd: list[str]


def dockerfile(path: Path = DOCKERFILE) -> Image:
    lines = re.sub(r"\\\n", " ", path.read_text()).splitlines()
    last_stage = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    user, exposed, env, workdir, cmd = -1, set(), {}, "/", []
    for line in lines[last_stage:]:
        instruction, _, rest = line.strip().partition(" ")
        match instruction.upper():
            case "USER":
                user = int(rest.split(":")[0])
            case "EXPOSE":
                exposed |= {int(p.split("/")[0]) for p in rest.split()}
            case "ENV":
                for word in shlex.split(rest):
                    key, equals, value = word.partition("=")
                    if equals:
                        env[key] = value
            case "WORKDIR":
                workdir = rest.strip()
            case "CMD":
                cmd = json.loads(rest)
    return Image(user=user, exposed=exposed, env=env, workdir=workdir, cmd=cmd)
