#!/usr/bin/env python3
"""Proves the validation catches what it claims to: each case breaks one
property in a scratch copy of k8s/ and requires the named stage to fail with
the expected message. A case whose edit no longer applies fails too, so the
cases cannot silently go stale when the manifests change.

The monitoring cases break k8s/monitoring (or docs/alerts.md, copied along)
and need stage `monitoring` (the CRD schemas and monitoring.py) or `promtool`
(promtool check rules and promtool test rules with alerts.test.yaml) to fail.

Usage: mutations.py [--checkov PATH] [--promtool PATH]
   (checkov and promtool cases are skipped without them)
Last line: `RESULT <passed> <failed>` for validate.sh.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, Callable

import kubernetes_validate
import yaml
from kubernetes_validate.utils import ValidationError

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import crds  # noqa: E402
import monitoring  # noqa: E402
import properties  # noqa: E402
import render  # noqa: E402

ROOT = HERE.parents[1]


def edit_yaml(path: Path, change: Callable[[list[Any]], None]) -> None:
    docs = render.load_yaml_documents(path)
    change(docs)
    path.write_text("---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs), encoding="utf-8")


def edit_text(path: Path, old: str, new: str, count: int = 1) -> None:
    """Replaces the first `count` occurrences of `old` (-1: all of them)."""
    text = path.read_text(encoding="utf-8")
    if old not in text:
        raise AssertionError(f"mutation no longer applies: {old!r} not in {path}")
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def container(docs: list[Any], kind: str = "Deployment") -> dict:
    return next(d for d in docs if d["kind"] == kind)["spec"]["template"]["spec"]["containers"][0]


def pop(mapping: dict, key: str) -> None:
    if key not in mapping:
        raise AssertionError(f"mutation no longer applies: no {key}")
    del mapping[key]


def env(docs: list[Any], name: str) -> dict:
    """The container's env entry `name` (of a Deployment or a patch of one)."""
    found = [e for e in container(docs).get("env") or [] if e["name"] == name]
    if len(found) != 1:
        raise AssertionError(f"mutation no longer applies: no env {name}")
    return found[0]


def drop_env(docs: list[Any], name: str) -> None:
    container(docs)["env"].remove(env(docs, name))


def tls_volume(docs: list[Any]) -> dict:
    return next(v for v in docs[0]["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")


def monitor(docs: list[Any], name: str) -> dict:
    """The metrics endpoint of ServiceMonitor `name`."""
    found = [d for d in docs if d["kind"] == "ServiceMonitor" and d["metadata"]["name"] == name]
    if len(found) != 1:
        raise AssertionError(f"mutation no longer applies: no ServiceMonitor {name}")
    return found[0]["spec"]["endpoints"][0]


def drop_monitor(docs: list[Any], name: str) -> None:
    docs.remove(next(d for d in docs if d["kind"] == "ServiceMonitor" and d["metadata"]["name"] == name))


def docs_of(k8s: Path) -> Path:
    """docs/alerts.md of the scratch copy (next to its k8s/)."""
    return k8s.parent / "docs" / "alerts.md"


def kind_of(docs: list[Any], kind: str, name: str) -> dict:
    """The document of that kind and name (of a multi-document file)."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    if len(found) != 1:
        raise AssertionError(f"mutation no longer applies: no {kind} {name}")
    return found[0]


RULES = "monitoring/prometheusrule.yaml"
HA = "overlays/prod-ha"
BOARD = "monitoring/dashboard.json"
MONITORS = "monitoring/servicemonitors.yaml"


# Each case: (what is broken, overlay to render, stage that must fail,
# expected text in the failure, edit of the scratch k8s/ tree).
CASES: list[tuple[str, str, str, str, Callable[[Path], None]]] = [
    ("points loses its readinessProbe", "dev", "properties", "container points: readinessProbe",
     lambda k: edit_yaml(k / "base/points/deployment.yaml", lambda d: pop(container(d), "readinessProbe"))),
    ("gateway loses its livenessProbe", "prod", "properties", "container gateway: livenessProbe",
     lambda k: edit_yaml(k / "base/gateway/deployment.yaml", lambda d: pop(container(d), "livenessProbe"))),
    ("gateway root filesystem writable", "prod", "properties", "readOnlyRootFilesystem",
     lambda k: edit_yaml(k / "base/gateway/deployment.yaml",
                         lambda d: container(d)["securityContext"].update(readOnlyRootFilesystem=False))),
    ("tiers allows privilege escalation", "dev", "properties", "allowPrivilegeEscalation",
     lambda k: edit_yaml(k / "base/tiers/deployment.yaml",
                         lambda d: container(d)["securityContext"].update(allowPrivilegeEscalation=True))),
    ("points keeps NET_RAW", "dev", "properties", "capabilities drop ALL",
     lambda k: edit_yaml(k / "base/points/deployment.yaml",
                         lambda d: container(d)["securityContext"].update(capabilities={"drop": ["NET_RAW"]}))),
    ("points runs as root", "dev", "properties", "runAsUser",
     lambda k: edit_yaml(k / "base/points/deployment.yaml",
                         lambda d: container(d)["securityContext"].update(runAsUser=0))),
    ("redis without a memory limit", "dev", "properties", "resources.limits.memory",
     lambda k: edit_yaml(k / "overlays/dev/redis.yaml",
                         lambda d: pop(container(d)["resources"]["limits"], "memory"))),
    ("tiers database URL as a literal", "dev", "properties", "must come from a Secret",
     lambda k: edit_yaml(k / "base/tiers/deployment.yaml", lambda d: (
         env(d, "DATABASE_URL").pop("valueFrom"),
         env(d, "DATABASE_URL").update(value="postgres://tiers:hunter2@db:5432/tiers")))),
    ("credentials in a ConfigMap", "prod", "properties", "holds no credentials",
     lambda k: edit_yaml(k / "overlays/prod/patches/configmap-points.yaml",
                         lambda d: d[0]["data"].update(TIERS_ADDR="http://u:p@loyalty-tiers:50052"))),
    ("secretKeyRef to an undocumented key", "prod", "properties", "neither rendered nor documented",
     lambda k: edit_yaml(k / "base/points/deployment.yaml",
                         lambda d: env(d, "DATABASE_URL")["valueFrom"]["secretKeyRef"].update(key="pointz-url"))),
    ("a Secret committed to prod", "prod", "properties", "prod: no Secret objects",
     lambda k: (k.joinpath("overlays/prod/leak.yaml").write_text(
         "apiVersion: v1\nkind: Secret\nmetadata:\n  name: leak\nstringData:\n  url: x\n"),
                edit_text(k / "overlays/prod/kustomization.yaml", "  - namespace.yaml\n",
                          "  - namespace.yaml\n  - leak.yaml\n"))),
    ("points without a PodDisruptionBudget", "dev", "properties", "PodDisruptionBudget",
     lambda k: edit_text(k / "base/points/kustomization.yaml", "  - pdb.yaml\n", "")),
    ("gateway's HPA scales something else", "prod", "properties", "one autoscaling/v2 HPA",
     lambda k: edit_text(k / "base/gateway/hpa.yaml", "    name: loyalty-gateway\n", "    name: gateway\n")),
    ("tiers without a Service", "dev", "properties", "a Service selects its pods",
     lambda k: edit_text(k / "base/tiers/kustomization.yaml", "  - service.yaml\n", "")),
    ("points without its NetworkPolicy", "dev", "properties", "a NetworkPolicy of its own",
     lambda k: edit_text(k / "base/points/kustomization.yaml", "  - networkpolicy.yaml\n", "")),
    ("tiers admits the load generator", "dev", "properties", "loadgen has no business with tiers",
     lambda k: edit_text(k / "base/tiers/networkpolicy.yaml", "                  - loyalty-gateway",
                         "                  - loyalty-gateway\n                  - loyalty-loadgen")),
    ("points forgets the gateway", "prod", "properties", "gateway calls points",
     lambda k: edit_text(k / "base/points/networkpolicy.yaml", "                  - loyalty-gateway", "")),
    ("points forgets insights", "prod", "properties", "insights follows the ledger",
     lambda k: edit_text(k / "base/points/networkpolicy.yaml", "                  - loyalty-insights", "")),
    ("insights admits the load generator", "dev", "properties", "loadgen has no business with insights",
     lambda k: edit_text(k / "base/insights/networkpolicy.yaml", "                  - loyalty-gateway",
                         "                  - loyalty-gateway\n                  - loyalty-loadgen")),
    ("dev PostgreSQL forgets insights", "dev", "properties", "loyalty-insights (loyalty-dev) -> postgres:postgres",
     lambda k: edit_text(k / "overlays/dev/postgres.yaml", "                  - loyalty-insights\n", "")),
    ("points forgets webhooks", "prod", "properties", "webhooks follows the ledger",
     lambda k: edit_text(k / "base/points/networkpolicy.yaml", "                  - loyalty-webhooks", "")),
    ("insights forgets webhooks", "prod", "properties", "webhooks follows segment changes",
     lambda k: edit_text(k / "base/insights/networkpolicy.yaml", "                  - loyalty-webhooks", "")),
    ("tiers forgets webhooks", "prod", "properties", "webhooks asks tiers for statements",
     lambda k: edit_text(k / "base/tiers/networkpolicy.yaml", "                  - loyalty-webhooks", "")),
    ("referral forgets webhooks", "prod", "properties", "webhooks follows the referral outbox",
     lambda k: edit_text(k / "base/referral/networkpolicy.yaml", "                  - loyalty-webhooks", "")),
    ("rewards forgets webhooks", "dev", "properties", "webhooks follows the rewards outbox",
     lambda k: edit_text(k / "base/rewards/networkpolicy.yaml", "                  - loyalty-webhooks", "")),
    ("rewards forgets referral", "prod", "properties", "referral grants welcome vouchers",
     lambda k: edit_text(k / "base/rewards/networkpolicy.yaml", "                  - loyalty-referral", "")),
    ("referral not told of rewards", "dev", "properties", "container referral: sets REWARDS_ADDR",
     lambda k: edit_text(k / "base/referral/configmap.yaml", '  REWARDS_ADDR: "loyalty-rewards:50054"\n', "")),
    ("webhooks not told of rewards", "prod", "properties", "sets REWARDS_ADDR",
     lambda k: edit_text(k / "base/webhooks/configmap.yaml", '  REWARDS_ADDR: "loyalty-rewards:50054"\n', "")),
    ("webhooks admits every pod", "dev", "properties", "only the gateway calls webhooks",
     lambda k: edit_text(k / "base/webhooks/networkpolicy.yaml",
                         "        - podSelector:\n            matchLabels:\n"
                         "              app.kubernetes.io/name: loyalty-gateway   # the HTTP API\n",
                         "        - podSelector: {}\n")),
    ("dev PostgreSQL forgets webhooks", "dev", "properties", "loyalty-webhooks (loyalty-dev) -> postgres:postgres",
     lambda k: edit_text(k / "overlays/dev/postgres.yaml", "                  - loyalty-webhooks\n", "")),
    # Egress of webhooks, which connects to addresses the shops choose.
    ("webhooks reaches private addresses", "prod", "properties",
     "egress loyalty-webhooks -> 10.96.0.1:443/TCP should be denied",
     lambda k: edit_text(k / "base/webhooks/networkpolicy.yaml",
                         "            except:\n              - 10.0.0.0/8\n              - 172.16.0.0/12\n"
                         "              - 192.168.0.0/16\n              - 169.254.0.0/16\n"
                         "              - 100.64.0.0/10\n              - 127.0.0.0/8\n", "")),
    ("webhooks' egress unfenced", "dev", "properties", "8.8.8.8 (public):22/TCP should be denied",
     lambda k: (edit_text(k / "base/webhooks/networkpolicy.yaml", "    - Ingress\n    - Egress\n", "    - Ingress\n"),
                edit_text(k / "overlays/dev/kustomization.yaml", "  - webhooks-egress.yaml\n", ""))),
    ("webhooks reaches the cloud metadata address", "dev", "properties",
     "egress loyalty-webhooks -> 169.254.169.254:443/TCP should be denied",
     lambda k: edit_text(k / "base/webhooks/networkpolicy.yaml", "              - 169.254.0.0/16\n", "")),
    ("webhooks cannot reach the referral outbox", "dev", "properties",
     "egress loyalty-webhooks -> loyalty-referral:50053/TCP should be allowed",
     lambda k: edit_text(k / "base/webhooks/networkpolicy.yaml", "        - port: 50053\n", "        - port: 9103\n")),
    ("webhooks delivers over plain http", "prod", "properties", "8.8.8.8 (public):80/TCP should be denied",
     lambda k: edit_text(k / "base/webhooks/networkpolicy.yaml", "        - port: 443\n",
                         "        - port: 443\n          protocol: TCP\n        - port: 80\n")),
    ("webhooks cannot resolve names", "dev", "properties", "kube-dns (kube-system):53/UDP should be allowed",
     lambda k: edit_text(k / "base/webhooks/networkpolicy.yaml", "              k8s-app: kube-dns\n",
                         "              k8s-app: coredns\n")),
    ("dev webhooks without its database egress", "dev", "properties",
     "egress loyalty-webhooks -> postgres:5432/TCP should be allowed",
     lambda k: edit_text(k / "overlays/dev/kustomization.yaml", "  - webhooks-egress.yaml\n", "")),
    ("prod webhooks without the OTLP collector", "prod", "properties", "should be allowed (traces and logs",
     lambda k: edit_text(k / "overlays/prod/webhooks-egress.yaml", "              kubernetes.io/metadata.name: observability",
                         "              kubernetes.io/metadata.name: monitoring")),
    ("grace period shorter than preStop + drain", "dev", "properties", "terminationGracePeriodSeconds",
     lambda k: edit_text(k / "base/points/deployment.yaml", "terminationGracePeriodSeconds: 30",
                         "terminationGracePeriodSeconds: 20")),
    ("liveness on gRPC health", "dev", "properties", "livenessProbe does not use gRPC health",
     lambda k: edit_yaml(k / "base/tiers/deployment.yaml",
                         lambda d: container(d).update(livenessProbe={"grpc": {"port": 50052}}))),
    ("points listens on loopback only", "dev", "properties", "listens on every interface",
     lambda k: edit_text(k / "base/points/configmap.yaml", '"0.0.0.0:50051"', '"127.0.0.1:50051"')),
    ("gRPC Service with a cluster IP", "prod", "properties", "gRPC Service is headless",
     lambda k: edit_text(k / "base/points/service.yaml", "  clusterIP: None\n", "")),
    ("prod points at a single replica", "prod", "properties", "loyalty-points runs at least 3 replicas",
     lambda k: edit_text(k / "overlays/prod/patches/hpa-points.yaml", "minReplicas: 3", "minReplicas: 1")),
    ("prod without node spreading", "prod", "properties", "pod anti-affinity",
     lambda k: edit_yaml(k / "overlays/prod/patches/deployment-tiers.yaml",
                         lambda d: pop(d[0]["spec"]["template"]["spec"], "affinity"))),
    ("load-test Job retried", "jobs", "properties", "backoffLimit 0",
     lambda k: edit_text(k / "jobs/loadgen.yaml", "backoffLimit: 0", "backoffLimit: 3")),
    # Credentials and TLS (issue 10).
    ("tiers without LOYALTY_AUTH", "dev", "properties", "container tiers: LOYALTY_AUTH=required",
     lambda k: edit_yaml(k / "base/tiers/deployment.yaml", lambda d: drop_env(d, "LOYALTY_AUTH"))),
    ("gateway with authentication off", "prod", "properties", "container gateway: LOYALTY_AUTH=required",
     lambda k: edit_yaml(k / "base/gateway/deployment.yaml", lambda d: env(d, "LOYALTY_AUTH").update(value="off"))),
    ("service secret inlined", "prod", "properties", "LOYALTY_SERVICE_SECRET comes from a Secret",
     lambda k: edit_yaml(k / "base/rewards/deployment.yaml", lambda d: (
         env(d, "LOYALTY_SERVICE_SECRET").pop("valueFrom"),
         env(d, "LOYALTY_SERVICE_SECRET").update(value="0123456789abcdef0123456789abcdef")))),
    ("key database URL in a ConfigMap", "prod", "properties", "KEYS_DATABASE_URL comes from a Secret",
     lambda k: (edit_yaml(k / "base/referral/deployment.yaml", lambda d: drop_env(d, "KEYS_DATABASE_URL")),
                edit_yaml(k / "base/referral/configmap.yaml", lambda d: d[0]["data"].update(
                    KEYS_DATABASE_URL="postgres://db.internal:5432/gateway")))),
    ("service secret read from different Secrets", "prod", "properties", "from the same Secret key",
     lambda k: edit_yaml(k / "base/tiers/deployment.yaml", lambda d: env(d, "LOYALTY_SERVICE_SECRET")[
         "valueFrom"]["secretKeyRef"].update(key="tiers-secret"))),
    ("dev service secret too short", "dev", "properties", "holds at least 32 bytes",
     lambda k: edit_text(k / "overlays/dev/kustomization.yaml", "service-secret=dev-only-not-a-secret-0123456789abcdef",
                         "service-secret=short")),
    ("services read keys from another database", "dev", "properties", "names the gateway's database",
     lambda k: edit_text(k / "overlays/dev/kustomization.yaml",
                         "keys-url=postgres://loyalty:dev-only-not-a-secret@postgres:5432/gateway",
                         "keys-url=postgres://loyalty:dev-only-not-a-secret@postgres:5432/points")),
    ("prod points without mutual TLS", "prod", "properties", "prod sets LOYALTY_TLS_CLIENT_CA",
     lambda k: edit_yaml(k / "overlays/prod/patches/tls-points.yaml", lambda d: drop_env(d, "LOYALTY_TLS_CLIENT_CA"))),
    ("prod gateway without TLS", "prod", "properties", "container gateway: prod sets LOYALTY_TLS_CERT",
     lambda k: edit_text(k / "overlays/prod/kustomization.yaml", "  - path: patches/tls-gateway.yaml\n", "")),
    ("prod certificates mounted writable", "prod", "properties", "is mounted read-only",
     lambda k: edit_yaml(k / "overlays/prod/patches/tls-tiers.yaml",
                         lambda d: container(d)["volumeMounts"][0].update(readOnly=False))),
    ("prod key from an emptyDir", "prod", "properties", "comes from a Secret key (found emptyDir)",
     lambda k: edit_yaml(k / "overlays/prod/patches/tls-referral.yaml", lambda d: (
         tls_volume(d).pop("projected"), tls_volume(d).update(emptyDir={})))),
    ("prod insights without its TLS patch", "prod", "properties", "container insights: prod sets LOYALTY_TLS_CERT",
     lambda k: edit_text(k / "overlays/prod/kustomization.yaml", "  - path: patches/tls-insights.yaml\n", "")),
    ("prod webhooks without its TLS patch", "prod", "properties", "container webhooks: prod sets LOYALTY_TLS_CERT",
     lambda k: edit_text(k / "overlays/prod/kustomization.yaml", "  - path: patches/tls-webhooks.yaml\n", "")),
    ("gateway calls webhooks by a name no certificate carries", "prod", "properties", "WEBHOOKS_ADDR host 'webhooks'",
     lambda k: edit_text(k / "base/gateway/configmap.yaml", '"loyalty-webhooks:50056"', '"webhooks:50056"')),
    ("gateway calls insights by a name no certificate carries", "prod", "properties", "INSIGHTS_ADDR host 'insights'",
     lambda k: edit_text(k / "base/gateway/configmap.yaml", '"loyalty-insights:50055"', '"insights:50055"')),
    ("prod key readable by everyone", "prod", "properties", "not readable by other users",
     lambda k: edit_text(k / "overlays/prod/patches/tls-rewards.yaml", "defaultMode: 288", "defaultMode: 420")),
    ("prod certificate from an Opaque Secret", "prod", "properties", "Secret of type kubernetes.io/tls",
     lambda k: edit_text(k / "overlays/prod/patches/tls-tiers.yaml", "name: loyalty-tiers-tls",
                         "name: loyalty-tls-ca")),
    ("certificate volume names an undocumented key", "prod", "properties", "volume tls: Secret loyalty-points-tls",
     lambda k: edit_text(k / "overlays/prod/patches/tls-points.yaml", "- key: tls.key", "- key: tls-key")),
    ("two workloads share a certificate", "prod", "properties", "each workload has its own certificate",
     lambda k: edit_text(k / "overlays/prod/patches/tls-rewards.yaml", "name: loyalty-rewards-tls",
                         "name: loyalty-points-tls")),
    ("gRPC readiness probe under TLS", "prod", "properties", "readinessProbe is no gRPC probe",
     lambda k: edit_yaml(k / "overlays/prod/patches/tls-points.yaml", lambda d: pop(container(d), "readinessProbe"))),
    ("readiness under TLS that no longer follows the database", "prod", "properties",
     "readinessProbe asks /readyz, which follows gRPC health",
     lambda k: edit_text(k / "overlays/prod/patches/tls-tiers.yaml",
                         "readinessProbe:\n            grpc: null\n            httpGet:\n              path: /readyz",
                         "readinessProbe:\n            grpc: null\n            httpGet:\n              path: /metrics")),
    ("plain-HTTP gateway probe under TLS", "prod", "properties", "livenessProbe httpGet scheme HTTP matches",
     lambda k: edit_yaml(k / "overlays/prod/patches/tls-gateway.yaml", lambda d: pop(container(d), "livenessProbe"))),
    ("h2c Service hint under TLS", "prod", "properties", "claims no plain-text appProtocol",
     lambda k: edit_text(k / "overlays/prod/kustomization.yaml", "  - path: patches/service-tiers.yaml\n", "")),
    ("a caller uses a name no certificate carries", "dev", "properties", "a name its certificate carries",
     lambda k: edit_text(k / "base/points/configmap.yaml", '"loyalty-tiers:50052"', '"tiers:50052"')),
    ("cert-manager Certificate without a SAN", "prod", "properties", "dnsNames cover Deployment/loyalty-tiers",
     lambda k: edit_text(k / "cert-manager/certificates.yaml", "    - loyalty-tiers.loyalty.svc\n", "")),
    ("cert-manager Certificate for insights without a SAN", "prod", "properties",
     "dnsNames cover Deployment/loyalty-insights",
     lambda k: edit_text(k / "cert-manager/certificates.yaml", "    - loyalty-insights.loyalty.svc.cluster.local\n", "")),
    ("cert-manager Certificate for webhooks without a SAN", "prod", "properties",
     "dnsNames cover Deployment/loyalty-webhooks",
     lambda k: edit_text(k / "cert-manager/certificates.yaml", "    - loyalty-webhooks.loyalty.svc\n", "")),
    ("cert-manager Certificate with a misspelled field", "prod", "properties", "unknown: ['renewBfore']",
     lambda k: edit_text(k / "cert-manager/certificates.yaml", "  renewBefore: 720h", "  renewBfore: 720h")),
    # prod-ha: PostgreSQL (CloudNativePG) and Redis that survive a node.
    ("prod-ha PostgreSQL with two instances", "prod-ha", "properties", "Cluster/loyalty-pg has instances >= 3",
     lambda k: edit_text(k / HA / "postgres-cluster.yaml", "  instances: 3\n", "  instances: 2\n")),
    ("prod-ha PostgreSQL replicating asynchronously", "prod-ha", "properties", "replicates synchronously",
     lambda k: edit_yaml(k / HA / "postgres-cluster.yaml",
                         lambda d: pop(kind_of(d, "Cluster", "loyalty-pg")["spec"]["postgresql"], "synchronous"))),
    ("prod-ha synchronous replication that stops writes with a node down", "prod-ha", "properties",
     "keeps accepting writes with one instance lost",
     lambda k: edit_text(k / HA / "postgres-cluster.yaml", "      number: 1\n", "      number: 2\n")),
    ("prod-ha PostgreSQL instances sharing nodes", "prod-ha", "properties", "puts each instance on its own node",
     lambda k: edit_text(k / HA / "postgres-cluster.yaml", "podAntiAffinityType: required",
                         "podAntiAffinityType: preferred")),
    ("prod-ha points' database URL outside the operator's Secret", "prod-ha", "properties",
     "container points: DATABASE_URL comes from the CloudNativePG app Secret",
     lambda k: edit_text(k / HA / "kustomization.yaml", "  - path: patches/deployment-points.yaml\n", "")),
    ("prod-ha tiers' database not on the cluster", "prod-ha", "properties",
     "key tiers-url: database 'tiers'",
     lambda k: edit_yaml(k / HA / "postgres-cluster.yaml",
                         lambda d: d.remove(kind_of(d, "Database", "loyalty-pg-tiers")))),
    ("prod-ha database owned by an unmanaged role", "prod-ha", "properties",
     "Database/loyalty-pg-rewards is owned by a role Cluster/loyalty-pg manages",
     lambda k: edit_text(k / HA / "postgres-cluster.yaml", "  owner: rewards\n", "  owner: reward\n")),
    ("prod-ha Redis with cluster mode off", "prod-ha", "properties", "one Redis Cluster StatefulSet",
     lambda k: edit_text(k / HA / "redis-cluster.yaml", '- --cluster-enabled\n            - "yes"',
                         '- --cluster-enabled\n            - "no"')),
    ("prod-ha Redis Cluster of three nodes", "prod-ha", "properties", "runs 6 nodes",
     lambda k: edit_text(k / HA / "redis-cluster.yaml", "  replicas: 6\n", "  replicas: 3\n")),
    ("prod-ha Redis nodes forgetting their identity", "prod-ha", "properties", "lies on a PersistentVolumeClaim",
     lambda k: edit_text(k / HA / "redis-cluster.yaml", "            - /data/nodes.conf\n",
                         "            - /tmp/nodes.conf\n")),
    ("prod-ha Redis cluster formed again on every run", "prod-ha", "properties",
     "checks for an existing cluster first",
     lambda k: edit_text(k / HA / "redis-cluster-create.sh", "cluster_state", "cluster_size", -1)),
    ("prod-ha points on a single Redis server", "prod-ha", "properties", "REDIS_URL starts with redis+cluster://",
     lambda k: edit_text(k / HA / "kustomization.yaml", "url=redis+cluster://redis-cluster-0.redis-cluster.loyalty.svc",
                         "url=redis://redis-cluster-0.redis-cluster.loyalty.svc")),
    ("prod-ha points with one seed node", "prod-ha", "properties", "at least 3 distinct seed nodes",
     lambda k: edit_text(k / HA / "kustomization.yaml", ",redis-cluster-1.redis-cluster.loyalty.svc:6379,"
                         "redis-cluster-2.redis-cluster.loyalty.svc:6379", "")),
    ("prod-ha seed node that is no pod", "prod-ha", "properties", "is a pod of StatefulSet/redis-cluster",
     lambda k: edit_text(k / HA / "kustomization.yaml", "redis-cluster-2.redis-cluster.loyalty.svc:6379",
                         "redis-cluster-7.redis-cluster.loyalty.svc:6379")),
    ("prod-ha Redis password committed", "prod-ha", "properties", "holds no credentials",
     lambda k: edit_text(k / HA / "kustomization.yaml", "url=redis+cluster://", "url=redis+cluster://:hunter2@")),
    ("prod-ha Redis nodes cut off the cluster bus", "prod-ha", "properties",
     "redis-cluster (loyalty) -> redis-cluster:cluster-bus should be allowed",
     lambda k: edit_text(k / HA / "redis-cluster.yaml", "        - port: cluster-bus\n          protocol: TCP\n", "")),
    ("prod-ha Redis open to tiers", "prod-ha", "properties", "loyalty-tiers (loyalty) -> redis-cluster:redis",
     lambda k: edit_text(k / HA / "redis-cluster.yaml", "                  - loyalty-points\n",
                         "                  - loyalty-points\n                  - loyalty-tiers\n")),
    ("prod-ha PostgreSQL closed to the operator", "prod-ha", "properties",
     "cloudnative-pg (cnpg-system) -> loyalty-pg:status should be allowed",
     lambda k: edit_text(k / HA / "postgres-cluster.yaml", "kubernetes.io/metadata.name: cnpg-system",
                         "kubernetes.io/metadata.name: cnpg")),
    ("prod-ha PostgreSQL forgets the gateway", "prod-ha", "properties",
     "loyalty-gateway (loyalty) -> loyalty-pg:postgresql should be allowed",
     lambda k: edit_text(k / HA / "postgres-cluster.yaml", "                  - loyalty-gateway\n", "")),
    ("prod-ha webhooks reaches every private address on 5432", "prod-ha", "properties",
     "egress loyalty-webhooks -> 10.20.30.40:5432/TCP should be denied",
     lambda k: edit_text(k / HA / "kustomization.yaml", "  - path: patches/webhooks-egress.yaml\n", "")),
    ("prod-ha Cluster with a misspelt field", "prod-ha", "schema", "'synchronus' was unexpected",
     lambda k: edit_text(k / HA / "postgres-cluster.yaml", "    synchronous:\n", "    synchronus:\n")),
    ("prod-ha synchronous replication of an unknown method", "prod-ha", "schema", "'all' is not one of",
     lambda k: edit_text(k / HA / "postgres-cluster.yaml", "      method: any\n", "      method: all\n")),
    ("prod-ha Database without an owner", "prod-ha", "schema", "'owner' is a required property",
     lambda k: edit_text(k / HA / "postgres-cluster.yaml", "  owner: insights\n", "")),
    ("prod-ha PodMonitor with a misspelt field", "prod-ha-monitoring", "schema", "'podMetricEndpoints' was unexpected",
     lambda k: edit_text(k / HA / "monitoring/podmonitor.yaml", "podMetricsEndpoints:", "podMetricEndpoints:")),
    ("misspelled field", "dev", "schema", "readinesProbe",
     lambda k: edit_text(k / "base/points/deployment.yaml", "readinessProbe:", "readinesProbe:")),
    ("wrong type", "prod", "schema", "'12' is not of type 'integer'",
     lambda k: edit_text(k / "overlays/prod/patches/hpa-gateway.yaml", "maxReplicas: 12", 'maxReplicas: "12"')),
    ("unsupported kustomize field", "dev", "render", "not supported",
     lambda k: edit_text(k / "overlays/dev/kustomization.yaml", "namespace: loyalty-dev\n",
                         "namespace: loyalty-dev\ncommonLabels:\n  team: loyalty\n")),
    ("patch without a target", "prod", "render", "matches 0 objects",
     lambda k: edit_text(k / "overlays/prod/patches/hpa-tiers.yaml", "name: loyalty-tiers", "name: loyalty-tier")),
    ("ambiguous octal number", "dev", "render", "ambiguous number",
     lambda k: edit_text(k / "overlays/dev/postgres.yaml", "defaultMode: 288", "defaultMode: 0440")),
    ("privilege escalation (security scan)", "prod", "checkov", "CKV_K8S_20",
     lambda k: edit_yaml(k / "base/gateway/deployment.yaml",
                         lambda d: container(d)["securityContext"].update(allowPrivilegeEscalation=True))),
    # Monitoring (k8s/monitoring, docs/alerts.md).
    ("dashboard reads a misspelt metric", "monitoring", "monitoring", "unknown metric balance_cache_hit_total",
     lambda k: edit_text(k / BOARD, "sum(rate(balance_cache_hits_total{", "sum(rate(balance_cache_hit_total{")),
    ("rule reads a misspelt metric", "monitoring", "monitoring", "unknown metric stream_consumer_entry_timestamp",
     lambda k: edit_text(k / RULES, "(stream_consumer_entry_timestamp_seconds > 0)",
                         "(stream_consumer_entry_timestamp > 0)")),
    ("rule expression does not parse", "monitoring", "monitoring", "PromQL does not parse",
     lambda k: edit_text(k / RULES, "max by (namespace, job) (redemptions_pending_oldest_age_seconds) > 600",
                         "max by (namespace, job) (redemptions_pending_oldest_age_seconds > 600")),
    ("dashboard query does not parse", "monitoring", "monitoring", "PromQL does not parse",
     lambda k: edit_text(k / BOARD, 'job=\\"loyalty-gateway\\", route!~\\"/healthz|/readyz\\"}[$__rate_interval]))"',
                         'job=\\"loyalty-gateway\\", route!~\\"/healthz|/readyz\\"}[$__rate_interval])"')),
    ("rule matches a misspelt label", "monitoring", "monitoring", "has no label consumr",
     lambda k: edit_text(k / RULES, "max by (namespace, consumer) (stream_consumer_connected) == 0",
                         'max by (namespace, consumer) (stream_consumer_connected{consumr="tiers"}) == 0')),
    ("client errors count against availability", "monitoring", "monitoring", "selects exactly the server errors",
     lambda k: edit_text(k / RULES, 'DataLoss|ResourceExhausted"}[1h]', 'DataLoss|ResourceExhausted|NotFound"}[1h]')),
    ("alert without its runbook heading", "monitoring", "monitoring",
     "docs/alerts.md has a heading `## LoyaltyRedemptionsStuck`",
     lambda k: edit_text(docs_of(k), "## LoyaltyRedemptionsStuck\n", "## Redemptions stuck\n")),
    ("runbook_url to another anchor", "monitoring", "monitoring", "runbook_url is",
     lambda k: edit_text(k / RULES, "alerts.md#loyaltyredemptionsstuck", "alerts.md#redemptions-stuck")),
    ("runbook heading of no alert", "monitoring", "monitoring", "`## LoyaltyGhost` documents an alert",
     lambda k: docs_of(k).write_text(docs_of(k).read_text() + "\n## LoyaltyGhost\n\nGone.\n")),
    ("alert of an unknown severity", "monitoring", "monitoring", "severity is one of",
     lambda k: edit_text(k / RULES, "            severity: ticket\n          annotations:\n"
                         "            summary: \"A redemption",
                         "            severity: critical\n          annotations:\n"
                         "            summary: \"A redemption")),
    ("alert without a `for`", "monitoring", "monitoring", "has a `for` duration",
     lambda k: edit_text(k / RULES, "oldest_age_seconds) > 600\n          for: 5m\n", "oldest_age_seconds) > 600\n")),
    ("a service without a ServiceMonitor", "monitoring", "monitoring", "Service/loyalty-tiers: exactly one",
     lambda k: edit_yaml(k / MONITORS, lambda d: drop_monitor(d, "loyalty-tiers"))),
    ("metrics scraped over plain HTTP in prod", "monitoring", "monitoring", "scheme https",
     lambda k: edit_yaml(k / MONITORS, lambda d: monitor(d, "loyalty-points").update(scheme="http"))),
    ("certificate checked against a name it lacks", "monitoring", "monitoring", "a name the certificate carries",
     lambda k: edit_text(k / MONITORS, "serverName: loyalty-rewards.loyalty.svc", "serverName: rewards.loyalty.svc")),
    ("ServiceMonitor with a misspelt field", "monitoring", "monitoring", "'scrapeTimout' was unexpected",
     lambda k: edit_text(k / MONITORS, "scrapeTimeout: 10s", "scrapeTimout: 10s")),
    ("PrometheusRule with a malformed duration", "monitoring", "monitoring", "for: '5 min' does not match",
     lambda k: edit_text(k / RULES, "oldest_age_seconds) > 600\n          for: 5m\n",
                         "oldest_age_seconds) > 600\n          for: 5 min\n")),
    ("monitoring in another namespace", "monitoring", "monitoring", "lives in prod's namespace loyalty",
     lambda k: edit_text(k / "monitoring/kustomization.yaml", "namespace: loyalty\n", "namespace: monitoring\n")),
    ("NetworkPolicy shuts Prometheus out", "monitoring", "monitoring",
     "Service/loyalty-points: the NetworkPolicies admit",
     lambda k: edit_text(k / "base/points/networkpolicy.yaml", "kubernetes.io/metadata.name: monitoring",
                         "kubernetes.io/metadata.name: observability")),
    ("dashboard without the sidecar's label", "monitoring", "monitoring", "labelled grafana_dashboard",
     lambda k: edit_text(k / "monitoring/kustomization.yaml", '        grafana_dashboard: "1"\n',
                         '        grafana_dashboard: "0"\n')),
    ("dashboard loses a service's row", "monitoring", "monitoring", "one row titled rewards",
     lambda k: edit_text(k / BOARD, '"title": "rewards"', '"title": "Rewards"')),
    ("dashboard panel reads another service", "monitoring", "monitoring", "reads job loyalty-points only",
     lambda k: edit_text(k / BOARD, 'rpc_server_requests_total{namespace=\\"$namespace\\", job=\\"loyalty-points\\"',
                         'rpc_server_requests_total{namespace=\\"$namespace\\", job=\\"loyalty-tiers\\"')),
    ("dashboard query on every namespace", "monitoring", "monitoring", 'is selected with namespace="$namespace"',
     lambda k: edit_text(k / BOARD, 'http_server_requests_total{namespace=\\"$namespace\\", job=',
                         'http_server_requests_total{job=')),
    ("dashboard is not JSON", "monitoring", "monitoring", "is valid JSON",
     lambda k: edit_text(k / BOARD, '"schemaVersion": 39,', '"schemaVersion": 39')),
    ("fast burn threshold ten times too high", "monitoring", "promtool", "alertname: LoyaltyErrorBudgetBurnFast",
     lambda k: edit_text(k / RULES, "loyalty:request_errors:ratio_rate1h > (14.4 * 0.001)",
                         "loyalty:request_errors:ratio_rate1h > (144 * 0.001)")),
    ("six-hour burn threshold ten times too high", "monitoring", "promtool", "alertname: LoyaltyErrorBudgetBurnFast",
     lambda k: edit_text(k / RULES, "loyalty:request_errors:ratio_rate6h > (6 * 0.001)",
                         "loyalty:request_errors:ratio_rate6h > (60 * 0.001)")),
    ("stream lag without the caught-up case", "monitoring", "promtool", "expr: \"loyalty:stream_consumer_lag_seconds\"",
     lambda k: edit_text(k / RULES, "            or on (namespace, consumer)\n"
                         "            loyalty:stream_consumer_lag_entries * 0\n", "")),
    ("stream lag blind to an old entry", "monitoring", "promtool", "alertname: LoyaltyStreamConsumerDelayed",
     lambda k: edit_text(k / RULES, "loyalty:stream_consumer_lag_seconds > 300",
                         "loyalty:stream_consumer_lag_seconds > 3000")),
    ("rule expression promtool cannot parse", "monitoring", "promtool", "unclosed left parenthesis",
     lambda k: edit_text(k / RULES, "max by (namespace, job) (redemptions_pending_oldest_age_seconds) > 600",
                         "max by (namespace, job) (redemptions_pending_oldest_age_seconds > 600")),
    ("dashboard query promtool cannot parse", "monitoring", "promtool", "dashboard.yaml",
     lambda k: edit_text(k / BOARD, 'job=\\"loyalty-gateway\\", route!~\\"/healthz|/readyz\\"}[$__rate_interval]))"',
                         'job=\\"loyalty-gateway\\", route!~\\"/healthz|/readyz\\"}[$__rate_interval])"')),
    ("annotation template promtool cannot expand", "monitoring", "promtool", "template",
     lambda k: edit_text(k / RULES, 'summary: "{{ $labels.job }} is slower', 'summary: "{{ $labels.job is slower')),
]


def monitoring_failure(stage: str, tree: Path, promtool: Path | None) -> str:
    """Renders k8s/monitoring (and prod) of the scratch tree and runs `stage`."""
    try:
        objects = render.render(tree / "monitoring")
        prod = render.render(tree / "overlays/prod")
    except render.RenderError as error:
        return f"render: {error}"
    if stage == "monitoring":
        schemas = crds.load()
        failures = [f"{o['kind']}/{o['metadata']['name']}: {problem}"
                    for o in objects if crds.known(o, schemas) for problem in crds.validate(o, schemas)]
        return "\n".join(failures + monitoring.run(objects, prod, docs_of(tree)).failed)
    work = tree.parent / "promtool"
    work.mkdir()
    monitoring.write_yaml(work / "rules.yaml", {"groups": monitoring.prometheus_rules(objects)})
    monitoring.write_yaml(work / "dashboard.yaml", monitoring.dashboard_rules(objects))
    shutil.copy(HERE / "alerts.test.yaml", work / "alerts.test.yaml")
    failures = []
    for args in (["check", "rules", "rules.yaml", "dashboard.yaml"], ["test", "rules", "alerts.test.yaml"]):
        result = subprocess.run([str(promtool), *args], cwd=work, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            failures.append(result.stdout + result.stderr)
    return "\n".join(failures)


def stage_failure(stage: str, overlay: str, tree: Path, checkov: Path | None, skips: str,
                  promtool: Path | None = None) -> str:
    """Runs render and `stage` on the scratch tree; returns the failure text ("" if it passed)."""
    if overlay == "monitoring":
        return monitoring_failure(stage, tree, promtool)
    source = {"jobs": "jobs", "prod-ha-monitoring": "overlays/prod-ha/monitoring"}.get(overlay, f"overlays/{overlay}")
    try:
        objects = render.render(tree / source)
    except render.RenderError as error:
        return f"render: {error}"
    if stage == "render":
        return ""
    if stage == "properties":
        context = render.render(tree / "overlays/dev") if overlay == "jobs" else []
        checks = properties.run(objects, overlay, tree / "secret.example.yaml", context)
        return "\n".join(checks.failed)
    if stage == "schema":
        failures = []
        schemas = crds.load()
        for obj in objects:
            if crds.known(obj, schemas):
                failures += [f"{obj['kind']}/{obj['metadata']['name']}: {p}" for p in crds.validate(obj, schemas)]
                continue
            try:
                kubernetes_validate.validate(obj, "1.30", strict=True)
            except ValidationError as error:
                failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message}")
        return "\n".join(failures)
    if stage == "checkov":
        rendered = tree / "rendered.yaml"
        rendered.write_text(render.dump_yaml_documents(objects), encoding="utf-8")
        result = subprocess.run([str(checkov), "-f", str(rendered), "--framework", "kubernetes", "--quiet",
                                 "--compact", "--skip-download", "--skip-check", skips],
                                capture_output=True, text=True, check=False)
        return result.stdout + result.stderr if result.returncode != 0 else ""
    raise ValueError(stage)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkov", type=Path, help="checkov executable; without it checkov cases are not run")
    parser.add_argument("--checkov-skips", default="", help="the --skip-check list validate.sh uses for prod")
    parser.add_argument("--promtool", type=Path, help="promtool executable; without it promtool cases are not run")
    args = parser.parse_args(argv)
    passed = failed = 0
    for what, overlay, stage, expected, mutate in CASES:
        if (stage == "checkov" and args.checkov is None) or (stage == "promtool" and args.promtool is None):
            continue
        with tempfile.TemporaryDirectory(prefix="k8s-mutation-") as scratch:
            tree = Path(scratch) / "k8s"
            shutil.copytree(ROOT / "k8s", tree)
            docs_of(tree).parent.mkdir()
            shutil.copy(ROOT / "docs" / "alerts.md", docs_of(tree))
            try:
                mutate(tree)
                with redirect_stdout(io.StringIO()):
                    failure = stage_failure(stage, overlay, tree, args.checkov, args.checkov_skips, args.promtool)
            except Exception as error:  # noqa: BLE001 - a stale case is a failure to report, not a crash
                failure, expected = f"case error: {error!r}", "\0never"
            if failure and expected in failure:
                passed += 1
                print(f"  caught: {what} ({stage})")
            else:
                failed += 1
                print(f"  FAIL not caught: {what}: {stage} on {overlay} "
                      f"{'passed' if not failure else 'failed otherwise: ' + failure[:300]}")
    print(f"mutations: {passed} caught, {failed} missed")
    print(f"RESULT {passed} {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
