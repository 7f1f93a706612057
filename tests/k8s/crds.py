#!/usr/bin/env python3
"""Validates custom resources against the CustomResourceDefinitions vendored
in tests/k8s/crds (prometheus-operator's ServiceMonitor, PodMonitor and
PrometheusRule, CloudNativePG's Cluster and Database; tests/k8s/crds/README.md
says which releases), offline.

Strict as `kubectl apply` is against a server with field validation: a field
the schema does not declare fails (the schema's objects get
`additionalProperties: false` unless they preserve unknown fields), and so do
a wrong type, a missing required field, a value outside an enum or a pattern.
The CRDs' CEL rules (x-kubernetes-validations: none in prometheus-operator's,
a few in CloudNativePG's, listed in tests/k8s/crds/README.md) are not
evaluated, nor are the operators' admission webhooks. metadata gets the checks the API server makes of every object's
name, labels and annotations.

Used by schema.py (--crds) and mutations.py.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema

HERE = Path(__file__).resolve().parent
CRD_DIR = HERE / "crds"

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
METADATA_FIELDS = {"name", "namespace", "labels", "annotations"}


def _strict(schema: Any) -> Any:
    """The schema with undeclared fields refused, and Go regular expressions
    that Python reads differently rewritten (a global flag mid-pattern)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: _strict(value) for key, value in schema.items()}
    if "properties" in result and "additionalProperties" not in result \
            and not result.get("x-kubernetes-preserve-unknown-fields"):
        result["additionalProperties"] = False
    pattern = result.get("pattern")
    if isinstance(pattern, str) and pattern.startswith("^(?i)"):
        result["pattern"] = "(?i)^" + pattern[len("^(?i)"):]
    return result


def load(directory: Path = CRD_DIR) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the strict schema of that served version."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        crd = json.loads(path.read_text(encoding="utf-8"))
        if crd.get("kind") != "CustomResourceDefinition":
            raise ValueError(f"{path}: not a CustomResourceDefinition")
        spec = crd["spec"]
        for version in spec["versions"]:
            if not version.get("served"):
                continue
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            schema = _strict(schema)
            # apiVersion, kind and metadata are checked here, not by the CRD.
            for field in ("apiVersion", "kind", "metadata"):
                schema.setdefault("properties", {}).setdefault(field, {})
            schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = {
                "schema": schema, "scope": spec["scope"], "source": path.name,
            }
    return schemas


def known(obj: dict, schemas: dict) -> bool:
    return (obj.get("apiVersion"), obj.get("kind")) in schemas


def validate(obj: dict, schemas: dict) -> list[str]:
    """Every problem of `obj` (a kind the vendored CRDs define), as text."""
    entry = schemas[(obj.get("apiVersion"), obj.get("kind"))]
    problems = []
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        problems.append("metadata: missing")
        meta = {}
    unknown = sorted(set(meta) - METADATA_FIELDS)
    if unknown:
        problems.append(f"metadata: fields not expected in a manifest: {unknown}")
    name = meta.get("name")
    if not isinstance(name, str) or len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        problems.append(f"metadata.name: {name!r} is not a DNS subdomain name")
    if entry["scope"] == "Namespaced" and "namespace" in meta and not isinstance(meta["namespace"], str):
        problems.append("metadata.namespace: not a string")
    for field in ("labels", "annotations"):
        values = meta.get(field) or {}
        if not isinstance(values, dict):
            problems.append(f"metadata.{field}: not a mapping")
            continue
        for key, value in values.items():
            if not isinstance(key, str) or not LABEL_NAME.match(key):
                problems.append(f"metadata.{field}: {key!r} is not a valid key")
            if not isinstance(value, str):
                problems.append(f"metadata.{field}.{key}: {value!r} is not a string")
            elif field == "labels" and (len(value) > 63 or not LABEL_VALUE.match(value)):
                problems.append(f"metadata.labels.{key}: {value!r} is not a valid label value")
    validator = jsonschema.Draft7Validator(entry["schema"])
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in error.absolute_path) or "(top)"
        problems.append(f"{where}: {error.message}")
    return problems
