"""The alert rules and the Grafana dashboard only use metric names that exist (no broker needed here;
tests/integration/test_monitoring_metrics.py checks against the services' live /metrics)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from consumers.metrics import Metrics
from gateway.metrics import GatewayMetrics
from tests.monitoring import (
    DASHBOARD,
    KUBE_STATE_METRICS,
    PROMETHEUS_METRICS,
    RABBITMQ_METRICS,
    SERVICE_PREFIXES,
    dashboard,
    dashboard_expressions,
    exposed_names,
    metric_names,
    rule_expressions,
    used_names,
)

ROOT = Path(__file__).resolve().parents[1]
WHITELIST = PROMETHEUS_METRICS | KUBE_STATE_METRICS | RABBITMQ_METRICS


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (outcome) (rate(a_total{outcome="x{y}", b=~"c|d"}[5m])) / sum(rate(a_total[5m])) > 0.05',
     {"a_total"}),
    ("histogram_quantile(0.99, sum by (namespace, le) (rate(h_bucket[$__rate_interval])))", {"h_bucket"}),
    ("time() - max by (o) (max_over_time(g{namespace=\"$namespace\"}[1d])) > 6 * 3600", {"g"}),
    ("(s and on (namespace, job_name) (f{c=\"true\"} == 1)) > on (namespace) group_left () "
     "max by (namespace) (t) or u unless on (namespace) v offset 5m", {"s", "f", "t", "u", "v"}),
    ("max by (q) (m{queue=~`.+\\.parked`}) > 0 and deriv(n[15m]) > 1e3", {"m", "n"}),
    ("absent(up{job=\"tradevine-gateway\"}) or absent(up{job=\"x\"})", {"up"}),
    ("sum(x:recorded:rate5m) by (le)", {"x:recorded:rate5m"}),
])
def test_metric_names_finds_the_selected_series_only(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_exposed_names_include_samples_and_the_names_type_lines_promise() -> None:
    text = ("# HELP c_total A counter.\n# TYPE c_total counter\n"
            "# HELP h A histogram with labels and no child yet.\n# TYPE h histogram\n"
            "# HELP g A gauge.\n# TYPE g gauge\ng 1.0\n")
    assert exposed_names(text) == {"c_total", "h_bucket", "h_count", "h_sum", "g"}


def all_used() -> dict[str, set[str]]:
    return used_names({**rule_expressions(), **dashboard_expressions()})


def test_every_name_used_is_a_service_metric_or_explicitly_whitelisted() -> None:
    used = all_used()
    unknown = {name: sorted(where) for name, where in used.items()
               if not name.startswith(SERVICE_PREFIXES) and name not in WHITELIST}
    assert not unknown, f"metric names from neither the services nor the whitelist in tests/monitoring.py: {unknown}"
    assert sum(name.startswith(SERVICE_PREFIXES) for name in used) >= 8  # the parser found the real queries
    unused = WHITELIST - set(used)
    assert not unused, f"whitelisted in tests/monitoring.py but used by no rule or panel: {sorted(unused)}"


def test_every_service_name_used_is_in_the_services_registries() -> None:
    """In process: the names the gateway's and the consumers' registries declare (live: the integration test)."""
    exposed = exposed_names(generate_latest(GatewayMetrics().registry).decode())
    exposed |= exposed_names(generate_latest(Metrics().registry).decode())
    missing = {name: sorted(where) for name, where in all_used().items()
               if name.startswith(SERVICE_PREFIXES) and name not in exposed}
    assert not missing, f"used by rules or the dashboard, exposed by no service: {missing}"


def test_a_misspelt_name_would_be_caught() -> None:
    board = dashboard()
    board["panels"][1]["targets"][0]["expr"] = "sum(rate(tradevine_gateway_request_total[5m]))"
    used = used_names(dashboard_expressions(board))
    exposed = exposed_names(generate_latest(GatewayMetrics().registry).decode())
    assert "tradevine_gateway_request_total" in used and "tradevine_gateway_request_total" not in exposed


def test_the_dashboard_covers_the_operators_questions() -> None:
    board = dashboard()
    exprs = dashboard_expressions(board)
    text = "\n".join(exprs.values())
    for needed in ("tradevine_gateway_requests_total", "histogram_quantile(0.99, sum by (le) "
                   "(rate(tradevine_gateway_publish_seconds_bucket", "sum by (routing_key)",
                   "tradevine_gateway_last_event_timestamp_seconds", "sum by (consumer, outcome)",
                   "tradevine_consumer_handler_seconds_bucket", "rabbitmq_detailed_queue_messages_ready",
                   'rabbitmq_detailed_queue_messages{namespace="$namespace", queue=~".+\\\\.parked"}'):
        assert needed in text, needed
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    assert board["uid"] == "tradevine-gateway"
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_the_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool checks every dashboard query as a recording rule (Grafana's variables filled in)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    rules = [{"record": f"dashboard:query{n}",
              "expr": expr.replace("$__rate_interval", "5m").replace("$namespace", "tradevine")}
             for n, expr in enumerate(dashboard_expressions().values()) if "label_values(" not in expr]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def test_kustomize_ships_the_dashboard_file_as_a_sidecar_configmap() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    rendered = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy" / "overlays" / "prod")],
                              capture_output=True, text=True, check=True).stdout
    maps = [d for d in yaml.safe_load_all(rendered)
            if d and d["kind"] == "ConfigMap" and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert len(maps) == 1
    assert re.fullmatch(r"tradevine-grafana-dashboard", maps[0]["metadata"]["name"])  # no hash suffix
    assert json.loads(maps[0]["data"][DASHBOARD.name]) == dashboard()
