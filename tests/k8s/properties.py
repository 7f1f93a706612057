#!/usr/bin/env python3
"""Properties every rendered install must have, beyond schema validity.

Usage: properties.py --overlay NAME RENDERED.yaml [--secret-example FILE]

NAME (dev, prod, prod-ha, jobs) adds the expectations of that overlay;
prod-ha (prod with PostgreSQL as a CloudNativePG cluster and a Redis Cluster)
gets prod's and its own (check_ha). Prints one
line per failed check and a summary; the last line is
`RESULT <passed> <failed>` for validate.sh. Exits 1 when a check failed.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import re
import sys
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render import load_yaml_documents  # noqa: E402

# The services' drain on SIGTERM (services/common/src/server.rs DRAIN_TIMEOUT).
DRAIN_SECONDS = 20
APP_IMAGE = re.compile(r"(^|/)loyalty-mesh([:@]|$)")
RECOMMENDED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by")
# Environment variables that carry credentials: never a literal value.
SENSITIVE_ENV = re.compile(r"(^|_)(URL|PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIALS?|API_KEY)$")
# Secret keys that name a credential (a committed Secret may hold none).
SENSITIVE_KEY = re.compile(r"pass|secret|token|credential|key", re.IGNORECASE)
CREDENTIAL_IN_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@", re.IGNORECASE)
POD_KINDS = {"Deployment", "StatefulSet", "Job"}
GRPC_SERVICES = {"loyalty-points", "loyalty-tiers", "loyalty-referral", "loyalty-rewards", "loyalty-insights",
                 "loyalty-webhooks"}
HTTP_SERVICES = {"loyalty-gateway"}
# Credentials (issue 10): every binary checks callers unless LOYALTY_AUTH=off,
# which no install may set; these settings hold secrets and must come from a
# Secret through secretKeyRef, in every app workload (services: both tuples).
AUTH_ENV = "LOYALTY_AUTH"
SECRET_ENV_ALL = ("DATABASE_URL", "LOYALTY_SERVICE_SECRET")
SECRET_ENV_SERVICES = ("KEYS_DATABASE_URL",)
SERVICE_SECRET_MIN_BYTES = 32
# TLS: paths to PEM files (certificate and key together, the client CA only
# with them, as the binaries demand); prod must set all four.
TLS_CERT, TLS_KEY = "LOYALTY_TLS_CERT", "LOYALTY_TLS_KEY"
TLS_CLIENT_CA, TLS_CA = "LOYALTY_TLS_CLIENT_CA", "LOYALTY_TLS_CA"
TLS_ENV = (TLS_CERT, TLS_KEY, TLS_CLIENT_CA, TLS_CA)
# Service port hints that claim plain text; wrong once the listener speaks TLS.
PLAINTEXT_APP_PROTOCOLS = {"http", "h2c", "kubernetes.io/h2c", "grpc"}
# Settings naming another workload to call (host:port): the host must be a name
# its certificate carries, i.e. its Service's name in the namespace.
PEER_ADDR = re.compile(r"^(POINTS|TIERS|REFERRAL|REWARDS|INSIGHTS|WEBHOOKS)_ADDR$")
# The peers each workload must be told of: unset, a service starts without
# what the peer gives (webhooks: no events of that source), so a missing
# setting fails nothing else. check_network requires the same edges.
PEER_SETTINGS = {
    "loyalty-gateway": ("POINTS_ADDR", "TIERS_ADDR", "REFERRAL_ADDR", "REWARDS_ADDR", "INSIGHTS_ADDR",
                        "WEBHOOKS_ADDR"),
    "loyalty-points": ("TIERS_ADDR", "INSIGHTS_ADDR"),
    "loyalty-tiers": ("POINTS_ADDR",),
    # The ledger, and rewards for the welcome vouchers.
    "loyalty-referral": ("POINTS_ADDR", "REWARDS_ADDR"),
    "loyalty-rewards": ("POINTS_ADDR", "TIERS_ADDR"),
    "loyalty-insights": ("POINTS_ADDR", "TIERS_ADDR", "REFERRAL_ADDR"),
    # The ledger, segment changes, and the outboxes of tiers, referral and rewards.
    "loyalty-webhooks": ("POINTS_ADDR", "INSIGHTS_ADDR", "TIERS_ADDR", "REFERRAL_ADDR", "REWARDS_ADDR"),
}
# The optional cert-manager example (not rendered by any overlay), checked with prod.
CERT_MANAGER_EXAMPLE = Path("cert-manager") / "certificates.yaml"
# Overlays held to prod's expectations (TLS, replicas, spreading, no committed credentials).
PROD_OVERLAYS = ("prod", "prod-ha")
# CloudNativePG (overlays/prod-ha): the Secret the operator makes for the
# owner of the database initdb bootstraps, `<cluster>-app` (type
# kubernetes.io/basic-auth), and its keys (pkg/specs/secrets.go, 1.29); the
# read-write Service `<cluster>-rw` follows the primary.
CNPG_API = "postgresql.cnpg.io/v1"
CNPG_APP_SECRET_KEYS = {"username", "user", "password", "dbname", "host", "port", "pgpass", "uri", "jdbc-uri",
                        "fqdn-uri", "fqdn-jdbc-uri"}
CNPG_URI_KEYS = ("uri", "fqdn-uri")
CNPG_RESERVED_DATABASES = {"postgres", "template0", "template1"}
# A Redis Cluster has 16384 slots over its primaries; prod-ha runs three
# primaries with one replica each.
REDIS_CLUSTER_SCHEME = "redis+cluster://"
REDIS_CLUSTER_NODES = 6
REDIS_CLUSTER_SEEDS = 3


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

    def report(self, label: str) -> int:
        """Prints each failure and the RESULT line validate.sh reads; the exit status."""
        for failure in self.failed:
            print(f"  FAIL {failure}")
        print(f"{label}: {self.passed} checks held, {len(self.failed)} broken")
        print(f"RESULT {self.passed} {len(self.failed)}")
        return 1 if self.failed else 0


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


class Destination:
    """Where a connection goes: a pod (labels, its namespace's labels, its
    address) or an address outside the cluster (no labels)."""

    def __init__(self, ip: str, namespace: dict | None = None, labels: dict | None = None,
                 workload: dict | None = None, label: str | None = None) -> None:
        self.ip, self.namespace, self.labels, self.workload = ipaddress.ip_address(ip), namespace, labels, workload
        self.label = label or (labels or {}).get("app.kubernetes.io/name") or ip


def egress_allowed(policies: list[dict], namespace: str, source_labels: dict, destination: Destination,
                   port: int, protocol: str = "TCP") -> bool:
    """Would a connection from a pod (labels, in `namespace`) to `destination`
    on `port`/`protocol` leave the pod? A pod no Egress policy selects sends
    anywhere. ipBlocks are matched against pod addresses too (NetworkPolicy
    leaves that to the plugin, so the stricter reading)."""
    def types(policy: dict) -> list[str]:
        spec = policy["spec"]
        return spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))

    selecting = [p for p in policies
                 if p["metadata"].get("namespace") == namespace and "Egress" in types(p)
                 and labels_match(p["spec"].get("podSelector") or {}, source_labels)]
    if not selecting:
        return True
    named = {}
    if destination.workload is not None:
        named = {d["name"]: d["containerPort"] for x in containers(destination.workload)
                 for d in x.get("ports") or [] if d.get("name")}

    def port_ok(rule_port: dict) -> bool:
        if rule_port.get("protocol", "TCP") != protocol:
            return False
        wanted = rule_port.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            return named.get(wanted) == port
        return wanted <= port <= rule_port.get("endPort", wanted)

    def peer_ok(peer: dict) -> bool:
        if "ipBlock" in peer:
            block = peer["ipBlock"]
            return destination.ip in ipaddress.ip_network(block["cidr"]) and not any(
                destination.ip in ipaddress.ip_network(e) for e in block.get("except") or [])
        if destination.labels is None:
            return False
        ns_selector = peer.get("namespaceSelector")
        if ns_selector is None:
            ns_ok = (destination.namespace or {}).get("kubernetes.io/metadata.name") == namespace
        else:
            ns_ok = labels_match(ns_selector, destination.namespace or {})
        return ns_ok and (labels_match(peer["podSelector"], destination.labels) if "podSelector" in peer else True)

    for policy in selecting:
        for rule in policy["spec"].get("egress") or []:
            ports = rule.get("ports")
            if ports and not any(port_ok(p) for p in ports):
                continue
            peers = rule.get("to")
            if not peers or any(peer_ok(peer) for peer in peers):
                return True
    return False


# ----------------------------------------------------------------------------- the checks
def check_workload(c: Checks, obj: dict, objects: list[dict], secret_docs: dict[str, dict], overlay: str) -> None:
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
        secrets = [volume["secret"]] if "secret" in volume else []
        secrets += [s["secret"] for s in (volume.get("projected") or {}).get("sources") or [] if "secret" in s]
        for source in secrets:
            secret = source.get("secretName") or source.get("name") or ""
            keys = [item["key"] for item in source.get("items") or []]
            known = secret_docs.get(secret, {}).get("keys")
            c.check(known is not None and set(keys) <= known,
                    f"{n}: volume {volume['name']}: Secret {secret} {keys or ''} is neither rendered nor documented "
                    "in k8s/secret.example.yaml")

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
                c.check(ref["key"] in secret_docs.get(ref["name"], {}).get("keys", set()),
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
            check_app_container(c, cn, obj, container, objects, secret_docs, overlay)

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
        elif env.get("name") in settings:
            # valueFrom wins over envFrom.
            del settings[env["name"]]
    return settings


def env_entry(container: dict, variable: str) -> dict | None:
    return next((e for e in container.get("env") or [] if e.get("name") == variable), None)


def tls_on(container: dict, objects: list[dict]) -> bool:
    return bool(env_settings(container, objects).get(TLS_CERT))


class MountedFile:
    """Where a file path of a container comes from: mount, volume, source."""

    def __init__(self, mount: dict, volume: dict | None, kind: str | None, name: str | None, key: str | None,
                 mode: int | None) -> None:
        self.mount, self.volume, self.kind, self.name, self.key, self.mode = mount, volume, kind, name, key, mode


def mounted_file(obj: dict, container: dict, path: str) -> MountedFile | None:
    """Resolves `path` through the container's volumeMounts (the deepest one
    wins) to the Secret or ConfigMap key it shows, as the kubelet projects
    keys: all of them by name, or only `items` under their `path`."""
    mounts = [m for m in container.get("volumeMounts") or []
              if path.startswith(m["mountPath"].rstrip("/") + "/") and not m.get("subPath")]
    if not mounts:
        return None
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    relative = path[len(mount["mountPath"].rstrip("/")) + 1:]
    volume = next((v for v in pod_spec(obj).get("volumes") or [] if v["name"] == mount["name"]), None)
    if volume is None:
        return MountedFile(mount, None, None, None, None, None)
    if "secret" in volume:
        sources = [("secret", volume["secret"].get("secretName"), volume["secret"])]
        default_mode = volume["secret"].get("defaultMode", 420)
    elif "configMap" in volume:
        sources = [("configMap", volume["configMap"].get("name"), volume["configMap"])]
        default_mode = volume["configMap"].get("defaultMode", 420)
    elif "projected" in volume:
        sources = [(kind, (source[kind] or {}).get("name"), source[kind] or {})
                   for source in volume["projected"].get("sources") or []
                   for kind in ("secret", "configMap") if kind in source]
        default_mode = volume["projected"].get("defaultMode", 420)
    else:
        return MountedFile(mount, volume, next(iter(k for k in volume if k != "name"), None), None, None, None)
    for kind, name, spec in sources:
        items = spec.get("items")
        if items is None:
            # Every key of the source, under its own name (checked against the documented keys later).
            if "/" not in relative:
                return MountedFile(mount, volume, kind, name, relative, default_mode)
            continue
        for item in items:
            if item.get("path") == relative:
                return MountedFile(mount, volume, kind, name, item.get("key"), item.get("mode", default_mode))
    return MountedFile(mount, volume, None, None, None, None)


def check_credentials(c: Checks, cn: str, obj: dict, container: dict, settings: dict[str, str]) -> None:
    """Authentication on; secrets from Secrets (secretKeyRef), never inlined."""
    name = obj["metadata"]["name"]
    c.check(settings.get(AUTH_ENV) == "required",
            f"{cn}: {AUTH_ENV}=required (got {settings.get(AUTH_ENV)!r}); no install may run without authentication")
    wanted = SECRET_ENV_ALL + (SECRET_ENV_SERVICES if name in GRPC_SERVICES else ())
    for variable in wanted:
        entry = env_entry(container, variable) or {}
        from_secret = bool((entry.get("valueFrom") or {}).get("secretKeyRef"))
        c.check(from_secret and variable not in settings,
                f"{cn}: {variable} comes from a Secret (secretKeyRef), not a literal or a ConfigMap")


def check_tls(c: Checks, cn: str, obj: dict, container: dict, settings: dict[str, str],
              secret_docs: dict[str, dict], overlay: str) -> None:
    """prod: TLS and mutual TLS on, PEM files from Secrets, mounted read-only."""
    present = [v for v in TLS_ENV if settings.get(v)]
    if overlay in PROD_OVERLAYS:
        for variable in TLS_ENV:
            c.check(settings.get(variable), f"{cn}: prod sets {variable} (TLS on every listener, mutual TLS)")
    elif present:
        # What the binaries refuse to start with.
        c.check(bool(settings.get(TLS_CERT)) == bool(settings.get(TLS_KEY)),
                f"{cn}: {TLS_CERT} and {TLS_KEY} set together")
        c.check(not settings.get(TLS_CLIENT_CA) or settings.get(TLS_CERT),
                f"{cn}: {TLS_CLIENT_CA} only with {TLS_CERT} (mutual TLS is TLS first)")
    files: dict[str, MountedFile | None] = {}
    for variable in present:
        path = settings[variable]
        found = files[variable] = mounted_file(obj, container, path)
        if not c.check(found is not None, f"{cn}: {variable}={path} lies in a mounted volume"):
            continue
        c.check(found.mount.get("readOnly") is True,
                f"{cn}: {variable}: volume {found.mount['name']} at {found.mount['mountPath']} is mounted read-only")
        c.check(found.kind == "secret" and found.key,
                f"{cn}: {variable}={path} comes from a Secret key (found {found.kind or 'nothing'})")
        if found.kind == "secret" and found.key:
            doc = secret_docs.get(found.name or "")
            c.check(doc is not None and found.key in doc["keys"],
                    f"{cn}: {variable}: Secret {found.name} key {found.key} is neither rendered nor documented "
                    "in k8s/secret.example.yaml")
            if variable in (TLS_CERT, TLS_KEY):
                c.check(doc is not None and doc["type"] == "kubernetes.io/tls",
                        f"{cn}: {variable} comes from a Secret of type kubernetes.io/tls")
        if variable == TLS_KEY and found.mode is not None:
            c.check(found.mode & 0o007 == 0, f"{cn}: {variable} is not readable by other users (mode {found.mode:#o})")
            if found.mode & 0o070:
                c.check((pod_spec(obj).get("securityContext") or {}).get("fsGroup") is not None,
                        f"{cn}: {variable} is group-readable, so the pod sets an fsGroup")
    cert, key = files.get(TLS_CERT), files.get(TLS_KEY)
    if cert and key:
        c.check(cert.kind == key.kind and cert.name == key.name,
                f"{cn}: certificate and key come from the same Secret")


def peer_addresses(container: dict, objects: list[dict]) -> dict[str, str]:
    """The hosts this container calls other workloads at, by setting."""
    return {variable: re.sub(r"^[a-z]+://", "", value).rsplit(":", 1)[0]
            for variable, value in env_settings(container, objects).items() if PEER_ADDR.match(variable)}


def service_names(service: str, namespace: str) -> list[str]:
    """The names a client may use for a Service, and so the SANs its certificate needs."""
    return [service, f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def check_app_container(c: Checks, cn: str, obj: dict, container: dict, objects: list[dict],
                        secret_docs: dict[str, dict], overlay: str) -> None:
    name = obj["metadata"]["name"]
    settings = env_settings(container, objects)
    c.check(settings.get("LOG_FORMAT") == "json", f"{cn}: LOG_FORMAT=json")
    check_credentials(c, cn, obj, container, settings)
    check_tls(c, cn, obj, container, settings, secret_docs, overlay)
    tls = bool(settings.get(TLS_CERT))
    namespace = obj["metadata"].get("namespace", "")
    services = {o["metadata"]["name"] for o in objects if o["kind"] == "Service"
                and o["metadata"].get("namespace", "") == namespace}
    peers = peer_addresses(container, objects)
    for variable, host in peers.items():
        c.check(any(host in service_names(s, namespace) for s in services),
                f"{cn}: {variable} host {host!r} is a Service of the namespace, a name its certificate carries")
    for variable in PEER_SETTINGS.get(name, ()):
        c.check(variable in peers, f"{cn}: sets {variable} (a peer it calls)")
    for variable, value in settings.items():
        if variable.endswith(("_GRPC_ADDR", "_HTTP_ADDR", "_METRICS_ADDR")):
            port = int(value.rsplit(":", 1)[1])
            c.check(value.startswith("0.0.0.0:"), f"{cn}: {variable}={value} listens on every interface")
            c.check(port in [p["containerPort"] for p in container.get("ports") or []],
                    f"{cn}: {variable} port {port} is a declared containerPort")
    c.check(container.get("startupProbe"), f"{cn}: startupProbe (migrations run before serving)")
    readiness = container.get("readinessProbe") or {}
    liveness = container.get("livenessProbe") or {}
    probes = (("startupProbe", container.get("startupProbe") or {}), ("readinessProbe", readiness),
              ("livenessProbe", liveness))
    for kind, probe in probes:
        if "httpGet" in probe:
            scheme = probe["httpGet"].get("scheme", "HTTP")
            c.check(scheme == ("HTTPS" if tls else "HTTP"),
                    f"{cn}: {kind} httpGet scheme {scheme} matches the listener (TLS {'on' if tls else 'off'})")
    if name in GRPC_SERVICES and tls:
        # The kubelet's gRPC probes speak plain text only; under TLS they would always fail.
        metrics_port = port_number(container, "metrics")
        for kind, probe in probes:
            c.check("grpc" not in probe, f"{cn}: {kind} is no gRPC probe (the kubelet's cannot do TLS)")
            c.check(port_number(container, (probe.get("httpGet") or {}).get("port")) == metrics_port,
                    f"{cn}: {kind} asks the metrics port {metrics_port} (TLS on: HTTPS, not gRPC)")
        # Readiness keeps following gRPC health (and so the database) through /readyz.
        for kind, probe in (("readinessProbe", readiness), ("startupProbe", container.get("startupProbe") or {})):
            c.check((probe.get("httpGet") or {}).get("path") == "/readyz",
                    f"{cn}: {kind} asks /readyz, which follows gRPC health")
    elif name in GRPC_SERVICES:
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
        if any(tls_on(x, objects) for x in containers(obj)):
            for port in services[0]["spec"].get("ports") or []:
                c.check(port.get("appProtocol") not in PLAINTEXT_APP_PROTOCOLS,
                        f"{n}: Service port {port.get('name')} claims no plain-text appProtocol "
                        f"(got {port.get('appProtocol')}; TLS on)")


def check_network(c: Checks, objects: list[dict], overlay: str) -> None:
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    workloads = {o["metadata"]["name"]: o for o in objects if o["kind"] in {"Deployment", "StatefulSet"}}
    # The operator's PostgreSQL instances, as it will make them.
    workloads.update({o["metadata"]["name"]: cnpg_instance_pods(o) for o in cnpg_clusters(objects)})
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
        (own_ns, pod("loyalty-insights"), "loyalty-points", "grpc", True, "insights follows the ledger"),
        (own_ns, pod("loyalty-rewards"), "loyalty-tiers", "grpc", True, "rewards checks minimum tiers"),
        (own_ns, pod("loyalty-gateway"), "loyalty-referral", "grpc", True, "gateway serves referral routes"),
        (own_ns, pod("loyalty-referral"), "loyalty-rewards", "grpc", True, "referral grants welcome vouchers"),
        (own_ns, pod("loyalty-gateway"), "loyalty-rewards", "grpc", True, "gateway serves rewards routes"),
        (own_ns, pod("loyalty-gateway"), "loyalty-insights", "grpc", True, "gateway serves insights routes"),
        (own_ns, pod("loyalty-points"), "loyalty-rewards", "grpc", False, "points never calls rewards"),
        (own_ns, pod("loyalty-loadgen"), "loyalty-referral", "grpc", False, "loadgen has no business with referral"),
        (own_ns, pod("loyalty-loadgen"), "loyalty-insights", "grpc", False, "loadgen has no business with insights"),
        (own_ns, pod("loyalty-points"), "loyalty-insights", "grpc", True, "points asks insights for segments"),
        (own_ns, pod("loyalty-insights"), "loyalty-tiers", "grpc", True, "insights assigns the win-back tier"),
        (own_ns, pod("loyalty-referral"), "loyalty-insights", "grpc", False, "referral never calls insights"),
        (own_ns, pod("loyalty-insights"), "loyalty-referral", "grpc", True, "insights reads the referral funnel"),
        (own_ns, pod("loyalty-insights"), "loyalty-rewards", "grpc", False, "insights never calls rewards"),
        (own_ns, pod("loyalty-webhooks"), "loyalty-points", "grpc", True, "webhooks follows the ledger"),
        (own_ns, pod("loyalty-gateway"), "loyalty-webhooks", "grpc", True, "gateway serves webhooks routes"),
        (own_ns, pod("loyalty-points"), "loyalty-webhooks", "grpc", False, "points never calls webhooks"),
        (own_ns, pod("loyalty-insights"), "loyalty-webhooks", "grpc", False, "insights never calls webhooks"),
        (own_ns, pod("loyalty-loadgen"), "loyalty-webhooks", "grpc", False, "loadgen has no business with webhooks"),
        (own_ns, pod("anything"), "loyalty-webhooks", "grpc", False, "only the gateway calls webhooks"),
        (own_ns, pod("loyalty-webhooks"), "loyalty-tiers", "grpc", True, "webhooks asks tiers for statements"),
        (own_ns, pod("loyalty-webhooks"), "loyalty-insights", "grpc", True, "webhooks follows segment changes"),
        (own_ns, pod("loyalty-webhooks"), "loyalty-referral", "grpc", True, "webhooks follows the referral outbox"),
        (own_ns, pod("loyalty-webhooks"), "loyalty-rewards", "grpc", True, "webhooks follows the rewards outbox"),
        (own_ns, pod("loyalty-loadgen"), "loyalty-rewards", "grpc", False, "loadgen has no business with rewards"),
        (own_ns, pod("anything"), "loyalty-gateway", "http", True, "pods of the namespace call the gateway"),
        (ingress_ns, pod("ingress-nginx"), "loyalty-gateway", "http", True, "the ingress controller"),
        (own_ns, pod("loyalty-loadgen"), "loyalty-tiers", "grpc", False, "loadgen has no business with tiers"),
        (own_ns, pod("anything"), "loyalty-points", "grpc", False, "unknown pods cannot call points"),
        (other_ns, pod("loyalty-gateway"), "loyalty-points", "grpc", False, "other namespaces cannot call points"),
        (other_ns, pod("anything"), "loyalty-gateway", "http", False, "other namespaces need the ingress"),
        (monitoring, pod("grafana"), "loyalty-points", "metrics", False, "only Prometheus scrapes"),
        (monitoring, pod("prometheus"), "loyalty-points", "grpc", False, "Prometheus gets metrics only"),
    ]
    for target in ("loyalty-points", "loyalty-tiers", "loyalty-referral", "loyalty-rewards", "loyalty-insights",
                   "loyalty-webhooks", "loyalty-gateway"):
        matrix.append((monitoring, pod("prometheus"), target, "metrics", True, "Prometheus scrapes metrics"))
        matrix.append((own_ns, pod("anything"), target, "metrics", False, "metrics only for Prometheus"))
    if overlay == "dev":
        for caller in ("loyalty-points", "loyalty-tiers", "loyalty-referral", "loyalty-rewards", "loyalty-insights",
                       "loyalty-webhooks", "loyalty-gateway"):
            matrix.append((own_ns, pod(caller), "postgres", "postgres", True, "each service owns a database"))
        matrix.append((own_ns, pod("loyalty-points"), "redis", "redis", True, "points caches balances"))
        matrix.append((own_ns, pod("loyalty-tiers"), "redis", "redis", False, "only points uses Redis"))
        matrix.append((own_ns, pod("loyalty-gateway"), "redis", "redis", False, "only points uses Redis"))
        matrix.append((own_ns, pod("loyalty-insights"), "redis", "redis", False, "only points uses Redis"))
        matrix.append((own_ns, pod("loyalty-webhooks"), "redis", "redis", False, "only points uses Redis"))
        matrix.append((own_ns, pod("loyalty-loadgen"), "postgres", "postgres", False, "loadgen has no database"))
    if overlay == "prod-ha":
        matrix += ha_network_matrix(objects, namespace)
    for source_ns, source, target, port, expected, why in matrix:
        if target not in workloads:
            c.check(False, f"network: no workload {target} to check")
            continue
        allowed = ingress_allowed(policies, namespace, source_ns, source, workloads[target], port)
        verdict = "allowed" if expected else "denied"
        c.check(allowed == expected,
                f"network: {source['app.kubernetes.io/name']} ({source_ns['kubernetes.io/metadata.name']}) -> "
                f"{target}:{port} should be {verdict} ({why})")
    check_egress(c, policies, workloads, namespace, overlay)


# An address standing for any on the public internet, and one in the pod
# range of a typical cluster (inside 10.0.0.0/8, like most pod and Service ranges).
PUBLIC_IP = "8.8.8.8"
POD_IP = "10.244.1.7"
# Addresses outside the cluster that loyalty-webhooks must never reach,
# whatever the port: the private, shared, link-local and loopback ranges.
FORBIDDEN_IPS = {
    "10.20.30.40": "a private 10/8 address",
    "172.20.0.10": "a private 172.16/12 address",
    "192.168.1.1": "a private 192.168/16 address",
    "169.254.169.254": "the cloud metadata address",
    "100.64.0.1": "the shared (carrier NAT) range",
    "127.0.0.1": "loopback",
    "10.96.0.1": "the Kubernetes API Service",
}


def check_egress(c: Checks, policies: list[dict], workloads: dict[str, dict], namespace: str,
                 overlay: str) -> None:
    """Where fenced workloads may connect to: loyalty-webhooks calls the
    addresses shops choose, so its egress is limited (base/webhooks)."""
    own_ns = {"kubernetes.io/metadata.name": namespace}

    def pod(name: str) -> Destination:
        """A workload of the namespace (its container ports resolve named ports)."""
        return Destination(POD_IP, own_ns, {"app.kubernetes.io/name": name}, workloads.get(name))

    kube_dns = Destination("10.244.0.3", {"kubernetes.io/metadata.name": "kube-system"}, {"k8s-app": "kube-dns"},
                           label="kube-dns (kube-system)")
    collector = Destination("10.244.2.9", {"kubernetes.io/metadata.name": "observability"},
                            {"app.kubernetes.io/name": "opentelemetry-collector"}, label="otel collector (observability)")
    public = Destination(PUBLIC_IP, label=f"{PUBLIC_IP} (public)")
    # (source, destination, port, protocol, expected, why)
    matrix: list[tuple[str, Destination, int, str, bool, str]] = [
        ("loyalty-webhooks", kube_dns, 53, "UDP", True, "webhooks resolves names"),
        ("loyalty-webhooks", kube_dns, 53, "TCP", True, "webhooks resolves names (large answers)"),
        ("loyalty-webhooks", pod("loyalty-points"), 50051, "TCP", True, "webhooks follows the ledger"),
        ("loyalty-webhooks", pod("loyalty-points"), 9101, "TCP", False, "webhooks needs the ledger, not metrics"),
        ("loyalty-webhooks", pod("loyalty-tiers"), 50052, "TCP", True, "webhooks asks tiers for statements"),
        ("loyalty-webhooks", pod("loyalty-tiers"), 9102, "TCP", False,
         "webhooks needs tiers for statements, not metrics"),
        ("loyalty-webhooks", pod("loyalty-insights"), 50055, "TCP", True, "webhooks follows segment changes"),
        ("loyalty-webhooks", pod("loyalty-insights"), 9105, "TCP", False,
         "webhooks needs segment changes, not metrics"),
        ("loyalty-webhooks", pod("loyalty-referral"), 50053, "TCP", True, "webhooks follows the referral outbox"),
        ("loyalty-webhooks", pod("loyalty-referral"), 9103, "TCP", False,
         "webhooks needs the referral outbox, not metrics"),
        ("loyalty-webhooks", pod("loyalty-rewards"), 50054, "TCP", True, "webhooks follows the rewards outbox"),
        ("loyalty-webhooks", pod("loyalty-rewards"), 9104, "TCP", False,
         "webhooks needs the rewards outbox, not metrics"),
        ("loyalty-webhooks", pod("loyalty-gateway"), 8080, "TCP", False, "webhooks never calls the gateway"),
        ("loyalty-webhooks", public, 443, "TCP", True, "shops' https endpoints"),
        ("loyalty-webhooks", public, 80, "TCP", False, "no plain-http deliveries"),
        ("loyalty-webhooks", public, 22, "TCP", False, "https only"),
        ("loyalty-webhooks", public, 53, "UDP", False, "DNS only through the cluster's resolver"),
        ("loyalty-gateway", pod("loyalty-webhooks"), 50056, "TCP", True, "gateway serves webhooks routes"),
        ("loyalty-referral", pod("loyalty-rewards"), 50054, "TCP", True, "referral grants welcome vouchers"),
    ]
    for ip, what in FORBIDDEN_IPS.items():
        for port in (443, 80):
            matrix.append(("loyalty-webhooks", Destination(ip), port, "TCP", False, what))
    if overlay == "dev":
        matrix.append(("loyalty-webhooks", pod("postgres"), 5432, "TCP", True, "its own and the key database"))
        matrix.append(("loyalty-webhooks", pod("redis"), 6379, "TCP", False, "only points uses Redis"))
    if overlay == "prod-ha":
        for name, workload in workloads.items():
            if "cnpg.io/cluster" in pod_labels(workload):
                matrix.append(("loyalty-webhooks", Destination(POD_IP, own_ns, pod_labels(workload), workload,
                                                               label=f"{name} instances"), 5432, "TCP", True,
                               "its own and the key database, on the CloudNativePG cluster"))
        matrix.append(("loyalty-webhooks", Destination("10.20.30.40"), 5432, "TCP", False,
                       "the database's pods are known: no other private address on 5432"))
        matrix.append(("loyalty-webhooks", pod("redis-cluster"), 6379, "TCP", False, "only points uses Redis"))
        matrix.append(("loyalty-webhooks", collector, 4317, "TCP", True, "traces and logs to the OTLP collector"))
    if overlay == "prod":
        matrix.append(("loyalty-webhooks", Destination("10.20.30.40"), 5432, "TCP", True,
                       "its own and the key database, external on a private network"))
        matrix.append(("loyalty-webhooks", Destination("10.20.30.40"), 6379, "TCP", False, "only points uses Redis"))
        matrix.append(("loyalty-webhooks", collector, 4317, "TCP", True, "traces and logs to the OTLP collector"))
    for source, destination, port, protocol, expected, why in matrix:
        if source not in workloads:
            c.check(False, f"network: no workload {source} to check")
            continue
        allowed = egress_allowed(policies, namespace, pod_labels(workloads[source]), destination, port, protocol)
        verdict = "allowed" if expected else "denied"
        c.check(allowed == expected,
                f"network: egress {source} -> {destination.label}:{port}/{protocol} should be {verdict} ({why})")


# ----------------------------------------------------------------------------- prod-ha: CloudNativePG and Redis Cluster
def cnpg_clusters(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o.get("apiVersion") == CNPG_API and o["kind"] == "Cluster"]


def cnpg_app_secret(cluster: dict) -> str | None:
    """The Secret the operator makes for the owner of the database initdb
    bootstraps (none when initdb is not used or names a Secret of its own)."""
    initdb = ((cluster["spec"].get("bootstrap") or {}).get("initdb"))
    if initdb is None or (initdb.get("secret") or {}).get("name"):
        return None
    return f"{cluster['metadata']['name']}-app"


def cnpg_instance_pods(cluster: dict) -> dict:
    """The Cluster's PostgreSQL pods as the operator makes them, shaped like a
    workload for the NetworkPolicy checks: their labels (CloudNativePG docs,
    labels_annotations.md, plus inheritedMetadata) and ports (security.md,
    "Exposed Ports": postgresql 5432, status 8000, metrics 9187)."""
    name = cluster["metadata"]["name"]
    labels = dict(((cluster["spec"].get("inheritedMetadata") or {}).get("labels") or {}))
    labels.update({"cnpg.io/cluster": name, "cnpg.io/podRole": "instance", "app.kubernetes.io/name": "postgresql",
                   "app.kubernetes.io/instance": name, "app.kubernetes.io/component": "database"})
    ports = [{"name": "postgresql", "containerPort": 5432}, {"name": "status", "containerPort": 8000},
             {"name": "metrics", "containerPort": 9187}]
    return {"kind": "Pod", "metadata": {"name": name, "namespace": cluster["metadata"].get("namespace", "")},
            "spec": {"template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "postgres", "ports": ports}]}}}}


def flag_value(args: list[str], flag: str) -> str | None:
    """The value after `flag` in a command line (redis-server's options)."""
    for index, arg in enumerate(args[:-1]):
        if arg == flag:
            return str(args[index + 1])
    return None


def redis_cluster_nodes(objects: list[dict]) -> list[dict]:
    """StatefulSets running redis-server with cluster mode on."""
    found = []
    for o in objects:
        if o["kind"] != "StatefulSet":
            continue
        for x in pod_spec(o).get("containers") or []:
            command = [str(a) for a in (x.get("command") or []) + (x.get("args") or [])]
            if "redis-server" in command and flag_value(command, "--cluster-enabled") == "yes":
                found.append(o)
                break
    return found


def env_value(container: dict, variable: str, objects: list[dict]) -> tuple[str | None, str]:
    """A variable's value as the manifests fix it (a literal, a rendered
    ConfigMap or Secret), and where it comes from."""
    entry = env_entry(container, variable)
    if entry is None:
        value = env_settings(container, objects).get(variable)
        return value, "a ConfigMap" if value is not None else "nowhere"
    if "value" in entry:
        return str(entry["value"]), "a literal"
    ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
    if ref:
        value = secret_value(objects, ref.get("name", ""), ref.get("key", ""))
        return value, f"Secret {ref.get('name')} key {ref.get('key')}"
    ref = (entry.get("valueFrom") or {}).get("configMapKeyRef")
    if ref:
        data = next((o.get("data") or {} for o in objects
                     if o["kind"] == "ConfigMap" and o["metadata"]["name"] == ref.get("name")), {})
        return data.get(ref.get("key")), f"ConfigMap {ref.get('name')} key {ref.get('key')}"
    return None, "elsewhere"


def job_text(job: dict, objects: list[dict]) -> str:
    """A Job's command lines and the ConfigMap files (scripts) its pod mounts."""
    parts = []
    for x in containers(job):
        parts += [str(a) for a in (x.get("command") or []) + (x.get("args") or [])]
    for volume in pod_spec(job).get("volumes") or []:
        name = (volume.get("configMap") or {}).get("name")
        for o in objects:
            if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name:
                parts += [str(v) for v in (o.get("data") or {}).values()]
    return "\n".join(parts)


def check_ha(c: Checks, objects: list[dict]) -> None:
    """prod-ha: PostgreSQL and Redis that survive the loss of a node."""
    namespace = next((o["metadata"].get("namespace") for o in objects if o["metadata"].get("namespace")), "")
    # PostgreSQL: one CloudNativePG cluster, three instances on three nodes, synchronous.
    clusters = cnpg_clusters(objects)
    c.check(len(clusters) == 1, f"prod-ha: one CloudNativePG Cluster ({CNPG_API}), found {len(clusters)}")
    for cluster in clusters:
        n = name_of(cluster)
        spec = cluster["spec"]
        instances = spec.get("instances", 1)
        c.check(isinstance(instances, int) and instances >= 3, f"prod-ha: {n} has instances >= 3 (got {instances})")
        pg = spec.get("postgresql") or {}
        sync = pg.get("synchronous")
        legacy = spec.get("minSyncReplicas", 0) or spec.get("maxSyncReplicas", 0)
        if sync is not None:
            number = sync.get("number", 0)
            c.check(sync.get("method") in ("any", "first") and isinstance(number, int) and number >= 1,
                    f"prod-ha: {n} replicates synchronously (postgresql.synchronous: method any|first, number >= 1)")
            c.check(isinstance(number, int) and isinstance(instances, int) and number <= instances - 2,
                    f"prod-ha: {n} keeps accepting writes with one instance lost (synchronous.number {number} "
                    f"<= instances {instances} - 2)")
            c.check(sync.get("dataDurability", "required") == "required",
                    f"prod-ha: {n} never acknowledges a commit no standby has (dataDurability required)")
            c.check(not legacy, f"prod-ha: {n} sets postgresql.synchronous or minSyncReplicas/maxSyncReplicas, "
                                "not both (the operator refuses it)")
        else:
            c.check(spec.get("minSyncReplicas", 0) >= 1 and spec.get("maxSyncReplicas", 0) >= 1,
                    f"prod-ha: {n} replicates synchronously (postgresql.synchronous, or minSyncReplicas >= 1)")
        affinity = spec.get("affinity") or {}
        c.check(affinity.get("enablePodAntiAffinity", True) is not False
                and affinity.get("podAntiAffinityType") == "required"
                and affinity.get("topologyKey", "kubernetes.io/hostname") == "kubernetes.io/hostname",
                f"prod-ha: {n} puts each instance on its own node (podAntiAffinityType required)")
        image = spec.get("imageName", "")
        c.check(not image or (re.search(r"(:[\w][\w.-]*|@sha256:[0-9a-f]{64})$", image.split("/")[-1])
                              and not image.endswith(":latest")),
                f"prod-ha: {n} imageName {image!r} has a fixed tag or digest")
        for bound in ("requests", "limits"):
            c.check(((spec.get("resources") or {}).get(bound) or {}).get("memory"),
                    f"prod-ha: {n} resources.{bound}.memory set")
        c.check((spec.get("storage") or {}).get("size"), f"prod-ha: {n} storage.size set")
        initdb = (spec.get("bootstrap") or {}).get("initdb") or {}
        c.check(initdb.get("database") and initdb.get("owner"),
                f"prod-ha: {n} bootstraps a database and its owner (bootstrap.initdb)")
    # Its databases: on a rendered cluster, owned by a role it manages, not a reserved name
    # (the CRD's CEL rule, which crds.py does not evaluate).
    roles: dict[str, set] = {}
    for cluster in clusters:
        managed = (cluster["spec"].get("managed") or {}).get("roles") or []
        initdb = (cluster["spec"].get("bootstrap") or {}).get("initdb") or {}
        present = {r.get("name") for r in managed if r.get("ensure", "present") == "present"}
        roles[cluster["metadata"]["name"]] = present | {initdb.get("owner")}
    databases: dict[tuple[str, str], str] = {}
    for o in objects:
        if o.get("apiVersion") == CNPG_API and o["kind"] == "Database":
            spec, n = o["spec"], name_of(o)
            cluster = (spec.get("cluster") or {}).get("name")
            c.check(cluster in roles, f"prod-ha: {n} names a Cluster of the overlay (got {cluster})")
            c.check(spec.get("owner") in roles.get(cluster, set()),
                    f"prod-ha: {n} is owned by a role Cluster/{cluster} manages (got {spec.get('owner')})")
            c.check(spec.get("name") not in CNPG_RESERVED_DATABASES, f"prod-ha: {n} is not a reserved database name")
            if spec.get("ensure", "present") == "present":
                databases[(cluster, spec.get("name"))] = spec.get("owner")
    # Every service's DATABASE_URL: the app Secret of the database initdb made
    # (only the operator knows its owner's password), or a Secret key
    # `<service>-url` naming a Database object's database (and owner).
    app_secrets = {cnpg_app_secret(cluster): cluster for cluster in clusters if cnpg_app_secret(cluster)}
    for o in app_deployments(objects):
        service = o["metadata"]["name"].removeprefix("loyalty-")
        x = o["spec"]["template"]["spec"]["containers"][0]
        cn = f"{name_of(o)} container {x['name']}"
        ref = ((env_entry(x, "DATABASE_URL") or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
        if ref.get("name") in app_secrets:
            cluster = app_secrets[ref["name"]]
            initdb = cluster["spec"]["bootstrap"]["initdb"]
            c.check(ref.get("key") in CNPG_URI_KEYS,
                    f"prod-ha: {cn}: DATABASE_URL is the `uri` of Secret {ref['name']} (got key {ref.get('key')})")
            c.check(initdb.get("database") == service and initdb.get("owner") == service,
                    f"prod-ha: {cn}: the app Secret {ref['name']} is that of {service}'s own database (initdb: "
                    f"database {initdb.get('database')}, owner {initdb.get('owner')})")
            continue
        value = secret_value(objects, ref.get("name", ""), ref.get("key", "")) if ref else None
        if value is not None:
            host = (urlsplit(value).hostname or "").split(".")[0]
            c.check(any(host == f"{cluster['metadata']['name']}-rw" for cluster in clusters),
                    f"prod-ha: {cn}: DATABASE_URL names the CloudNativePG read-write Service <cluster>-rw (got {host})")
            continue
        wanted = ref.get("key", "").removesuffix("-url")
        on = [name for (name, database), owner in databases.items() if database == wanted and owner == wanted]
        c.check(ref and wanted == service and on,
                f"prod-ha: {cn}: DATABASE_URL comes from the CloudNativePG app Secret or names a database the "
                f"cluster has (Secret {ref.get('name')} key {ref.get('key')}: database {wanted!r}, owner {wanted!r}, "
                f"on loyalty-pg-rw)")
    # Redis: a cluster of six nodes on volumes, a headless Service, a PDB, the Job that forms it.
    nodes = redis_cluster_nodes(objects)
    c.check(len(nodes) == 1, f"prod-ha: one Redis Cluster StatefulSet (redis-server --cluster-enabled yes), "
                             f"found {len(nodes)}")
    for sts in nodes:
        n = name_of(sts)
        replicas = sts["spec"].get("replicas")
        c.check(replicas == REDIS_CLUSTER_NODES,
                f"prod-ha: {n} runs {REDIS_CLUSTER_NODES} nodes (three primaries, a replica each; got {replicas})")
        server = next(x for x in pod_spec(sts)["containers"]
                      if "redis-server" in [str(a) for a in (x.get("command") or []) + (x.get("args") or [])])
        command = [str(a) for a in (server.get("command") or []) + (server.get("args") or [])]
        config = flag_value(command, "--cluster-config-file") or ""
        claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates") or []}
        mount = next((m for m in server.get("volumeMounts") or []
                      if config.startswith(m["mountPath"].rstrip("/") + "/")), None)
        c.check(mount is not None and mount["name"] in claims,
                f"prod-ha: {n}: --cluster-config-file {config!r} lies on a PersistentVolumeClaim "
                "(a node keeps its identity across restarts)")
        c.check(flag_value(command, "--appendonly") == "yes", f"prod-ha: {n}: --appendonly yes")
        timeout = flag_value(command, "--cluster-node-timeout") or ""
        c.check(timeout.isdigit() and int(timeout) <= 15000,
                f"prod-ha: {n}: --cluster-node-timeout set (a replica takes over within seconds; got {timeout!r})")
        services = [o for o in objects
                    if o["kind"] == "Service" and o["metadata"]["name"] == sts["spec"].get("serviceName")]
        headless = services[0]["spec"] if services else {}
        c.check(services and headless.get("clusterIP") == "None"
                and labels_match({"matchLabels": headless.get("selector") or {}}, pod_labels(sts)),
                f"prod-ha: {n}: its serviceName is a headless Service selecting its pods (stable pod names)")
        bus = int(port_number(server, "cluster-bus") or 0)
        c.check(bus == 10000 + (port_number(server, "redis") or 0),
                f"prod-ha: {n}: declares the cluster bus port (redis + 10000, got {bus})")
        c.check(any(o["kind"] == "PodDisruptionBudget" and labels_match(o["spec"].get("selector"), pod_labels(sts))
                    and o["spec"].get("maxUnavailable") == 1 for o in objects),
                f"prod-ha: {n}: a PodDisruptionBudget lets one node go at a time")
        jobs = [o for o in objects if o["kind"] == "Job" and "--cluster create" in job_text(o, objects)]
        if c.check(len(jobs) == 1, f"prod-ha: {n}: one Job forms the cluster (redis-cli --cluster create)"):
            text = job_text(jobs[0], objects)
            c.check("--cluster-replicas 1" in text, f"prod-ha: {name_of(jobs[0])} gives each primary one replica")
            c.check("cluster_state" in text,
                    f"prod-ha: {name_of(jobs[0])} checks for an existing cluster first (cluster_state), "
                    "so it may run again")
            policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
            c.check(ingress_allowed(policies, namespace, {"kubernetes.io/metadata.name": namespace},
                                    pod_labels(jobs[0]), sts, "redis"),
                    f"prod-ha: the NetworkPolicies admit {name_of(jobs[0])} to {n}")
    # points finds the cluster: REDIS_URL names seed nodes that are pods of the StatefulSet.
    points = next((o for o in app_deployments(objects) if o["metadata"]["name"] == "loyalty-points"), None)
    if not c.check(points is not None, "prod-ha: loyalty-points is rendered"):
        return
    x = points["spec"]["template"]["spec"]["containers"][0]
    url, source = env_value(x, "REDIS_URL", objects)
    cn = f"{name_of(points)} container {x['name']}"
    if not c.check(url is not None and url.startswith(REDIS_CLUSTER_SCHEME),
                   f"prod-ha: {cn}: REDIS_URL starts with {REDIS_CLUSTER_SCHEME} (from {source}: {url!r})"):
        return
    c.check(not CREDENTIAL_IN_URL.search(url.replace(REDIS_CLUSTER_SCHEME, "redis://", 1)),
            f"prod-ha: {cn}: REDIS_URL from {source} holds no password (it is rendered, so committed)")
    seeds = url[len(REDIS_CLUSTER_SCHEME):].rsplit("@", 1)[-1].rstrip("/").split(",")
    c.check(len(set(seeds)) >= REDIS_CLUSTER_SEEDS,
            f"prod-ha: {cn}: REDIS_URL lists at least {REDIS_CLUSTER_SEEDS} distinct seed nodes "
            f"(got {len(set(seeds))})")
    for sts in nodes[:1]:
        server = next(y for y in pod_spec(sts)["containers"] if port_number(y, "redis"))
        service = sts["spec"].get("serviceName")
        pod_names = {f"{sts['metadata']['name']}-{i}" for i in range(sts["spec"].get("replicas") or 0)}
        for seed in seeds:
            host, _, port = seed.rpartition(":")
            parts = host.split(".")
            c.check(len(parts) >= 2 and parts[0] in pod_names and parts[1] == service
                    and ".".join(parts[2:]) in ("", namespace, f"{namespace}.svc", f"{namespace}.svc.cluster.local")
                    and port == str(port_number(server, "redis")),
                    f"prod-ha: {cn}: REDIS_URL seed {seed!r} is a pod of {name_of(sts)} "
                    f"(<pod>.{service}.{namespace}.svc:{port_number(server, 'redis')})")


def ha_network_matrix(objects: list[dict], namespace: str) -> list[tuple[dict, dict, str, str, bool, str]]:
    """Who may reach the Redis nodes and the PostgreSQL instances (ingress)."""
    own_ns = {"kubernetes.io/metadata.name": namespace}
    operator_ns = {"kubernetes.io/metadata.name": "cnpg-system"}
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}

    def pod(name: str) -> dict:
        return {"app.kubernetes.io/name": name}

    matrix = [
        (own_ns, pod("loyalty-points"), "redis-cluster", "redis", True, "points caches balances"),
        (own_ns, pod("redis-cluster-create"), "redis-cluster", "redis", True, "the Job forms the cluster"),
        (own_ns, pod("redis-cluster"), "redis-cluster", "redis", True, "replicas follow their primaries"),
        (own_ns, pod("redis-cluster"), "redis-cluster", "cluster-bus", True, "the nodes gossip on the cluster bus"),
        (own_ns, pod("loyalty-points"), "redis-cluster", "cluster-bus", False, "the bus is for the nodes only"),
        (own_ns, pod("redis-cluster-create"), "redis-cluster", "cluster-bus", False, "the bus is for the nodes only"),
        (own_ns, pod("loyalty-loadgen"), "redis-cluster", "redis", False, "only points uses Redis"),
        (own_ns, pod("anything"), "redis-cluster", "redis", False, "only points uses Redis"),
    ]
    for caller in ("loyalty-tiers", "loyalty-referral", "loyalty-rewards", "loyalty-insights", "loyalty-webhooks",
                   "loyalty-gateway"):
        matrix.append((own_ns, pod(caller), "redis-cluster", "redis", False, "only points uses Redis"))
    for cluster in cnpg_clusters(objects):
        name = cluster["metadata"]["name"]
        peer = pod_labels(cnpg_instance_pods(cluster))
        for caller in ("loyalty-points", "loyalty-tiers", "loyalty-referral", "loyalty-rewards", "loyalty-insights",
                       "loyalty-webhooks", "loyalty-gateway"):
            matrix.append((own_ns, pod(caller), name, "postgresql", True, "each service owns a database there"))
        matrix += [
            (own_ns, pod("loyalty-loadgen"), name, "postgresql", False, "loadgen has no database"),
            (own_ns, pod("redis-cluster"), name, "postgresql", False, "Redis has no business with PostgreSQL"),
            (own_ns, pod("anything"), name, "postgresql", False, "only the services"),
            (own_ns, peer, name, "postgresql", True, "standbys stream from the primary"),
            (own_ns, peer, name, "status", True, "the instances' managers talk to each other"),
            (operator_ns, pod("cloudnative-pg"), name, "status", True, "the operator reads each instance's status"),
            (operator_ns, pod("cloudnative-pg"), name, "postgresql", True, "the operator connects to PostgreSQL"),
            (own_ns, pod("loyalty-points"), name, "status", False, "the status port is the operator's"),
            (own_ns, pod("cloudnative-pg"), name, "status", False, "the operator lives in cnpg-system"),
            (monitoring, pod("prometheus"), name, "metrics", True, "Prometheus scrapes PostgreSQL"),
            (monitoring, pod("grafana"), name, "metrics", False, "only Prometheus scrapes"),
            (monitoring, pod("prometheus"), name, "postgresql", False, "Prometheus gets metrics only"),
            (own_ns, pod("anything"), name, "metrics", False, "metrics only for Prometheus"),
        ]
    return matrix


def check_overlay(c: Checks, objects: list[dict], overlay: str, context: list[dict]) -> None:
    kinds = [o["kind"] for o in objects]
    if overlay in ("dev",) + PROD_OVERLAYS:
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
    if overlay == "prod-ha":
        # Only loyalty-redis, which names the in-cluster Redis Cluster and holds no password.
        for o in objects:
            if o["kind"] == "Secret":
                values = {key: secret_value(objects, o["metadata"]["name"], key) or "" for key in o.get("data") or {}}
                c.check(values and all(not CREDENTIAL_IN_URL.search(v) and not SENSITIVE_KEY.search(k)
                                       for k, v in values.items()),
                        f"prod-ha: {name_of(o)} holds no credentials (they are created outside git)")
    if overlay in PROD_OVERLAYS:
        c.check(common.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").startswith("http"),
                f"{overlay}: OTEL_EXPORTER_OTLP_ENDPOINT points at a collector")
        minimum = {"loyalty-points": 3, "loyalty-gateway": 3, "loyalty-tiers": 2}
        for name, least in minimum.items():
            c.check(hpas.get(name, {}).get("minReplicas", 0) >= least,
                    f"{overlay}: {name} runs at least {least} replicas")
        for o in objects:
            if o["kind"] == "Deployment" or (o["kind"] == "StatefulSet" and overlay == "prod-ha"):
                spec = pod_spec(o)
                terms = (((spec.get("affinity") or {}).get("podAntiAffinity") or {})
                         .get("preferredDuringSchedulingIgnoredDuringExecution") or [])
                c.check(any(t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname" for t in terms),
                        f"{overlay}: {name_of(o)} prefers spreading over nodes (pod anti-affinity)")
                c.check(any(t["topologyKey"] == "topology.kubernetes.io/zone"
                            for t in spec.get("topologySpreadConstraints") or []),
                        f"{overlay}: {name_of(o)} spreads over zones")
                c.check(all(x.get("imagePullPolicy") == "Always" for x in containers(o)),
                        f"{overlay}: {name_of(o)} pulls its image on every start")
    if overlay == "prod-ha":
        check_ha(c, objects)
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


def documented_secrets(example: Path) -> dict[str, dict]:
    """Secret name -> {"keys": set of keys, "type": type} from the example file."""
    secrets: dict[str, dict] = {}
    for doc in load_yaml_documents(example):
        if doc.get("kind") == "Secret":
            entry = secrets.setdefault(doc["metadata"]["name"], {"keys": set(), "type": doc.get("type", "Opaque")})
            entry["keys"].update((doc.get("stringData") or {}).keys())
            entry["keys"].update((doc.get("data") or {}).keys())
    return secrets


def secret_value(objects: list[dict], name: str, key: str) -> str | None:
    """A rendered Secret's value (dev generates its own), or None."""
    for o in objects:
        if o["kind"] == "Secret" and o["metadata"]["name"] == name:
            if key in (o.get("stringData") or {}):
                return str(o["stringData"][key])
            if key in (o.get("data") or {}):
                return base64.b64decode(o["data"][key]).decode("utf-8", "replace")
    return None


def app_deployments(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] in GRPC_SERVICES | HTTP_SERVICES]


def check_mesh_credentials(c: Checks, objects: list[dict]) -> None:
    """One service secret for all; dev's generated values are usable."""
    refs = {}
    for o in app_deployments(objects):
        entry = env_entry(o["spec"]["template"]["spec"]["containers"][0], "LOYALTY_SERVICE_SECRET") or {}
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef") or {}
        refs[o["metadata"]["name"]] = (ref.get("name"), ref.get("key"))
    c.check(len(set(refs.values())) == 1,
            f"credentials: every workload reads LOYALTY_SERVICE_SECRET from the same Secret key (found {refs})")
    for name, key in set(refs.values()):
        value = secret_value(objects, name or "", key or "")
        if value is not None:
            c.check(len(value.encode()) >= SERVICE_SECRET_MIN_BYTES,
                    f"credentials: Secret {name} key {key} holds at least {SERVICE_SECRET_MIN_BYTES} bytes")
    # KEYS_DATABASE_URL is the gateway's database (when the overlay renders both URLs).
    gateway = next((o for o in app_deployments(objects) if o["metadata"]["name"] in HTTP_SERVICES), None)
    gateway_ref = ((env_entry(gateway["spec"]["template"]["spec"]["containers"][0], "DATABASE_URL") or {})
                   .get("valueFrom") or {}).get("secretKeyRef") if gateway else None
    gateway_url = secret_value(objects, gateway_ref["name"], gateway_ref["key"]) if gateway_ref else None
    for o in app_deployments(objects):
        ref = ((env_entry(o["spec"]["template"]["spec"]["containers"][0], "KEYS_DATABASE_URL") or {})
               .get("valueFrom") or {}).get("secretKeyRef")
        keys_url = secret_value(objects, ref["name"], ref["key"]) if ref else None
        if keys_url is not None and gateway_url is not None:
            same = urlsplit(keys_url)[1].split("@")[-1] + urlsplit(keys_url).path == \
                urlsplit(gateway_url)[1].split("@")[-1] + urlsplit(gateway_url).path
            c.check(same, f"credentials: {name_of(o)} KEYS_DATABASE_URL names the gateway's database")


def tls_files_of(obj: dict, objects: list[dict]) -> dict[str, MountedFile | None]:
    container = obj["spec"]["template"]["spec"]["containers"][0]
    settings = env_settings(container, objects)
    return {v: mounted_file(obj, container, settings[v]) for v in TLS_ENV if settings.get(v)}


CERTIFICATE_FIELDS = {
    "additionalOutputFormats", "commonName", "dnsNames", "duration", "emailAddresses", "encodeUsagesInRequest",
    "ipAddresses", "isCA", "issuerRef", "keystores", "literalSubject", "nameConstraints", "otherNames",
    "privateKey", "renewBefore", "renewBeforePercentage", "revisionHistoryLimit", "secretName", "secretTemplate",
    "subject", "uris", "usages",
}
PRIVATE_KEY_FIELDS = {"algorithm", "encoding", "rotationPolicy", "size"}
ISSUER_KINDS = {"acme", "ca", "selfSigned", "vault", "venafi"}
KEY_USAGES = {
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement", "data encipherment",
    "cert sign", "crl sign", "encipher only", "decipher only", "any", "server auth", "client auth", "code signing",
    "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
    "microsoft sgc", "netscape sgc",
}
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(h|m|s|ms))+$")


def check_cert_manager(c: Checks, example: Path, objects: list[dict]) -> None:
    """The optional cert-manager example: well-formed (cert-manager.io/v1,
    known fields), and issuing every certificate prod mounts with the names
    its callers use (the SANs) for server and client authentication."""
    where = f"cert-manager example {example.name}"
    docs = load_yaml_documents(example)
    issuers, certificates = {}, {}
    for doc in docs:
        kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name")
        c.check(doc.get("apiVersion") == "cert-manager.io/v1" and kind in {"Issuer", "Certificate"} and name,
                f"{where}: {kind}/{name} is a named cert-manager.io/v1 Issuer or Certificate")
        c.check("namespace" not in (doc.get("metadata") or {}), f"{where}: {kind}/{name} leaves the namespace to -n")
        spec = doc.get("spec") or {}
        if kind == "Issuer":
            issuers[name] = spec
            c.check(len(spec) == 1 and set(spec) <= ISSUER_KINDS, f"{where}: Issuer/{name} has one known issuer type")
        if kind == "Certificate":
            certificates[name] = spec
            unknown = sorted(set(spec) - CERTIFICATE_FIELDS)
            c.check(not unknown, f"{where}: Certificate/{name} has only known fields (unknown: {unknown})")
            c.check(set(spec.get("privateKey") or {}) <= PRIVATE_KEY_FIELDS,
                    f"{where}: Certificate/{name} privateKey has only known fields")
            c.check(set(spec.get("usages") or []) <= KEY_USAGES, f"{where}: Certificate/{name} usages are known")
            for field in ("duration", "renewBefore"):
                c.check(field not in spec or GO_DURATION.match(str(spec[field])),
                        f"{where}: Certificate/{name} {field} is a duration like 2160h")
            ref = spec.get("issuerRef") or {}
            c.check(spec.get("secretName") and ref.get("name"),
                    f"{where}: Certificate/{name} has secretName and issuerRef")
            c.check(ref.get("kind") == "ClusterIssuer" or ref.get("name") in {
                (d.get("metadata") or {}).get("name") for d in docs if d.get("kind") == "Issuer"},
                f"{where}: Certificate/{name} names an Issuer of the file")
    for name, spec in certificates.items():
        issuer = issuers.get((spec.get("issuerRef") or {}).get("name"), {})
        if not spec.get("isCA") and "ca" in issuer:
            c.check(issuer["ca"].get("secretName") in {s.get("secretName") for s in certificates.values()
                                                        if s.get("isCA")},
                    f"{where}: Certificate/{name} is signed by a CA the file makes")
    ca_secrets = {spec.get("secretName") for spec in certificates.values() if spec.get("isCA")}
    by_secret = {spec.get("secretName"): (name, spec) for name, spec in certificates.items()}
    callers: dict[str, set[str]] = {}
    for o in app_deployments(objects):
        for x in containers(o):
            for host in peer_addresses(x, objects).values():
                callers.setdefault(host.split(".")[0], set()).add(host)
    for o in app_deployments(objects):
        namespace = o["metadata"].get("namespace", "")
        n = name_of(o)
        for variable, found in tls_files_of(o, objects).items():
            if found is None or found.kind != "secret":
                continue
            c.check(found.name not in ca_secrets,
                    f"{where}: {n} mounts no CA Secret with its private key ({found.name})")
            if variable != TLS_CERT:
                continue
            issued = by_secret.get(found.name)
            if not c.check(issued, f"{where}: a Certificate issues {n}'s Secret {found.name}"):
                continue
            name, spec = issued
            wanted = set(service_names(o["metadata"]["name"], namespace)) | callers.get(o["metadata"]["name"], set())
            missing = sorted(wanted - set(spec.get("dnsNames") or []))
            c.check(not missing, f"{where}: Certificate/{name} dnsNames cover {n}'s names (missing {missing})")
            c.check({"server auth", "client auth"} <= set(spec.get("usages") or []),
                    f"{where}: Certificate/{name} is for server and client auth (mutual TLS)")
            c.check(not spec.get("isCA"), f"{where}: Certificate/{name} is no CA")


def run(objects: list[dict], overlay: str, example: Path, context: list[dict] | None = None) -> Checks:
    """Checks `objects`; `context` (what is already installed where they go,
    e.g. the dev overlay for the load-test Job) only answers lookups."""
    c = Checks()
    known = objects + (context or [])
    secret_docs = documented_secrets(example)
    for o in known:
        if o["kind"] == "Secret":
            entry = secret_docs.setdefault(o["metadata"]["name"], {"keys": set(), "type": o.get("type", "Opaque")})
            entry["keys"].update((o.get("data") or {}).keys())
    # Secrets an operator makes from rendered objects: CloudNativePG's `<cluster>-app`.
    for cluster in cnpg_clusters(known):
        name = cnpg_app_secret(cluster)
        if name:
            secret_docs.setdefault(name, {"keys": set(CNPG_APP_SECRET_KEYS), "type": "kubernetes.io/basic-auth"})
    for o in objects:
        labels = o["metadata"].get("labels") or {}
        wanted = RECOMMENDED_LABELS[1:] if o["kind"] == "Namespace" else RECOMMENDED_LABELS
        c.check(all(labels.get(k) for k in wanted), f"{name_of(o)}: recommended labels {', '.join(wanted)}")
        if o["kind"] == "ConfigMap":
            for key, value in (o.get("data") or {}).items():
                c.check(not CREDENTIAL_IN_URL.search(str(value)) and not SENSITIVE_ENV.search(key),
                        f"{name_of(o)}: {key} holds no credentials (they belong in a Secret)")
        if o["kind"] in POD_KINDS:
            check_workload(c, o, known, secret_docs, overlay)
            c.check(pod_labels(o).get("app.kubernetes.io/component"), f"{name_of(o)}: pods carry a component label")
        if o["kind"] == "ServiceAccount":
            c.check(o.get("automountServiceAccountToken") is False, f"{name_of(o)}: automountServiceAccountToken false")
        if o["kind"] == "PodDisruptionBudget":
            c.check("maxUnavailable" in o["spec"] or "minAvailable" in o["spec"], f"{name_of(o)}: has a budget")
    check_overlay(c, objects, overlay, context or [])
    if overlay in ("dev",) + PROD_OVERLAYS:
        check_mesh_credentials(c, objects)
    if overlay in PROD_OVERLAYS:
        certificates = {}
        for o in app_deployments(objects):
            found = tls_files_of(o, objects).get(TLS_CERT)
            if found and found.name:
                certificates.setdefault(found.name, []).append(o["metadata"]["name"])
        for secret, users in certificates.items():
            c.check(len(users) == 1,
                    f"{overlay}: each workload has its own certificate (Secret {secret} used by {users})")
        cert_manager = example.parent / CERT_MANAGER_EXAMPLE
        if cert_manager.exists():
            check_cert_manager(c, cert_manager, objects)
    return c


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--overlay", required=True, choices=["dev", "prod", "prod-ha", "jobs"])
    parser.add_argument("--secret-example", type=Path,
                        default=Path(__file__).resolve().parents[2] / "k8s" / "secret.example.yaml")
    parser.add_argument("--context", type=Path, help="rendered objects already installed (lookups only)")
    parser.add_argument("rendered", type=Path)
    args = parser.parse_args(argv)
    objects = load_yaml_documents(args.rendered)
    context = load_yaml_documents(args.context) if args.context else []
    return run(objects, args.overlay, args.secret_example, context).report(f"properties {args.overlay}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
