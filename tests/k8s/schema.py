#!/usr/bin/env python3
"""Validates every object of rendered manifests against the Kubernetes
OpenAPI schemas bundled with kubernetes-validate (offline), in strict mode:
unknown fields fail, and so does a kind the schemas do not know.

With --crds DIR, custom resources of the kinds whose definitions DIR
vendors (tests/k8s/crds: prometheus-operator's, CloudNativePG's) are validated against those,
as strictly (crds.py); every other object against Kubernetes' own schemas.

Usage: schema.py --k8s-version 1.30 [--k8s-version 1.37 ...] [--crds DIR] RENDERED.yaml...
Last line: `RESULT <passed> <failed>` for validate.sh.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import kubernetes_validate
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crds  # noqa: E402
from render import load_yaml_documents  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k8s-version", action="append", required=True)
    parser.add_argument("--crds", type=Path, help="directory of vendored CustomResourceDefinitions (JSON)")
    parser.add_argument("rendered", nargs="+", type=Path)
    args = parser.parse_args(argv)
    schemas = crds.load(args.crds) if args.crds else {}
    passed = failed = 0
    for path in args.rendered:
        for obj in load_yaml_documents(path):
            what = f"{path.name}: {obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
            if crds.known(obj, schemas):
                problems = crds.validate(obj, schemas)
                source = schemas[(obj['apiVersion'], obj['kind'])]['source']
                for problem in problems:
                    print(f"  FAIL {what} against {source}: {problem}")
                passed, failed = (passed, failed + 1) if problems else (passed + 1, failed)
                continue
            for version in args.k8s_version:
                try:
                    kubernetes_validate.validate(obj, version, strict=True)
                    passed += 1
                except ValidationError as error:
                    failed += 1
                    where = ".".join(str(p) for p in error.path) or "(top)"
                    print(f"  FAIL {what} against Kubernetes {version}: {where}: {error.message}")
                except SchemaNotFoundError as error:
                    failed += 1
                    print(f"  FAIL {what}: {error.message}")
    against = ", ".join(args.k8s_version) + (f" + the CRDs in {args.crds}" if args.crds else "")
    print(f"schema {against}: {passed} objects valid, {failed} invalid")
    print(f"RESULT {passed} {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
