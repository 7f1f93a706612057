#!/usr/bin/env bash
# tests/k8s/validate.sh - offline validation of the Kubernetes manifests in k8s/.
#
# Needs only python3 (3.11) and access to PyPI on the first run (or after
# tests/k8s/requirements.txt changed): the tools go into .tools/venv-k8s
# (K8S_VENV overrides the path). No cluster, kustomize or kubectl. And
# promtool, for the monitoring rules: PROMTOOL=PATH, else the one on PATH,
# else extracted from Debian's prometheus package into .tools/promtool
# (apt-get download; no service is installed or started). Without it the
# promtool steps fail (K8S_SKIP_PROMTOOL=1 skips them, except in CI).
#
# Steps, each counted:
#   1. render.py's own unit tests
#   2. render every overlay (dev, prod, prod-ha and its monitoring), the
#      load-test Job and k8s/monitoring with render.py, a faithful renderer
#      of the kustomize subset k8s/ uses
#   3. yamllint over k8s/ (tests/k8s/yamllint.yaml)
#   4. every rendered object against the Kubernetes 1.30 and 1.37 schemas,
#      strict (kubernetes-validate, offline); k8s/monitoring's
#      ServiceMonitors and PrometheusRule against prometheus-operator's CRD
#      schemas vendored in tests/k8s/crds (crds.py); prod-ha against the
#      same, its CloudNativePG Cluster and Database objects against
#      CloudNativePG's CRD schemas vendored there too
#   5. checkov's Kubernetes checks on the rendered output
#   6. the project's own properties (tests/k8s/properties.py): among them
#      authentication on everywhere, credentials only from Secrets, and in
#      prod TLS with read-only certificate mounts (plus the optional
#      cert-manager example in k8s/cert-manager); in prod-ha also prod's,
#      the Redis Cluster's workloads like every other, and its own (a
#      synchronous CloudNativePG cluster of at least three instances, six
#      Redis nodes in cluster mode and the Job forming them once, points'
#      REDIS_URL naming at least three of them, every DATABASE_URL on the
#      cluster, who reaches the databases); and k8s/monitoring's
#      (tests/k8s/monitoring.py): every workload scraped as prod serves it,
#      every PromQL expression parsed and reading only metrics the services
#      expose, every alert with severity, summary, description and a
#      runbook in docs/alerts.md, a dashboard row per service
#   7. promtool: check rules on the PrometheusRule and on every dashboard
#      query (as recording rules), and the rules' unit tests
#      (tests/k8s/alerts.test.yaml)
#   8. mutations: breaking one property in a copy must make a step fail
#
# Last line: `k8s validation: N passed, M failed`; exit status 1 when M > 0.
# K8S_RENDER_DIR=DIR keeps the rendered manifests there for inspection.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
HERE="$ROOT/tests/k8s"
VENV="${K8S_VENV:-$ROOT/.tools/venv-k8s}"
REQUIREMENTS="$HERE/requirements.txt"
PROMTOOL_DIR="$ROOT/.tools/promtool"
# Oldest Kubernetes the manifests support (the preStop `sleep` action is on by
# default from 1.30) and the newest the bundled schemas know.
K8S_VERSIONS=(1.30 1.37)

# Checks of checkov's Kubernetes framework that do not apply here:
#   CKV_K8S_43 (image by digest): the overlays pin tags; a release pins its
#     digest in overlays/prod `images:` (`digest:`) when it is published.
#   CKV_K8S_35 (secrets as files, not environment variables): the services
#     read DATABASE_URL, REDIS_URL, KEYS_DATABASE_URL and
#     LOYALTY_SERVICE_SECRET from the environment only (clap `env`); the
#     values come from secretKeyRef, never from the manifests. (TLS keys are
#     files: prod mounts them read-only from Secrets.)
SKIP_ALL="CKV_K8S_43,CKV_K8S_35"
#   CKV_K8S_15 (imagePullPolicy Always), dev and the load-test Job only: the
#     dev image is built locally and loaded into the cluster (kind, minikube),
#     there is no registry to pull it from. prod pulls Always.
SKIP_DEV="$SKIP_ALL,CKV_K8S_15"

PASSED=0
FAILED=0
log() { printf 'k8s: %s\n' "$*"; }

ensure_venv() {
    local stamp="$VENV/.k8s-requirements.sha256" want
    want="$(cat "$REQUIREMENTS" <(python3 --version 2>&1) | sha256sum | cut -d' ' -f1)"
    if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        log "removing a broken venv at $VENV"
        rm -rf "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating $VENV"
        python3 -m venv "$VENV"
    fi
    if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
        log "installing tests/k8s/requirements.txt into $VENV"
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQUIREMENTS"
        printf '%s\n' "$want" > "$stamp"
    fi
}

# Sets PROMTOOL to a promtool binary, or leaves it empty: PROMTOOL if set,
# the one on PATH, one extracted earlier, else Debian's prometheus package
# fetched with `apt-get download` and unpacked into .tools/promtool (only
# promtool is used; nothing is installed into the system).
ensure_promtool() {
    local deb_dir
    if [ -n "${PROMTOOL:-}" ]; then
        [ -x "$PROMTOOL" ] || { log "PROMTOOL=$PROMTOOL is not executable"; PROMTOOL=""; }
        return 0
    fi
    if command -v promtool >/dev/null 2>&1; then
        PROMTOOL="$(command -v promtool)"
        return 0
    fi
    if [ -x "$PROMTOOL_DIR/usr/bin/promtool" ]; then
        PROMTOOL="$PROMTOOL_DIR/usr/bin/promtool"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 || return 0
    log "fetching promtool from Debian's prometheus package into $PROMTOOL_DIR"
    deb_dir="$(mktemp -d)"
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq >/dev/null 2>&1 || log "apt-get update failed"
    fi
    if (cd "$deb_dir" && apt-get download -qq prometheus >/dev/null 2>&1) \
        && mkdir -p "$PROMTOOL_DIR" && dpkg-deb -x "$deb_dir"/prometheus_*.deb "$PROMTOOL_DIR/extract" \
        && mkdir -p "$PROMTOOL_DIR/usr/bin" && mv "$PROMTOOL_DIR/extract/usr/bin/promtool" "$PROMTOOL_DIR/usr/bin/"; then
        PROMTOOL="$PROMTOOL_DIR/usr/bin/promtool"
    else
        log "could not fetch Debian's prometheus package"
    fi
    rm -rf "$deb_dir" "$PROMTOOL_DIR/extract"
}

# step NAME COMMAND...: runs COMMAND, shows its output, and counts its checks:
# the numbers of a `RESULT <passed> <failed>` line, checkov's summary, or
# unittest's count; otherwise one check, passed when the command succeeded.
step() {
    local name="$1" out status counts passed failed
    shift
    out="$(mktemp)"
    status=0
    "$@" >"$out" 2>&1 || status=$?
    counts="$(python3 - "$out" "$status" <<'PY'
import re, sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
status = int(sys.argv[2])
result = re.findall(r"^RESULT (\d+) (\d+)$", text, re.M)
checkov = re.findall(r"Passed checks: (\d+), Failed checks: (\d+)", text)
tests = re.findall(r"^Ran (\d+) tests?", text, re.M)
if result:
    passed, failed = map(int, result[-1])
elif checkov:
    passed = sum(int(p) for p, _ in checkov)
    failed = sum(int(f) for _, f in checkov)
elif tests:
    broken = re.findall(r"^FAILED \((?:failures=(\d+))?(?:, )?(?:errors=(\d+))?", text, re.M)
    failed = sum(int(x or 0) for pair in broken for x in pair)
    passed = int(tests[-1]) - failed
else:
    passed, failed = (1, 0) if status == 0 else (0, 1)
if status != 0 and failed == 0:
    failed = 1
print(passed, failed)
PY
)"
    read -r passed failed <<<"$counts"
    PASSED=$((PASSED + passed))
    FAILED=$((FAILED + failed))
    if [ "$failed" -eq 0 ]; then
        log "ok   $name ($passed)"
    else
        log "FAIL $name ($passed passed, $failed failed)"
        grep -v '^RESULT ' "$out" | sed 's/^/       /'
    fi
    rm -f "$out"
}

ensure_venv
PY="$VENV/bin/python"
RENDERED="${K8S_RENDER_DIR:-$(mktemp -d)}"
mkdir -p "$RENDERED"
[ -n "${K8S_RENDER_DIR:-}" ] || trap 'rm -rf "$RENDERED"' EXIT

step "render.py unit tests" "$PY" -m unittest "$HERE/test_render.py"

declare -A SOURCE=([dev]=k8s/overlays/dev [prod]=k8s/overlays/prod [prod-ha]=k8s/overlays/prod-ha
    [prod-ha-monitoring]=k8s/overlays/prod-ha/monitoring [jobs]=k8s/jobs [monitoring]=k8s/monitoring)
TARGETS=(dev prod prod-ha prod-ha-monitoring jobs monitoring)
for target in "${TARGETS[@]}"; do
    step "render ${SOURCE[$target]}" "$PY" "$HERE/render.py" "${SOURCE[$target]}" -o "$RENDERED/$target.yaml"
done
for target in "${TARGETS[@]}"; do
    # Later steps need every rendering; a failed one was counted above.
    [ -s "$RENDERED/$target.yaml" ] || { log "cannot go on without $target.yaml"; echo "k8s validation: $PASSED passed, $FAILED failed"; exit 1; }
done

step "yamllint k8s/ tests/k8s/" "$VENV/bin/yamllint" --strict -c "$HERE/yamllint.yaml" k8s tests/k8s

version_args=()
for version in "${K8S_VERSIONS[@]}"; do version_args+=(--k8s-version "$version"); done
step "schemas (strict) ${K8S_VERSIONS[*]}" "$PY" "$HERE/schema.py" "${version_args[@]}" \
    "$RENDERED/dev.yaml" "$RENDERED/prod.yaml" "$RENDERED/jobs.yaml"
step "schemas k8s/monitoring (strict; prometheus-operator CRDs of tests/k8s/crds)" "$PY" "$HERE/schema.py" \
    "${version_args[@]}" --crds "$HERE/crds" "$RENDERED/monitoring.yaml"
step "schemas prod-ha (strict; CloudNativePG and prometheus-operator CRDs of tests/k8s/crds)" "$PY" \
    "$HERE/schema.py" "${version_args[@]}" --crds "$HERE/crds" "$RENDERED/prod-ha.yaml" \
    "$RENDERED/prod-ha-monitoring.yaml"

checkov() {
    "$VENV/bin/checkov" --framework kubernetes --quiet --compact --skip-download "$@"
}
step "checkov prod" checkov --skip-check "$SKIP_ALL" -f "$RENDERED/prod.yaml"
step "checkov prod-ha" checkov --skip-check "$SKIP_ALL" -f "$RENDERED/prod-ha.yaml"
step "checkov dev + load-test Job" checkov --skip-check "$SKIP_DEV" -f "$RENDERED/dev.yaml" -f "$RENDERED/jobs.yaml"

step "properties dev" "$PY" "$HERE/properties.py" --overlay dev "$RENDERED/dev.yaml"
step "properties prod" "$PY" "$HERE/properties.py" --overlay prod "$RENDERED/prod.yaml"
step "properties prod-ha (prod's, and PostgreSQL and Redis surviving a node)" "$PY" "$HERE/properties.py" \
    --overlay prod-ha "$RENDERED/prod-ha.yaml"
step "properties load-test Job" "$PY" "$HERE/properties.py" --overlay jobs --context "$RENDERED/dev.yaml" \
    "$RENDERED/jobs.yaml"
step "properties k8s/monitoring (scraping, rules, alerts, dashboard)" "$PY" "$HERE/monitoring.py" check \
    --prod "$RENDERED/prod.yaml" --docs docs/alerts.md "$RENDERED/monitoring.yaml"

# promtool_rules FILE...: promtool check rules, one check per rule it found.
promtool_rules() {
    local out status=0
    out="$("$PROMTOOL" check rules "$@" 2>&1)" || status=$?
    printf '%s\n' "$out"
    [ "$status" -eq 0 ] || return "$status"
    printf '%s\n' "$out" | awk '/SUCCESS: [0-9]+ rules found/ { n += $2 } END { print "RESULT " n " 0" }'
}
# promtool_test: the rules' unit tests, next to the rule file they name.
promtool_test() {
    cp "$HERE/alerts.test.yaml" "$PROMTOOL_WORK/alerts.test.yaml"
    (cd "$PROMTOOL_WORK" && "$PROMTOOL" test rules alerts.test.yaml)
}
no_promtool() {
    echo "promtool not found: install Debian's prometheus package (apt-get install prometheus), or set"
    echo "PROMTOOL=/path/to/promtool (K8S_SKIP_PROMTOOL=1 skips these steps outside CI)"
    return 1
}
PROMTOOL="${PROMTOOL:-}"
ensure_promtool
PROMTOOL_WORK="$RENDERED/promtool"
mkdir -p "$PROMTOOL_WORK"
# The rule files promtool reads (a failure here fails the promtool steps).
"$PY" "$HERE/monitoring.py" rules "$RENDERED/monitoring.yaml" -o "$PROMTOOL_WORK/rules.yaml" \
    || log "cannot write the rules of k8s/monitoring for promtool"
"$PY" "$HERE/monitoring.py" dashboard-rules "$RENDERED/monitoring.yaml" -o "$PROMTOOL_WORK/dashboard.yaml" \
    || log "cannot write the dashboard queries for promtool"
mutation_args=(--checkov "$VENV/bin/checkov" --checkov-skips "$SKIP_ALL")
if [ -n "$PROMTOOL" ]; then
    log "promtool: $PROMTOOL ($("$PROMTOOL" --version 2>&1 | head -n1))"
    step "promtool check rules k8s/monitoring" promtool_rules "$PROMTOOL_WORK/rules.yaml"
    step "promtool check rules: dashboard queries" promtool_rules "$PROMTOOL_WORK/dashboard.yaml"
    step "promtool test rules tests/k8s/alerts.test.yaml" promtool_test
    mutation_args+=(--promtool "$PROMTOOL")
elif [ "${K8S_SKIP_PROMTOOL:-}" = 1 ] && [ "${CI:-}" != true ]; then
    log "SKIPPED the promtool steps and promtool mutations (K8S_SKIP_PROMTOOL=1): rules unchecked by promtool"
else
    step "promtool (check rules, dashboard queries, test rules)" no_promtool
fi

step "mutations are caught" "$PY" "$HERE/mutations.py" "${mutation_args[@]}"

echo "k8s validation: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
