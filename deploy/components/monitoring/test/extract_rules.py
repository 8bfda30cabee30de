"""Write the `spec` of every PrometheusRule in rendered manifests as one plain Prometheus rules file.

`make deploy-check` (deploy/check.sh) runs it on the rendered prod overlay, so `promtool test rules`
tests exactly the rules that are shipped. Usage: extract_rules.py RENDERED.yaml OUT.yaml
Needs PyYAML (installed with yamllint).
"""

from __future__ import annotations

import sys

import yaml


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: extract_rules.py RENDERED.yaml OUT.yaml", file=sys.stderr)
        return 2
    rendered, out = argv
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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
