#!/usr/bin/env bash
# Apply the prod overlay in the order docs/operations.md gives (`make deploy-prod PHASE=...`).
#
#   deploy/apply-prod.sh data       the namespace, RabbitMQ (its TLS certificate, users, permissions) and
#                                   PostgreSQL; waits until the certificates, RabbitMQ and PostgreSQL are
#                                   ready. Needs the operators only.
#   deploy/apply-prod.sh [all]      everything. Refuses (exit 2) while the Ingress host is still the
#                                   placeholder webhooks.example.com, and while the Secret
#                                   'tradevine-gateway-secrets' lacks a key the workloads read.
#   --dry-run                       render and check, print what would be applied, change nothing
#                                   (no cluster needed: no kubectl call but `kubectl kustomize`)
#
# Environment: KUBECTL (default: kubectl), OVERLAY (default: deploy/overlays/prod), WAIT_TIMEOUT (15m).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KUBECTL="${KUBECTL:-kubectl}"
OVERLAY="${OVERLAY:-$ROOT/deploy/overlays/prod}"
WAIT_TIMEOUT="${WAIT_TIMEOUT:-15m}"
PHASE_LABEL="tradevine-gateway.io/apply-phase"
PLACEHOLDER="example.com"

usage() { echo "usage: deploy/apply-prod.sh [--dry-run] [data|all]" >&2; exit 2; }
refuse() { printf 'apply-prod: %s\n' "$*" >&2; exit 2; }

dry_run=0
phase=all
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    data | all) phase="$arg" ;;
    -h | --help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage ;;
  esac
done

command -v "$KUBECTL" >/dev/null || refuse "kubectl not found (set KUBECTL=/path/to/kubectl)"
rendered="$(mktemp "${TMPDIR:-/tmp}/apply-prod.XXXXXX")"
trap 'rm -f "$rendered"' EXIT
"$KUBECTL" kustomize "$OVERLAY" >"$rendered" || refuse "kubectl kustomize $OVERLAY failed (above)"

# The objects of the rendered overlay as "Kind name" lines, and the Ingress hosts.
objects() { awk '/^kind: /{kind=$2} /^  name: /{ if (kind) { print kind, $2; kind="" } }' "$1"; }
ingress_hosts() { awk '/^kind: /{ingress = ($2 == "Ingress")} ingress && /host: |^ *- [a-z0-9*.-]+$/{print $NF}' "$1"; }

if [[ "$phase" == all ]]; then
  while read -r host; do
    if [[ "$host" == "$PLACEHOLDER" || "$host" == *".$PLACEHOLDER" ]]; then
      refuse "the Ingress host is still the placeholder '$host': set your host name in the Ingress patch of" \
        "${OVERLAY#"$ROOT"/}/kustomization.yaml (twice), then run again"
    fi
  done < <(ingress_hosts "$rendered")
fi

selector=()
if [[ "$phase" == data ]]; then
  selector=(-l "$PHASE_LABEL=data")
  filtered="$(mktemp "${TMPDIR:-/tmp}/apply-prod.XXXXXX")"
  trap 'rm -f "$rendered" "$filtered"' EXIT
  # The same selection kubectl makes with -l, for the listing below.
  awk -v label="$PHASE_LABEL: data" 'BEGIN{RS="\n---\n"; ORS="\n---\n"} index($0, label)' "$rendered" >"$filtered"
  listing="$filtered"
else
  listing="$rendered"
fi

namespace="$(awk '/^kind: Namespace/{ns=1} ns && /^  name: /{print $2; exit}' "$rendered")"
[[ -n "$namespace" ]] || refuse "the overlay has no Namespace"

if ((dry_run)); then
  echo "apply-prod: dry run of phase '$phase' into namespace '$namespace'; would apply:"
  objects "$listing" | sort | sed "s/^/  /"
  exit 0
fi

if [[ "$phase" == all ]]; then
  # Every secretKeyRef to tradevine-gateway-secrets must find its key, or the pods stay in
  # CreateContainerConfigError.
  # (kubectl kustomize sorts keys: each secretKeyRef is followed by its 'key:' and 'name:' lines.)
  needed="$(awk '/secretKeyRef:/{getline a; getline b; s = a " " b
                 if (s ~ /name: tradevine-gateway-secrets( |$)/ && match(s, /key: [^ ]+/)) print substr(s, RSTART + 5, RLENGTH - 5)}' \
    "$rendered" | sort -u)"
  if ! present="$("$KUBECTL" -n "$namespace" get secret tradevine-gateway-secrets \
    -o go-template='{{range $k, $v := .data}}{{$k}}{{"\n"}}{{end}}' 2>/dev/null)"; then
    refuse "the Secret 'tradevine-gateway-secrets' does not exist in namespace '$namespace' yet:" \
      "create it as docs/operations.md (step 3) says, then run again"
  fi
  missing="$(comm -23 <(printf '%s\n' "$needed") <(printf '%s\n' "$present" | sort -u) | paste -sd, -)"
  [[ -z "$missing" ]] || refuse "the Secret 'tradevine-gateway-secrets' lacks keys the workloads read: $missing" \
    "(docs/operations.md, step 3)"
fi

echo "apply-prod: applying phase '$phase' to namespace '$namespace'"
"$KUBECTL" apply -f "$rendered" "${selector[@]}"

if [[ "$phase" == data ]]; then
  echo "apply-prod: waiting (up to $WAIT_TIMEOUT) for RabbitMQ and PostgreSQL"
  "$KUBECTL" -n "$namespace" wait --for=condition=Ready certificate --all --timeout="$WAIT_TIMEOUT"
  "$KUBECTL" -n "$namespace" wait --for=condition=AllReplicasReady rabbitmqcluster --all --timeout="$WAIT_TIMEOUT"
  "$KUBECTL" -n "$namespace" wait --for=condition=Ready clusters.postgresql.cnpg.io --all --timeout="$WAIT_TIMEOUT"
  # The Users and Permissions become ready once the Topology Operator trusts the namespace's CA (the
  # broker's management API is HTTPS only): docs/operations.md, step 2.
  echo "apply-prod: next: let the Topology Operator trust the CA in Secret $namespace/tradevine-ca" \
    "(docs/operations.md, step 2), then create the Secret tradevine-gateway-secrets (step 3)"
else
  "$KUBECTL" -n "$namespace" rollout status deployment --timeout="$WAIT_TIMEOUT"
fi
echo "apply-prod: done"
