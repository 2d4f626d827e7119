"""The admin listener (issue 4, point 5): GET /health, /status, /metrics and the POST actions
of one gateway, and the load-balancer drain with the real haproxy.

  AdminEndpoints   one gateway (two memcached, `admin:` on loopback): /health 200 "ok", the
                   /status JSON fields, /metrics accepted by `promtool check metrics`, 404 and
                   405 with messages, failover to an unknown site -> 404 naming it, failback
                   when not failed over -> 409, /health 503 "no healthy source: 0/2 local nodes
                   up, no serving peer" with every node down and 200 again when they return,
                   POST /drain -> /health 503 "draining" while connections (old and new) are
                   still served, then SIGTERM exits 0; actions from a non-loopback address ->
                   403 (when this machine has one)
  HaproxyDrain     Debian's haproxy (deploy/haproxy/geogate.cfg, ports replaced) in front of
                   two gateways sharing the same two memcached nodes, under client load;
                   `geogatectl drain` one gateway: its /health says 503, haproxy marks it DOWN
                   and sends every new connection to the other one, the connections it already
                   had are still served; then SIGTERM it.  No client request fails.

Why the load's clients reconnect: haproxy in TCP mode pins a client connection to one
gateway for the connection's life, and a gateway stopping (SIGTERM) closes its idle client
connections.  A client can only learn that an idle connection was closed by using it, so the
clients here do what memcached client libraries do: check the connection before a request,
and retry a request once on a fresh connection when the old one fails before any byte of the
reply arrived (the request was never processed).  The short-lived clients open a new
connection every few requests, which is how haproxy moves load off a drained gateway; the
persistent ones show that a drained gateway keeps serving the connections it has.
"""
import http.client
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import harness

GEOGATECTL = os.path.join(harness.BIN, "geogatectl")
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
PROMTOOL = shutil.which("promtool")
HAPROXY_CFG = os.path.join(harness.ROOT, "deploy", "haproxy", "geogate.cfg")


def http_req(port, method, path, host="127.0.0.1", timeout=5.0, source=None):
    """(status, headers dict (lower-case names), body text)."""
    c = http.client.HTTPConnection(host, port, timeout=timeout,
                                   source_address=(source, 0) if source else None)
    try:
        c.request(method, path, body=b"" if method == "POST" else None)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode("utf-8", "replace")
    finally:
        c.close()


def status_json(port):
    code, _, body = http_req(port, "GET", "/status")
    if code != 200:
        raise AssertionError("GET /status: %d %s" % (code, body))
    return json.loads(body)


def wait_for(cond, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))


def promtool_check(text):
    """(returncode, output) of `promtool check metrics` fed text on stdin."""
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    return r.returncode, r.stdout.decode("utf-8", "replace")


def non_loopback_ipv4():
    """An IPv4 address of this machine that is not loopback, or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.255.255.255", 9))  # no packet is sent: this only picks a route
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


def start_gateway_with_admin(workdir, servers, admin_host="127.0.0.1", threads=2, name="geogate",
                             pool_extra=""):
    admin = harness.free_port()
    extra = pool_extra + "admin: %s:%d\n" % (admin_host, admin)
    cfg, port = harness.write_gateway_config(workdir, servers, threads=threads, extra=extra)
    gw = harness.start_gateway(workdir, cfg, port, name=name)
    gw.admin = admin
    harness.wait_port(admin, proc=gw.p)
    return gw


class MCClient:
    """The memcached ASCII protocol over one TCP connection that reconnects when the server
    closed it between requests (see the module comment).  persistent=False: a new connection
    every `per_conn` requests."""

    def __init__(self, port, persistent=True, per_conn=4, timeout=10.0):
        self.port = port
        self.persistent = persistent
        self.per_conn = per_conn
        self.timeout = timeout
        self.sock = None
        self.buf = b""
        self.used = 0
        self.connects = 0
        self.retries = 0
        self.got_any = False

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.buf = b""

    def _connect(self):
        self.close()
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connects += 1
        self.used = 0

    def _closed_by_server(self):
        r, _, _ = select.select([self.sock], [], [], 0)
        if not r:
            return False
        try:
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\r\n") + 2
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _bytes(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _roundtrip(self, data, read):
        for attempt in (0, 1):
            if (self.sock is None or (not self.persistent and self.used >= self.per_conn)
                    or self._closed_by_server()):
                self._connect()
            self.used += 1
            self.got_any = False
            try:
                self.sock.sendall(data)
                return read()
            except (ConnectionError, OSError):
                self.close()
                if attempt == 0 and not self.got_any:
                    self.retries += 1
                    continue
                raise
        raise AssertionError("unreachable")

    def _read_store(self):
        line = self._line()
        self.got_any = True
        return line

    def _read_get(self):
        """The value (bytes), None for a miss; an error line raises RuntimeError."""
        line = self._line()
        self.got_any = True
        if line == b"END\r\n":
            return None
        m = re.match(rb"VALUE \S+ \d+ (\d+)\r\n$", line)
        if not m:
            raise RuntimeError("get: %r" % line[:200])
        data = self._bytes(int(m.group(1)) + 2)
        end = self._line()
        if data[-2:] != b"\r\n" or end != b"END\r\n":
            raise RuntimeError("get: malformed reply %r %r" % (data[:100], end[:100]))
        return data[:-2]

    def set(self, key, value):
        r = self._roundtrip(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value),
                            self._read_store)
        if r != b"STORED\r\n":
            raise RuntimeError("set %r: %r" % (key, r))

    def get(self, key):
        return self._roundtrip(b"get %s\r\n" % key, self._read_get)


class Worker(threading.Thread):
    """set/get through haproxy until stopped; counts requests and failures."""

    def __init__(self, port, idx, persistent, keys):
        super().__init__(daemon=True)
        self.c = MCClient(port, persistent=persistent)
        self.idx = idx
        self.keys = keys
        self.stop_ev = threading.Event()
        self.ok = 0
        self.failed = 0
        self.errors = []
        self.rng = random.Random(idx)

    def run(self):
        n = 0
        while not self.stop_ev.is_set():
            n += 1
            try:
                k = b"w%d:%d" % (self.idx, n % 50)
                v = b"v%d-%d" % (self.idx, n)
                self.c.set(k, v)
                self.ok += 1
                got = self.c.get(k)
                if got != v:
                    raise RuntimeError("read %r back as %r" % (k, got))
                self.ok += 1
                pk = self.rng.choice(self.keys)
                if self.c.get(pk) != b"pre-" + pk:
                    raise RuntimeError("preloaded %r missing" % pk)
                self.ok += 1
            except Exception as e:  # every failure counts; keep going
                self.failed += 1
                if len(self.errors) < 10:
                    self.errors.append("%.3f %s: %r" % (time.time(), type(e).__name__, e))
                self.c.close()
                time.sleep(0.01)
            time.sleep(0.002)
        self.c.close()


def haproxy_config(text, front, stats_port, sock, gws):
    """deploy/haproxy/geogate.cfg with loopback ports; every replacement must hit."""
    subs = [
        (r"bind 127\.0\.0\.1:11211\b", "bind 127.0.0.1:%d" % front),
        (r"bind 127\.0\.0\.1:8404\b", "bind 127.0.0.1:%d" % stats_port),
        (r"stats socket \S+", "stats socket %s" % sock),
    ]
    for name, (port, admin) in gws.items():
        subs.append((r"server %s \S+ check port \d+" % name,
                     "server %s 127.0.0.1:%d check port %d" % (name, port, admin)))
    for pat, rep in subs:
        text, n = re.subn(pat, rep, text)
        if n != 1:
            raise AssertionError("deploy/haproxy/geogate.cfg changed: %r matched %d times" % (pat, n))
    return text


def haproxy_stat(sock_path):
    """{svname: row} of the backend's servers from `show stat` on the stats socket."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(sock_path)
    try:
        s.sendall(b"show stat\n")
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    lines = out.decode().splitlines()
    head = lines[0].lstrip("# ").split(",")
    rows = {}
    for line in lines[1:]:
        if not line.strip():
            continue
        row = dict(zip(head, line.split(",")))
        if row.get("svname") not in ("FRONTEND", "BACKEND") and row.get("pxname", "").startswith("geogate"):
            rows[row["svname"]] = row
    return rows


class AdminEndpoints(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="geogate-admin-")
        self.mc = [harness.start_memcached() for _ in range(2)]
        self.servers = ["127.0.0.1:%d:1" % m.port for m in self.mc]
        self.gw = start_gateway_with_admin(
            self.tmp.name, self.servers,
            pool_extra="  timeout: 500\n  failure_limit: 2\n  retry_timeout: 300\n")

    def tearDown(self):
        for p in [self.gw] + self.mc:
            try:
                p.stop()
            except Exception:
                pass
        self.tmp.cleanup()

    def test_health_status_metrics(self):
        code, h, body = http_req(self.gw.admin, "GET", "/health")
        self.assertEqual((code, body), (200, "ok"))
        self.assertTrue(h["content-type"].startswith("text/plain"))
        code, _, body = http_req(self.gw.admin, "HEAD", "/health")
        self.assertEqual(code, 200)

        c = socket.create_connection(("127.0.0.1", self.gw.port))
        c.sendall(b"set a 0 0 1\r\nx\r\nget a\r\nget nope\r\n")
        time.sleep(0.2)
        c.close()
        st = status_json(self.gw.admin)
        for k in ("site", "gateway_id", "version", "listen", "admin", "health", "draining", "mode",
                  "peer", "forced", "since_ms", "switches", "local", "nodes", "peers", "warmup",
                  "failover_reads", "counters"):
            self.assertIn(k, st)
        self.assertEqual(st["site"], "test-site")
        self.assertEqual(st["listen"], "127.0.0.1:%d" % self.gw.port)
        self.assertEqual(st["admin"], "127.0.0.1:%d" % self.gw.admin)
        self.assertEqual(st["mode"], "local")
        self.assertEqual(st["health"], {"ok": True, "reason": "ok"})
        self.assertFalse(st["draining"])
        self.assertEqual(st["local"]["nodes"], 2)
        self.assertEqual(st["local"]["nodes_up"], 2)
        self.assertEqual([n["node"] for n in st["nodes"]], [s[:-2] for s in self.servers])
        self.assertTrue(all(n["state"] == "up" for n in st["nodes"]))
        self.assertEqual(st["peers"], [])
        cnt = st["counters"]
        self.assertGreaterEqual(cnt["cmd_get"], 2)
        self.assertGreaterEqual(cnt["get_hits"], 1)
        self.assertGreaterEqual(cnt["get_misses"], 1)
        self.assertGreaterEqual(cnt["cmd_set"], 1)
        self.assertGreaterEqual(cnt["total_connections"], 1)

        code, h, text = http_req(self.gw.admin, "GET", "/metrics")
        self.assertEqual(code, 200)
        self.assertIn("version=0.0.4", h["content-type"])
        rc, out = promtool_check(text)
        self.assertEqual(rc, 0, "promtool check metrics:\n%s\n--- metrics:\n%s" % (out, text))
        self.assertEqual(out.strip(), "", "promtool lint output: %s" % out)
        names = set(re.findall(r"^(geogate_[a-z0-9_]+)", text, re.M))
        self.assertTrue(all(n.startswith("geogate_") for n in re.findall(r"^([a-z_:][a-z0-9_:]*)[ {]", text, re.M)))
        for want in ("geogate_site_mode", "geogate_node_up", "geogate_healthy", "geogate_draining",
                     "geogate_cmd_get_total", "geogate_connections_total",
                     "geogate_warmup_hit_ratio", "geogate_site_mode_switches_total"):
            self.assertIn(want, names)
        self.assertIn('geogate_site_mode{mode="local"} 1', text)
        self.assertIn('geogate_site_mode{mode="failed_over"} 0', text)
        for s in self.servers:
            self.assertIn('geogate_node_up{node="%s"} 1' % s[:-2], text)
        # counters are *_total and typed counter
        for n in re.findall(r"^# TYPE (\S+) counter$", text, re.M):
            self.assertTrue(n.endswith("_total"), n)

    def test_errors_have_messages(self):
        code, _, body = http_req(self.gw.admin, "GET", "/nope")
        self.assertEqual(code, 404)
        self.assertIn("unknown path /nope", body)
        code, h, body = http_req(self.gw.admin, "GET", "/drain")
        self.assertEqual(code, 405)
        self.assertEqual(h.get("allow"), "POST")
        self.assertIn("POST", body)
        for path in ("/failover?to=x", "/failback"):
            code, _, _ = http_req(self.gw.admin, "GET", path)
            self.assertEqual(code, 405, path)
        code, h, body = http_req(self.gw.admin, "POST", "/status")
        self.assertEqual(code, 405)
        self.assertIn("GET", h.get("allow", ""))
        code, _, body = http_req(self.gw.admin, "DELETE", "/health")
        self.assertEqual(code, 405)

        code, _, body = http_req(self.gw.admin, "POST", "/failover?to=nowhere")
        self.assertEqual(code, 404)
        self.assertIn("unknown site 'nowhere'", body)
        code, _, body = http_req(self.gw.admin, "POST", "/failover?site=x")
        self.assertEqual(code, 400)
        self.assertIn("unknown parameter 'site'", body)
        code, _, body = http_req(self.gw.admin, "POST", "/failover?to=")
        self.assertEqual(code, 400)
        code, _, body = http_req(self.gw.admin, "POST", "/failover?to=test-site")
        self.assertEqual(code, 400)
        self.assertIn("own site", body)
        code, _, body = http_req(self.gw.admin, "POST", "/failover")
        self.assertEqual(code, 409)
        self.assertIn("no peer sites", body)
        code, _, body = http_req(self.gw.admin, "POST", "/failback")
        self.assertEqual(code, 409)
        self.assertIn("not failed over", body)
        # a control character in a name never reaches the reply raw
        code, _, body = http_req(self.gw.admin, "POST", "/failover?to=a%0Ab")
        self.assertEqual(code, 404)
        self.assertNotIn("\n", body.rstrip("\n"))
        # still healthy and serving after all that
        self.assertEqual(http_req(self.gw.admin, "GET", "/health")[:3:2], (200, "ok"))
        self.assertEqual(status_json(self.gw.admin)["mode"], "local")

    def test_no_healthy_source(self):
        ports = [m.port for m in self.mc]
        for m in self.mc:
            m.stop()
        c = MCClient(self.gw.port)

        def down():
            for i in range(20):
                try:
                    c.get(b"k%d" % i)
                except Exception:
                    c.close()
            code, _, body = http_req(self.gw.admin, "GET", "/health")
            return (code, body) if code == 503 else None
        code, body = wait_for(down, 15, "/health 503 with every node down", interval=0.1)
        self.assertEqual(body, "no healthy source: 0/2 local nodes up, no serving peer")
        st = status_json(self.gw.admin)
        self.assertEqual(st["local"]["nodes_up"], 0)
        self.assertFalse(st["health"]["ok"])
        text = http_req(self.gw.admin, "GET", "/metrics")[2]
        self.assertIn("geogate_healthy 0", text)
        self.assertEqual(len(re.findall(r'^geogate_node_up\{node="[^"]+"\} 0$', text, re.M)), 2)
        self.assertEqual(promtool_check(text)[0], 0)

        self.mc = [harness.start_memcached(port=p) for p in ports]

        def up():
            try:
                c.get(b"k")
            except Exception:
                c.close()
            return http_req(self.gw.admin, "GET", "/health")[0] == 200
        wait_for(up, 15, "/health 200 once the nodes are back", interval=0.1)
        c.close()

    def test_drain_keeps_serving(self):
        old = MCClient(self.gw.port)
        old.set(b"d", b"1")
        code, _, body = http_req(self.gw.admin, "POST", "/drain")
        self.assertEqual(code, 200)
        self.assertIn("draining", body)
        code, _, body = http_req(self.gw.admin, "GET", "/health")
        self.assertEqual((code, body), (503, "draining"))
        st = status_json(self.gw.admin)
        self.assertTrue(st["draining"])
        self.assertEqual(st["health"], {"ok": False, "reason": "draining"})
        self.assertIn("geogate_draining 1", http_req(self.gw.admin, "GET", "/metrics")[2])
        code, _, body = http_req(self.gw.admin, "POST", "/drain")
        self.assertEqual(code, 200)
        self.assertIn("already", body)
        # the existing connection is served, and so is a new one (the listener stays open:
        # the load balancer, not the gateway, moves new clients away)
        for _ in range(20):
            self.assertEqual(old.get(b"d"), b"1")
        new = MCClient(self.gw.port)
        self.assertEqual(new.get(b"d"), b"1")
        new.close()
        old.close()
        self.assertTrue(self.gw.alive())
        self.gw.signal(signal.SIGTERM)
        self.assertEqual(self.gw.wait(10), 0)

    def test_actions_only_from_loopback(self):
        ip = non_loopback_ipv4()
        if ip is None:
            self.skipTest("no non-loopback IPv4 address on this machine")
        tmp = tempfile.TemporaryDirectory(prefix="geogate-admin-any-")
        gw = start_gateway_with_admin(tmp.name, self.servers, admin_host="0.0.0.0", name="any")
        try:
            code, _, body = http_req(gw.admin, "GET", "/health", host=ip)
            self.assertEqual((code, body), (200, "ok"))
            for path in ("/drain", "/failover?to=x", "/failback"):
                code, _, body = http_req(gw.admin, "POST", path, host=ip)
                self.assertEqual(code, 403, path)
                self.assertIn("loopback", body)
            self.assertEqual(http_req(gw.admin, "GET", "/health")[0], 200)  # not drained
        finally:
            gw.stop()
            tmp.cleanup()


class HaproxyDrain(unittest.TestCase):
    def test_drain_one_gateway_behind_haproxy(self):
        if not os.path.exists(HAPROXY):
            self.skipTest("haproxy is not installed")
        tmp = tempfile.TemporaryDirectory(prefix="geogate-haproxy-")
        procs = []
        workers = []
        try:
            mc = [harness.start_memcached() for _ in range(2)]
            procs += mc
            servers = ["127.0.0.1:%d:1" % m.port for m in mc]
            gws = {}
            for name in ("gw1", "gw2"):
                d = os.path.join(tmp.name, name)
                os.makedirs(d)
                # pool timeout: a loaded 2-CPU test machine must not turn a starved
                # worker into a backend timeout; this test is about the drain.
                gws[name] = start_gateway_with_admin(d, servers, name=name,
                                                     pool_extra="  timeout: 2000\n")
                procs.append(gws[name])
            front, stats_port = harness.free_port(), harness.free_port()
            sock = os.path.join(tmp.name, "haproxy.sock")
            with open(HAPROXY_CFG) as f:
                cfg = haproxy_config(f.read(), front, stats_port, sock,
                                     {n: (g.port, g.admin) for n, g in gws.items()})
            cfg_path = os.path.join(tmp.name, "haproxy.cfg")
            with open(cfg_path, "w") as f:
                f.write(cfg)
            hap = harness.Proc([HAPROXY, "-db", "-f", cfg_path], "haproxy",
                               stderr_path=os.path.join(tmp.name, "haproxy.log"))
            procs.append(hap)
            harness.wait_port(front, proc=hap.p)
            wait_for(lambda: os.path.exists(sock), 5, "haproxy's stats socket")
            wait_for(lambda: all(r["status"] == "UP" for r in haproxy_stat(sock).values())
                     and len(haproxy_stat(sock)) == 2, 10, "both gateways UP in haproxy")

            keys = [b"pre:%d" % i for i in range(200)]
            pre = MCClient(front)
            for k in keys:
                pre.set(k, b"pre-" + k)
            pre.close()

            # Persistent clients first: leastconn spreads them over both gateways.
            for i in range(4):
                workers.append(Worker(front, i, True, keys))
                workers[-1].start()
                time.sleep(0.05)
            for i in range(4, 10):
                workers.append(Worker(front, i, False, keys))
                workers[-1].start()
            time.sleep(2.0)
            st1, st2 = status_json(gws["gw1"].admin), status_json(gws["gw2"].admin)
            self.assertGreater(st1["counters"]["total_connections"], 5, "gw1 took no load")
            self.assertGreater(st2["counters"]["total_connections"], 5, "gw2 took no load")
            pinned = st1["counters"]["curr_connections"]

            t_drain = time.monotonic()
            r = subprocess.run([GEOGATECTL, "--admin", "127.0.0.1:%d" % gws["gw1"].admin, "drain"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(b"draining", r.stdout)
            self.assertEqual(http_req(gws["gw1"].admin, "GET", "/health")[::2], (503, "draining"))
            wait_for(lambda: haproxy_stat(sock)["gw1"]["status"] == "DOWN", 5,
                     "haproxy to mark the drained gateway DOWN")
            t_down = time.monotonic() - t_drain
            row = haproxy_stat(sock)["gw1"]
            self.assertEqual(haproxy_stat(sock)["gw2"]["status"], "UP")
            self.assertIn("503", row.get("last_chk", "") + row.get("check_code", ""))

            time.sleep(0.5)  # connections haproxy opened just before the check failed end
            a1 = status_json(gws["gw1"].admin)["counters"]
            b1 = status_json(gws["gw2"].admin)["counters"]
            time.sleep(2.0)
            a2 = status_json(gws["gw1"].admin)["counters"]
            b2 = status_json(gws["gw2"].admin)["counters"]
            self.assertEqual(a2["total_connections"], a1["total_connections"],
                             "haproxy still sends new connections to the drained gateway")
            self.assertGreater(b2["total_connections"] - b1["total_connections"], 20)
            if pinned > 0:
                # the connections the drained gateway already had are still being served
                self.assertGreater(a2["cmd_get"], a1["cmd_get"])
                self.assertGreaterEqual(a2["curr_connections"], 1)

            t_term = time.time()
            gws["gw1"].signal(signal.SIGTERM)
            self.assertEqual(gws["gw1"].wait(15), 0)
            time.sleep(2.0)  # clients pinned to gw1 reconnect, through haproxy, to gw2
            for w in workers:
                w.stop_ev.set()
            for w in workers:
                w.join(10)
            ok = sum(w.ok for w in workers)
            failed = sum(w.failed for w in workers)
            retries = sum(w.c.retries for w in workers)
            errors = [e for w in workers for e in w.errors]
            print("\nhaproxy drain: %d requests ok, %d failed; gw1 DOWN in haproxy %.2fs after "
                  "drain; %d connections pinned to gw1 at drain; %d stale-connection retries"
                  % (ok, failed, t_down, pinned, retries))
            self.assertEqual(failed, 0, "SIGTERM at %.3f; failed requests: %s\ngw1 log:\n%s\ngw2 log:\n%s"
                             % (t_term, errors, gws["gw1"].log()[-3000:], gws["gw2"].log()[-3000:]))
            self.assertGreater(ok, 1000)
            self.assertEqual(haproxy_stat(sock)["gw2"]["status"], "UP")
            self.assertTrue(gws["gw2"].alive())
        finally:
            for w in workers:
                w.stop_ev.set()
            for p in reversed(procs):
                try:
                    p.stop()
                except Exception:
                    pass
            tmp.cleanup()


if __name__ == "__main__":
    unittest.main()
