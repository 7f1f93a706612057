#!/usr/bin/env bash
# tests/gateway/contract_test.sh - the gateway against its own OpenAPI document.
#
# Builds loyalty-points, loyalty-tiers, loyalty-referral, loyalty-rewards and
# loyalty-gateway (debug, in ${CARGO_TARGET_DIR:-target}), starts them all on
# free loopback ports with SQLite files in a temporary directory (tiers,
# referral and rewards following the points service, the gateway in front of
# all four, so no route answers 503 BACKEND_NOT_CONFIGURED), creates an admin
# API key with `loyalty-gateway keys create`, and
# runs schemathesis against http://127.0.0.1:PORT/openapi.json with that key.
# Every generated request must get a documented status (never a 5xx), a
# documented content type and headers, and a body that matches the schema;
# invalid requests must be refused and unauthenticated ones rejected.
# Exits non-zero when any check fails or a binary does not come up.
#
# Usage: tests/gateway/contract_test.sh
# Environment:
#   CONTRACT_MAX_EXAMPLES  test cases per operation and phase (default 50)
#   CONTRACT_SEED          schemathesis seed (default 1, so runs repeat; change it to explore)
#   LOYALTY_SKIP_BUILD=1   use the binaries already built
#
# The Python tools live in .tools/venv (created when missing), with the
# versions pinned in tests/gateway/requirements.txt.
#
# Every check runs, positive_data_acceptance included: the document states
# every bound, length and pattern the services check, so a request valid by
# the schema is accepted. tests/gateway/contract_hooks.py lets through only a
# 422 naming rules JSON Schema cannot state (a field against another, or
# against the present), which the field descriptions say.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.tools/venv"
REQUIREMENTS="$ROOT/tests/gateway/requirements.txt"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/debug"
MAX_EXAMPLES="${CONTRACT_MAX_EXAMPLES:-50}"
SEED="${CONTRACT_SEED:-1}"

log() { printf 'contract_test: %s\n' "$*" >&2; }
die() { printf 'contract_test: ERROR: %s\n' "$*" >&2; exit 1; }

WORK="$(mktemp -d -t loyalty-contract.XXXXXX)"
POINTS_PID=""
TIERS_PID=""
REFERRAL_PID=""
REWARDS_PID=""
INSIGHTS_PID=""
WEBHOOKS_PID=""
GATEWAY_PID=""
cleanup() {
    local pid
    for pid in "$GATEWAY_PID" "$WEBHOOKS_PID" "$INSIGHTS_PID" "$REWARDS_PID" "$REFERRAL_PID" "$TIERS_PID" "$POINTS_PID"; do
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV" || die "cannot create the Python venv at $VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS" \
    || die "cannot install $REQUIREMENTS into $VENV"

if [ "${LOYALTY_SKIP_BUILD:-0}" != 1 ]; then
    log "building the services and the gateway"
    (cd "$ROOT" && cargo build --quiet --locked -p loyalty-points -p loyalty-tiers -p loyalty-referral \
        -p loyalty-rewards -p loyalty-insights -p loyalty-webhooks -p loyalty-gateway) || die "build failed"
fi
for binary in loyalty-points loyalty-tiers loyalty-referral loyalty-rewards loyalty-insights loyalty-webhooks loyalty-gateway; do
    [ -x "$BIN/$binary" ] || die "$BIN/$binary is missing (build it or unset LOYALTY_SKIP_BUILD)"
done

# The address a service logged in its JSON "... ready" line, e.g. 127.0.0.1:41234.
logged_addr() { # LOG FIELD MESSAGE
    "$VENV/bin/python" - "$@" <<'PY'
import json, sys
log, field, message = sys.argv[1:4]
with open(log, encoding="utf-8", errors="replace") as lines:
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        fields = event.get("fields", {})
        if fields.get("message") == message and field in fields:
            print(fields[field])
            break
PY
}

wait_for_addr() { # PID LOG FIELD MESSAGE
    local pid="$1" addr="" i
    for i in $(seq 1 300); do
        addr="$(logged_addr "$2" "$3" "$4")"
        if [ -n "$addr" ]; then
            printf '%s\n' "$addr"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { cat "$2" >&2; die "process $pid exited before: $4"; }
        sleep 0.1
    done
    cat "$2" >&2
    die "no \"$4\" within 30 s"
}

# Services check callers as in production: the gateway's key database, one shared service secret.
GATEWAY_DB="sqlite://$WORK/gateway.db"
export LOYALTY_AUTH=required KEYS_DATABASE_URL="$GATEWAY_DB"
LOYALTY_SERVICE_SECRET="contract-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
export LOYALTY_SERVICE_SECRET

log "starting the points service (SQLite in $WORK)"
LOG_FORMAT=json RUST_LOG=info \
POINTS_GRPC_ADDR=127.0.0.1:0 POINTS_METRICS_ADDR=127.0.0.1:0 \
DATABASE_URL="sqlite://$WORK/points.db" \
    "$BIN/loyalty-points" >"$WORK/points.log" 2>&1 &
POINTS_PID=$!
POINTS_ADDR="$(wait_for_addr "$POINTS_PID" "$WORK/points.log" grpc "service ready")"

log "starting the tiers and referral services, following $POINTS_ADDR"
LOG_FORMAT=json RUST_LOG=info \
TIERS_GRPC_ADDR=127.0.0.1:0 TIERS_METRICS_ADDR=127.0.0.1:0 \
DATABASE_URL="sqlite://$WORK/tiers.db" POINTS_ADDR="$POINTS_ADDR" \
    "$BIN/loyalty-tiers" >"$WORK/tiers.log" 2>&1 &
TIERS_PID=$!
LOG_FORMAT=json RUST_LOG=info \
REFERRAL_GRPC_ADDR=127.0.0.1:0 REFERRAL_METRICS_ADDR=127.0.0.1:0 \
DATABASE_URL="sqlite://$WORK/referral.db" POINTS_ADDR="$POINTS_ADDR" \
    "$BIN/loyalty-referral" >"$WORK/referral.log" 2>&1 &
REFERRAL_PID=$!
TIERS_ADDR="$(wait_for_addr "$TIERS_PID" "$WORK/tiers.log" grpc "service ready")"
REFERRAL_ADDR="$(wait_for_addr "$REFERRAL_PID" "$WORK/referral.log" grpc "service ready")"

log "starting the rewards service"
LOG_FORMAT=json RUST_LOG=info \
REWARDS_GRPC_ADDR=127.0.0.1:0 REWARDS_METRICS_ADDR=127.0.0.1:0 \
DATABASE_URL="sqlite://$WORK/rewards.db" POINTS_ADDR="$POINTS_ADDR" TIERS_ADDR="$TIERS_ADDR" \
    "$BIN/loyalty-rewards" >"$WORK/rewards.log" 2>&1 &
REWARDS_PID=$!
REWARDS_ADDR="$(wait_for_addr "$REWARDS_PID" "$WORK/rewards.log" grpc "service ready")"

log "starting the insights service, following $POINTS_ADDR"
LOG_FORMAT=json RUST_LOG=info \
INSIGHTS_GRPC_ADDR=127.0.0.1:0 INSIGHTS_METRICS_ADDR=127.0.0.1:0 \
DATABASE_URL="sqlite://$WORK/insights.db" POINTS_ADDR="$POINTS_ADDR" \
    "$BIN/loyalty-insights" >"$WORK/insights.log" 2>&1 &
INSIGHTS_PID=$!
INSIGHTS_ADDR="$(wait_for_addr "$INSIGHTS_PID" "$WORK/insights.log" grpc "service ready")"

log "starting the webhooks service, following $POINTS_ADDR"
LOG_FORMAT=json RUST_LOG=info \
WEBHOOKS_GRPC_ADDR=127.0.0.1:0 WEBHOOKS_METRICS_ADDR=127.0.0.1:0 \
DATABASE_URL="sqlite://$WORK/webhooks.db" POINTS_ADDR="$POINTS_ADDR" \
    "$BIN/loyalty-webhooks" >"$WORK/webhooks.log" 2>&1 &
WEBHOOKS_PID=$!
WEBHOOKS_ADDR="$(wait_for_addr "$WEBHOOKS_PID" "$WORK/webhooks.log" grpc "service ready")"

KEY="$(DATABASE_URL="$GATEWAY_DB" "$BIN/loyalty-gateway" keys create --program contract --scope admin --label contract-test 2>/dev/null)" \
    || die "cannot create an API key"

log "starting the gateway in front of points $POINTS_ADDR, tiers $TIERS_ADDR, referral $REFERRAL_ADDR, rewards $REWARDS_ADDR, insights $INSIGHTS_ADDR, webhooks $WEBHOOKS_ADDR"
LOG_FORMAT=json RUST_LOG=warn,loyalty_gateway=info,loyalty_gateway::observe=warn \
GATEWAY_HTTP_ADDR=127.0.0.1:0 GATEWAY_METRICS_ADDR=127.0.0.1:0 \
POINTS_ADDR="$POINTS_ADDR" TIERS_ADDR="$TIERS_ADDR" REFERRAL_ADDR="$REFERRAL_ADDR" REWARDS_ADDR="$REWARDS_ADDR" \
INSIGHTS_ADDR="$INSIGHTS_ADDR" WEBHOOKS_ADDR="$WEBHOOKS_ADDR" DATABASE_URL="$GATEWAY_DB" GATEWAY_RATE_LIMIT_PER_SEC=0 \
    "$BIN/loyalty-gateway" >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
GATEWAY_ADDR="$(wait_for_addr "$GATEWAY_PID" "$WORK/gateway.log" http "gateway ready")"

"$VENV/bin/python" - "http://$GATEWAY_ADDR/readyz" <<'PY' || die "the gateway did not become ready"
import sys, time, urllib.request
deadline = time.monotonic() + 30
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=2) as answer:
            if answer.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.2)
PY

log "running schemathesis against http://$GATEWAY_ADDR/openapi.json (seed $SEED, $MAX_EXAMPLES examples)"
status=0
(
    cd "$WORK"
    SCHEMATHESIS_HOOKS="$ROOT/tests/gateway/contract_hooks.py" "$VENV/bin/schemathesis" run "http://$GATEWAY_ADDR/openapi.json" \
        --header "Authorization: Bearer $KEY" \
        --checks all \
        --max-examples "$MAX_EXAMPLES" \
        --seed "$SEED" \
        --request-timeout 10 \
        --workers 1
) || status=$?

if grep -q '"level":"ERROR"' "$WORK/gateway.log"; then
    log "the gateway logged errors:"
    grep '"level":"ERROR"' "$WORK/gateway.log" >&2
    status=1
fi
if [ "$status" -ne 0 ]; then
    log "FAILED (gateway log: last lines below)"
    tail -n 20 "$WORK/gateway.log" >&2
    exit 1
fi
log "passed"
