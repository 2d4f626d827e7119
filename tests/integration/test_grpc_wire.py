"""The WAN wire protocol as a stock gRPC client sees it: a Python grpcio client (stubs
generated at test time with grpc_tools.protoc from proto/*.proto) talks mutual TLS 1.3 to
wan_testd (tests/tools/wan_testd.c: wan/grpc_server over tls/), with certificates made by
deploy/lab-ca.sh in a temporary directory.

* a batch shipped over the Ship stream is acked; Read and grpc.health.v1.Health/Check answer;
* the five refusals, each with its log line: plaintext, TLS below 1.3, a certificate from
  another CA, an expired certificate, a valid certificate of a site that is not a peer;
* bad input gets the right gRPC status and a log line, and the server lives on: malformed
  protobuf, an oversized message, a batch claiming another origin_site than its
  certificate, an unknown method, a compressed request; unknown fields are skipped
  (proto3 forward compatibility), not refused;
* flow control: a server application that answers BUSY still gets every batch, in order.

wan_testd is taken from $GEOGATE_BIN when the Makefile built it there, else built here
from tests/tools/wan_testd.c and build/libgeogate.a (see the comment in wan_testd.c).
"""
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

from harness import BIN, ROOT, SANITIZED, Proc, free_port

PY = "/usr/bin/python3"
SITE = "us-east"  # the server's site
PEER = "eu-west"  # the one configured peer (the client)
OTHER = "ap-south"  # a valid certificate, but not a configured peer


def pkg_config(*args):
    pkgs = ["libevent", "libevent_pthreads", "libevent_openssl", "openssl", "libnghttp2",
            "libprotobuf-c", "yaml-0.1"]
    return subprocess.run(["pkg-config"] + list(args) + pkgs, check=True, capture_output=True,
                          text=True).stdout.split()


def find_or_build_testd(workdir):
    """bin/wan_testd if the Makefile made it, else compile it against the library."""
    prebuilt = os.path.join(BIN, "wan_testd")
    if os.access(prebuilt, os.X_OK):
        return prebuilt
    lib = os.path.join(ROOT, "build", "san" if SANITIZED else "", "libgeogate.a")
    if not os.path.exists(lib):
        raise unittest.SkipTest("no %s: run make first" % lib)
    out = os.path.join(workdir, "wan_testd")
    flags = ["-O1" if SANITIZED else "-O2", "-g", "-std=gnu11", "-pthread", "-D_GNU_SOURCE",
             "-I" + ROOT]
    if SANITIZED:
        flags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    argv = (["cc"] + flags + pkg_config("--cflags") +
            [os.path.join(ROOT, "tests", "tools", "wan_testd.c"), lib, "-o", out] +
            pkg_config("--libs") + ["-lm", "-pthread"])
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("cannot build wan_testd:\n" + r.stderr)
    return out


def make_stubs(workdir):
    out = os.path.join(workdir, "stubs")
    os.makedirs(out)
    protos = os.path.join(ROOT, "proto")
    subprocess.run([PY, "-m", "grpc_tools.protoc", "-I" + protos, "--python_out=" + out,
                    "--grpc_python_out=" + out,
                    os.path.join(protos, "geogate_wan.proto"),
                    os.path.join(protos, "health.proto")], check=True)
    sys.path.insert(0, out)


def make_certs(workdir):
    certs = os.path.join(workdir, "certs")
    subprocess.run([os.path.join(ROOT, "deploy", "lab-ca.sh"), "--expired", "--other-ca",
                    os.path.join(certs, "other"), certs, SITE, PEER, OTHER], check=True)
    return certs


def read(path):
    with open(path, "rb") as f:
        return f.read()


class Testd:
    """One wan_testd on a free loopback port, its stderr in a file."""

    def __init__(self, exe, certs, workdir, extra=()):
        self.port = free_port()
        self.log_path = os.path.join(workdir, "wan_testd-%d.log" % self.port)
        env = dict(os.environ)
        if SANITIZED:
            env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        self.proc = Proc([exe, "--listen", "127.0.0.1:%d" % self.port,
                          "--ca", os.path.join(certs, "ca.pem"),
                          "--cert", os.path.join(certs, SITE + ".pem"),
                          "--key", os.path.join(certs, SITE + ".key"),
                          "--peer", PEER] + list(extra),
                         "wan_testd:%d" % self.port, stderr_path=self.log_path, env=env)
        deadline = time.time() + 15
        while "wan_testd: ready on port" not in self.proc.log():
            if not self.proc.alive():
                raise RuntimeError("wan_testd exited:\n" + self.proc.log())
            if time.time() > deadline:
                raise TimeoutError("wan_testd not ready:\n" + self.proc.log())
            time.sleep(0.05)

    def log(self):
        return self.proc.log()

    def wait_log(self, text, since=0, timeout=5.0):
        """Wait until text appears in the log after offset `since`; return the log."""
        deadline = time.time() + timeout
        while True:
            log = self.log()
            if text in log[since:]:
                return log
            if time.time() > deadline:
                raise AssertionError("no %r in wan_testd's log:\n%s" % (text, log[since:]))
            time.sleep(0.05)

    def stop(self):
        """SIGTERM; wan_testd frees everything and exits 0 (a sanitizer build fails on leaks)."""
        self.proc.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        finally:
            self.proc.stop()


class GrpcWireTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="geogate-grpc-wire-")
        try:
            make_stubs(cls.tmp)
            cls.certs = make_certs(cls.tmp)
            cls.exe = find_or_build_testd(cls.tmp)
            cls.testd = Testd(cls.exe, cls.certs, cls.tmp)
        except Exception:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise
        global pb, pbg, hpb, hpbg
        import geogate_wan_pb2 as pb
        import geogate_wan_pb2_grpc as pbg
        import health_pb2 as hpb
        import health_pb2_grpc as hpbg

    @classmethod
    def tearDownClass(cls):
        rc = cls.testd.stop()
        log = cls.testd.log()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        if rc != 0:
            raise AssertionError("wan_testd exited with %s:\n%s" % (rc, log[-3000:]))

    # ---- helpers ----

    def channel(self, cert=None, key=None, ca=None, port=None):
        cert = cert or os.path.join(self.certs, PEER + ".pem")
        key = key or os.path.join(self.certs, PEER + ".key")
        ca = ca or os.path.join(self.certs, "ca.pem")
        creds = grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
        ch = grpc.secure_channel("127.0.0.1:%d" % (port or self.testd.port), creds,
                                 options=[("grpc.ssl_target_name_override", SITE)])
        self.addCleanup(ch.close)
        return ch

    def batch(self, first_seq, n, origin=PEER):
        return pb.ShipRequest(origin_site=origin, gateway_id=3, first_seq=first_seq,
                              mutations=[pb.Mutation(key=b"key-%d" % (first_seq + i),
                                                     value=b"value", hlc=1 << 20, flags=7)
                                         for i in range(n)])

    def health(self, ch=None):
        stub = hpbg.HealthStub(ch or self.channel())
        return stub.Check(hpb.HealthCheckRequest(), timeout=5).status

    def assert_alive(self):
        self.assertTrue(self.testd.proc.alive(), self.testd.log())
        self.assertEqual(self.health(), hpb.HealthCheckResponse.SERVING)

    def assert_rpc_error(self, code, fn, detail=None):
        with self.assertRaises(grpc.RpcError) as cm:
            fn()
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        if detail is not None:
            self.assertIn(detail, cm.exception.details())
        return cm.exception

    # ---- the happy path ----

    def test_ship_batches_get_acks(self):
        stub = pbg.ReplicationStub(self.channel())
        batches = [self.batch(1, 10), self.batch(11, 5), self.batch(16, 1)]
        acks = list(stub.Ship(iter(batches), timeout=10))
        self.assertEqual([a.acked_seq for a in acks], [10, 15, 16])
        self.assertEqual(acks[-1].applied, 16)

    def test_ship_last_seq_range(self):
        stub = pbg.ReplicationStub(self.channel())
        req = self.batch(100, 2)
        req.last_seq = 150  # the spool's sequence numbers have holes
        acks = list(stub.Ship(iter([req]), timeout=10))
        self.assertEqual([a.acked_seq for a in acks], [150])

    def test_unknown_fields_are_tolerated(self):
        # Forward compatibility (proto3): a newer peer's extra fields (here field 99, and
        # an unknown field inside a Mutation) are skipped, the batch is applied and acked.
        raw_ship = self.channel().stream_stream("/geogate.wan.v1.Replication/Ship",
                                                response_deserializer=pb.ShipAck.FromString)
        mutation = pb.Mutation(key=b"k", value=b"v").SerializeToString() + b"\xa0\x06\x07"
        req = (pb.ShipRequest(origin_site=PEER, first_seq=500).SerializeToString() +
               b"\x22" + bytes([len(mutation)]) + mutation + b"\x98\x06\x01")
        acks = list(raw_ship(iter([req]), timeout=5))
        self.assertEqual([a.acked_seq for a in acks], [500])

    def test_read(self):
        stub = pbg.ReplicationStub(self.channel())
        resp = stub.Read(pb.ReadRequest(keys=[b"a", b"bb", b"ccc"]), timeout=5)
        self.assertEqual(len(resp.items), 3)
        self.assertTrue(all(not item.found for item in resp.items))

    def test_health(self):
        ch = self.channel()
        self.assertEqual(self.health(ch), hpb.HealthCheckResponse.SERVING)
        stub = hpbg.HealthStub(ch)
        self.assertEqual(
            stub.Check(hpb.HealthCheckRequest(service="geogate.wan.v1.Replication"),
                       timeout=5).status, hpb.HealthCheckResponse.SERVING)
        self.assert_rpc_error(grpc.StatusCode.NOT_FOUND,
                              lambda: stub.Check(hpb.HealthCheckRequest(service="nope"), timeout=5))

    # ---- refusals: each one with its log line ----

    def refused(self, expect_log, attempt):
        since = len(self.testd.log())
        attempt()
        self.testd.wait_log(expect_log, since)
        self.assert_alive()

    def grpc_attempt(self, ch):
        def attempt():
            self.assert_rpc_error(grpc.StatusCode.UNAVAILABLE, lambda: self.health(ch))
        return attempt

    def test_refuse_plaintext(self):
        ch = grpc.insecure_channel("127.0.0.1:%d" % self.testd.port)
        self.addCleanup(ch.close)
        self.refused("refused: plaintext or not TLS", self.grpc_attempt(ch))

    def test_refuse_tls12(self):
        def attempt():
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_verify_locations(os.path.join(self.certs, "ca.pem"))
            ctx.load_cert_chain(os.path.join(self.certs, PEER + ".pem"),
                                os.path.join(self.certs, PEER + ".key"))
            ctx.set_alpn_protocols(["h2"])
            with socket.create_connection(("127.0.0.1", self.testd.port), timeout=5) as s:
                with self.assertRaises(ssl.SSLError):
                    with ctx.wrap_socket(s, server_hostname=SITE) as t:
                        t.recv(1)
        self.refused("refused: TLS version below 1.3", attempt)

    def test_refuse_other_ca(self):
        other = os.path.join(self.certs, "other")
        ch = self.channel(cert=os.path.join(other, PEER + ".pem"),
                          key=os.path.join(other, PEER + ".key"))
        self.refused("refused: certificate from an unknown CA", self.grpc_attempt(ch))

    def test_refuse_expired(self):
        exp = os.path.join(self.certs, "expired")
        ch = self.channel(cert=os.path.join(exp, PEER + ".pem"),
                          key=os.path.join(exp, PEER + ".key"))
        self.refused("refused: certificate expired", self.grpc_attempt(ch))

    def test_refuse_not_a_peer(self):
        ch = self.channel(cert=os.path.join(self.certs, OTHER + ".pem"),
                          key=os.path.join(self.certs, OTHER + ".key"))
        self.refused("refused: certificate names %s, which is not a configured peer" % OTHER,
                     self.grpc_attempt(ch))

    # ---- bad input: a status, a log line, and the server lives on ----

    def bad_input(self, code, detail, log_text, call):
        since = len(self.testd.log())
        self.assert_rpc_error(code, call, detail)
        self.testd.wait_log(log_text, since)
        self.assert_alive()

    def test_bad_malformed_protobuf(self):
        raw_ship = self.channel().stream_stream("/geogate.wan.v1.Replication/Ship")
        self.bad_input(grpc.StatusCode.INVALID_ARGUMENT, "malformed ShipRequest",
                       "malformed ShipRequest (4 bytes): refused with INVALID_ARGUMENT",
                       lambda: list(raw_ship(iter([b"\xff\xff\xff\xff"]), timeout=5)))

    def test_bad_oversized(self):
        raw_ship = self.channel().stream_stream("/geogate.wan.v1.Replication/Ship")
        big = b"\x0a" + b"\x00" * (5 << 20)  # over the 4 MiB default
        self.bad_input(grpc.StatusCode.RESOURCE_EXHAUSTED, "over the limit",
                       "over the limit of 4194304 bytes: refused with RESOURCE_EXHAUSTED",
                       lambda: list(raw_ship(iter([big]), timeout=10)))

    def test_bad_origin_site(self):
        stub = pbg.ReplicationStub(self.channel())
        since = len(self.testd.log())
        self.bad_input(grpc.StatusCode.PERMISSION_DENIED, "origin_site",
                       "ShipRequest claims origin_site '%s' but the certificate names '%s': "
                       "refused with PERMISSION_DENIED" % (OTHER, PEER),
                       lambda: list(stub.Ship(iter([self.batch(1, 3, origin=OTHER)]), timeout=5)))
        # Nothing of it reached the application.
        self.assertNotIn("batch from %s" % OTHER, self.testd.log()[since:])

    def test_bad_unknown_method_and_compression(self):
        ch = self.channel()
        self.assert_rpc_error(grpc.StatusCode.UNIMPLEMENTED,
                              lambda: ch.unary_unary("/geogate.wan.v1.Replication/Nope")(
                                  b"", timeout=5))
        stub = pbg.ReplicationStub(ch)
        self.bad_input(grpc.StatusCode.UNIMPLEMENTED, "gzip", "grpc-encoding 'gzip'",
                       lambda: stub.Read(pb.ReadRequest(keys=[b"a"]), timeout=5,
                                         compression=grpc.Compression.Gzip))
        raw_read = ch.unary_unary("/geogate.wan.v1.Replication/Read")
        self.bad_input(grpc.StatusCode.INVALID_ARGUMENT, "malformed ReadRequest",
                       "malformed ReadRequest", lambda: raw_read(b"\x0a\x09ab", timeout=5))


class GrpcFlowControlTest(unittest.TestCase):
    """A server application that keeps answering BUSY: every batch still arrives, in
    order, because a held batch is offered again and HTTP/2 windows hold the rest back."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="geogate-grpc-flow-")
        try:
            make_stubs(cls.tmp)
            cls.certs = make_certs(cls.tmp)
            cls.exe = find_or_build_testd(cls.tmp)
            cls.testd = Testd(cls.exe, cls.certs, cls.tmp, extra=["--busy-every", "4"])
        except Exception:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise
        global pb, pbg
        import geogate_wan_pb2 as pb
        import geogate_wan_pb2_grpc as pbg

    @classmethod
    def tearDownClass(cls):
        rc = cls.testd.stop()
        log = cls.testd.log()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        if rc != 0:
            raise AssertionError("wan_testd exited with %s:\n%s" % (rc, log[-3000:]))

    def test_busy_server_gets_everything_in_order(self):
        creds = grpc.ssl_channel_credentials(read(os.path.join(self.certs, "ca.pem")),
                                             read(os.path.join(self.certs, PEER + ".key")),
                                             read(os.path.join(self.certs, PEER + ".pem")))
        ch = grpc.secure_channel("127.0.0.1:%d" % self.testd.port, creds,
                                 options=[("grpc.ssl_target_name_override", SITE)])
        self.addCleanup(ch.close)
        stub = pbg.ReplicationStub(ch)
        value = b"v" * 2000
        batches = [pb.ShipRequest(origin_site=PEER, first_seq=1 + 50 * i,
                                  mutations=[pb.Mutation(key=b"k%d" % j, value=value)
                                             for j in range(50)])
                   for i in range(40)]  # 40 x ~100 KB: more than one stream window
        acks = [a.acked_seq for a in stub.Ship(iter(batches), timeout=30)]
        self.assertEqual(acks, [50 * (i + 1) for i in range(40)])
        firsts = [int(line.split("first_seq ")[1].split(",")[0])
                  for line in self.testd.log().splitlines() if "batch from " in line]
        self.assertEqual(firsts, [1 + 50 * i for i in range(40)])


if __name__ == "__main__":
    unittest.main()
