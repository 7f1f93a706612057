#!/usr/bin/env bash
# tests/widget/run.sh - the storefront widget and the admin console end to end
# in a real browser.
#
# 1. Installs Debian's chromium, openssl and a CJK font when missing (as root).
# 2. `npm ci` for the widget and the console and checks that a fresh `npm run
#    build` reproduces the committed gateway/widget/dist/widget.js and
#    gateway/console/dist/console.js byte for byte, so the files the gateway
#    embeds cannot drift from their source.
# 3. `npm ci` for this test (pinned playwright-core and axe-core).
# 4. Builds loyalty-mesh and loyalty-gateway (debug, in ${CARGO_TARGET_DIR:-target}),
#    gives the demo program a customer token secret with
#    `loyalty-gateway customer-secret rotate`, signs an expired token with it
#    the way the README tells shops to (openssl), and starts the mesh on free
#    loopback ports with a throwaway data directory.
# 5. Runs widget.test.mjs (the mesh's /demo page) and console.test.mjs (the
#    admin console at /admin) with node's test runner in headless Chromium;
#    screenshots and axe reports go to tests/widget/artifacts/.
#
# Exits non-zero on any failure; always stops the mesh.
#
# Usage: tests/widget/run.sh
# Environment:
#   LOYALTY_SKIP_BUILD=1   use the binaries already built
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/widget"
WIDGET="$ROOT/gateway/widget"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/debug"
CHROMIUM=/usr/bin/chromium
ARTIFACTS="$HERE/artifacts"

log() { printf 'widget_test: %s\n' "$*" >&2; }
die() { printf 'widget_test: ERROR: %s\n' "$*" >&2; exit 1; }

# Under the target directory rather than /tmp: a machine-wide /tmp clean-up must not pull the
# mesh's data directory away mid-run.
mkdir -p "$TARGET"
WORK="$(mktemp -d "$TARGET/widget-test.XXXXXX")"
MESH_PID=""
cleanup() {
    if [ -n "$MESH_PID" ] && kill -0 "$MESH_PID" 2>/dev/null; then
        kill "$MESH_PID" 2>/dev/null || true
        wait "$MESH_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

missing=()
[ -x "$CHROMIUM" ] || missing+=(chromium)
command -v openssl >/dev/null || missing+=(openssl)
# Without a CJK font the Chinese screenshots show empty boxes (the test reads the text either way).
dpkg -s fonts-wqy-zenhei >/dev/null 2>&1 || missing+=(fonts-wqy-zenhei)
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "${missing[*]} missing; install the Debian packages (needs root)"
    log "installing ${missing[*]}"
    apt-get update -qq >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
        || die "cannot install ${missing[*]}"
fi
command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed"

# The committed bundle in $1/dist/$2 must be what its source builds to.
reproducible() {
    local dir="$1" bundle="$2"
    log "checking that ${dir#"$ROOT"/} builds reproducibly"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || die "npm ci failed in $dir"
    cp "$dir/dist/$bundle" "$WORK/committed-$bundle"
    (cd "$dir" && npm run --silent build >/dev/null) || die "npm run build failed in $dir"
    if ! cmp -s "$WORK/committed-$bundle" "$dir/dist/$bundle"; then
        cp "$WORK/committed-$bundle" "$dir/dist/$bundle"
        die "${dir#"$ROOT"/}/dist/$bundle differs from what its source builds to: run 'npm run build' there and commit the result"
    fi
}
reproducible "$WIDGET" widget.js
reproducible "$ROOT/gateway/console" console.js

(cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || die "npm ci failed in tests/widget"

if [ "${LOYALTY_SKIP_BUILD:-0}" != 1 ]; then
    log "building loyalty-mesh and loyalty-gateway"
    (cd "$ROOT" && cargo build --quiet --locked -p loyalty-mesh -p loyalty-gateway) || die "build failed"
fi
for binary in loyalty-mesh loyalty-gateway; do
    [ -x "$BIN/$binary" ] || die "$BIN/$binary is missing (build it or unset LOYALTY_SKIP_BUILD)"
done

DATA="$WORK/data"
mkdir -p "$DATA"
SECRET="$(DATABASE_URL="sqlite://$DATA/gateway.db" "$BIN/loyalty-gateway" customer-secret rotate --program demo 2>/dev/null)" \
    || die "cannot create the demo program's customer token secret"

# What a shop's back end does (the README's recipe), an hour in the past.
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
payload="v1.$(printf %s anna | b64url).$(( $(date +%s) - 3600 ))"
signature="$(printf %s "$payload" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$SECRET" -binary | b64url)"
EXPIRED_TOKEN="$payload.$signature"

log "starting the mesh (data in $DATA)"
LOYALTY_DATA_DIR="$DATA" RUST_LOG=warn \
POINTS_GRPC_ADDR=127.0.0.1:0 POINTS_METRICS_ADDR=127.0.0.1:0 \
TIERS_GRPC_ADDR=127.0.0.1:0 TIERS_METRICS_ADDR=127.0.0.1:0 \
REFERRAL_GRPC_ADDR=127.0.0.1:0 REFERRAL_METRICS_ADDR=127.0.0.1:0 \
REWARDS_GRPC_ADDR=127.0.0.1:0 REWARDS_METRICS_ADDR=127.0.0.1:0 \
INSIGHTS_GRPC_ADDR=127.0.0.1:0 INSIGHTS_METRICS_ADDR=127.0.0.1:0 \
WEBHOOKS_GRPC_ADDR=127.0.0.1:0 WEBHOOKS_METRICS_ADDR=127.0.0.1:0 \
GATEWAY_HTTP_ADDR=127.0.0.1:0 GATEWAY_METRICS_ADDR=127.0.0.1:0 \
    "$BIN/loyalty-mesh" >"$WORK/mesh.out" 2>"$WORK/mesh.err" &
MESH_PID=$!

DEMO_URL=""
for _ in $(seq 1 300); do
    DEMO_URL="$(sed -n 's|^  demo shop \(http://[^ ]*\)/demo .*|\1|p' "$WORK/mesh.out")"
    [ -n "$DEMO_URL" ] && break
    kill -0 "$MESH_PID" 2>/dev/null || { cat "$WORK/mesh.out" "$WORK/mesh.err" >&2; die "the mesh exited"; }
    sleep 0.1
done
[ -n "$DEMO_URL" ] || { cat "$WORK/mesh.out" "$WORK/mesh.err" >&2; die "the mesh did not start its demo shop in 30 s"; }
for _ in $(seq 1 150); do
    curl -fsS "$DEMO_URL/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fsS "$DEMO_URL/readyz" >/dev/null || die "the gateway did not become ready"

log "running the browser scenarios against $DEMO_URL/demo and $DEMO_URL/admin"
rm -rf "$ARTIFACTS"
status=0
# The demo program's admin key, printed once at start-up, for the test's own changes (a debt).
ADMIN_KEY="$(sed -n "s|^  curl -H 'Authorization: Bearer \([^']*\)'.*|\1|p" "$WORK/mesh.out")"
[ -n "$ADMIN_KEY" ] || { cat "$WORK/mesh.out" >&2; die "the mesh printed no admin key"; }
(cd "$HERE" && GATEWAY_URL="$DEMO_URL" EXPIRED_TOKEN="$EXPIRED_TOKEN" ADMIN_KEY="$ADMIN_KEY" ARTIFACTS="$ARTIFACTS" CHROMIUM="$CHROMIUM" \
    node --test --test-concurrency=1 widget.test.mjs console.test.mjs) || status=$?
if grep -q ' ERROR ' "$WORK/mesh.err"; then
    log "the mesh logged errors:"
    grep ' ERROR ' "$WORK/mesh.err" >&2
    status=1
fi
if [ "$status" -ne 0 ]; then
    log "FAILED (screenshots in $ARTIFACTS; mesh log below)"
    tail -n 30 "$WORK/mesh.err" >&2
    exit 1
fi
log "passed (screenshots in $ARTIFACTS)"
