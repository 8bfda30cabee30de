"""Write the OpenAPI schemas of custom resources, from their CRDs, as compact JSON for deploy/check.sh.

kubernetes-validate knows only the built-in kinds; deploy/check_resources.py validates the custom
resources the overlays use (RabbitmqCluster, Cluster, User, Permission, Certificate, Issuer) against
these files, as the API server would, and stricter: an unknown field is an error, not silently pruned.
Descriptions are dropped (they are most of a CRD's size). To follow an operator upgrade, extract the
CRDs of the version you pin in docs/operations.md and commit the result:

    python3 deploy/schemas/extract.py --source "cloudnative-pg v1.30.0" postgresql.cnpg.io_clusters.yaml

Each CRD (one file may hold several) gives deploy/schemas/<group>_<version>_<kind>.json per served version.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def strip(node: object) -> object:
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="where the CRDs come from, e.g. 'cert-manager v1.21.1'")
    parser.add_argument("crds", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for path in args.crds:
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                out = HERE / f"{spec['group']}_{version['name']}_{spec['names']['kind']}.json"
                document = {"source": args.source, "apiVersion": f"{spec['group']}/{version['name']}",
                            "kind": spec["names"]["kind"],
                            "schema": strip(version["schema"]["openAPIV3Schema"])}
                out.write_text(json.dumps(document, separators=(",", ":"), sort_keys=True) + "\n")
                print(f"{out.relative_to(HERE.parent.parent)}  ({out.stat().st_size} bytes, {args.source})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
