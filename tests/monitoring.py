"""Metric names used by the alert rules and the Grafana dashboard in deploy/components/monitoring/.

The tests compare them with the names the services really expose on /metrics (tests/test_monitoring.py
for the parsing, tests/integration/test_monitoring_metrics.py against live processes). Names that come
from elsewhere are listed here, explicitly, by source.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

MONITORING = Path(__file__).resolve().parents[1] / "deploy" / "components" / "monitoring"
RULES = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "dashboards" / "tradevine-gateway.json"
PODMONITORS = MONITORING / "podmonitors.yaml"

# Prometheus's own series for every target.
PROMETHEUS_METRICS = frozenset({"up"})
# kube-state-metrics (the reconciler's Job and CronJob objects): names from its job and cronjob docs.
KUBE_STATE_METRICS = frozenset({
    "kube_cronjob_created",
    "kube_cronjob_info",
    "kube_cronjob_status_last_successful_time",
    "kube_job_failed",
    "kube_job_status_start_time",
})
# RabbitMQ's rabbitmq_prometheus plugin, /metrics/detailed with the PodMonitor's families
# (queue_coarse_metrics, queue_consumer_count); tests/integration/test_monitoring_metrics.py checks them
# against a live node when a local rabbitmq-server can be started.
RABBITMQ_METRICS = frozenset({
    "rabbitmq_detailed_queue_consumers",
    "rabbitmq_detailed_queue_messages",
    "rabbitmq_detailed_queue_messages_ready",
    "rabbitmq_detailed_queue_messages_unacked",
})
# Names the project's own services expose start with these.
SERVICE_PREFIXES = ("tradevine_gateway_", "tradevine_consumer_")

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLES = re.compile(r"\$\{?\w+\}?")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_BRACES = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                       "bool", "offset", "inf", "nan"})
_LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana's $variables allowed)."""
    text = _STRINGS.sub('""', expr)
    text = _VARIABLES.sub("", text)
    text = _BRACKETS.sub("", text)
    text = _BRACES.sub("", text)
    text = _GROUPING.sub("", text)
    return {name for name in _IDENTIFIER.findall(text) if name not in _KEYWORDS}


def rule_expressions(path: Path = RULES) -> dict[str, str]:
    """`alert name #n` -> expr for every rule of the PrometheusRule object."""
    document = yaml.safe_load(path.read_text())
    found: dict[str, str] = {}
    for group in document["spec"]["groups"]:
        for n, rule in enumerate(group["rules"]):
            found[f"{rule.get('alert') or rule.get('record')} #{n}"] = rule["expr"]
    return found


def _panels(panels: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_expressions(board: dict[str, Any] | None = None) -> dict[str, str]:
    """`panel title / refId` -> expr for every query of the dashboard, and its template variables."""
    board = dashboard() if board is None else board
    found: dict[str, str] = {}
    for panel in _panels(board.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                found[f"{panel.get('title')} / {target.get('refId')}"] = target["expr"]
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else query or ""
        if variable.get("type") == "query":
            found[f"variable {variable['name']}"] = text
    return found


def used_names(expressions: dict[str, str]) -> dict[str, set[str]]:
    """metric name -> the places (rule or panel) using it."""
    used: dict[str, set[str]] = {}
    for where, expr in expressions.items():
        names = set(_LABEL_VALUES.findall(expr)) if "label_values(" in expr else metric_names(expr)
        for name in names:
            used.setdefault(name, set()).add(where)
    return used


def exposed_names(text: str) -> set[str]:
    """Every series name a Prometheus text exposition offers: its samples, and the names its TYPE lines
    promise (a labelled family without children yet has no sample line)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                    "summary": ("", "_count", "_sum"), "info": ("_info",)}.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
    return names


def detailed_families() -> list[str]:
    """The `family` parameters the RabbitMQ PodMonitor asks /metrics/detailed for."""
    for document in yaml.safe_load_all(PODMONITORS.read_text()):
        if document["metadata"]["name"] == "tradevine-rabbitmq":
            for endpoint in document["spec"]["podMetricsEndpoints"]:
                if endpoint.get("path") == "/metrics/detailed":
                    families: list[str] = endpoint["params"]["family"]
                    return families
    raise AssertionError("no /metrics/detailed endpoint in the tradevine-rabbitmq PodMonitor")
