#!/usr/bin/env python3
"""Properties every rendered install must have, beyond schema validity.

Usage: properties.py --overlay NAME RENDERED.yaml [--secret-example FILE]

NAME (dev, prod, jobs) adds the expectations of that overlay. Prints one
line per failed check and a summary; the last line is
`RESULT <passed> <failed>` for validate.sh. Exits 1 when a check failed.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render import load_yaml_documents  # noqa: E402

# The services' drain on SIGTERM (services/common/src/server.rs DRAIN_TIMEOUT).
DRAIN_SECONDS = 20
APP_IMAGE = re.compile(r"(^|/)loyalty-mesh([:@]|$)")
RECOMMENDED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by")
# Environment variables that carry credentials: never a literal value.
SENSITIVE_ENV = re.compile(r"(^|_)(URL|PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIALS?|API_KEY)$")
CREDENTIAL_IN_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@", re.IGNORECASE)
POD_KINDS = {"Deployment", "StatefulSet", "Job"}
GRPC_SERVICES = {"loyalty-points", "loyalty-tiers", "loyalty-referral", "loyalty-rewards"}
HTTP_SERVICES = {"loyalty-gateway"}


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, condition: Any, what: str) -> bool:
        if condition:
            self.passed += 1
            return True
        self.failed.append(what)
        return False


def name_of(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def labels_match(selector: dict | None, labels: dict) -> bool:
    """Kubernetes label selector semantics (matchLabels + matchExpressions)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def pod_labels(obj: dict) -> dict:
    return obj["spec"]["template"]["metadata"].get("labels") or {}


def containers(obj: dict) -> list[dict]:
    spec = pod_spec(obj)
    return (spec.get("initContainers") or []) + (spec.get("containers") or [])


def effective(container: dict, pod: dict, field: str) -> Any:
    """A securityContext field, the container's value winning over the pod's."""
    own = (container.get("securityContext") or {}).get(field)
    return own if own is not None else (pod.get("securityContext") or {}).get(field)


def port_number(container: dict, port: Any) -> int | None:
    if isinstance(port, int):
        return port
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return declared["containerPort"]
    return None


# ----------------------------------------------------------------------------- network policy evaluation
def ingress_allowed(policies: list[dict], namespace: str, source_namespace: dict, source_labels: dict,
                    target: dict, port_name: str) -> bool:
    """Would a TCP connection from a pod (labels, in a namespace with labels)
    to the named port of `target`'s pods be admitted?"""
    target_labels = pod_labels(target)
    port = next((port_number(c, port_name) for c in containers(target) if port_number(c, port_name)), None)
    selecting = [p for p in policies
                 if p["metadata"].get("namespace") == namespace
                 and "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])
                 and labels_match(p["spec"].get("podSelector") or {}, target_labels)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(
                    p.get("protocol", "TCP") == "TCP"
                    and (p.get("port") in (None, port_name) or p.get("port") == port) for p in ports):
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                if "ipBlock" in peer:
                    continue
                ns_selector = peer.get("namespaceSelector")
                if ns_selector is None:
                    ns_ok = source_namespace.get("kubernetes.io/metadata.name") == namespace
                else:
                    ns_ok = labels_match(ns_selector, source_namespace)
                pod_ok = labels_match(peer["podSelector"], source_labels) if "podSelector" in peer else True
                if ns_ok and pod_ok:
                    return True
    return False


# ----------------------------------------------------------------------------- the checks
def check_workload(c: Checks, obj: dict, objects: list[dict], secret_keys: dict[str, set[str]]) -> None:
    n = name_of(obj)
    pod = pod_spec(obj)
    is_job = obj["kind"] == "Job"
    is_app = any(APP_IMAGE.search(x.get("image", "")) for x in containers(obj))

    c.check(labels_match(obj["spec"].get("selector"), pod_labels(obj)) or is_job,
            f"{n}: selector matches its pod template labels")
    c.check(pod.get("automountServiceAccountToken") is False, f"{n}: automountServiceAccountToken false")
    account = pod.get("serviceAccountName", "default")
    c.check(account != "default", f"{n}: runs under its own ServiceAccount, not `default`")
    c.check(any(o["kind"] == "ServiceAccount" and o["metadata"]["name"] == account
                and o.get("automountServiceAccountToken") is False for o in objects) or account == "default",
            f"{n}: ServiceAccount {account} exists and mounts no token")
    c.check((pod.get("securityContext") or {}).get("runAsNonRoot") is True, f"{n}: pod runAsNonRoot")
    c.check(not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"),
            f"{n}: no host namespaces")
    for volume in pod.get("volumes") or []:
        c.check("hostPath" not in volume, f"{n}: volume {volume['name']} is not a hostPath")

    for container in containers(obj):
        cn = f"{n} container {container['name']}"
        sc = container.get("securityContext") or {}
        user = effective(container, pod, "runAsUser")
        c.check(effective(container, pod, "runAsNonRoot") is True, f"{cn}: runAsNonRoot")
        c.check(isinstance(user, int) and user >= 1000, f"{cn}: numeric non-root runAsUser (got {user})")
        c.check(sc.get("readOnlyRootFilesystem") is True, f"{cn}: readOnlyRootFilesystem true")
        c.check(sc.get("allowPrivilegeEscalation") is False, f"{cn}: allowPrivilegeEscalation false")
        c.check(sc.get("privileged") is not True, f"{cn}: not privileged")
        caps = sc.get("capabilities") or {}
        c.check("ALL" in (caps.get("drop") or []), f"{cn}: capabilities drop ALL")
        c.check(not caps.get("add"), f"{cn}: no capabilities added")
        c.check((effective(container, pod, "seccompProfile") or {}).get("type") == "RuntimeDefault",
                f"{cn}: seccompProfile RuntimeDefault")
        resources = container.get("resources") or {}
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                c.check((resources.get(bound) or {}).get(resource), f"{cn}: resources.{bound}.{resource} set")
        image = container.get("image", "")
        c.check(re.search(r"(:[\w][\w.-]*|@sha256:[0-9a-f]{64})$", image.split("/")[-1])
                and not image.endswith(":latest"), f"{cn}: image {image!r} has a fixed tag or digest")
        if not is_job:
            c.check(container.get("readinessProbe"), f"{cn}: readinessProbe")
            c.check(container.get("livenessProbe"), f"{cn}: livenessProbe")

        for env in container.get("env") or []:
            literal = env.get("value")
            if literal is not None:
                c.check(not SENSITIVE_ENV.search(env["name"]),
                        f"{cn}: {env['name']} is a credential and must come from a Secret, not a literal")
                c.check(not CREDENTIAL_IN_URL.search(str(literal)), f"{cn}: {env['name']} holds no credentials")
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                c.check(ref["key"] in secret_keys.get(ref["name"], set()),
                        f"{cn}: {env['name']} refers to Secret {ref['name']} key {ref['key']}, which is neither "
                        "rendered nor documented in k8s/secret.example.yaml")
            ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
            if ref:
                c.check(any(o["kind"] == "ConfigMap" and o["metadata"]["name"] == ref["name"]
                            and ref["key"] in (o.get("data") or {}) for o in objects),
                        f"{cn}: ConfigMap {ref['name']} key {ref['key']} exists")
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                c.check(any(o["kind"] == "ConfigMap" and o["metadata"]["name"] == source["configMapRef"]["name"]
                            for o in objects), f"{cn}: ConfigMap {source['configMapRef']['name']} exists")
            c.check("secretRef" not in source, f"{cn}: no envFrom of a whole Secret")

        if is_app and not is_job:
            check_app_container(c, cn, obj, container, objects)

    if is_app and not is_job:
        check_app_workload(c, n, obj, objects)
    if obj["kind"] in {"Deployment", "StatefulSet"}:
        c.check(any(o["kind"] == "Service" and labels_match({"matchLabels": o["spec"].get("selector") or {}},
                                                            pod_labels(obj)) for o in objects),
                f"{n}: a Service selects its pods")
        c.check(any(o["kind"] == "NetworkPolicy" and (o["spec"].get("podSelector") or {})
                    and labels_match(o["spec"]["podSelector"], pod_labels(obj)) for o in objects),
                f"{n}: a NetworkPolicy of its own selects its pods")
    if is_job:
        spec = obj["spec"]
        c.check(spec.get("backoffLimit") == 0, f"{n}: backoffLimit 0")
        c.check(isinstance(spec.get("activeDeadlineSeconds"), int), f"{n}: bounded by activeDeadlineSeconds")
        c.check(isinstance(spec.get("ttlSecondsAfterFinished"), int), f"{n}: ttlSecondsAfterFinished set")
        c.check(pod.get("restartPolicy") == "Never", f"{n}: restartPolicy Never")


def env_settings(container: dict, objects: list[dict]) -> dict[str, str]:
    """What the container sees in its environment from ConfigMaps and literals."""
    settings: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        for o in objects:
            if ref and o["kind"] == "ConfigMap" and o["metadata"]["name"] == ref["name"]:
                settings.update(o.get("data") or {})
    for env in container.get("env") or []:
        if "value" in env:
            settings[env["name"]] = env["value"]
    return settings


def check_app_container(c: Checks, cn: str, obj: dict, container: dict, objects: list[dict]) -> None:
    name = obj["metadata"]["name"]
    settings = env_settings(container, objects)
    c.check(settings.get("LOG_FORMAT") == "json", f"{cn}: LOG_FORMAT=json")
    for variable, value in settings.items():
        if variable.endswith(("_GRPC_ADDR", "_HTTP_ADDR", "_METRICS_ADDR")):
            port = int(value.rsplit(":", 1)[1])
            c.check(value.startswith("0.0.0.0:"), f"{cn}: {variable}={value} listens on every interface")
            c.check(port in [p["containerPort"] for p in container.get("ports") or []],
                    f"{cn}: {variable} port {port} is a declared containerPort")
    c.check(container.get("startupProbe"), f"{cn}: startupProbe (migrations run before serving)")
    readiness = container.get("readinessProbe") or {}
    liveness = container.get("livenessProbe") or {}
    if name in GRPC_SERVICES:
        grpc_port = port_number(container, "grpc")
        for kind, probe in (("readinessProbe", readiness), ("startupProbe", container.get("startupProbe") or {})):
            c.check(probe.get("grpc", {}).get("port") == grpc_port and probe["grpc"].get("service", "") == "",
                    f"{cn}: {kind} is a native gRPC health probe on port {grpc_port}, service \"\"")
        # Liveness must not follow the database, or an outage restarts every replica.
        c.check("grpc" not in liveness, f"{cn}: livenessProbe does not use gRPC health (it follows the database)")
    if name in HTTP_SERVICES:
        c.check(readiness.get("httpGet", {}).get("path") == "/readyz", f"{cn}: readinessProbe GET /readyz")
        c.check(liveness.get("httpGet", {}).get("path") == "/healthz", f"{cn}: livenessProbe GET /healthz")
    sleep = (((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
    grace = pod_spec(obj).get("terminationGracePeriodSeconds", 30)
    c.check(grace > DRAIN_SECONDS + sleep,
            f"{cn}: terminationGracePeriodSeconds {grace} > preStop {sleep} s + drain {DRAIN_SECONDS} s")
    c.check(container.get("command") and container["command"][0].endswith("/" + name),
            f"{cn}: command runs the {name} binary")


def check_app_workload(c: Checks, n: str, obj: dict, objects: list[dict]) -> None:
    name = obj["metadata"]["name"]
    labels = pod_labels(obj)
    hpas = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"
            and o["spec"]["scaleTargetRef"].get("kind") == obj["kind"]
            and o["spec"]["scaleTargetRef"].get("name") == name]
    c.check(len(hpas) == 1 and hpas[0]["apiVersion"] == "autoscaling/v2", f"{n}: one autoscaling/v2 HPA")
    if hpas:
        hpa = hpas[0]["spec"]
        c.check(any(m.get("type") == "Resource" and m["resource"]["name"] == "cpu" for m in hpa.get("metrics") or []),
                f"{n}: HPA scales on CPU")
        c.check(1 <= hpa.get("minReplicas", 1) <= hpa["maxReplicas"], f"{n}: HPA bounds are sane")
        c.check("replicas" not in obj["spec"], f"{n}: no spec.replicas, the HPA owns the count")
    c.check(any(o["kind"] == "PodDisruptionBudget" and labels_match(o["spec"].get("selector"), labels)
                for o in objects), f"{n}: a PodDisruptionBudget covers its pods")
    services = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == name]
    if c.check(len(services) == 1, f"{n}: a Service named {name}"):
        headless = services[0]["spec"].get("clusterIP") == "None"
        if name in GRPC_SERVICES:
            c.check(headless, f"{n}: gRPC Service is headless (clients balance over pod addresses)")
        else:
            c.check(not headless, f"{n}: HTTP Service is a normal ClusterIP")


def check_network(c: Checks, objects: list[dict], overlay: str) -> None:
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    workloads = {o["metadata"]["name"]: o for o in objects if o["kind"] in {"Deployment", "StatefulSet"}}
    namespaces = {o["metadata"].get("namespace") for o in objects if o["metadata"].get("namespace")}
    if len(namespaces) != 1:
        c.check(False, f"network: expected one namespace, found {sorted(namespaces)}")
        return
    namespace = namespaces.pop()
    c.check(any(not p["spec"].get("podSelector") and "Ingress" in p["spec"].get("policyTypes", [])
                and not p["spec"].get("ingress") for p in policies), "network: default-deny ingress policy")
    own_ns = {"kubernetes.io/metadata.name": namespace}
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    ingress_ns = {"kubernetes.io/metadata.name": "ingress-nginx"}
    other_ns = {"kubernetes.io/metadata.name": "somewhere-else"}

    def pod(name: str) -> dict:
        return {"app.kubernetes.io/name": name}

    # (source namespace, source labels, target, port, expected, why)
    matrix: list[tuple[dict, dict, str, str, bool, str]] = [
        (own_ns, pod("loyalty-gateway"), "loyalty-points", "grpc", True, "gateway calls points"),
        (own_ns, pod("loyalty-tiers"), "loyalty-points", "grpc", True, "tiers consumes the points ledger"),
        (own_ns, pod("loyalty-loadgen"), "loyalty-points", "grpc", True, "the load-test Job drives points"),
        (own_ns, pod("loyalty-points"), "loyalty-tiers", "grpc", True, "points asks tiers for multipliers"),
        (own_ns, pod("loyalty-gateway"), "loyalty-tiers", "grpc", True, "gateway reads memberships"),
        (own_ns, pod("loyalty-referral"), "loyalty-points", "grpc", True, "referral follows the ledger, pays rewards"),
        (own_ns, pod("loyalty-rewards"), "loyalty-points", "grpc", True, "rewards spends and refunds points"),
        (own_ns, pod("loyalty-rewards"), "loyalty-tiers", "grpc", True, "rewards checks minimum tiers"),
        (own_ns, pod("loyalty-gateway"), "loyalty-referral", "grpc", True, "gateway serves referral routes"),
        (own_ns, pod("loyalty-gateway"), "loyalty-rewards", "grpc", True, "gateway serves rewards routes"),
        (own_ns, pod("loyalty-points"), "loyalty-rewards", "grpc", False, "points never calls rewards"),
        (own_ns, pod("loyalty-loadgen"), "loyalty-referral", "grpc", False, "loadgen has no business with referral"),
        (own_ns, pod("anything"), "loyalty-gateway", "http", True, "pods of the namespace call the gateway"),
        (ingress_ns, pod("ingress-nginx"), "loyalty-gateway", "http", True, "the ingress controller"),
        (own_ns, pod("loyalty-loadgen"), "loyalty-tiers", "grpc", False, "loadgen has no business with tiers"),
        (own_ns, pod("anything"), "loyalty-points", "grpc", False, "unknown pods cannot call points"),
        (other_ns, pod("loyalty-gateway"), "loyalty-points", "grpc", False, "other namespaces cannot call points"),
        (other_ns, pod("anything"), "loyalty-gateway", "http", False, "other namespaces need the ingress"),
        (monitoring, pod("grafana"), "loyalty-points", "metrics", False, "only Prometheus scrapes"),
        (monitoring, pod("prometheus"), "loyalty-points", "grpc", False, "Prometheus gets metrics only"),
    ]
    for target in ("loyalty-points", "loyalty-tiers", "loyalty-referral", "loyalty-rewards", "loyalty-gateway"):
        matrix.append((monitoring, pod("prometheus"), target, "metrics", True, "Prometheus scrapes metrics"))
        matrix.append((own_ns, pod("anything"), target, "metrics", False, "metrics only for Prometheus"))
    if overlay == "dev":
        for caller in ("loyalty-points", "loyalty-tiers", "loyalty-referral", "loyalty-rewards", "loyalty-gateway"):
            matrix.append((own_ns, pod(caller), "postgres", "postgres", True, "each service owns a database"))
        matrix.append((own_ns, pod("loyalty-points"), "redis", "redis", True, "points caches balances"))
        matrix.append((own_ns, pod("loyalty-tiers"), "redis", "redis", False, "only points uses Redis"))
        matrix.append((own_ns, pod("loyalty-gateway"), "redis", "redis", False, "only points uses Redis"))
        matrix.append((own_ns, pod("loyalty-loadgen"), "postgres", "postgres", False, "loadgen has no database"))
    for source_ns, source, target, port, expected, why in matrix:
        if target not in workloads:
            c.check(False, f"network: no workload {target} to check")
            continue
        allowed = ingress_allowed(policies, namespace, source_ns, source, workloads[target], port)
        verdict = "allowed" if expected else "denied"
        c.check(allowed == expected,
                f"network: {source['app.kubernetes.io/name']} ({source_ns['kubernetes.io/metadata.name']}) -> "
                f"{target}:{port} should be {verdict} ({why})")


def check_overlay(c: Checks, objects: list[dict], overlay: str, context: list[dict]) -> None:
    kinds = [o["kind"] for o in objects]
    if overlay in ("dev", "prod"):
        namespaces = [o for o in objects if o["kind"] == "Namespace"]
        c.check(len(namespaces) == 1, f"{overlay}: one Namespace object")
        for ns in namespaces:
            c.check(ns["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") == "restricted",
                    f"{overlay}: namespace enforces the restricted Pod Security Standard")
        check_network(c, objects, overlay)
    hpas = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "HorizontalPodAutoscaler"}
    common = next((o.get("data") or {} for o in objects
                   if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "loyalty-common"), {})
    if overlay == "dev":
        for name, spec in hpas.items():
            c.check(spec.get("minReplicas") == 1, f"dev: {name} starts with one replica")
    if overlay == "prod":
        c.check("Secret" not in kinds, "prod: no Secret objects (credentials are created outside git)")
        c.check(common.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").startswith("http"),
                "prod: OTEL_EXPORTER_OTLP_ENDPOINT points at a collector")
        minimum = {"loyalty-points": 3, "loyalty-gateway": 3, "loyalty-tiers": 2}
        for name, least in minimum.items():
            c.check(hpas.get(name, {}).get("minReplicas", 0) >= least, f"prod: {name} runs at least {least} replicas")
        for o in objects:
            if o["kind"] == "Deployment":
                spec = pod_spec(o)
                terms = (((spec.get("affinity") or {}).get("podAntiAffinity") or {})
                         .get("preferredDuringSchedulingIgnoredDuringExecution") or [])
                c.check(any(t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname" for t in terms),
                        f"prod: {name_of(o)} prefers spreading over nodes (pod anti-affinity)")
                c.check(any(t["topologyKey"] == "topology.kubernetes.io/zone"
                            for t in spec.get("topologySpreadConstraints") or []),
                        f"prod: {name_of(o)} spreads over zones")
                c.check(all(x.get("imagePullPolicy") == "Always" for x in containers(o)),
                        f"prod: {name_of(o)} pulls its image on every start")
    if overlay == "jobs":
        c.check(kinds == ["Job"], "jobs: only the load-test Job")
        policies = [o for o in context if o["kind"] == "NetworkPolicy"]
        points = next((o for o in context if o["kind"] == "Deployment" and o["metadata"]["name"] == "loyalty-points"),
                      None)
        for job in objects:
            namespace = job["metadata"].get("namespace", "")
            c.check(points is not None and points["metadata"].get("namespace") == namespace
                    and ingress_allowed(policies, namespace, {"kubernetes.io/metadata.name": namespace},
                                        pod_labels(job), points, "grpc"),
                    f"jobs: {name_of(job)} runs where loyalty-points is and its NetworkPolicy admits it")


def documented_secret_keys(example: Path) -> dict[str, set[str]]:
    keys: dict[str, set[str]] = {}
    for doc in load_yaml_documents(example):
        if doc.get("kind") == "Secret":
            keys.setdefault(doc["metadata"]["name"], set()).update((doc.get("stringData") or {}).keys())
            keys[doc["metadata"]["name"]].update((doc.get("data") or {}).keys())
    return keys


def run(objects: list[dict], overlay: str, example: Path, context: list[dict] | None = None) -> Checks:
    """Checks `objects`; `context` (what is already installed where they go,
    e.g. the dev overlay for the load-test Job) only answers lookups."""
    c = Checks()
    known = objects + (context or [])
    secret_keys = documented_secret_keys(example)
    for o in known:
        if o["kind"] == "Secret":
            secret_keys.setdefault(o["metadata"]["name"], set()).update((o.get("data") or {}).keys())
    for o in objects:
        labels = o["metadata"].get("labels") or {}
        wanted = RECOMMENDED_LABELS[1:] if o["kind"] == "Namespace" else RECOMMENDED_LABELS
        c.check(all(labels.get(k) for k in wanted), f"{name_of(o)}: recommended labels {', '.join(wanted)}")
        if o["kind"] == "ConfigMap":
            for key, value in (o.get("data") or {}).items():
                c.check(not CREDENTIAL_IN_URL.search(str(value)) and not SENSITIVE_ENV.search(key),
                        f"{name_of(o)}: {key} holds no credentials (they belong in a Secret)")
        if o["kind"] in POD_KINDS:
            check_workload(c, o, known, secret_keys)
            c.check(pod_labels(o).get("app.kubernetes.io/component"), f"{name_of(o)}: pods carry a component label")
        if o["kind"] == "ServiceAccount":
            c.check(o.get("automountServiceAccountToken") is False, f"{name_of(o)}: automountServiceAccountToken false")
        if o["kind"] == "PodDisruptionBudget":
            c.check("maxUnavailable" in o["spec"] or "minAvailable" in o["spec"], f"{name_of(o)}: has a budget")
    check_overlay(c, objects, overlay, context or [])
    return c


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--overlay", required=True, choices=["dev", "prod", "jobs"])
    parser.add_argument("--secret-example", type=Path,
                        default=Path(__file__).resolve().parents[2] / "k8s" / "secret.example.yaml")
    parser.add_argument("--context", type=Path, help="rendered objects already installed (lookups only)")
    parser.add_argument("rendered", type=Path)
    args = parser.parse_args(argv)
    objects = load_yaml_documents(args.rendered)
    context = load_yaml_documents(args.context) if args.context else []
    checks = run(objects, args.overlay, args.secret_example, context)
    for failure in checks.failed:
        print(f"  FAIL {failure}")
    print(f"properties {args.overlay}: {checks.passed} checks held, {len(checks.failed)} broken")
    print(f"RESULT {checks.passed} {len(checks.failed)}")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
