#!/usr/bin/env python3
"""Properties of k8s/monitoring (rendered), beyond its objects' schemas:

  - a ServiceMonitor scrapes the `metrics` port of every prod Service that
    has one, the way prod serves it (HTTPS, certificate checked against the
    mesh's CA and a name the certificate carries), through the
    NetworkPolicies, in prod's namespace; every PodMonitor selects pods
  - every rule's and every dashboard panel's PromQL parses (promql-parser),
    and every metric it reads is one the services expose (the table below),
    one the rules record, or Prometheus's own `up`; label matchers use the
    labels and values those series have; server errors are exactly the gRPC
    codes the availability SLO counts
  - every alert has a `for`, severity page or ticket, a summary, a
    description, and a runbook_url to its own heading in docs/alerts.md;
    every alert heading there belongs to an alert; the alerts read the
    metrics the issue asks them to watch
  - the dashboard: a ConfigMap for the Grafana sidecar, small enough for
    `kubectl apply`, with the datasource and namespace variables, every query
    on the chosen namespace, and one row per service whose panels show that
    service's metrics and nobody else's

Usage:
  monitoring.py check --prod PROD.yaml [--docs docs/alerts.md] MONITORING.yaml
      (last line `RESULT <passed> <failed>` for validate.sh)
  monitoring.py rules MONITORING.yaml -o FILE
      the PrometheusRule groups as a Prometheus rule file (for promtool)
  monitoring.py dashboard-rules MONITORING.yaml -o FILE
      every dashboard query as a recording rule (for promtool check rules)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import promql_parser
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from properties import (  # noqa: E402
    Checks, app_deployments, containers, ingress_allowed, labels_match, pod_labels, service_names, tls_files_of,
    TLS_CA, TLS_CERT,
)
from render import load_yaml_documents  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK_BASE = "https://github.com/loyalty-mesh/loyalty/blob/main/docs/alerts.md#"
SEVERITIES = {"page", "ticket"}
GATEWAY = "loyalty-gateway"
GRPC_JOBS = {"loyalty-points", "loyalty-tiers", "loyalty-referral", "loyalty-rewards", "loyalty-insights",
             "loyalty-webhooks"}
ALL_JOBS = GRPC_JOBS | {GATEWAY}
# The ledger's consumers (services/*/src/follow.rs, LedgerConsumer::NAME) and their jobs.
CONSUMERS = {"tiers": "loyalty-tiers", "referral": "loyalty-referral", "rewards": "loyalty-rewards",
             "insights": "loyalty-insights", "webhooks": "loyalty-webhooks"}
# Where Prometheus runs (k8s/base/*/networkpolicy.yaml admit it; k8s/README.md).
PROMETHEUS_NAMESPACE = {"kubernetes.io/metadata.name": "monitoring"}
PROMETHEUS_POD = {"app.kubernetes.io/name": "prometheus"}
# Labels the operator puts on every scraped series of a ServiceMonitor target.
TARGET_LABELS = {"namespace", "job", "pod", "instance", "service", "endpoint", "container"}
TONIC_CODES = {"Ok", "Cancelled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
               "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
               "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"}
# The codes the availability SLO counts as failures; client errors do not.
SERVER_ERROR_CODES = {"Unavailable", "Internal", "Unknown", "DeadlineExceeded", "DataLoss", "ResourceExhausted"}


def _histogram(name: str, labels: set[str], jobs: set[str]) -> dict[str, tuple[set[str], set[str]]]:
    return {f"{name}_bucket": (labels | {"le"}, jobs), f"{name}_sum": (labels, jobs), f"{name}_count": (labels, jobs)}


# What the services expose on their metrics ports (prometheus-client text:
# counters end in _total), after servicemonitors.yaml's relabelling (the gRPC
# service's label is grpc_service): name -> (own labels, jobs exposing it).
RPC_LABELS = {"grpc_service", "method", "code"}
HTTP_LABELS = {"method", "route", "status"}
POINTS, TIERS, REWARDS, WEBHOOKS = {"loyalty-points"}, {"loyalty-tiers"}, {"loyalty-rewards"}, {"loyalty-webhooks"}
FOLLOWERS = set(CONSUMERS.values())
METRICS: dict[str, tuple[set[str], set[str]]] = {
    "rpc_server_requests_total": (RPC_LABELS, GRPC_JOBS),
    **_histogram("rpc_server_duration_seconds", RPC_LABELS, GRPC_JOBS),
    "db_pool_connections": ({"state"}, ALL_JOBS),
    "db_pool_max_connections": (set(), ALL_JOBS),
    **_histogram("db_pool_acquire_seconds", set(), ALL_JOBS),
    "db_pool_acquire_timeouts_total": (set(), ALL_JOBS),
    "http_server_requests_total": (HTTP_LABELS, {GATEWAY}),
    **_histogram("http_server_duration_seconds", HTTP_LABELS, {GATEWAY}),
    "balance_cache_hits_total": (set(), POINTS),
    "balance_cache_misses_total": (set(), POINTS),
    "balance_cache_errors_total": (set(), POINTS),
    "balance_cache_stale_deletions_total": (set(), POINTS),
    "ledger_writes_refused_total": (set(), POINTS),
    "ledger_stream_head": (set(), POINTS),
    "stream_consumer_position": ({"consumer"}, FOLLOWERS),
    "stream_consumer_connected": ({"consumer"}, FOLLOWERS),
    "stream_consumer_entry_timestamp_seconds": ({"consumer"}, FOLLOWERS),
    "tier_multiplier_cache_hits_total": (set(), TIERS),
    "tier_multiplier_cache_misses_total": (set(), TIERS),
    "redemptions_pending": (set(), REWARDS),
    "redemptions_pending_oldest_age_seconds": (set(), REWARDS),
    "webhook_attempts_delivered_total": (set(), WEBHOOKS),
    "webhook_attempts_failed_total": (set(), WEBHOOKS),
}
# Series Prometheus itself adds for every target.
PROMETHEUS_SERIES = {"up": (set(), ALL_JOBS)}
LABEL_VALUES = {
    "state": {"in_use", "idle"},
    "protocol": {"grpc", "http"},
    "consumer": set(CONSUMERS),
    "job": ALL_JOBS,
}
# The metrics the alerts must watch (the list), through recorded series.
ALERTED_METRICS = {
    "rpc_server_requests_total", "http_server_requests_total", "rpc_server_duration_seconds_bucket",
    "http_server_duration_seconds_bucket", "ledger_stream_head", "stream_consumer_position",
    "stream_consumer_entry_timestamp_seconds", "stream_consumer_connected", "redemptions_pending_oldest_age_seconds",
    "db_pool_connections", "db_pool_max_connections", "db_pool_acquire_seconds_bucket", "balance_cache_errors_total",
    "ledger_writes_refused_total", "webhook_attempts_failed_total", "webhook_attempts_delivered_total",
}
# The dashboard's rows: the service each shows, and the series its panels must read.
ROWS: dict[str, set[str]] = {
    "gateway": {"http_server_requests_total", "loyalty:request_errors:ratio_rate5m",
                "http_server_duration_seconds_bucket", "db_pool_connections", "db_pool_max_connections",
                "db_pool_acquire_seconds_bucket"},
    **{name: {"rpc_server_requests_total", "loyalty:request_errors:ratio_rate5m",
              "rpc_server_duration_seconds_bucket", "db_pool_connections", "db_pool_max_connections",
              "db_pool_acquire_seconds_bucket"} for name in ("points", "tiers", "referral", "rewards", "insights",
                                                              "webhooks")},
}
STREAM_PANELS = {"loyalty:stream_consumer_lag_entries", "loyalty:stream_consumer_lag_seconds",
                 "stream_consumer_connected"}
for _consumer in CONSUMERS:
    ROWS[_consumer] |= STREAM_PANELS
ROWS["points"] |= {"balance_cache_hits_total", "balance_cache_misses_total", "balance_cache_errors_total",
                   "balance_cache_stale_deletions_total", "ledger_writes_refused_total", "ledger_stream_head"}
ROWS["tiers"] |= {"tier_multiplier_cache_hits_total", "tier_multiplier_cache_misses_total"}
ROWS["rewards"] |= {"redemptions_pending", "redemptions_pending_oldest_age_seconds"}
ROWS["webhooks"] |= {"webhook_attempts_delivered_total", "webhook_attempts_failed_total"}
DASHBOARD_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's interval variables, replaced by a duration before a query is
# parsed; "$namespace" stands inside a string literal and stays.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "${__rate_interval}": "5m", "$__interval": "1m",
                     "${__interval}": "1m", "$__range": "1h", "${__range}": "1h"}
# kubectl apply (client side) keeps the whole object in an annotation, and
# annotations may hold 256 KiB in all: leave room for the others.
LAST_APPLIED_LIMIT = 240_000
DURATION = re.compile(r"^(0|(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)$")
RECORD_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*:[a-zA-Z0-9_]+(:[a-zA-Z0-9_]+)?$")
ALERT_NAME = re.compile(r"^Loyalty[A-Z][A-Za-z0-9]+$")


def name_of(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


# ----------------------------------------------------------------------------- PromQL
class Selector:
    """One vector selector of an expression: metric name and label matchers."""

    def __init__(self, name: str | None, matchers: list[tuple[str, str, str]]) -> None:
        self.name = name
        self.matchers = matchers  # (label, op: = != =~ !~, value)

    def values(self, label: str) -> list[tuple[str, str]]:
        return [(op, value) for name, op, value in self.matchers if name == label]


OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


class Parsed:
    def __init__(self, expr: Any) -> None:
        self.selectors: list[Selector] = []
        self.grouping: set[str] = set()

        def visit(node: Any) -> bool:
            if isinstance(node, promql_parser.VectorSelector):
                matchers = [(m.name, OPS.get(str(m.op), str(m.op)), m.value) for m in node.matchers.matchers]
                for group in node.matchers.or_matchers or []:
                    matchers += [(m.name, OPS.get(str(m.op), str(m.op)), m.value) for m in group]
                name = node.name or next((v for n, op, v in matchers if n == "__name__" and op == "="), None)
                self.selectors.append(Selector(name, [m for m in matchers if m[0] != "__name__"]))
            elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
                if str(node.modifier.type) == "AggModifierType.By":
                    self.grouping.update(node.modifier.labels)
            return True

        promql_parser.walk(expr, visit)


def parse(expr: str) -> tuple[Parsed | None, str]:
    try:
        return Parsed(promql_parser.parse(expr)), ""
    except (ValueError, RuntimeError) as error:
        return None, str(error)


def alternatives(regex: str) -> list[str] | None:
    """The literal alternatives of a regex like a|b|c, or None if it is more than that."""
    parts = regex.split("|")
    return parts if all(re.fullmatch(r"[A-Za-z0-9_:./-]*", p) for p in parts) else None


class Series:
    """Every series name the rules and the dashboard may read, and its labels."""

    def __init__(self, records: dict[str, list[dict]]) -> None:
        self.records = records
        self.labels: dict[str, set[str]] = {}
        self.reads: dict[str, set[str]] = {}
        parsed = {}
        for name, rules in records.items():
            for rule in rules:
                result, _ = parse(str(rule["expr"]))
                parsed.setdefault(name, []).append((rule, result))
        for name, entries in parsed.items():
            self.labels[name] = set()
            self.reads[name] = set()
            for rule, result in entries:
                self.labels[name] |= set((rule.get("labels") or {}).keys())
                if result:
                    self.labels[name] |= result.grouping
                    self.reads[name] |= {s.name for s in result.selectors if s.name}
        changed = True
        while changed:
            changed = False
            for name in records:
                for used in self.reads[name] & set(records):
                    if not self.labels[used] <= self.labels[name]:
                        self.labels[name] |= self.labels[used]
                        changed = True

    def known(self, name: str) -> bool:
        return name in METRICS or name in PROMETHEUS_SERIES or name in self.records

    def own_labels(self, name: str) -> set[str]:
        if name in self.records:
            return self.labels[name]
        own, _ = METRICS.get(name) or PROMETHEUS_SERIES[name]
        return own | TARGET_LABELS

    def jobs(self, name: str) -> set[str] | None:
        """The jobs exposing an exported metric (None: recorded, any)."""
        found = METRICS.get(name) or PROMETHEUS_SERIES.get(name)
        return found[1] if found else None

    def exported(self, names: set[str]) -> set[str]:
        """The exported metrics `names` read, following recorded series."""
        result, todo, seen = set(), list(names), set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in self.records:
                todo.extend(self.reads[name])
            else:
                result.add(name)
        return result


def check_expr(c: Checks, where: str, expr: str, series: Series, *, dashboard: bool = False) -> Parsed | None:
    """Parses `expr` and checks the series it reads; returns the parse."""
    result, error = parse(expr)
    if not c.check(result is not None, f"{where}: PromQL does not parse: {error} in {expr!r}"):
        return None
    for s in result.selectors:
        if not c.check(s.name, f"{where}: a selector without a metric name in {expr!r}"):
            continue
        if not c.check(series.known(s.name), f"{where}: unknown metric {s.name} (not exposed by the services, "
                                              "not recorded by the rules; tests/k8s/monitoring.py METRICS)"):
            continue
        allowed = series.own_labels(s.name)
        for label, op, value in s.matchers:
            c.check(label in allowed, f"{where}: {s.name} has no label {label} (it has {sorted(allowed)})")
            if dashboard and label == "namespace":
                continue
            wanted = LABEL_VALUES.get(label)
            if label == "code":
                wanted = TONIC_CODES
            if wanted is None or op in ("!=", "!~"):
                continue
            values = [value] if op == "=" else alternatives(value)
            if values is None:
                c.check(any(re.fullmatch(value, w) for w in wanted),
                        f"{where}: {s.name}{{{label}{op}{value!r}}} matches no {label} there is")
                continue
            unknown = sorted(set(values) - wanted)
            c.check(not unknown, f"{where}: {s.name}{{{label}{op}...}}: no {label} {unknown} (known: {sorted(wanted)})")
        jobs = series.jobs(s.name)
        for op, value in s.values("job"):
            if jobs is not None and op == "=":
                c.check(value in jobs, f"{where}: job {value} does not expose {s.name} (only {sorted(jobs)} do)")
        for op, value in s.values("consumer"):
            if op == "=" and jobs is not None:
                c.check(CONSUMERS.get(value) in jobs, f"{where}: consumer {value} is not a consumer of {s.name}")
        if dashboard:
            c.check(("=", "$namespace") in s.values("namespace") or ("=", "${namespace}") in s.values("namespace"),
                    f"{where}: {s.name} is selected with namespace=\"$namespace\"")
    return result


# ----------------------------------------------------------------------------- scraping
def check_scraping(c: Checks, objects: list[dict], prod: list[dict]) -> None:
    namespaces = {o["metadata"]["name"] for o in prod if o["kind"] == "Namespace"}
    if not c.check(len(namespaces) == 1, f"prod renders one Namespace (found {sorted(namespaces)})"):
        return
    namespace = next(iter(namespaces))
    for o in objects:
        c.check(o["metadata"].get("namespace") == namespace,
                f"{name_of(o)} lives in prod's namespace {namespace} (found {o['metadata'].get('namespace')})")
        labels = o["metadata"].get("labels") or {}
        c.check(all(labels.get(k) for k in ("app.kubernetes.io/name", "app.kubernetes.io/part-of",
                                            "app.kubernetes.io/managed-by")),
                f"{name_of(o)}: recommended labels")
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    policies = [o for o in prod if o["kind"] == "NetworkPolicy"]
    deployments = app_deployments(prod)
    services = [o for o in prod if o["kind"] == "Service"
                and any(p.get("name") == "metrics" for p in o["spec"].get("ports") or [])]
    c.check(len(services) == len(ALL_JOBS), f"prod: every workload's Service has a metrics port "
                                            f"({sorted(s['metadata']['name'] for s in services)})")
    for service in services:
        svc = service["metadata"]["name"]
        what = f"Service/{svc}"
        matching = [m for m in monitors
                    if labels_match(m["spec"].get("selector"), service["metadata"].get("labels") or {})
                    and not (m["spec"].get("namespaceSelector") or {}).get("any")]
        if not c.check(len(matching) == 1, f"{what}: exactly one ServiceMonitor selects it (found "
                                           f"{[m['metadata']['name'] for m in matching]})"):
            continue
        monitor = matching[0]
        c.check(monitor["metadata"]["name"] == svc and not monitor["spec"].get("jobLabel"),
                f"{name_of(monitor)}: named like the Service and no jobLabel, so job is {svc} as the rules expect")
        endpoints = [e for e in monitor["spec"].get("endpoints") or [] if e.get("port") == "metrics"]
        if not c.check(len(endpoints) == 1, f"{name_of(monitor)}: one endpoint scrapes the port named metrics"):
            continue
        endpoint = endpoints[0]
        c.check(endpoint.get("path", "/metrics") == "/metrics", f"{name_of(monitor)}: scrapes /metrics")
        c.check(not endpoint.get("honorLabels"), f"{name_of(monitor)}: no honorLabels (the targets' labels win)")
        backing = [d for d in deployments if labels_match(service["spec"].get("selector") and
                                                          {"matchLabels": service["spec"]["selector"]},
                                                          pod_labels(d))]
        if not c.check(len(backing) == 1, f"{what}: selects one Deployment"):
            continue
        deployment = backing[0]
        c.check(ingress_allowed(policies, namespace, PROMETHEUS_NAMESPACE, PROMETHEUS_POD, deployment, "metrics"),
                f"{what}: the NetworkPolicies admit Prometheus (namespace monitoring, app.kubernetes.io/name: "
                "prometheus) to the metrics port")
        tls = tls_files_of(deployment, prod)
        config = endpoint.get("tlsConfig") or {}
        if tls.get(TLS_CERT):
            c.check(str(endpoint.get("scheme", "")).lower() == "https",
                    f"{name_of(monitor)}: scheme https (prod serves metrics over TLS)")
            ca = tls.get(TLS_CA)
            secret = (config.get("ca") or {}).get("secret") or {}
            c.check(ca is not None and ca.kind == "secret" and secret.get("name") == ca.name
                    and secret.get("key") == ca.key,
                    f"{name_of(monitor)}: tlsConfig.ca is the mesh's CA, Secret "
                    f"{ca.name if ca else '?'} key {ca.key if ca else '?'} (what the workloads trust)")
            c.check(config.get("serverName") in service_names(svc, namespace),
                    f"{name_of(monitor)}: tlsConfig.serverName {config.get('serverName')!r} is a name the "
                    f"certificate carries ({service_names(svc, namespace)})")
            c.check(not config.get("insecureSkipVerify"), f"{name_of(monitor)}: verifies the certificate")
        else:
            c.check(str(endpoint.get("scheme", "http")).lower() == "http", f"{name_of(monitor)}: scheme http")
        if svc in GRPC_JOBS:
            relabel = endpoint.get("metricRelabelings") or []
            renames = [r for r in relabel if r.get("sourceLabels") == ["exported_service"]
                       and r.get("targetLabel") == "grpc_service" and r.get("action", "replace") == "replace"]
            drops = [r for r in relabel if r.get("action") == "labeldrop" and r.get("regex") == "exported_service"]
            c.check(renames and drops, f"{name_of(monitor)}: keeps the gRPC service label as grpc_service")
    workloads = {d["metadata"]["name"]: d for d in deployments}
    for monitor in monitors:
        c.check(any(labels_match(monitor["spec"].get("selector"), s["metadata"].get("labels") or {})
                    for s in services), f"{name_of(monitor)}: selects a Service with a metrics port")
    for monitor in (o for o in objects if o["kind"] == "PodMonitor"):
        selected = [w for w in workloads.values() if labels_match(monitor["spec"].get("selector"), pod_labels(w))]
        ports = {e.get("port") for e in monitor["spec"].get("podMetricsEndpoints") or []}
        c.check(selected and all(any(p.get("name") == port for x in containers(w) for p in x.get("ports") or [])
                                 for w in selected for port in ports),
                f"{name_of(monitor)}: selects pods that have its ports")


# ----------------------------------------------------------------------------- rules
def prometheus_rules(objects: list[dict]) -> list[dict]:
    return [group for o in objects if o["kind"] == "PrometheusRule" for group in o["spec"].get("groups") or []]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def alert_headings(docs: Path) -> dict[str, str]:
    """anchor -> heading text of docs/alerts.md's `## ...` headings."""
    headings = {}
    for line in docs.read_text(encoding="utf-8").splitlines():
        found = re.match(r"^##\s+(.+?)\s*$", line)
        if found:
            headings[github_anchor(found.group(1))] = found.group(1)
    return headings


def check_rules(c: Checks, groups: list[dict], docs: Path) -> Series:
    records: dict[str, list[dict]] = {}
    for group in groups:
        for rule in group.get("rules") or []:
            if "record" in rule:
                records.setdefault(rule["record"], []).append(rule)
    series = Series(records)
    c.check(len({g["name"] for g in groups}) == len(groups), "rules: group names are unique")
    headings = alert_headings(docs)
    alerts: dict[str, dict] = {}
    watched: set[str] = set()
    for group in groups:
        for index, rule in enumerate(group.get("rules") or []):
            where = f"rules {group['name']}[{index}] {rule.get('alert') or rule.get('record')}"
            c.check(("alert" in rule) != ("record" in rule), f"{where}: either alert or record")
            if "record" in rule:
                c.check(RECORD_NAME.match(rule["record"]), f"{where}: recorded name is level:metric[:operations]")
            result = check_expr(c, where, str(rule.get("expr", "")), series)
            selectors = result.selectors if result else []
            for op, value in (m for s in selectors for m in s.values("code")):
                if op in ("=", "=~"):
                    c.check(set(alternatives(value) or [value]) == SERVER_ERROR_CODES,
                            f"{where}: code matcher {value!r} selects exactly the server errors "
                            f"{sorted(SERVER_ERROR_CODES)}")
            if "alert" not in rule:
                continue
            name = rule["alert"]
            c.check(name not in alerts, f"{where}: alert name is unique")
            alerts[name] = rule
            watched |= {s.name for s in selectors if s.name}
            c.check(ALERT_NAME.match(name), f"{where}: alert name like LoyaltySomething")
            c.check(rule.get("for") and DURATION.match(str(rule["for"])) and re.search(r"[1-9]", str(rule["for"])),
                    f"{where}: has a `for` duration")
            c.check((rule.get("labels") or {}).get("severity") in SEVERITIES,
                    f"{where}: severity is one of {sorted(SEVERITIES)} (found "
                    f"{(rule.get('labels') or {}).get('severity')!r})")
            annotations = rule.get("annotations") or {}
            for key in ("summary", "description"):
                text = str(annotations.get(key, ""))
                c.check(text.strip() and text.count("{{") == text.count("}}"),
                        f"{where}: annotation {key} present, its templates closed")
            anchor = name.lower()
            c.check(annotations.get("runbook_url") == RUNBOOK_BASE + anchor,
                    f"{where}: runbook_url is {RUNBOOK_BASE + anchor} (found {annotations.get('runbook_url')!r})")
            c.check(headings.get(anchor) == name,
                    f"{where}: docs/alerts.md has a heading `## {name}` (anchor #{anchor})")
    for anchor, heading in headings.items():
        if heading.startswith("Loyalty"):
            c.check(heading in alerts, f"docs/alerts.md: `## {heading}` documents an alert the rules have")
    missing = sorted(ALERTED_METRICS - series.exported(watched))
    c.check(not missing, f"rules: the alerts watch every metric they should (missing {missing})")
    c.check(any((r.get("labels") or {}).get("severity") == "page" for r in alerts.values())
            and any((r.get("labels") or {}).get("severity") == "ticket" for r in alerts.values()),
            "rules: some alerts page, some open tickets")
    return series


# ----------------------------------------------------------------------------- dashboard
def dashboard_maps(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] == "ConfigMap"
            and (o["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"]


def panel_queries(dashboard: dict) -> Iterator[tuple[str | None, dict, str]]:
    """(row title, panel, expression) of every query, rows not collapsed."""
    row = None
    for panel in dashboard.get("panels") or []:
        if panel.get("type") == "row":
            row = panel.get("title")
            for inner in panel.get("panels") or []:
                for target in inner.get("targets") or []:
                    yield row, inner, target.get("expr", "")
            continue
        for target in panel.get("targets") or []:
            yield row, panel, target.get("expr", "")


def substitute(expr: str) -> str:
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    return expr


def check_dashboard(c: Checks, objects: list[dict], series: Series) -> None:
    maps = dashboard_maps(objects)
    if not c.check(len(maps) == 1, f"one ConfigMap labelled grafana_dashboard: \"1\" (found {len(maps)})"):
        return
    config_map = maps[0]
    data = config_map.get("data") or {}
    c.check(len(data) == 1 and next(iter(data)).endswith(".json"), f"{name_of(config_map)}: one key, a .json file")
    last_applied = len(json.dumps(config_map, separators=(",", ":")))
    c.check(last_applied < LAST_APPLIED_LIMIT,
            f"{name_of(config_map)}: {last_applied} bytes, under {LAST_APPLIED_LIMIT} (kubectl apply keeps a copy "
            "in an annotation)")
    for key, text in data.items():
        try:
            dashboard = json.loads(text)
        except json.JSONDecodeError as error:
            c.check(False, f"{name_of(config_map)}: {key} is valid JSON ({error})")
            continue
        check_board(c, f"dashboard {key}", dashboard, series)


def check_board(c: Checks, where: str, dashboard: dict, series: Series) -> None:
    c.check(isinstance(dashboard.get("schemaVersion"), int) and 36 <= dashboard["schemaVersion"] <= 41,
            f"{where}: schemaVersion between 36 and 41 (Grafana 9.4 to 11)")
    c.check(dashboard.get("uid") and dashboard.get("title") and dashboard.get("id") is None,
            f"{where}: has a uid and a title, and no id (Grafana assigns it)")
    variables = {v.get("name"): v for v in (dashboard.get("templating") or {}).get("list") or []}
    source = variables.get("datasource") or {}
    c.check(source.get("type") == "datasource" and source.get("query") == "prometheus",
            f"{where}: a `datasource` variable of Prometheus data sources")
    namespace = variables.get("namespace") or {}
    query = namespace.get("query")
    query = query.get("query") if isinstance(query, dict) else query
    found = re.fullmatch(r"label_values\((\w+),\s*namespace\)", str(query or ""))
    c.check(namespace.get("type") == "query" and namespace.get("datasource") == DASHBOARD_DATASOURCE and found
            and series.known(found.group(1)),
            f"{where}: a `namespace` variable from label_values(<a known metric>, namespace) on ${{datasource}}")
    ids = [p.get("id") for p in dashboard.get("panels") or []]
    ids += [q.get("id") for p in dashboard.get("panels") or [] for q in p.get("panels") or []]
    c.check(len(ids) == len(set(ids)) and None not in ids, f"{where}: every panel has its own id")
    rows = [p.get("title") for p in dashboard.get("panels") or [] if p.get("type") == "row"]
    for service in ROWS:
        c.check(rows.count(service) == 1, f"{where}: one row titled {service} (rows: {rows})")
    read: dict[str | None, set[str]] = {}
    for panel in dashboard.get("panels") or []:
        if panel.get("type") == "row":
            c.check(not panel.get("collapsed"), f"{where}: row {panel.get('title')} is expanded")
            continue
        title = f"{where}: panel {panel.get('title')!r}"
        grid = panel.get("gridPos") or {}
        c.check(all(isinstance(grid.get(k), int) for k in "hwxy") and grid["x"] + grid["w"] <= 24,
                f"{title}: placed on the 24-column grid")
        c.check(panel.get("datasource") == DASHBOARD_DATASOURCE, f"{title}: datasource is ${{datasource}}")
        targets = panel.get("targets") or []
        c.check(targets, f"{title}: has queries")
        for target in targets:
            c.check(target.get("datasource", DASHBOARD_DATASOURCE) == DASHBOARD_DATASOURCE,
                    f"{title} query {target.get('refId')}: datasource is ${{datasource}}")
    for row, panel, expr in panel_queries(dashboard):
        title = f"{where}: row {row} panel {panel.get('title')!r}"
        if not c.check(expr.strip(), f"{title}: a query with an expression"):
            continue
        result = check_expr(c, title, substitute(expr), series, dashboard=True)
        if result is None:
            continue
        read.setdefault(row, set()).update(s.name for s in result.selectors if s.name)
        if row in ROWS:
            job = "loyalty-" + row
            for s in result.selectors:
                for op, value in s.values("job"):
                    c.check(op == "=" and value == job, f"{title}: reads job {job} only (found job{op}{value!r})")
                for op, value in s.values("consumer"):
                    c.check(op == "=" and value == row, f"{title}: reads consumer {row} only (found {value!r})")
                c.check(s.values("job") or s.values("consumer") or not series.jobs(s.name),
                        f"{title}: {s.name} is narrowed to the row's service (job or consumer)")
    for row, wanted in ROWS.items():
        missing = sorted(wanted - read.get(row, set()))
        c.check(not missing, f"{where}: row {row} shows {sorted(wanted)} (missing {missing})")
    shown = series.exported(set().union(*read.values()) if read else set())
    missing = sorted(set(METRICS) - shown - {n for n in METRICS if n.endswith(("_sum", "_count"))})
    c.check(not missing, f"{where}: every metric the services expose is on the dashboard (missing {missing})")


# ----------------------------------------------------------------------------- entry points
def registered_names(sources: Path) -> set[str]:
    """The metric names the Rust code registers (`register("name", ...)`, and
    the stream consumers' names given to their gauge family)."""
    names: set[str] = set()
    for path in sources.rglob("*.rs"):
        text = path.read_text(encoding="utf-8")
        names.update(re.findall(r'register\(\s*"([a-z_]+)"', text))
        names.update(re.findall(r'family\(\s*"([a-z_]+)"', text))
    return names


def check_metrics_exist(c: Checks, root: Path) -> None:
    """Every metric the rules and the dashboard may read is one the code registers."""
    registered = set()
    for sources in ("services", "gateway/src"):
        registered |= registered_names(root / sources)
    for name in sorted(METRICS):
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        c.check(base in registered or name in registered,
                f"metric {name}: the Rust code registers {base} (register(\"{base}\", ...))")


def run(objects: list[dict], prod: list[dict], docs: Path) -> Checks:
    c = Checks()
    check_metrics_exist(c, ROOT)
    check_scraping(c, objects, prod)
    series = check_rules(c, prometheus_rules(objects), docs)
    check_dashboard(c, objects, series)
    return c


def dashboard_rules(objects: list[dict]) -> dict:
    """Every dashboard query as a recording rule, for promtool check rules."""
    rules = []
    for config_map in dashboard_maps(objects):
        for key, text in (config_map.get("data") or {}).items():
            for index, (row, panel, expr) in enumerate(panel_queries(json.loads(text))):
                rules.append({"record": f"dashboard:query:q{index}", "expr": substitute(expr),
                              "labels": {"row": str(row), "panel": str(panel.get("title"))}})
    return {"groups": [{"name": "dashboard-queries", "rules": rules}]}


def write_yaml(path: Path, document: dict) -> None:
    path.write_text(yaml.safe_dump(document, sort_keys=False, width=1000), encoding="utf-8")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check")
    check.add_argument("--prod", type=Path, required=True, help="the rendered prod overlay")
    check.add_argument("--docs", type=Path, default=ROOT / "docs" / "alerts.md")
    check.add_argument("rendered", type=Path)
    for command in ("rules", "dashboard-rules"):
        sub = commands.add_parser(command)
        sub.add_argument("rendered", type=Path)
        sub.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    objects = load_yaml_documents(args.rendered)
    if args.command == "rules":
        write_yaml(args.output, {"groups": prometheus_rules(objects)})
        return 0
    if args.command == "dashboard-rules":
        write_yaml(args.output, dashboard_rules(objects))
        return 0
    return run(objects, load_yaml_documents(args.prod), args.docs).report("monitoring")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
