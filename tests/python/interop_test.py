#!/usr/bin/env python3
"""Interop test: a third-party gRPC client against the loyalty-points server.

Proves that generic gRPC tooling works against our server without any .proto
file: the client (Python grpcio, grpcio-reflection, grpcio-health-checking,
protobuf) learns the API only through the standard server reflection service,
builds its message classes at run time and calls the methods generically.

It starts the server itself:
    LOYALTY_POINTS_BIN (default: target/debug/loyalty-points)
with POINTS_GRPC_ADDR / POINTS_METRICS_ADDR on free 127.0.0.1 ports, a SQLite
database in a temporary directory, no Redis and callers checked as in
production (LOYALTY_AUTH=required): it makes a server-scope API key with
    LOYALTY_GATEWAY_BIN (default: target/debug/loyalty-gateway) keys create
and sends it as `authorization: Bearer` metadata, as an integrator would.
It waits for the standard health service to report SERVING, runs the checks,
then sends SIGTERM and requires a clean exit (code 0) within 10 s.

Run through `tests/run` (which builds the server and the venv), or directly:
    .tools/venv/bin/python tests/python/interop_test.py
Exits 0 and prints `interop_test: PASS ...` when every check passed.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

# Loads the well-known types into the default pool, so that they are at hand
# when the server does not serve them itself.
from google.protobuf import duration_pb2, timestamp_pb2  # noqa: F401
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2 as reflection_v1alpha_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POINTS_SERVICE = "loyalty.points.v1.PointsService"
PROGRAM = "py-interop"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
READY_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 10.0
RPC_TIMEOUT_S = 10.0

CHECKS = 0


def check(cond, what):
    """Asserts `cond` and reports it as one passed check."""
    global CHECKS
    if not cond:
        raise AssertionError(what)
    CHECKS += 1
    print(f"ok {CHECKS} - {what}", flush=True)


# Every port free_ports handed out in this process: the kernel may offer a
# port again once its probe socket is closed, and two services started a
# moment apart must not be given the same one (it happened: two metrics
# listeners on one port, the second service exiting at start).
_HANDED_OUT = set()


def free_ports(n):
    """n free TCP ports on 127.0.0.1, distinct from each other and from
    every port handed out before in this process."""
    socks = []
    ports = []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            port = s.getsockname()[1]
            if port not in _HANDED_OUT:
                ports.append(port)
        _HANDED_OUT.update(ports)
        return ports
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------- reflection


class ReflectionError(Exception):
    def __init__(self, code, message):
        super().__init__(f"reflection error {code}: {message}")
        self.code = code


def v1_reflection_messages():
    """The grpc.reflection.v1 request/response classes.

    grpcio-reflection ships Python classes for v1alpha only. v1 is the same
    file under another package (same messages, same field numbers), so its
    descriptor is derived from the v1alpha one and loaded into its own pool.
    """
    fdp = descriptor_pb2.FileDescriptorProto()
    reflection_v1alpha_pb2.DESCRIPTOR.CopyToProto(fdp)
    old, new = "grpc.reflection.v1alpha", "grpc.reflection.v1"
    assert fdp.package == old, fdp.package
    fdp.name = "grpc/reflection/v1/reflection.proto"
    fdp.package = new

    def rename(type_name):
        prefix = f".{old}."
        return f".{new}." + type_name[len(prefix):] if type_name.startswith(prefix) else type_name

    # (descriptor.proto is proto2: assigning even an empty string would set a
    # field, so only fields that actually change are written.)
    for msg in fdp.message_type:
        for field in msg.field:
            if field.HasField("type_name"):
                field.type_name = rename(field.type_name)
    for svc in fdp.service:
        for method in svc.method:
            method.input_type = rename(method.input_type)
            method.output_type = rename(method.output_type)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(fdp.SerializeToString())
    req = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{new}.ServerReflectionRequest"))
    resp = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{new}.ServerReflectionResponse"))
    return req, resp


class ReflectionClient:
    """A minimal client of one version of the server reflection service."""

    def __init__(self, channel, service, request_cls, response_cls):
        self.service = service
        self._request_cls = request_cls
        self._call = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )

    def ask(self, **request):
        try:
            responses = list(self._call(iter([self._request_cls(**request)]), timeout=RPC_TIMEOUT_S))
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                raise ReflectionError(err.code().value[0], err.details()) from err
            raise AssertionError(
                f"{self.service} {request}: RPC failed {err.code().name}: {err.details()}") from err
        if len(responses) != 1:
            raise AssertionError(f"{self.service}: expected 1 response to {request}, got {len(responses)}")
        response = responses[0]
        if response.HasField("error_response"):
            raise ReflectionError(response.error_response.error_code, response.error_response.error_message)
        return response

    def list_services(self):
        response = self.ask(list_services="")
        return sorted(s.name for s in response.list_services_response.service)

    def _files(self, response):
        return [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in response.file_descriptor_response.file_descriptor_proto
        ]

    def files_containing_symbol(self, symbol):
        return self._files(self.ask(file_containing_symbol=symbol))

    def files_by_name(self, name):
        return self._files(self.ask(file_by_filename=name))


def build_pool(reflection, symbol):
    """A fresh DescriptorPool holding the file that defines `symbol` and all
    its transitive dependencies, fetched through reflection. Well-known types
    the server does not serve are taken from protobuf's own copies.

    Returns (pool, FileDescriptorProto of `symbol`'s file as served,
    {file name: where it came from})."""
    files = {}
    origin = {}
    first = reflection.files_containing_symbol(symbol)
    if not first:
        raise AssertionError(f"reflection returned no file for {symbol}")
    for fdp in first:
        files.setdefault(fdp.name, fdp)
        origin.setdefault(fdp.name, "server")
    root_name = first[0].name

    pending = [root_name]
    seen = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in files:
            try:
                for fdp in reflection.files_by_name(name):
                    files.setdefault(fdp.name, fdp)
                    origin.setdefault(fdp.name, "server")
            except ReflectionError as err:
                if not name.startswith("google/protobuf/"):
                    raise AssertionError(f"server cannot serve dependency {name}: {err}") from err
            if name not in files:
                fdp = descriptor_pb2.FileDescriptorProto()
                descriptor_pool.Default().FindFileByName(name).CopyToProto(fdp)
                files[name] = fdp
                origin[name] = "protobuf runtime (not served)"
        pending.extend(files[name].dependency)

    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(name, stack=()):
        if name in added:
            return
        if name in stack:
            raise AssertionError(f"import cycle through {name}")
        for dep in files[name].dependency:
            add(dep, stack + (name,))
        pool.AddSerializedFile(files[name].SerializeToString())
        added.add(name)

    add(root_name)
    return pool, files[root_name], {n: origin[n] for n in sorted(added)}


class Method:
    """A generic unary call of one method, with message classes built from
    the reflected descriptors."""

    def __init__(self, channel, pool, service, name):
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
        self.metadata = ()

    def with_key(self, key):
        self.metadata = (("authorization", f"Bearer {key}"),)
        return self

    def __call__(self, **fields):
        return self._call(self.Request(**fields), timeout=RPC_TIMEOUT_S, metadata=self.metadata)

    def expect_error(self, code, **fields):
        try:
            response = self(**fields)
        except grpc.RpcError as err:
            check(err.code() == code,
                  f"{self.name} -> {code.name} (got {err.code().name}: {err.details()!r})")
            return err
        raise AssertionError(f"{self.name} {fields} should fail with {code.name}, got {response}")


# --------------------------------------------------------------- server


class Server:
    def __init__(self, binary, gateway_binary, workdir):
        self.grpc_port, self.metrics_port = free_ports(2)
        self.log_path = os.path.join(workdir, "server.log")
        keys_url = f"sqlite://{os.path.join(workdir, 'keys.db')}"
        # The key store is the gateway's database; its CLI makes the key.
        made = subprocess.run(
            [gateway_binary, "keys", "create", "--program", PROGRAM, "--scope", "server", "--label", "interop"],
            env={**os.environ, "DATABASE_URL": keys_url}, capture_output=True, text=True, timeout=60,
        )
        if made.returncode != 0:
            raise AssertionError(f"loyalty-gateway keys create failed: {made.stderr.strip()}")
        self.key = made.stdout.strip()
        env = dict(os.environ)
        env.pop("REDIS_URL", None)
        env.update(
            POINTS_GRPC_ADDR=f"127.0.0.1:{self.grpc_port}",
            POINTS_METRICS_ADDR=f"127.0.0.1:{self.metrics_port}",
            DATABASE_URL=f"sqlite://{os.path.join(workdir, 'points.db')}",
            LOYALTY_AUTH="required",
            KEYS_DATABASE_URL=keys_url,
            LOYALTY_SERVICE_SECRET=uuid.uuid4().hex + uuid.uuid4().hex,
        )
        self._log = open(self.log_path, "wb")
        print(f"starting {binary} (gRPC 127.0.0.1:{self.grpc_port}, "
              f"metrics 127.0.0.1:{self.metrics_port}, {env['DATABASE_URL']})", flush=True)
        self.proc = subprocess.Popen(
            [binary], env=env, cwd=workdir, stdin=subprocess.DEVNULL,
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
                raise AssertionError(f"server exited with code {self.proc.returncode} before it was ready")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as err:
                last = f"{err.code().name}: {err.details()}"
            time.sleep(0.1)
        raise AssertionError(f"server not SERVING within {READY_TIMEOUT_S:.0f}s (last: {last})")

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        try:
            code = self.proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server still running {SHUTDOWN_TIMEOUT_S:.0f}s after SIGTERM") from None
        return code, time.monotonic() - start

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def log_tail(self, lines=60):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------- the test


def run(server):
    channel = grpc.insecure_channel(server.target)
    try:
        server.wait_serving(channel)
        check(True, f"health Check(\"\") is SERVING (pid {server.proc.pid})")

        # Server reflection, both versions.
        req_v1, resp_v1 = v1_reflection_messages()
        v1 = ReflectionClient(channel, REFLECTION_V1, req_v1, resp_v1)
        v1alpha = ReflectionClient(
            channel, REFLECTION_V1ALPHA,
            reflection_v1alpha_pb2.ServerReflectionRequest,
            reflection_v1alpha_pb2.ServerReflectionResponse,
        )
        for client in (v1, v1alpha):
            services = client.list_services()
            for wanted in (POINTS_SERVICE, HEALTH_SERVICE):
                check(wanted in services, f"{client.service} lists {wanted} (all: {services})")

        pool, points_file, origins = build_pool(v1, POINTS_SERVICE)
        check(pool.FindServiceByName(POINTS_SERVICE) is not None,
              f"descriptors of {POINTS_SERVICE} from {points_file.name} via v1 reflection, "
              f"with {', '.join(f'{n} [{o}]' for n, o in origins.items())}")
        alpha_files = {f.name: f for f in v1alpha.files_containing_symbol(POINTS_SERVICE)}
        check(alpha_files.get(points_file.name) == points_file,
              f"v1alpha reflection serves the same {points_file.name}")

        program = PROGRAM
        customer = f"c-{uuid.uuid4().hex[:12]}"
        anonymous = Method(channel, pool, POINTS_SERVICE, "GetBalance")
        anonymous.expect_error(grpc.StatusCode.UNAUTHENTICATED, program_id=program, customer_id=customer)
        forged = Method(channel, pool, POINTS_SERVICE, "GetBalance").with_key(server.key[:-1] + "x")
        forged.expect_error(grpc.StatusCode.UNAUTHENTICATED, program_id=program, customer_id=customer)

        earn = Method(channel, pool, POINTS_SERVICE, "Earn").with_key(server.key)
        spend = Method(channel, pool, POINTS_SERVICE, "Spend").with_key(server.key)
        get_balance = Method(channel, pool, POINTS_SERVICE, "GetBalance").with_key(server.key)
        get_balance.expect_error(grpc.StatusCode.PERMISSION_DENIED, program_id="another-program",
                                 customer_id=customer)
        earn_req = dict(program_id=program, customer_id=customer, points=120,
                        reason="order", idempotency_key=uuid.uuid4().hex)

        first = earn(**earn_req)
        check(first.transaction_id != "", f"Earn 120 -> transaction {first.transaction_id!r}")
        check(first.balance.available == 120,
              f"Earn 120 -> balance.available == 120 (got {first.balance.available})")

        replay = earn(**earn_req)
        check(replay.transaction_id == first.transaction_id,
              f"Earn replay -> same transaction id (got {replay.transaction_id!r})")
        check(replay.balance.available == 120,
              f"Earn replay -> balance.available still 120 (got {replay.balance.available})")

        spent = spend(program_id=program, customer_id=customer, points=20,
                      reason="reward", idempotency_key=uuid.uuid4().hex)
        check(spent.transaction_id not in ("", first.transaction_id),
              f"Spend 20 -> new transaction {spent.transaction_id!r}")
        check(spent.balance.available == 100,
              f"Spend 20 -> balance.available == 100 (got {spent.balance.available})")

        spend.expect_error(grpc.StatusCode.FAILED_PRECONDITION, program_id=program,
                           customer_id=customer, points=1000, reason="reward",
                           idempotency_key=uuid.uuid4().hex)

        bal = get_balance(program_id=program, customer_id=customer).balance
        check((bal.available, bal.spent, bal.lifetime_earned) == (100, 20, 120),
              "GetBalance -> available 100, spent 20, lifetime_earned 120 "
              f"(got {bal.available}, {bal.spent}, {bal.lifetime_earned})")

        earn.expect_error(grpc.StatusCode.INVALID_ARGUMENT, program_id=program, customer_id="",
                          points=5, reason="order", idempotency_key=uuid.uuid4().hex)
    finally:
        channel.close()

    code, took = server.terminate()
    check(code == 0, f"SIGTERM -> server exited with code {code} after {took:.2f}s")


def main():
    binary = os.environ.get("LOYALTY_POINTS_BIN") or os.path.join(ROOT, "target", "debug", "loyalty-points")
    gateway = os.environ.get("LOYALTY_GATEWAY_BIN") or os.path.join(ROOT, "target", "debug", "loyalty-gateway")
    for path, package in ((binary, "loyalty-points"), (gateway, "loyalty-gateway")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            print(f"interop_test: FAIL: binary not found: {path} "
                  f"(build it with `cargo build -p {package}` or set the LOYALTY_*_BIN variable)", file=sys.stderr)
            return 1
    workdir = tempfile.mkdtemp(prefix="loyalty-interop.")
    server = None
    try:
        server = Server(binary, gateway, workdir)
        run(server)
    except Exception as err:  # any failure, expected or not, fails the test
        if isinstance(err, grpc.RpcError):
            err = f"unexpected RPC error {err.code().name}: {err.details()}"
        elif not isinstance(err, (AssertionError, ReflectionError)):
            traceback.print_exc()
            err = f"{type(err).__name__}: {err}"
        print(f"not ok {CHECKS + 1} - {err}", file=sys.stderr)
        if server is not None:
            print(f"---- server log ({server.log_path}), last lines ----", file=sys.stderr)
            print(server.log_tail(), file=sys.stderr)
            print("---- end of server log ----", file=sys.stderr)
        print(f"interop_test: FAIL after {CHECKS} passed checks: {err}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"interop_test: PASS ({CHECKS} checks)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
