#!/usr/bin/env python3
"""Webhooks end to end, checked with the published Standard Webhooks library.

Our deliveries claim to follow the Standard Webhooks specification
(`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`). This
test does not take our word for it: every signature is checked with the
specification's own Python library (`standardwebhooks` from PyPI, pinned in
tests/python/requirements.txt), as a shop's receiver would, and never with
our code.

It starts, on free 127.0.0.1 ports with SQLite databases in a temporary
directory, no Redis and callers checked as in production (LOYALTY_AUTH=required,
one LOYALTY_SERVICE_SECRET shared so that the services may call each other):
    LOYALTY_POINTS_BIN   (default: target/debug/loyalty-points)
    LOYALTY_TIERS_BIN    (default: target/debug/loyalty-tiers), with POINTS_ADDR
    LOYALTY_REWARDS_BIN  (default: target/debug/loyalty-rewards), with
        POINTS_ADDR, TIERS_ADDR and quick recovery
    LOYALTY_WEBHOOKS_BIN (default: target/debug/loyalty-webhooks), with
        POINTS_ADDR, TIERS_ADDR and REWARDS_ADDR (their outboxes asked every
        100 ms), plain http and 127.0.0.0/8 allowed, quick polling, the retry
        schedule 1s,1s,1s and a 3 s lease
    LOYALTY_GATEWAY_BIN  (default: target/debug/loyalty-gateway), serving the
        HTTP API in front of all four (for section 5 only)
(target/ is $CARGO_TARGET_DIR when that is set) and an HTTP receiver of its own
(http.server in a thread) that records each request's headers and raw body and
answers per a script. API keys are made with `loyalty-gateway keys create` (an
admin-scope key for the webhooks API, a server-scope key for the points API)
and sent as `authorization: Bearer` metadata (gRPC) or header (HTTP); message
classes are built from gRPC server reflection, as in interop_test.py.

It checks:
  1. a subscription's deliveries of `points.earned` and `points.spent` verify
     with `standardwebhooks.Webhook(secret).verify(body, headers)`, a retry
     carries the same `webhook-id`, and a tampered body, a tampered id or a
     wrong secret does not verify (the library raises);
  2. after RotateSecret with an overlap, a delivery verifies with the old
     secret and, separately, with the new one (each signs one of the two
     signatures of the header);
  3. a delivery service killed with SIGKILL while deliveries are pending
     (some answered 503 and waiting for a retry, some in flight) loses no
     event when it starts again on the same database: each arrives, signed,
     and all attempts of one event carry the same `webhook-id`;
  4. a second subscription, to every event type, receives each type the
     ledger makes (an order's earn and its refund, a pending earn activated
     and reversed, adjustments both ways, a spend given back, an expiry),
     signed, with the data its operation implies;
  5. through the gateway's HTTP API, as a shop would: a third subscription
     (POST /v1/webhooks/subscriptions) to `tier.upgraded`, `reward.redeemed`,
     `voucher.consumed` and `redemption.cancelled` receives, signed, each
     event of the tiers' and rewards' outboxes: a ladder put
     (PUT /v1/tiers/ladder), orders (POST /v1/orders) earning a customer past
     silver then gold, a gold-only reward (POST /v1/rewards) refused to silver
     and redeemed by gold (POST /v1/customers/{id}/redemptions), its voucher
     consumed (POST /v1/vouchers/{code}/consume), another redeemed and
     cancelled (POST /v1/redemptions/{id}/cancel); the every-type
     subscription of section 4 receives them too.
Every body received, in every section, must match the JSON Schema of its
`type` in docs/events/<type>.v1.schema.json (Draft 2020-12, checked with the
`jsonschema` package and a FormatChecker, pinned in requirements.txt); before
the services start, the schemas are checked to be valid, strict, to match
their examples and reject altered ones, and to name exactly the types of
`EVENT_TYPES` in proto/src/lib.rs (read as text).
Then it sends SIGTERM to the five services and requires exit code 0 of each.

Run through `tests/run` (which builds the binaries and the venv), or directly:
    .tools/venv/bin/python tests/python/webhooks_test.py
Exits 0 and prints `webhooks_test: PASS ...` when every check passed.
"""

import base64
import datetime
import http.server
import importlib.metadata
import json
import os
import re
import secrets as random_secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections import deque

import grpc
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc

import jsonschema
import standardwebhooks
from jsonschema import Draft202012Validator, FormatChecker
from standardwebhooks import Webhook, WebhookVerificationError

# The reflection client and the pool built from it are interop_test's.
from interop_test import ReflectionClient, ReflectionError, build_pool, free_ports, v1_reflection_messages

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POINTS_SERVICE = "loyalty.points.v1.PointsService"
WEBHOOKS_SERVICE = "loyalty.webhooks.v1.WebhooksService"
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
PROGRAM = "py-webhooks"
HOOK_PATH = "/hooks"
# The second subscription's, which asks for every event type (section 4).
EVERY_PATH = "/every"
# The third's, made through the gateway, for events of the tiers' and rewards' outboxes (section 5).
OUTBOX_PATH = "/outboxes"
OUTBOX_TYPES = ["tier.upgraded", "reward.redeemed", "voucher.consumed", "redemption.cancelled"]
# One JSON Schema per event type, of the whole body; the list of types is EVENT_TYPES in proto/src/lib.rs.
EVENTS_DIR = os.path.join(ROOT, "docs", "events")
SCHEMA_SUFFIX = ".v1.schema.json"
SCHEMA_ID_BASE = "https://loyalty.example/events/"
LIB_RS = os.path.join(ROOT, "proto", "src", "lib.rs")
READY_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 10.0
RPC_TIMEOUT_S = 10.0
DELIVERY_TIMEOUT_S = 30.0
OVERLAP_S = 3600

CHECKS = 0


def check(cond, what):
    """Asserts `cond` and reports it as one passed check."""
    global CHECKS
    if not cond:
        raise AssertionError(what)
    CHECKS += 1
    print(f"ok {CHECKS} - {what}", flush=True)


def raises_verification_error(call):
    """The error `call` raised if it was the library's WebhookVerificationError; None if it returned."""
    try:
        call()
    except WebhookVerificationError as err:
        return err
    return None


def wait_until(what, probe, timeout=DELIVERY_TIMEOUT_S):
    """Calls `probe` every 20 ms until it returns something truthy, which is returned; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.02)


# --------------------------------------------------------------- the event schemas


def event_types_of_lib_rs(path=LIB_RS):
    """The names in `EVENT_TYPES` of the `webhooks` module of proto/src/lib.rs, read as text, in order."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    module = re.search(r"^pub mod webhooks \{$(.*?)^\}$", text, re.S | re.M)
    if module is None:
        raise AssertionError(f"{path}: no `pub mod webhooks {{ ... }}`")
    table = re.search(r"pub const EVENT_TYPES: &\[\(&str, &str\)\] = &\[(.*?)\];", module.group(1), re.S)
    if table is None:
        raise AssertionError(f"{path}: no `pub const EVENT_TYPES: &[(&str, &str)] = &[...];` in `mod webhooks`")
    literal = r'"((?:[^"\\]|\\.)*)"'
    entries = re.findall(rf"\(\s*{literal}\s*,\s*{literal}\s*,?\s*\)", table.group(1))
    # Whatever is left once the entries and comments are taken out must be commas and blanks.
    rest = re.sub(rf"\(\s*{literal}\s*,\s*{literal}\s*,?\s*\)", "", table.group(1))
    rest = re.sub(r"//[^\n]*", "", rest)
    if rest.replace(",", "").strip() or not entries:
        raise AssertionError(f"{path}: EVENT_TYPES holds something other than (\"name\", \"description\") pairs: "
                             f"{rest.strip()[:200]!r}")
    names = [name for name, _ in entries]
    if len(set(names)) != len(names):
        raise AssertionError(f"{path}: EVENT_TYPES names a type twice: {names}")
    return names


class Schemas:
    """docs/events/<type>.v1.schema.json, each a Draft 2020-12 schema of the whole body of one event type,
    checked with the `jsonschema` package (pinned in requirements.txt) and a FormatChecker."""

    def __init__(self, directory=EVENTS_DIR):
        self.directory = directory
        # Without rfc3339-validator, jsonschema's FormatChecker passes any string as a date-time, silently.
        self.format_checker = FormatChecker()
        if "date-time" not in self.format_checker.checkers:
            raise AssertionError("jsonschema's FormatChecker cannot check `date-time` (is rfc3339-validator "
                                 "installed? see tests/python/requirements.txt)")
        if not self.format_checker.conforms("2026-01-02T03:04:05.678Z", "date-time") \
                or self.format_checker.conforms("2026-01-02 03:04:05", "date-time"):
            raise AssertionError("jsonschema's FormatChecker does not tell an RFC 3339 date-time from another string")
        self.validators = {}
        self.files = {}
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".json"):
                continue
            path = os.path.join(directory, name)
            if not name.endswith(SCHEMA_SUFFIX):
                raise AssertionError(f"{path}: a schema file must be named <type>{SCHEMA_SUFFIX}")
            event_type = name[:-len(SCHEMA_SUFFIX)]
            with open(path, encoding="utf-8") as f:
                schema = json.load(f)
            try:
                Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as err:
                raise AssertionError(f"{path} is not a valid Draft 2020-12 schema: {err.message}") from None
            problems = []
            if schema.get("$schema") != "https://json-schema.org/draft/2020-12/schema":
                problems.append(f"$schema is {schema.get('$schema')!r}")
            if schema.get("$id") != SCHEMA_ID_BASE + name:
                problems.append(f"$id is {schema.get('$id')!r}, not {SCHEMA_ID_BASE + name!r}")
            props = schema.get("properties", {})
            if props.get("type", {}).get("const") != event_type:
                problems.append(f"properties.type is not const {event_type!r}")
            if props.get("version", {}).get("const") != "v1":
                problems.append("properties.version is not const \"v1\"")
            data = props.get("data", {})
            for where, node in (("the body", schema), ("data", data)):
                if node.get("additionalProperties") is not False:
                    problems.append(f"{where} does not say additionalProperties: false")
                if not set(node.get("required", [])) <= set(node.get("properties", {})):
                    problems.append(f"{where} requires a field it does not describe")
            if not schema.get("title") or not schema.get("examples"):
                problems.append("no title or no examples")
            if problems:
                raise AssertionError(f"{path}: " + "; ".join(problems))
            validator = Draft202012Validator(schema, format_checker=self.format_checker)
            for n, example in enumerate(schema["examples"], 1):
                errors = self.errors(validator, example)
                if errors:
                    raise AssertionError(f"{path}: its example {n} does not match it: " + "; ".join(errors))
            self.validators[event_type] = validator
            self.files[event_type] = path

    @staticmethod
    def errors(validator, instance):
        found = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
        return [f"at /{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found]

    def problems(self, body):
        """Why the JSON `body` does not match the schema of its `type` (empty when it does)."""
        if not isinstance(body, dict):
            return [f"the body is not a JSON object: {body!r}"]
        event_type = body.get("type")
        validator = self.validators.get(event_type)
        if validator is None:
            return [f"no schema for type {event_type!r} in {self.directory} (have: {sorted(self.validators)})"]
        return self.errors(validator, body)

    def check(self, received):
        """Fails, saying why, unless what `received` carries matches the schema of its `type`."""
        problems = self.problems(received.json)
        if problems:
            event_type = received.json.get("type") if isinstance(received.json, dict) else "?"
            raise AssertionError(
                f"the body of {received.webhook_id} ({event_type}) does not match its schema: "
                f"{'; '.join(problems)}; body: {received.body.decode(errors='replace')}")
        return received.json


SCHEMAS = None  # the Schemas, loaded by check_event_schemas() before anything is delivered


def instant(text):
    """An RFC 3339 UTC text as a datetime (fractions of any length, cut to microseconds)."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    at = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.timezone.utc)
    return at + datetime.timedelta(microseconds=int((fraction + "000000")[:6])) if fraction else at


# --------------------------------------------------------------- the receiver


class Received:
    """One request the receiver got: what the library needs (raw body, headers) and what was answered."""

    def __init__(self, method, path, headers, body):
        self.method = method
        self.path = path
        # Lower-case names; a repeated header would be a bug of ours, so it is kept whole.
        self.headers = {}
        for name, value in headers.items():
            name = name.lower()
            self.headers[name] = f"{self.headers[name]}, {value}" if name in self.headers else value
        self.body = body
        self.at = time.monotonic()
        self.answer = None  # the status sent, or None while held or when the caller had gone
        try:
            self.json = json.loads(body)
        except ValueError:
            self.json = None

    @property
    def webhook_id(self):
        return self.headers.get("webhook-id", "")

    @property
    def transaction_id(self):
        data = self.json.get("data") if isinstance(self.json, dict) else None
        return data.get("transaction_id", "") if isinstance(data, dict) else ""

    def __repr__(self):
        return (f"<{self.method} {self.path} id={self.webhook_id} tx={self.transaction_id} "
                f"answer={self.answer}>")


class Receiver:
    """An HTTP endpoint in this process: records every request and answers per
    a script (statuses to give first, in order), then `otherwise`; the answer
    "hold" keeps the request waiting until `release()`, then answers 503."""

    def __init__(self):
        self._lock = threading.Lock()
        self._received = []
        self._script = deque()
        self._otherwise = 200
        self._released = threading.Event()
        self._released.set()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                got = Received(self.command, self.path, self.headers, body)
                with receiver._lock:
                    receiver._received.append(got)
                    answer = receiver._script.popleft() if receiver._script else receiver._otherwise
                if answer == "hold":
                    # Stands for an attempt under way: whatever comes after, it is no success.
                    receiver._released.wait(timeout=120)
                    answer = 503
                text = f"answer {answer}".encode()
                try:
                    self.send_response(answer)
                    self.send_header("content-type", "text/plain")
                    self.send_header("content-length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                    self.wfile.flush()
                except OSError:
                    return  # the sender is gone (killed while we held its request)
                with receiver._lock:
                    got.answer = answer

            do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args):
                pass

            def log_error(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="receiver", daemon=True)
        self._thread.start()

    def url(self, path):
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def script(self, *answers):
        with self._lock:
            self._script.extend(answers)

    def otherwise(self, answer):
        """The answer after the script; "hold" also holds from now on until release()."""
        with self._lock:
            self._otherwise = answer
            if answer == "hold":
                self._released.clear()

    def release(self):
        self._released.set()

    def received(self):
        with self._lock:
            return list(self._received)

    def of(self, transaction_id):
        return [r for r in self.received() if r.transaction_id == transaction_id]

    def delivered(self, transaction_id):
        """The request of `transaction_id`'s event that was answered 2xx, once there is one."""
        for r in self.of(transaction_id):
            if r.answer is not None and 200 <= r.answer < 300:
                return r
        return None

    def event(self, path, event_type, **data):
        """The delivery to `path`, answered 200, of the `event_type` event whose data has `data`."""
        for r in self.received():
            if (r.path == path and r.answer == 200 and isinstance(r.json, dict)
                    and r.json.get("type") == event_type
                    and all(r.json.get("data", {}).get(k) == v for k, v in data.items())):
                return r
        return None

    def stop(self):
        self.release()
        self._server.shutdown()
        self._server.server_close()


# --------------------------------------------------------------- gRPC


class Method:
    """A generic unary call of one method, with message classes built from the reflected descriptors."""

    def __init__(self, channel, pool, service, name, key=None):
        desc = pool.FindServiceByName(service).methods_by_name[name]
        if desc.client_streaming or desc.server_streaming:
            raise AssertionError(f"{service}/{name} is not unary")
        self.Request = message_factory.GetMessageClass(desc.input_type)
        self.Response = message_factory.GetMessageClass(desc.output_type)
        self._call = channel.unary_unary(
            f"/{service}/{name}",
            request_serializer=self.Request.SerializeToString,
            response_deserializer=self.Response.FromString,
        )
        self.name = name
        self.metadata = (("authorization", f"Bearer {key}"),) if key else ()

    def __call__(self, **fields):
        return self._call(self.Request(**fields), timeout=RPC_TIMEOUT_S, metadata=self.metadata)

    def timestamp(self, field, unix_seconds):
        """A value for the request's `google.protobuf.Timestamp` field `field`."""
        desc = self.Request.DESCRIPTOR.fields_by_name[field].message_type
        whole = int(unix_seconds)
        return message_factory.GetMessageClass(desc)(seconds=whole, nanos=int((unix_seconds - whole) * 1e9))

    def expect_error(self, code, **fields):
        try:
            response = self(**fields)
        except grpc.RpcError as err:
            check(err.code() == code,
                  f"{self.name} -> {code.name} (got {err.code().name}: {err.details()!r})")
            return err
        raise AssertionError(f"{self.name} {fields} should fail with {code.name}, got {response}")


def make_key(gateway_binary, keys_url, scope):
    made = subprocess.run(
        [gateway_binary, "keys", "create", "--program", PROGRAM, "--scope", scope, "--label", f"webhooks-{scope}"],
        env={**os.environ, "DATABASE_URL": keys_url}, capture_output=True, text=True, timeout=60,
    )
    if made.returncode != 0:
        raise AssertionError(f"loyalty-gateway keys create --scope {scope} failed: {made.stderr.strip()}")
    return made.stdout.strip()


# --------------------------------------------------------------- the gateway's HTTP API


def http_call(base, method, path, key=None, body=None):
    """One request to the gateway, as a shop's back end makes it: `authorization: Bearer <key>`, a JSON body and
    a fresh `Idempotency-Key` on every write. Returns the status, the JSON answer (None if none) and the raw one."""
    headers = {"accept": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    if method != "GET":
        headers["idempotency-key"] = uuid.uuid4().hex
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=RPC_TIMEOUT_S) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    return status, parsed, raw


# --------------------------------------------------------------- the services


class Process:
    """One service binary on free ports; each start logs to its own file."""

    def __init__(self, name, binary, workdir, env, addr_vars):
        self.name = name
        self.binary = binary
        self.workdir = workdir
        self.base_env = env
        self.addr_vars = addr_vars  # (gRPC address variable, metrics address variable)
        self.starts = 0
        self.proc = None
        self._log = None
        self.log_paths = []

    def start(self):
        self.starts += 1
        self.grpc_port, self.metrics_port = free_ports(2)
        env = dict(self.base_env)
        env[self.addr_vars[0]] = f"127.0.0.1:{self.grpc_port}"
        env[self.addr_vars[1]] = f"127.0.0.1:{self.metrics_port}"
        log_path = os.path.join(self.workdir, f"{self.name}-{self.starts}.log")
        self.log_paths.append(log_path)
        self._log = open(log_path, "wb")
        print(f"starting {self.binary} ({self.addr_vars[0]} {self.target}, metrics 127.0.0.1:{self.metrics_port}, "
              f"{env['DATABASE_URL']})", flush=True)
        self.proc = subprocess.Popen(
            [self.binary], env=env, cwd=self.workdir, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    @property
    def target(self):
        return f"127.0.0.1:{self.grpc_port}"

    def wait_serving(self, channel):
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with code {self.proc.returncode} before it was ready")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as err:
                last = f"{err.code().name}: {err.details()}"
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not SERVING within {READY_TIMEOUT_S:.0f}s (last: {last})")

    def wait_ready_http(self):
        """For the gateway: until GET /readyz answers 200."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with code {self.proc.returncode} before it was ready")
            try:
                status, body, _ = http_call(f"http://{self.target}", "GET", "/readyz")
                if status == 200:
                    return
                last = f"{status} {body}"
            except OSError as err:
                last = str(err)
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: GET /readyz not 200 within {READY_TIMEOUT_S:.0f}s (last: {last})")

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        try:
            code = self.proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running {SHUTDOWN_TIMEOUT_S:.0f}s after SIGTERM") from None
        self._log.close()
        return code, time.monotonic() - start

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        code = self.proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
        self._log.close()
        return code

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._log is not None:
            self._log.close()

    def log_tail(self, lines=40):
        out = []
        for path in self.log_paths:
            try:
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            out.append(f"---- {path}, last lines ----")
            out.extend(text.splitlines()[-lines:])
        return "\n".join(out)


def service_env(workdir, keys_url, service_secret, database):
    """The environment every service gets: this one's database, the shared key
    store and service secret, callers checked; nothing inherited that would
    change a setting."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LOYALTY_", "WEBHOOKS_", "POINTS_", "TIERS_", "REWARDS_", "REFERRAL_", "INSIGHTS_",
                                "GATEWAY_", "DATABASE_", "KEYS_", "REDIS_", "RECOVERY_", "REVIEW_", "OUTBOX_",
                                "UPSTREAM_", "VOUCHER_", "MULTIPLIER_"))}
    env.update(
        DATABASE_URL=f"sqlite://{os.path.join(workdir, database)}",
        LOYALTY_AUTH="required",
        KEYS_DATABASE_URL=keys_url,
        LOYALTY_SERVICE_SECRET=service_secret,
    )
    return env


# --------------------------------------------------------------- the test


def verifies(secret, received, body=None, headers=None):
    """What the library returns verifying `received` (or a tampered copy) with `secret`; raises if it does not."""
    return Webhook(secret).verify(received.body if body is None else body,
                                  received.headers if headers is None else headers)


def check_signed(secret, received, what, wrong=()):
    """`received` verifies with `secret` through the library, returns the same
    JSON it carries, is fresh, and does not verify with any of `wrong`."""
    payload = verifies(secret, received)
    check(payload == received.json and isinstance(payload, dict),
          f"{what}: Webhook(secret).verify(body, headers) accepts it (webhook-id {received.webhook_id})")
    SCHEMAS.check(received)
    check(True, f"{what}: the body matches {os.path.relpath(SCHEMAS.files[payload['type']], ROOT)}")
    stamp = int(received.headers.get("webhook-timestamp", "0"))
    check(abs(time.time() - stamp) < 120, f"{what}: webhook-timestamp {stamp} is the wall clock's")
    for other in wrong:
        err = raises_verification_error(lambda: verifies(other, received))
        check(err is not None, f"{what}: a wrong secret does not verify ({err})")
    return payload


def random_secret():
    return "whsec_" + base64.b64encode(random_secrets.token_bytes(32)).decode()


def check_event_schemas():
    """The schemas load, are strict, match their examples and catch drift; they and EVENT_TYPES name the same types."""
    global SCHEMAS
    SCHEMAS = Schemas()
    check(True, f"{len(SCHEMAS.files)} schemas in docs/events: valid Draft 2020-12, additionalProperties: false on the "
                f"body and its data, each matching its own example (jsonschema "
                f"{importlib.metadata.version('jsonschema')}, a FormatChecker that checks date-time)")
    listed = event_types_of_lib_rs()
    missing = [t for t in listed if t not in SCHEMAS.validators]
    unlisted = sorted(set(SCHEMAS.validators) - set(listed))
    check(not missing and not unlisted,
          f"EVENT_TYPES in proto/src/lib.rs ({len(listed)} types) and docs/events/*{SCHEMA_SUFFIX} name the same types "
          f"(without a schema: {missing}; a schema without an entry: {unlisted})")
    # Drift is caught: each example, changed in one way, no longer matches.
    for event_type, path in SCHEMAS.files.items():
        with open(path, encoding="utf-8") as f:
            schema = json.load(f)
        example = schema["examples"][0]
        variants = {
            "a data field no schema names": dict(example, data=dict(example["data"], unexpected_field=1)),
            "an envelope field no schema names": dict(example, unexpected_field=1),
            "timestamp not RFC 3339": dict(example, timestamp="2026-01-02 03:04:05"),
            "version v2": dict(example, version="v2"),
            "another type": dict(example, type=event_type + "x"),
        }
        for field in schema["properties"]["data"]["required"]:
            variants[f"no data.{field}"] = dict(example, data={k: v for k, v in example["data"].items() if k != field})
        for field, value in example["data"].items():
            if isinstance(value, int):
                variants[f"data.{field} as text"] = dict(example, data=dict(example["data"], **{field: str(value)}))
        accepted = [what for what, body in variants.items() if not SCHEMAS.problems(body)]
        if accepted:
            raise AssertionError(f"{path} accepts its example changed by: {accepted}")
    check(True, "every schema rejects its example with a field added, a required field removed, a number as text, a "
                "timestamp that is not RFC 3339, another version or another type")


def run(points, webhooks, tiers, rewards, gateway, receiver, admin_key, server_key):
    check_event_schemas()
    points.start()
    # Tiers follows the ledger; rewards spends through points and asks tiers; both keep an outbox.
    tiers.base_env["POINTS_ADDR"] = points.target
    tiers.start()
    rewards.base_env.update(POINTS_ADDR=points.target, TIERS_ADDR=tiers.target)
    rewards.start()
    # The webhooks service follows the points ledger and the outboxes of tiers and rewards, with the shared
    # service identity.
    webhooks.base_env.update(POINTS_ADDR=points.target, TIERS_ADDR=tiers.target, REWARDS_ADDR=rewards.target)
    webhooks.start()
    points_channel = grpc.insecure_channel(points.target)
    webhooks_channel = grpc.insecure_channel(webhooks.target)
    tiers_channel = grpc.insecure_channel(tiers.target)
    rewards_channel = grpc.insecure_channel(rewards.target)
    try:
        points.wait_serving(points_channel)
        check(True, f"loyalty-points SERVING (pid {points.proc.pid})")
        tiers.wait_serving(tiers_channel)
        check(True, f"loyalty-tiers SERVING (pid {tiers.proc.pid}), following {points.target}")
        rewards.wait_serving(rewards_channel)
        check(True, f"loyalty-rewards SERVING (pid {rewards.proc.pid})")
        webhooks.wait_serving(webhooks_channel)
        check(True, f"loyalty-webhooks SERVING (pid {webhooks.proc.pid}), following {points.target}, and the "
                    f"outboxes of {tiers.target} (tiers) and {rewards.target} (rewards)")

        req_v1, resp_v1 = v1_reflection_messages()
        points_pool, _, _ = build_pool(ReflectionClient(points_channel, REFLECTION_V1, req_v1, resp_v1),
                                       POINTS_SERVICE)
        webhooks_reflection = ReflectionClient(webhooks_channel, REFLECTION_V1, req_v1, resp_v1)
        check(WEBHOOKS_SERVICE in webhooks_reflection.list_services(),
              f"the webhooks server's reflection lists {WEBHOOKS_SERVICE}")
        pool, webhooks_file, _ = build_pool(webhooks_reflection, WEBHOOKS_SERVICE)
        check(pool.FindServiceByName(WEBHOOKS_SERVICE) is not None,
              f"descriptors of {WEBHOOKS_SERVICE} from {webhooks_file.name} via v1 reflection")
        state = pool.FindEnumTypeByName("loyalty.webhooks.v1.DeliveryState").values_by_name
        pending, delivered = state["DELIVERY_STATE_PENDING"].number, state["DELIVERY_STATE_DELIVERED"].number
        enabled = pool.FindEnumTypeByName("loyalty.webhooks.v1.SubscriptionStatus") \
            .values_by_name["SUBSCRIPTION_STATUS_ENABLED"].number

        def webhooks_api(name, key=admin_key, channel=None):
            return Method(channel or webhooks_channel, pool, WEBHOOKS_SERVICE, name, key)

        earn = Method(points_channel, points_pool, POINTS_SERVICE, "Earn", server_key)
        spend = Method(points_channel, points_pool, POINTS_SERVICE, "Spend", server_key)

        def earned(customer, amount):
            reply = earn(program_id=PROGRAM, customer_id=customer, points=amount, reason="order",
                         idempotency_key=uuid.uuid4().hex)
            if not reply.transaction_id:
                raise AssertionError(f"Earn {amount} for {customer} gave no transaction id")
            return reply.transaction_id

        # ------------------------------------------------ who may subscribe
        url = receiver.url(HOOK_PATH)
        create_fields = dict(program_id=PROGRAM, url=url, event_types=["points.earned", "points.spent"],
                             description="py webhooks_test receiver", idempotency_key=uuid.uuid4().hex)
        webhooks_api("CreateSubscription", key=None).expect_error(grpc.StatusCode.UNAUTHENTICATED,
                                                                   **create_fields)
        webhooks_api("CreateSubscription", key=server_key).expect_error(grpc.StatusCode.PERMISSION_DENIED,
                                                                        **create_fields)
        types = {t.name for t in webhooks_api("ListEventTypes")(program_id=PROGRAM).event_types}
        check({"points.earned", "points.spent"} <= types, f"ListEventTypes offers points.earned and points.spent "
              f"(all: {sorted(types)})")
        check(types <= set(SCHEMAS.validators), f"every type ListEventTypes offers has a schema in docs/events "
              f"(none for {sorted(types - set(SCHEMAS.validators))})")

        created = webhooks_api("CreateSubscription")(**create_fields)
        sub = created.subscription
        secret = created.secret
        check(sub.subscription_id.startswith("sub_") and sub.url == url and sub.status == enabled,
              f"CreateSubscription -> {sub.subscription_id}, enabled, for {url}")
        Webhook(secret)  # the library takes the secret as it is given out
        check(secret.startswith("whsec_") and len(base64.b64decode(secret[len("whsec_"):])) >= 24,
              "the secret is `whsec_` and at least 24 bytes of base64, as the library expects")

        list_deliveries = webhooks_api("ListDeliveries")

        def deliveries(**filters):
            reply = list_deliveries(program_id=PROGRAM, subscription_id=sub.subscription_id, page_size=200,
                                    **filters)
            return {d.event_id: d for d in reply.deliveries}

        # ------------------------------------------------ 1. earn and spend, verified by the library
        customer = f"c-{uuid.uuid4().hex[:12]}"
        receiver.script(500)  # the very first attempt fails: its retry must be the same message
        earn_tx = earned(customer, 120)
        first = wait_until(f"the delivery of points.earned {earn_tx} answered 200",
                           lambda: receiver.delivered(earn_tx))
        attempts = receiver.of(earn_tx)
        check([r.answer for r in attempts] == [500, 200],
              f"points.earned {earn_tx}: answered 500, then retried and answered 200")
        check(all(r.method == "POST" and r.path == HOOK_PATH for r in attempts),
              f"deliveries are POSTs to {HOOK_PATH}")
        check(attempts[0].webhook_id == attempts[1].webhook_id and first.webhook_id.startswith("evt_"),
              f"the retry carries the same webhook-id {first.webhook_id}")
        check(first.headers.get("content-type", "").startswith("application/json"),
              f"content-type is application/json (got {first.headers.get('content-type')!r})")
        check(len(first.headers.get("webhook-signature", "").split(" ")) == 1,
              "outside a rotation, webhook-signature holds one signature")
        wrong = random_secret()
        for n, r in enumerate(attempts, 1):
            payload = check_signed(secret, r, f"points.earned attempt {n}", wrong=(wrong,))
        check(payload.get("type") == "points.earned" and payload.get("program_id") == PROGRAM
              and payload["data"].get("customer_id") == customer and payload["data"].get("points") == 120
              and payload["data"].get("amount") == 120 and "timestamp" in payload,
              f"points.earned body: type, program, customer, points 120 ({first.body.decode()})")

        # Tampering: the library must refuse each.
        tampered = first.body.replace(b'"points":120', b'"points":121')
        check(tampered != first.body, "the body can be tampered with (points 120 -> 121)")
        err = raises_verification_error(lambda: verifies(secret, first, body=tampered))
        check(err is not None, f"a tampered body does not verify ({err})")
        err = raises_verification_error(lambda: verifies(secret, first, body=first.body + b" "))
        check(err is not None, f"a body with one byte more (equal JSON) does not verify ({err})")
        other_id = dict(first.headers, **{"webhook-id": "evt_" + uuid.uuid4().hex})
        err = raises_verification_error(lambda: verifies(secret, first, headers=other_id))
        check(err is not None, f"another webhook-id does not verify ({err})")
        other_time = dict(first.headers, **{"webhook-timestamp": str(int(first.headers["webhook-timestamp"]) + 1)})
        err = raises_verification_error(lambda: verifies(secret, first, headers=other_time))
        check(err is not None, f"another webhook-timestamp does not verify ({err})")

        spend_tx = spend(program_id=PROGRAM, customer_id=customer, points=20, reason="reward",
                         idempotency_key=uuid.uuid4().hex).transaction_id
        spent = wait_until(f"the delivery of points.spent {spend_tx}", lambda: receiver.delivered(spend_tx))
        payload = check_signed(secret, spent, "points.spent", wrong=(wrong,))
        check(payload.get("type") == "points.spent" and payload["data"].get("points") == -20
              and payload["data"].get("amount") == 20 and spent.webhook_id != first.webhook_id,
              f"points.spent body: type, points -20, amount 20, its own webhook-id ({spent.body.decode()})")

        for r, n in ((first, 2), (spent, 1)):
            # The outcome is written just after the answer: asked until it is.
            d = wait_until(f"ListDeliveries shows {r.webhook_id} DELIVERED",
                           lambda: (lambda d: d if d is not None and d.state == delivered else None)(
                               deliveries(event_id=r.webhook_id).get(r.webhook_id)))
            check(len(d.attempts) == n and [a.status_code for a in d.attempts][-1] == 200
                  and d.payload.encode() == r.body and d.event_type == r.json["type"],
                  f"ListDeliveries: {r.webhook_id} DELIVERED after {n} attempt(s) "
                  f"{[a.status_code for a in d.attempts]}, payload = the body received")

        # ------------------------------------------------ 2. rotation with an overlap
        old_secret = secret
        rotated = webhooks_api("RotateSecret")(program_id=PROGRAM, subscription_id=sub.subscription_id,
                                               overlap_seconds=OVERLAP_S, idempotency_key=uuid.uuid4().hex)
        new_secret = rotated.secret
        until = rotated.subscription.previous_secret_until.seconds
        check(new_secret.startswith("whsec_") and new_secret != old_secret,
              "RotateSecret -> a new whsec_ secret")
        check(abs(until - (time.time() + OVERLAP_S)) < 120,
              f"previous_secret_until is {OVERLAP_S} s from now (got {until - time.time():.0f} s)")
        rotation_tx = earned(customer, 30)
        during = wait_until(f"the delivery of points.earned {rotation_tx} during the overlap",
                            lambda: receiver.delivered(rotation_tx))
        parts = during.headers.get("webhook-signature", "").split(" ")
        check(len(parts) == 2 and all(p.startswith("v1,") for p in parts),
              f"during the overlap webhook-signature holds two v1 signatures ({len(parts)})")
        check_signed(old_secret, during, "during the overlap, with the OLD secret", wrong=(wrong,))
        check_signed(new_secret, during, "during the overlap, with the NEW secret")
        # Each secret signs exactly one of the two, checked one signature at a time.
        by = []
        for part in parts:
            alone = dict(during.headers, **{"webhook-signature": part})
            by.append({name for name, s in (("old", old_secret), ("new", new_secret))
                       if raises_verification_error(lambda: verifies(s, during, headers=alone)) is None})
        check(sorted(map(sorted, by)) == [["new"], ["old"]],
              f"one signature is the old secret's, the other the new one's ({by})")

        # ------------------------------------------------ 3. killed while deliveries are pending
        receiver.otherwise(503)
        waiting = [earned(f"k-{uuid.uuid4().hex[:10]}", 10 + i) for i in range(4)]
        wait_until("a first attempt (answered 503) of each of 4 events",
                   lambda: all(any(r.answer == 503 for r in receiver.of(tx)) for tx in waiting))
        check(True, f"4 events answered 503, waiting for their retry: {', '.join(waiting)}")
        receiver.otherwise("hold")
        in_flight = [earned(f"h-{uuid.uuid4().hex[:10]}", 50 + i) for i in range(2)]
        wait_until("an attempt of each of 2 more events, held by the receiver",
                   lambda: all(receiver.of(tx) for tx in in_flight))
        check(True, f"2 events in flight, their requests held unanswered: {', '.join(in_flight)}")
        events = waiting + in_flight
        ids = {tx: receiver.of(tx)[0].webhook_id for tx in events}
        listed = deliveries(state=pending)
        check(all(ids[tx] in listed for tx in events), "ListDeliveries: all 6 are PENDING")
        code = webhooks.kill9()
        check(code == -signal.SIGKILL, f"kill -9 -> loyalty-webhooks died (code {code})")
        webhooks_channel.close()

        receiver.otherwise(200)
        receiver.release()
        restarted_at = time.monotonic()
        webhooks.start()
        webhooks_channel = grpc.insecure_channel(webhooks.target)
        webhooks.wait_serving(webhooks_channel)
        check(True, f"loyalty-webhooks started again on the same database (pid {webhooks.proc.pid})")
        list_deliveries = webhooks_api("ListDeliveries", channel=webhooks_channel)
        for tx in events:
            got = wait_until(f"the delivery of {tx} after the restart", lambda: receiver.delivered(tx))
            all_of = receiver.of(tx)
            check(len(all_of) >= 2 and {r.webhook_id for r in all_of} == {ids[tx]},
                  f"{tx}: {len(all_of)} attempts, all with webhook-id {ids[tx]}, the last answered 200")
            for r in all_of:
                verifies(new_secret, r)
                verifies(old_secret, r)
            check(True, f"{tx}: every attempt verifies with the library (new and old secret)")
            check(got.at > restarted_at and got.json["data"]["transaction_id"] == tx,
                  f"{tx}: the attempt answered 200 is its own event, made after the restart")
        check(len(set(ids.values())) == len(events), "6 events, 6 distinct webhook-ids")
        wait_until("ListDeliveries shows all 6 DELIVERED",
                   lambda: (lambda listed: all(ids[tx] in listed and listed[ids[tx]].state == delivered
                                               for tx in events))(deliveries()))
        check(True, "ListDeliveries: all 6 DELIVERED")

        # Nothing arrived that is not one of our events, and nothing twice under two ids.
        known = {earn_tx, spend_tx, rotation_tx, *events}
        everything = receiver.received()
        check(all(r.transaction_id in known and r.method == "POST" and r.path == HOOK_PATH for r in everything),
              f"all {len(everything)} requests received are deliveries of our {len(known)} events")
        by_tx = {}
        for r in everything:
            by_tx.setdefault(r.transaction_id, set()).add(r.webhook_id)
        check(all(len(v) == 1 for v in by_tx.values()), "each event arrived under one webhook-id only")

        # ------------------------------------------------ 4. every event type of the ledger, as its schema says
        every = webhooks_api("CreateSubscription")(program_id=PROGRAM, url=receiver.url(EVERY_PATH), event_types=[],
                                                   description="py webhooks_test: every type",
                                                   idempotency_key=uuid.uuid4().hex)
        every_secret = every.secret
        check(list(every.subscription.event_types) == [],
              f"CreateSubscription {every.subscription.subscription_id}: every event type, to {EVERY_PATH}")
        earn_for_order = Method(points_channel, points_pool, POINTS_SERVICE, "EarnForOrder", server_key)
        refund_order = Method(points_channel, points_pool, POINTS_SERVICE, "RefundOrder", server_key)
        activate = Method(points_channel, points_pool, POINTS_SERVICE, "ActivatePending", server_key)
        reverse = Method(points_channel, points_pool, POINTS_SERVICE, "Reverse", server_key)
        restore = Method(points_channel, points_pool, POINTS_SERVICE, "RestoreSpend", server_key)
        balance = Method(points_channel, points_pool, POINTS_SERVICE, "GetBalance", server_key)
        adjust = Method(points_channel, points_pool, POINTS_SERVICE, "Adjust", admin_key)
        who = f"s-{uuid.uuid4().hex[:10]}"
        order_id = f"o-{uuid.uuid4().hex[:10]}"
        now = time.time()

        def key():
            return uuid.uuid4().hex

        order_earn = earn_for_order(program_id=PROGRAM, customer_id=who, order_id=order_id, amount_minor=12345,
                                    currency="EUR")
        refund = refund_order(program_id=PROGRAM, order_id=order_id, refunded_amount_minor=5000, idempotency_key=key())
        pending_tx = earn(program_id=PROGRAM, customer_id=who, points=40, reason="order", idempotency_key=key(),
                          pending_until=earn.timestamp("pending_until", now + 3600),
                          expires_at=earn.timestamp("expires_at", now + 7200)).transaction_id
        activated = activate(program_id=PROGRAM, customer_id=who, earn_transaction_id=pending_tx,
                             idempotency_key=key())
        reversal = reverse(program_id=PROGRAM, original_transaction_id=pending_tx, points=10, idempotency_key=key(),
                           reason="goodwill reversal")
        added_tx = adjust(program_id=PROGRAM, customer_id=who, points=25, reason="goodwill", idempotency_key=key(),
                          expires_at=adjust.timestamp("expires_at", now + 86400)).transaction_id
        taken_tx = adjust(program_id=PROGRAM, customer_id=who, points=-5, reason="correction",
                          idempotency_key=key()).transaction_id
        spend_tx = spend(program_id=PROGRAM, customer_id=who, points=15, reason="reward",
                         idempotency_key=key()).transaction_id
        restored = restore(program_id=PROGRAM, spend_transaction_id=spend_tx, idempotency_key=key(),
                           reason="voucher cancelled")
        expiring_at = time.time() + 3
        short_tx = earn(program_id=PROGRAM, customer_id=who, points=7, reason="short-lived", idempotency_key=key(),
                        expires_at=earn.timestamp("expires_at", expiring_at)).transaction_id
        check(order_earn.transaction_id and refund.transaction_id and activated.transaction_ids
              and reversal.transaction_id and restored.transaction_id,
              f"{who}: an order earn ({order_earn.points} points) and its refund, a pending earn activated and "
              f"partly reversed, two adjustments, a spend given back, and 7 points expiring in 3 s")

        def to_every(event_type, **data):
            """The delivery to EVERY_PATH, answered 200, of the `event_type` event whose data has `data`."""
            return receiver.event(EVERY_PATH, event_type, **data)

        def expired():
            if time.time() > expiring_at + 0.5:
                balance(program_id=PROGRAM, customer_id=who)  # settles the account: the lot expires
            return to_every("points.expired", customer_id=who, related_transaction_id=short_tx)

        expected = [
            ("points.earned, an order's", lambda: to_every("points.earned", transaction_id=order_earn.transaction_id),
             {"order_id": order_id, "order_amount_minor": 12345, "amount": order_earn.points,
              "points": order_earn.points, "pending_points": 0, "base_points": order_earn.points}),
            ("points.reversed, a refund's", lambda: to_every("points.reversed", transaction_id=refund.transaction_id),
             {"order_id": order_id, "order_amount_minor": 5000, "related_transaction_id": order_earn.transaction_id}),
            ("points.earned, pending", lambda: to_every("points.earned", transaction_id=pending_tx),
             {"points": 0, "pending_points": 40, "amount": 40}),
            ("points.activated", lambda: to_every("points.activated", transaction_id=activated.transaction_ids[0]),
             {"points": 40, "pending_points": -40, "amount": 40, "related_transaction_id": pending_tx}),
            ("points.reversed", lambda: to_every("points.reversed", transaction_id=reversal.transaction_id),
             {"points": -10, "pending_points": 0, "amount": 10, "related_transaction_id": pending_tx}),
            ("points.adjusted, positive", lambda: to_every("points.adjusted", transaction_id=added_tx),
             {"points": 25, "amount": 25, "reason": "goodwill"}),
            ("points.adjusted, negative", lambda: to_every("points.adjusted", transaction_id=taken_tx),
             {"points": -5, "reason": "correction"}),
            ("points.spent", lambda: to_every("points.spent", transaction_id=spend_tx),
             {"points": -15, "amount": 15}),
            ("points.restored", lambda: to_every("points.restored", transaction_id=restored.transaction_id),
             {"points": 15, "amount": 15, "related_transaction_id": spend_tx}),
            ("points.expired", expired, {"points": -7, "amount": 7}),
        ]
        for what, probe, fields in expected:
            got = wait_until(f"the delivery of {what} to {EVERY_PATH}", probe)
            payload = check_signed(every_secret, got, what)
            data = payload["data"]
            check(data.get("customer_id") == who and all(data.get(k) == v for k, v in fields.items()),
                  f"{what}: {', '.join(f'{k} {v}' for k, v in fields.items())} ({got.body.decode()})")
        # What the ledger's contract leaves to the reader, shown rather than asserted.
        negative = to_every("points.adjusted", transaction_id=taken_tx).json["data"]
        print(f"note: a negative adjustment carries amount {negative['amount']} with points {negative['points']} "
              f"(LedgerEntry.amount says `adjusted (signed)`)", flush=True)
        pending = to_every("points.earned", transaction_id=pending_tx).json["data"]
        check("pending_until" in pending and "expires_at" in pending,
              "points.earned, pending: pending_until and expires_at given")
        adjusted = to_every("points.adjusted", transaction_id=added_tx).json["data"]
        check("expires_at" in adjusted, "points.adjusted, positive: expires_at given")
        gone = expired().json["data"]
        check("expires_at" in gone and instant(gone["expires_at"]) <= instant(gone["created_at"]),
              f"points.expired: expires_at {gone['expires_at']} given, at or before created_at {gone['created_at']}")
        if "points.expiring_soon" in types:
            # The +25 adjustment's lot, expiring in a day, is never drawn from (the pending earn's expires sooner):
            # its reminder, within the default 14 days, says 25 whenever the job runs.
            reminded = wait_until("the points.expiring_soon reminder of the +25 adjustment's lot",
                                  lambda: to_every("points.expiring_soon", customer_id=who,
                                                   expires_at=adjusted["expires_at"]))
            payload = check_signed(every_secret, reminded, "points.expiring_soon")
            check(payload["data"]["points"] == 25 and payload["data"]["reminder_days"] == 14,
                  f"points.expiring_soon: 25 points expiring at {adjusted['expires_at']}, reminded 14 days ahead "
                  f"({reminded.body.decode()})")
        reminders = [r.json["data"] for r in receiver.received() if r.path == EVERY_PATH
                     and isinstance(r.json, dict) and r.json.get("type") == "points.expiring_soon"]
        print(f"note: {len(reminders)} points.expiring_soon delivery(ies): {json.dumps(reminders)}", flush=True)
        ledger_types = {t for t in event_types_of_lib_rs() if t.startswith("points.") and t not in ("points.expiring_soon", "points.statement")}
        seen = {r.json["type"] for r in receiver.received() if r.path == EVERY_PATH and isinstance(r.json, dict)}
        check(ledger_types <= seen, f"{EVERY_PATH} received every event type the ledger makes ({sorted(ledger_types)})")

        # ------------------------------------------------ 5. tiers and rewards, through the gateway's HTTP API
        # Started now that the webhooks service has its last address (section 3 started it again elsewhere).
        gateway.base_env.update(POINTS_ADDR=points.target, TIERS_ADDR=tiers.target, REWARDS_ADDR=rewards.target,
                                WEBHOOKS_ADDR=webhooks.target)
        gateway.start()
        gateway.wait_ready_http()
        check(True, f"loyalty-gateway ready (pid {gateway.proc.pid}) on http://{gateway.target}, in front of points, "
                    f"tiers, rewards and webhooks")
        base = f"http://{gateway.target}"

        def api(method, path, key=admin_key, body=None):
            """The JSON answer of a request to the gateway that must succeed (200)."""
            status, answer, raw = http_call(base, method, path, key, body)
            if status != 200:
                raise AssertionError(f"{method} {path} -> {status}, not 200: {raw.decode(errors='replace')}")
            return answer

        offered = {t["name"] for t in api("GET", "/v1/webhooks/event-types")["event_types"]}
        check(set(OUTBOX_TYPES) <= offered, f"GET /v1/webhooks/event-types offers {', '.join(OUTBOX_TYPES)}")
        created = api("POST", "/v1/webhooks/subscriptions",
                      body={"url": receiver.url(OUTBOX_PATH), "event_types": OUTBOX_TYPES,
                            "description": "py webhooks_test: tiers and rewards"})
        shop_secret = created["secret"]
        check(sorted(created["subscription"]["event_types"]) == sorted(OUTBOX_TYPES)
              and created["subscription"]["status"] == "enabled" and shop_secret.startswith("whsec_"),
              f"POST /v1/webhooks/subscriptions -> {created['subscription']['subscription_id']}, for "
              f"{', '.join(OUTBOX_TYPES)} to {OUTBOX_PATH}, with a whsec_ secret")

        # Thresholds no customer of the sections above reaches: only this section's member moves.
        ladder = api("PUT", "/v1/tiers/ladder", body={
            "tiers": [{"tier_id": "silver", "name": "Silver", "threshold": 500, "multiplier_bp": 10000},
                      {"tier_id": "gold", "name": "Gold", "threshold": 1000, "multiplier_bp": 10000}],
            "window": {"kind": "lifetime"},
            "downgrade": {"kind": "immediate"},
        })
        check([t["tier_id"] for t in ladder["tiers"]] == ["silver", "gold"] and ladder["version"] >= 1,
              f"PUT /v1/tiers/ladder: silver at 500, gold at 1000 qualifying points (version {ladder['version']})")
        reward = api("POST", "/v1/rewards", body={"name": "Free shipping", "kind": "free_shipping",
                                                  "point_cost": 300, "minimum_tier_id": "gold"})
        reward_id = reward["reward_id"]
        check(reward_id and reward["point_cost"] == 300 and reward.get("minimum_tier_id") == "gold",
              f"POST /v1/rewards -> {reward_id}: free shipping for 300 points, gold members and up")

        member = f"t-{uuid.uuid4().hex[:10]}"

        def to_shop(event_type, **data):
            return receiver.event(OUTBOX_PATH, event_type, **data)

        def order(amount_minor):
            order_id = f"o-{uuid.uuid4().hex[:10]}"
            earned = api("POST", "/v1/orders", key=server_key,
                         body={"customer_id": member, "order_id": order_id, "amount_minor": amount_minor,
                               "currency": "EUR"})
            check(earned["points"] == amount_minor // 100 and earned.get("transaction_id"),
                  f"POST /v1/orders {order_id}: {amount_minor / 100:.2f} EUR earns {member} {earned['points']} points")
            return earned

        def redeem():
            return http_call(base, "POST", f"/v1/customers/{member}/redemptions", server_key, {"reward_id": reward_id})

        # Past the first threshold: from no tier up to silver.
        order(60000)
        got = wait_until(f"tier.upgraded of {member} to silver at {OUTBOX_PATH}",
                         lambda: to_shop("tier.upgraded", customer_id=member, to_tier_id="silver"))
        to_silver = check_signed(shop_secret, got, "tier.upgraded to silver", wrong=(every_secret,))["data"]
        check(to_silver["reason"] == "threshold" and "from_tier_id" not in to_silver
              and to_silver.get("to_tier_name") == "Silver",
              f"tier.upgraded: from no tier to silver, reason threshold ({got.body.decode()})")
        status, problem, raw = redeem()
        check(status == 409 and isinstance(problem, dict) and problem.get("code") == "TIER_TOO_LOW",
              f"a silver member cannot redeem a gold reward: 409 TIER_TOO_LOW (got {status}: {raw[:200]!r})")

        # Past the second: silver up to gold.
        order(50000)
        got = wait_until(f"tier.upgraded of {member} to gold at {OUTBOX_PATH}",
                         lambda: to_shop("tier.upgraded", customer_id=member, to_tier_id="gold"))
        to_gold = check_signed(shop_secret, got, "tier.upgraded to gold", wrong=(every_secret,))["data"]
        check(to_gold["reason"] == "threshold" and to_gold.get("from_tier_id") == "silver"
              and to_gold.get("from_tier_name") == "Silver" and to_gold.get("to_tier_name") == "Gold"
              and to_gold["change_id"] > to_silver["change_id"],
              f"tier.upgraded: silver to gold, reason threshold, change_id {to_gold['change_id']} > "
              f"{to_silver['change_id']} ({got.body.decode()})")
        membership = api("GET", f"/v1/customers/{member}/tier")
        check(membership.get("tier_id") == "gold" and membership["qualifying_points"] == 1100,
              f"GET /v1/customers/{member}/tier: gold, 1100 qualifying points")

        # A reward redeemed, its voucher used at checkout.
        status, first, raw = redeem()
        check(status == 200 and first["status"] in ("active", "pending") and first["points_spent"] == 300,
              f"POST /v1/customers/{member}/redemptions -> {first.get('redemption_id')}, {first.get('status')}, "
              f"300 points (got {status}: {raw[:300]!r})")
        got = wait_until(f"reward.redeemed of {first['redemption_id']} at {OUTBOX_PATH}",
                         lambda: to_shop("reward.redeemed", redemption_id=first["redemption_id"]))
        redeemed = check_signed(shop_secret, got, "reward.redeemed", wrong=(every_secret,))["data"]
        code = redeemed["voucher_code"]
        check(redeemed["customer_id"] == member and redeemed["reward_id"] == reward_id
              and redeemed["reward_name"] == "Free shipping" and redeemed["points"] == 300
              and (first["status"] != "active" or first.get("voucher_code") == code),
              f"reward.redeemed: {member}, {reward_id}, 300 points, voucher {code} ({got.body.decode()})")
        checkout = f"o-{uuid.uuid4().hex[:10]}"
        used = api("POST", f"/v1/vouchers/{code}/consume", key=server_key, body={"order_id": checkout})
        check(used["status"] == "used" and used["redemption_id"] == first["redemption_id"],
              f"POST /v1/vouchers/{code}/consume for order {checkout}: used")
        got = wait_until(f"voucher.consumed of {first['redemption_id']} at {OUTBOX_PATH}",
                         lambda: to_shop("voucher.consumed", redemption_id=first["redemption_id"]))
        consumed = check_signed(shop_secret, got, "voucher.consumed", wrong=(every_secret,))["data"]
        check(consumed["order_id"] == checkout and consumed["voucher_code"] == code
              and consumed["customer_id"] == member and consumed["redeemed_at"] == redeemed["redeemed_at"],
              f"voucher.consumed: voucher {code}, order {checkout} ({got.body.decode()})")

        # Another redeemed, then cancelled by the shop.
        status, second, raw = redeem()
        check(status == 200 and second["redemption_id"] != first["redemption_id"],
              f"a second redemption -> {second.get('redemption_id')} (got {status}: {raw[:300]!r})")
        got = wait_until(f"reward.redeemed of {second['redemption_id']} at {OUTBOX_PATH}",
                         lambda: to_shop("reward.redeemed", redemption_id=second["redemption_id"]))
        check_signed(shop_secret, got, "reward.redeemed, the second", wrong=(every_secret,))
        cancelled = api("POST", f"/v1/redemptions/{second['redemption_id']}/cancel")
        check(cancelled["status"] == "cancelled", f"POST /v1/redemptions/{second['redemption_id']}/cancel: cancelled")
        got = wait_until(f"redemption.cancelled of {second['redemption_id']} at {OUTBOX_PATH}",
                         lambda: to_shop("redemption.cancelled", redemption_id=second["redemption_id"]))
        gone = check_signed(shop_secret, got, "redemption.cancelled", wrong=(every_secret,))["data"]
        check(gone["customer_id"] == member and gone["points"] == 300 and gone.get("actor")
              and gone["actor"] != "service:rewards" and "reason" not in gone,
              f"redemption.cancelled: 300 points, by a caller ({gone.get('actor')}), no reason ({got.body.decode()})")
        check(gone["actor"].startswith("api-key:"),
              f"redemption.cancelled names the admin key that cancelled through the gateway ({gone['actor']})")

        # The shop's subscription got what it asked for, each once; the every-type one got the same events.
        at_shop = [r for r in receiver.received() if r.path == OUTBOX_PATH]
        check(all(r.json["type"] in OUTBOX_TYPES and r.json["data"]["customer_id"] == member for r in at_shop)
              and len({r.webhook_id for r in at_shop}) == len(at_shop),
              f"{OUTBOX_PATH} received only its types, only of {member}, each webhook-id once "
              f"({len(at_shop)} deliveries)")
        outbox_events = [("tier.upgraded", {"to_tier_id": "silver"}), ("tier.upgraded", {"to_tier_id": "gold"}),
                         ("reward.redeemed", {"redemption_id": first["redemption_id"]}),
                         ("voucher.consumed", {"redemption_id": first["redemption_id"]}),
                         ("reward.redeemed", {"redemption_id": second["redemption_id"]}),
                         ("redemption.cancelled", {"redemption_id": second["redemption_id"]})]
        for event_type, data in outbox_events:
            got = wait_until(f"{event_type} {data} at {EVERY_PATH}",
                             lambda: to_every(event_type, customer_id=member, **data))
            verifies(every_secret, got)
        check(True, f"{EVERY_PATH} (every type) received the same 6 events, each verifying with its own secret")

        # Every body that arrived, at any path, attempts of any answer included, matches its type's schema.
        everything = receiver.received()
        counts = {}
        for r in everything:
            SCHEMAS.check(r)
            counts[r.json["type"]] = counts.get(r.json["type"], 0) + 1
        check(True, f"all {len(everything)} bodies received match the schema of their type: "
                    + ", ".join(f"{t} x{n}" for t, n in sorted(counts.items())))
    finally:
        points_channel.close()
        webhooks_channel.close()
        tiers_channel.close()
        rewards_channel.close()

    # The callers first, then what they call.
    for service in (gateway, webhooks, rewards, tiers, points):
        code, took = service.terminate()
        check(code == 0, f"SIGTERM -> loyalty-{service.name} exited with code {code} after {took:.2f}s")


def main():
    # Where cargo put them: $CARGO_TARGET_DIR when set (as for `cargo build`), else the repository's target/.
    target_dir = os.path.abspath(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"))

    def binary(var, name):
        return os.environ.get(var) or os.path.join(target_dir, "debug", name)

    points_bin = binary("LOYALTY_POINTS_BIN", "loyalty-points")
    webhooks_bin = binary("LOYALTY_WEBHOOKS_BIN", "loyalty-webhooks")
    gateway_bin = binary("LOYALTY_GATEWAY_BIN", "loyalty-gateway")
    tiers_bin = binary("LOYALTY_TIERS_BIN", "loyalty-tiers")
    rewards_bin = binary("LOYALTY_REWARDS_BIN", "loyalty-rewards")
    for path, package in ((points_bin, "loyalty-points"), (webhooks_bin, "loyalty-webhooks"),
                          (gateway_bin, "loyalty-gateway"), (tiers_bin, "loyalty-tiers"),
                          (rewards_bin, "loyalty-rewards")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            print(f"webhooks_test: FAIL: binary not found: {path} "
                  f"(build it with `cargo build -p {package}` or set the LOYALTY_*_BIN variable)", file=sys.stderr)
            return 1
    print(f"verifying with standardwebhooks {getattr(standardwebhooks, '__version__', '?')} "
          f"({os.path.dirname(standardwebhooks.__file__)})", flush=True)
    workdir = tempfile.mkdtemp(prefix="loyalty-webhooks.")
    services = []
    receiver = None
    try:
        keys_url = f"sqlite://{os.path.join(workdir, 'keys.db')}"
        admin_key = make_key(gateway_bin, keys_url, "admin")
        server_key = make_key(gateway_bin, keys_url, "server")
        service_secret = uuid.uuid4().hex + uuid.uuid4().hex
        points = Process("points", points_bin, workdir,
                         service_env(workdir, keys_url, service_secret, "points.db"),
                         ("POINTS_GRPC_ADDR", "POINTS_METRICS_ADDR"))
        services.append(points)
        tiers_env = service_env(workdir, keys_url, service_secret, "tiers.db")
        tiers = Process("tiers", tiers_bin, workdir, tiers_env, ("TIERS_GRPC_ADDR", "TIERS_METRICS_ADDR"))
        services.append(tiers)
        rewards_env = service_env(workdir, keys_url, service_secret, "rewards.db")
        # Half-done redemptions settled quickly, should one be answered `pending`.
        rewards_env.update(RECOVERY_INTERVAL_MS="200")
        rewards = Process("rewards", rewards_bin, workdir, rewards_env, ("REWARDS_GRPC_ADDR", "REWARDS_METRICS_ADDR"))
        services.append(rewards)
        receiver = Receiver()
        webhooks_env = service_env(workdir, keys_url, service_secret, "webhooks.db")
        webhooks = Process("webhooks", webhooks_bin, workdir, webhooks_env,
                           ("WEBHOOKS_GRPC_ADDR", "WEBHOOKS_METRICS_ADDR"))
        services.append(webhooks)
        webhooks_env.update(
            WEBHOOKS_ALLOW_HTTP="true",
            WEBHOOKS_ALLOWED_NETWORKS="127.0.0.0/8",
            WEBHOOKS_POLL_INTERVAL_MS="50",
            WEBHOOKS_RETRY_SCHEDULE="1s,1s,1s",
            # Due `points.expiring_soon` reminders looked for every second (where the binary has them): section 4
            # earns points expiring within the default 14 days, so any reminder is checked against its schema too.
            WEBHOOKS_REMINDER_INTERVAL_SECS="1",
            WEBHOOKS_LEASE_SECS="3",
            # The lease must be longer than one attempt's deadline (default 10 s).
            WEBHOOKS_TIMEOUT_MS="2000",
            # The outboxes of tiers and rewards (section 5) asked often.
            WEBHOOKS_OUTBOX_POLL_MS="100",
        )
        # The gateway serves the HTTP API on the same key store (its DATABASE_URL), with the service identity.
        gateway_env = service_env(workdir, keys_url, service_secret, "unused.db")
        gateway_env.update(DATABASE_URL=keys_url, GATEWAY_RATE_LIMIT_PER_SEC="0")
        gateway = Process("gateway", gateway_bin, workdir, gateway_env, ("GATEWAY_HTTP_ADDR", "GATEWAY_METRICS_ADDR"))
        services.append(gateway)
        run(points, webhooks, tiers, rewards, gateway, receiver, admin_key, server_key)
    except Exception as err:  # any failure, expected or not, fails the test
        if isinstance(err, grpc.RpcError):
            err = f"unexpected RPC error {err.code().name}: {err.details()}"
        elif isinstance(err, WebhookVerificationError):
            traceback.print_exc()
            err = f"the Standard Webhooks library refused a delivery: {err}"
        elif not isinstance(err, (AssertionError, ReflectionError)):
            traceback.print_exc()
            err = f"{type(err).__name__}: {err}"
        print(f"not ok {CHECKS + 1} - {err}", file=sys.stderr)
        if receiver is not None:
            print("---- requests received ----", file=sys.stderr)
            for r in receiver.received():
                print(f"{r!r} headers={r.headers} body={r.body[:300]!r}", file=sys.stderr)
        for service in services:
            print(service.log_tail(), file=sys.stderr)
        print("---- end of logs ----", file=sys.stderr)
        print(f"webhooks_test: FAIL after {CHECKS} passed checks: {err}", file=sys.stderr)
        return 1
    finally:
        for service in services:
            service.cleanup()
        if receiver is not None:
            receiver.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"webhooks_test: PASS ({CHECKS} checks)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
