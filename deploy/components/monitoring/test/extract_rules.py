"""Write the `spec` of every PrometheusRule in rendered manifests as one plain Prometheus rules file.

`make deploy-check` (deploy/check.sh) runs it on the rendered prod overlay, so `promtool test rules`
tests exactly the rules that are shipped. Usage: extract_rules.py RENDERED.yaml OUT.yaml [TESTS.yaml]
With TESTS.yaml (promtool's unit tests), it also fails unless every alert has at least one case that
expects it to fire and one that expects it quiet, and prints how many of each.
Needs PyYAML (installed with yamllint).
"""

from __future__ import annotations

import sys

import yaml


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: extract_rules.py RENDERED.yaml OUT.yaml [TESTS.yaml]", file=sys.stderr)
        return 2
    rendered, out = argv[:2]
    with open(rendered, encoding="utf-8") as f:
        documents = [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]
    groups = []
    names = []
    for document in documents:
        if document.get("kind") != "PrometheusRule":
            continue
        names.append(document["metadata"]["name"])
        groups.extend(document.get("spec", {}).get("groups", []))
    if not groups:
        print(f"extract_rules.py: no PrometheusRule with rule groups in {rendered}", file=sys.stderr)
        return 1
    with open(out, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False, width=1000)
    rules = sum(len(g.get("rules", [])) for g in groups)
    print(f"ok  {rules} rules in {len(groups)} groups from PrometheusRule {', '.join(names)}")
    if len(argv) == 3:
        alerts = list(dict.fromkeys(r["alert"] for g in groups for r in g.get("rules", []) if "alert" in r))
        return coverage(alerts, argv[2])
    return 0


def coverage(alerts: list[str], tests_path: str) -> int:
    """Every alert needs a test case where it fires and one where it stays quiet."""
    with open(tests_path, encoding="utf-8") as f:
        tests = yaml.safe_load(f)
    fires = dict.fromkeys(alerts, 0)
    quiet = dict.fromkeys(alerts, 0)
    for test in tests.get("tests", []):
        for case in test.get("alert_rule_test", []):
            name = case["alertname"]
            if name not in fires:
                print(f"extract_rules.py: {tests_path} tests {name}, which no rule defines", file=sys.stderr)
                return 1
            if case.get("exp_alerts"):
                fires[name] += 1
            else:
                quiet[name] += 1
    for name in alerts:
        print(f"    {name:<40} fires in {fires[name]} case(s), stays quiet in {quiet[name]}")
    lacking = [name for name in alerts if not fires[name] or not quiet[name]]
    if lacking:
        print(f"extract_rules.py: no case that fires it, or none that keeps it quiet: {', '.join(lacking)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
