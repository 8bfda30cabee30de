"""Offline checks of the rendered overlays that kubernetes-validate cannot make (deploy/check.sh step 4).

Usage: python3 deploy/check_resources.py NAME=RENDERED.yaml ...   (one per overlay; exit 1 on a problem)

1. Custom resources against their operators' schemas (deploy/schemas/*.json, from the CRDs of the
   pinned operator versions; deploy/schemas/extract.py), strictly: an unknown field is an error where
   the API server would silently drop it.
2. What the project relies on, beyond the schemas:
   - every CloudNativePG Cluster: at least 3 instances, a pinned image, a storage size, an application
     database and owner, spread over zones; every consumer that reads CONSUMER_DATABASE from a Secret
     reads key 'uri' of '<cluster>-app' of a Cluster in the same overlay, runs at least 2 replicas with
     strategy RollingUpdate, has a PodDisruptionBudget and no PersistentVolumeClaim;
     a consumer on SQLite (a path) runs 1 replica with strategy Recreate on its own PVC;
   - every RabbitmqCluster: a pinned RabbitMQ 4.x image, TLS from a cert-manager Certificate in the same
     overlay with non-TLS listeners off, metrics still on 15692, zone spread; every Permission names a
     User of the overlay; with Users, no two workloads share an AMQP_URL (one broker user each); with
     TLS, every workload that reads AMQP_URL mounts the CA from the broker's TLS Secret;
   - the namespace carries Pod Security Admission 'restricted' (enforce, audit, warn) at a pinned
     version, and every pod template in the overlay meets 'restricted' (the rules the API server
     would apply; pods made by operators are covered by the operators: see docs/operations.md);
   - a default-deny NetworkPolicy for ingress and egress; every volumeMount names a volume and
     every Secret volume and secretKeyRef key a workload needs is documented (not checked: Secrets
     are made at deploy time).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

SCHEMAS = Path(__file__).resolve().parent / "schemas"
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
PINNED_TAG = re.compile(r"^[^:@]+(:[0-9][^:]*|@sha256:[0-9a-f]{64})$")
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
PSA_MODES = ("enforce", "audit", "warn")

Doc = dict[str, Any]


def load_schemas() -> dict[tuple[str, str], Draft7Validator]:
    validators = {}
    for path in sorted(SCHEMAS.glob("*.json")):
        document = json.loads(path.read_text())
        validators[(document["apiVersion"], document["kind"])] = Draft7Validator(strict(document["schema"]))
    return validators


def strict(node: Any) -> Any:
    """The API server prunes unknown fields; here an unknown field (a typo) is an error."""
    if isinstance(node, dict):
        node = {k: strict(v) for k, v in node.items()}
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


def name_of(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def pod_spec(doc: Doc) -> Doc | None:
    kind = doc["kind"]
    if kind == "Pod":
        return doc["spec"]  # type: ignore[no-any-return]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    if kind in POD_KINDS:
        return doc["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return None


def containers(spec: Doc) -> Iterator[Doc]:
    yield from spec.get("initContainers") or []
    yield from spec.get("containers") or []
    yield from spec.get("ephemeralContainers") or []


def env_of(container: Doc, name: str) -> Doc | None:
    return next((e for e in container.get("env") or [] if e["name"] == name), None)


def dig(node: Any, *keys: str) -> Any:
    """node[k1][k2]..., or None where a key is missing."""
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    match = selector.get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in match.items()) and not selector.get("matchExpressions")


def topology_keys(spec: Doc) -> set[str]:
    return {c["topologyKey"] for c in spec.get("topologySpreadConstraints") or []}


class Checker:
    def __init__(self, overlay: str, docs: list[Doc], validators: dict[tuple[str, str], Draft7Validator]):
        self.overlay = overlay
        self.docs = docs
        self.validators = validators
        self.problems: list[str] = []

    def problem(self, where: str, text: str) -> None:
        self.problems.append(f"{self.overlay}: {where}: {text}")

    def of_kind(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d["kind"] == kind]

    def run(self) -> list[str]:
        self.check_schemas()
        self.check_namespace()
        self.check_network_policies()
        self.check_pods()
        self.check_consumers()
        self.check_postgres()
        self.check_rabbitmq()
        return self.problems

    # 1 -------------------------------------------------------------------------------------------

    def check_schemas(self) -> None:
        for doc in self.docs:
            validator = self.validators.get((doc["apiVersion"], doc["kind"]))
            if validator is None:
                continue
            for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
                path = ".".join(str(p) for p in error.absolute_path) or "(top)"
                self.problem(name_of(doc), f"{path}: {error.message}")

    # 2 -------------------------------------------------------------------------------------------

    def check_namespace(self) -> None:
        namespaces = self.of_kind("Namespace")
        if len(namespaces) != 1:
            self.problem("Namespace", f"expected exactly one Namespace, found {len(namespaces)}")
            return
        labels = namespaces[0]["metadata"].get("labels") or {}
        for mode in PSA_MODES:
            level = labels.get(f"pod-security.kubernetes.io/{mode}")
            version = labels.get(f"pod-security.kubernetes.io/{mode}-version", "")
            if level != "restricted":
                self.problem(name_of(namespaces[0]),
                             f"pod-security.kubernetes.io/{mode} is {level!r}, not 'restricted'")
            if not re.fullmatch(r"v1\.\d+", version):
                self.problem(name_of(namespaces[0]),
                             f"pod-security.kubernetes.io/{mode}-version is {version!r}: pin a version such as v1.30")

    def check_network_policies(self) -> None:
        deny = [p for p in self.of_kind("NetworkPolicy")
                if p["spec"].get("podSelector") == {}
                and set(p["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
                and not p["spec"].get("ingress") and not p["spec"].get("egress")]
        if not deny:
            self.problem("NetworkPolicy",
                         "no default-deny policy (podSelector {}, policyTypes Ingress and Egress, no rules)")

    def check_pods(self) -> None:
        """Pod Security Standards, 'restricted' profile (as of Kubernetes 1.30)."""
        for doc in self.docs:
            spec = pod_spec(doc)
            if spec is None:
                continue
            where = name_of(doc)
            pod_sc = spec.get("securityContext") or {}
            for field in ("hostNetwork", "hostPID", "hostIPC"):
                if spec.get(field):
                    self.problem(where, f"{field} is not allowed")
            for volume in spec.get("volumes") or []:
                kinds = set(volume) - {"name"}
                if not kinds <= RESTRICTED_VOLUMES:
                    self.problem(where, f"volume {volume['name']!r} of type {sorted(kinds)} is not allowed")
            names = {v["name"] for v in spec.get("volumes") or []}
            names |= {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates") or []}
            for container in containers(spec):
                cwhere = f"{where} container {container['name']!r}"
                sc = container.get("securityContext") or {}
                if sc.get("privileged"):
                    self.problem(cwhere, "privileged")
                if sc.get("allowPrivilegeEscalation") is not False:
                    self.problem(cwhere, "securityContext.allowPrivilegeEscalation must be false")
                caps = sc.get("capabilities") or {}
                if "ALL" not in (caps.get("drop") or []):
                    self.problem(cwhere, "securityContext.capabilities.drop must include ALL")
                if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
                    self.problem(cwhere, f"capabilities.add {caps['add']} beyond NET_BIND_SERVICE")
                if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")) or sc.get("runAsNonRoot") is False:
                    self.problem(cwhere, "runAsNonRoot must be true (pod or container)")
                if 0 in (sc.get("runAsUser"), pod_sc.get("runAsUser")):
                    self.problem(cwhere, "runAsUser 0")
                seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
                if seccomp not in ("RuntimeDefault", "Localhost"):
                    self.problem(cwhere, f"seccompProfile {seccomp!r}: RuntimeDefault (pod or container) is required")
                for port in container.get("ports") or []:
                    if port.get("hostPort"):
                        self.problem(cwhere, f"hostPort {port['hostPort']}")
                for mount in container.get("volumeMounts") or []:
                    if mount["name"] not in names:
                        self.problem(cwhere, f"volumeMount {mount['name']!r} names no volume of the pod")

    def check_consumers(self) -> None:
        clusters = {c["metadata"]["name"] for c in self.of_kind("Cluster")
                    if c["apiVersion"].startswith("postgresql.cnpg.io/")}
        pvcs = {p["metadata"]["name"] for p in self.of_kind("PersistentVolumeClaim")}
        pdbs = self.of_kind("PodDisruptionBudget")
        for deployment in self.of_kind("Deployment"):
            spec = deployment["spec"]
            labels = spec["template"]["metadata"].get("labels") or {}
            if labels.get("app.kubernetes.io/component") != "consumer":
                continue
            where = name_of(deployment)
            pod = spec["template"]["spec"]
            container = pod["containers"][0]
            database = env_of(container, "CONSUMER_DATABASE")
            if database is None:
                self.problem(where, "no CONSUMER_DATABASE")
                continue
            claims = [v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes") or []
                      if "persistentVolumeClaim" in v]
            strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
            replicas = spec.get("replicas", 1)
            ref = (database.get("valueFrom") or {}).get("secretKeyRef")
            if ref is not None:  # PostgreSQL
                secret = ref.get("name", "")
                if not (secret.endswith("-app") and secret[:-4] in clusters and ref.get("key") == "uri"):
                    self.problem(where, f"CONSUMER_DATABASE from Secret {secret!r} key {ref.get('key')!r}: expected "
                                        f"key 'uri' of '<cluster>-app' of a Cluster here {sorted(clusters)}")
                if replicas < 2:
                    self.problem(where, f"{replicas} replica(s) on PostgreSQL: run at least 2")
                if strategy != "RollingUpdate":
                    self.problem(where, f"strategy {strategy} on PostgreSQL: use RollingUpdate")
                if claims:
                    self.problem(where, f"mounts PVC {claims} although its state is in PostgreSQL")
                if not any(selects(p["spec"]["selector"], labels) for p in pdbs):
                    self.problem(where, "no PodDisruptionBudget selects its pods")
                if "topology.kubernetes.io/zone" not in topology_keys(pod):
                    self.problem(where, "no zone topologySpreadConstraint")
            else:  # SQLite: one writer
                path = database.get("value", "")
                if path.startswith("postgresql://") or path.startswith("postgres://"):
                    self.problem(where, "CONSUMER_DATABASE holds a PostgreSQL URL in clear: read it from the Secret")
                    continue
                if replicas != 1 or strategy != "Recreate":
                    self.problem(where, f"SQLite with {replicas} replicas and strategy {strategy}: "
                                        "SQLite has one writer (1 replica, Recreate)")
                missing = [c for c in claims if c not in pvcs]
                if not claims or missing:
                    self.problem(where, f"SQLite needs its PersistentVolumeClaim (claims {claims}, missing {missing})")
        for name in sorted(clusters):
            readers = [d for d in self.of_kind("Deployment")
                       for c in d["spec"]["template"]["spec"]["containers"]
                       if dig(env_of(c, "CONSUMER_DATABASE"), "valueFrom", "secretKeyRef", "name") == f"{name}-app"]
            if not readers:
                self.problem(f"Cluster/{name}", "no consumer reads its Secret")

    def check_postgres(self) -> None:
        for cluster in self.of_kind("Cluster"):
            if not cluster["apiVersion"].startswith("postgresql.cnpg.io/"):
                continue
            where, spec = name_of(cluster), cluster["spec"]
            if spec.get("instances", 1) < 3:
                self.problem(where, f"instances {spec.get('instances', 1)}: run 3 (a primary and two replicas)")
            image = spec.get("imageName", "")
            if not PINNED_TAG.match(image) or image.endswith(":latest"):
                self.problem(where, f"imageName {image!r}: pin an exact version (or a digest)")
            if not (spec.get("storage") or {}).get("size"):
                self.problem(where, "storage.size is not set")
            initdb = (spec.get("bootstrap") or {}).get("initdb") or {}
            if not (initdb.get("database") and initdb.get("owner")):
                self.problem(where, "bootstrap.initdb.database and .owner must be set (they make the '-app' Secret)")
            if "topology.kubernetes.io/zone" not in topology_keys(spec):
                self.problem(where, "no zone topologySpreadConstraint")

    def check_rabbitmq(self) -> None:
        certificates = {c["spec"]["secretName"] for c in self.of_kind("Certificate")}
        users = {u["metadata"]["name"] for u in self.of_kind("User") if u["apiVersion"].startswith("rabbitmq.com/")}
        for permission in self.of_kind("Permission"):
            reference = (permission["spec"].get("userReference") or {}).get("name")
            if reference not in users:
                self.problem(name_of(permission),
                             f"userReference {reference!r} names no User of this overlay {sorted(users)}")
        self.check_amqp_clients(users)
        for cluster in self.of_kind("RabbitmqCluster"):
            where, spec = name_of(cluster), cluster["spec"]
            image = spec.get("image", "")
            if not re.fullmatch(r"rabbitmq:4\.\d+\.\d+(-management)?(@sha256:[0-9a-f]{64})?", image):
                self.problem(where,
                             f"image {image!r}: pin an exact RabbitMQ 4.x version, e.g. rabbitmq:4.2.6-management")
            tls = spec.get("tls") or {}
            if tls.get("secretName") not in certificates:
                self.problem(where, f"tls.secretName {tls.get('secretName')!r} is not the secretName of a Certificate "
                                    f"of this overlay {sorted(certificates)}")
            if tls.get("disableNonTLSListeners") is not True:
                self.problem(where, "tls.disableNonTLSListeners must be true (AMQP only over TLS)")
            pod = dig(spec, "override", "statefulSet", "spec", "template", "spec") or {}
            if tls.get("disableNonTLSListeners"):
                # The operator then serves metrics only on 15691 (TLS); components/monitoring scrapes
                # the container port named 'prometheus' (15692) over plain HTTP.
                config = dig(spec, "rabbitmq", "additionalConfig") or ""
                ports = [p for c in pod.get("containers") or [] if c["name"] == "rabbitmq"
                         for p in c.get("ports") or []]
                if not re.search(r"^prometheus\.tcp\.port\s*=\s*15692\s*$", config, re.M) or not any(
                        p.get("name") == "prometheus" and p.get("containerPort") == 15692 for p in ports):
                    self.problem(where, "without non-TLS listeners, metrics need 'prometheus.tcp.port = 15692' in "
                                        "rabbitmq.additionalConfig and a container port 'prometheus' (15692) in the "
                                        "override, or Prometheus finds no target")
            if "topology.kubernetes.io/zone" not in topology_keys(pod):
                self.problem(where,
                             "no zone topologySpreadConstraint (override.statefulSet...topologySpreadConstraints)")
            for container in containers(pod):
                sc = container.get("securityContext") or {}
                if sc.get("allowPrivilegeEscalation") or sc.get("privileged") or sc.get("runAsNonRoot") is False:
                    self.problem(where, f"the override weakens container {container['name']!r}'s securityContext")


    def check_amqp_clients(self, users: set[str]) -> None:
        """With broker users, each workload has its own AMQP_URL; with TLS, each mounts the broker's CA."""
        tls_secrets = {dig(c, "spec", "tls", "secretName") for c in self.of_kind("RabbitmqCluster")} - {None}
        keys: dict[tuple[str, str], list[str]] = {}
        for doc in self.docs:
            spec = pod_spec(doc)
            if spec is None:
                continue
            for container in spec.get("containers") or []:
                ref = dig(env_of(container, "AMQP_URL"), "valueFrom", "secretKeyRef")
                if ref is None:
                    continue
                keys.setdefault((ref.get("name"), ref.get("key")), []).append(name_of(doc))
                if tls_secrets:
                    mounted = {v["name"] for v in spec.get("volumes") or []
                               if dig(v, "secret", "secretName") in tls_secrets}
                    if not any(m["name"] in mounted for m in container.get("volumeMounts") or []):
                        self.problem(f"{name_of(doc)} container {container['name']!r}",
                                     f"reads AMQP_URL but mounts no CA from the TLS Secret {sorted(tls_secrets)}")
        if users:
            for (secret, key), readers in sorted(keys.items()):
                if len(readers) > 1:
                    self.problem(", ".join(readers), f"share AMQP_URL (Secret {secret!r} key {key!r}), so one broker "
                                                     "user: give each workload its own key")


def main(argv: list[str]) -> int:
    validators = load_schemas()
    problems: list[str] = []
    for argument in argv:
        overlay, _, path = argument.partition("=")
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
        found = Checker(overlay, docs, validators).run()
        problems += found
        if not found:
            custom = sorted({f"{d['kind']}" for d in docs if (d["apiVersion"], d["kind"]) in validators})
            print(f"ok  {overlay:<6} {len(docs)} objects; custom resources validated against their CRDs: "
                  f"{', '.join(custom) or 'none'}")
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
