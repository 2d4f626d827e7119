"""Operating geogate: `--check`, SIGTERM drain, SIGHUP reload of the pool, connection
and request-size limits.

Every test starts its own site (memcached nodes + geogate) on free loopback ports and
stops it at the end; every socket and every wait is bounded.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SOCK_TIMEOUT = 5.0


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=SOCK_TIMEOUT)


def read_until(s, pred, timeout=SOCK_TIMEOUT):
    """Read until pred(out) or EOF or timeout; returns (out, closed)."""
    out = b""
    deadline = time.time() + timeout
    while not pred(out) and time.time() < deadline:
        s.settimeout(max(0.01, deadline - time.time()))
        try:
            data = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return out, True
        if not data:
            return out, True
        out += data
    return out, False


def ask(s, req, pred):
    s.sendall(req)
    out, _ = read_until(s, pred)
    return out


def is_closed(s, timeout=2.0):
    """True when the peer closes s (EOF or reset) within timeout, without sending more."""
    out, closed = read_until(s, lambda o: False, timeout=timeout)
    return closed, out


def keys_on(port, keys):
    """Which of keys the memcached at port holds."""
    s = connect(port)
    try:
        held = set()
        for start in range(0, len(keys), 200):
            batch = keys[start:start + 200]
            out = ask(s, b"get " + b" ".join(batch) + b"\r\n", lambda o: o.endswith(b"END\r\n"))
            held.update(re.findall(rb"^VALUE (\S+) ", out, re.M))
        return held
    finally:
        s.close()


def set_keys(port, keys, value=b"v"):
    s = connect(port)
    try:
        payload = b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(value), value) for k in keys)
        out = ask(s, payload, lambda o: o.count(b"\r\n") >= len(keys))
        return out
    finally:
        s.close()


class CheckTest(unittest.TestCase):
    """`geogate --config FILE --check`: first error with its line, exit 1; exit 0 if valid."""

    GOOD = ("site: s\nlisten: 127.0.0.1:11999\nthreads: 2\nmax_connections: 100\n"
            "pool:\n  distribution: ketama\n  hash: fnv1a_64\n  servers:\n"
            "    - 127.0.0.1:21211:1\n    - 127.0.0.1:21212:2 node-b\n"
            "  timeout: 250\n  failure_limit: 3\n  retry_timeout: 2000\n")

    # (yaml, line of the first error, a word the message must contain)
    BAD = [
        ("site: s\nlisten: 127.0.0.1:1\nthreads: 0\npool:\n  servers:\n    - 127.0.0.1:1:1\n",
         3, "threads"),
        ("site: s\nlisten: 127.0.0.1:1\npool:\n  servers:\n    - 127.0.0.1:1:1\n"
         "  timeout: abc\n", 6, "timeout"),
        ("site: s\nlisten: 127.0.0.1:1\nbogus_key: 1\npool:\n  servers:\n    - 127.0.0.1:1:1\n",
         3, "bogus_key"),
        ("site: s\nlisten: [127.0.0.1\npool:\n", None, ""),  # YAML syntax: some line
        ("site: s\npool:\n  servers:\n    - 127.0.0.1:1:1\n", None, "listen"),
        ("site: s\nlisten: 127.0.0.1:1\npool:\n  servers:\n    - 127.0.0.1:1:1\n"
         "    - 127.0.0.1:notaport:1\n", 6, "notaport"),
        ("site: s\nlisten: 127.0.0.1:1\npool:\n  hash: sha1\n  servers:\n    - 127.0.0.1:1:1\n",
         4, "hash"),
        ("site: s\nlisten: 127.0.0.1:1\npool:\n  servers: []\n", None, "servers"),
        ("site: s\nlisten: nothing\npool:\n  servers:\n    - 127.0.0.1:1:1\n", 2, "listen"),
        # two errors: only the first (line 3) is reported
        ("site: s\nlisten: 127.0.0.1:1\nthreads: 999\npool:\n  servers:\n    - 127.0.0.1:1:1\n"
         "  failure_limit: x\n", 3, "threads"),
        ("max_connections: -5\nsite: s\nlisten: 127.0.0.1:1\npool:\n  servers:\n"
         "    - 127.0.0.1:1:1\n", 1, "max_connections"),
    ]

    def check(self, text):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "geogate.yml")
            with open(path, "w") as f:
                f.write(text)
            r = subprocess.run([harness.GEOGATE, "--config", path, "--check"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, timeout=10)
            return path, r.returncode, (r.stderr + r.stdout).decode("utf-8", "replace")

    def test_good_config_exits_0(self):
        path, rc, out = self.check(self.GOOD)
        self.assertEqual(rc, 0, out)

    def test_bad_configs_exit_1_with_line(self):
        for text, line, word in self.BAD:
            with self.subTest(config=text):
                path, rc, out = self.check(text)
                self.assertEqual(rc, 1, out)
                lines = [x for x in out.splitlines() if x.strip()]
                self.assertEqual(len(lines), 1, "want exactly the first error:\n" + out)
                m = re.match(r"^(.*):(\d+): (.+)$", lines[0])
                self.assertIsNotNone(m, "no FILE:LINE: message: %r" % lines[0])
                self.assertEqual(m.group(1), path)
                if line is not None:
                    self.assertEqual(int(m.group(2)), line, lines[0])
                self.assertIn(word, m.group(3))

    def test_missing_file(self):
        r = subprocess.run([harness.GEOGATE, "--config", "/nonexistent/geogate.yml", "--check"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, timeout=10)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"/nonexistent/geogate.yml", r.stderr + r.stdout)


class SignalTest(unittest.TestCase):
    def test_sigterm_drains_in_flight_and_exits_0(self):
        """Requests in flight at a node when SIGTERM arrives are answered with their real
        replies; new connections are refused; geogate exits 0 within 5 s."""
        with harness.Site(nodes=2, extra="  timeout: 3000\n") as site:
            keys = [b"drain:%d" % i for i in range(400)]
            set_keys(site.port, keys, b"val")
            slow_node = site.memcached[1]
            slow_keys = sorted(keys_on(slow_node.port, keys))
            self.assertTrue(slow_keys)

            # steady load on other connections while it happens
            stop = threading.Event()
            problems = []

            def load(n):
                try:
                    s = connect(site.port)
                except OSError:
                    return
                f = s.makefile("rb")
                i = 0
                try:
                    while not stop.is_set():
                        k = keys[i % len(keys)]
                        i += 1
                        s.sendall(b"get %s\r\n" % k)
                        line = f.readline()
                        if not line:
                            return  # closed between requests: drained
                        if line != b"VALUE %s 0 3\r\n" % k:
                            problems.append((n, k, line))
                            return
                        rest = f.readline() + f.readline()
                        if rest != b"val\r\nEND\r\n":
                            problems.append((n, k, rest))  # a reply cut in the middle
                            return
                except OSError:
                    pass
                finally:
                    s.close()

            threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(4)]
            for t in threads:
                t.start()
            time.sleep(0.5)

            # freeze a node, put requests in flight to it, then SIGTERM geogate
            client = connect(site.port)
            slow_node.signal(signal.SIGSTOP)
            try:
                req = b"get " + b" ".join(slow_keys[:50]) + b"\r\nset drain:new 0 0 2\r\nhi\r\n"
                client.sendall(req)
                time.sleep(0.3)
                t_term = time.time()
                site.gateway.signal(signal.SIGTERM)
                time.sleep(0.3)
                # while draining, no new client is served
                try:
                    late = connect(site.port)
                    late.sendall(b"version\r\n")
                    out, closed = read_until(late, lambda o: b"\r\n" in o, timeout=1.0)
                    late.close()
                    self.assertFalse(out.startswith(b"VERSION"),
                                     "a new connection was served while draining")
                except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
                    pass
            finally:
                slow_node.signal(signal.SIGCONT)
            want = b"".join(b"VALUE %s 0 3\r\nval\r\n" % k for k in slow_keys[:50]) + \
                b"END\r\nSTORED\r\n"
            out, closed = read_until(client, lambda o: len(o) >= len(want), timeout=5.0)
            client.close()
            self.assertEqual(out, want, "in-flight requests were not answered in full")
            try:
                rc = site.gateway.wait(timeout=max(0.1, 5.0 - (time.time() - t_term)))
            except subprocess.TimeoutExpired:
                self.fail("geogate still running 5 s after SIGTERM:\n" + site.gateway.log()[-2000:])
            stop.set()
            for t in threads:
                t.join(timeout=SOCK_TIMEOUT + 1)
            self.assertEqual(rc, 0, site.gateway.log()[-2000:])
            self.assertEqual(problems, [])

    def test_sigterm_idle_exits_0_fast(self):
        with harness.Site(nodes=1) as site:
            idle = [connect(site.port) for _ in range(20)]
            t0 = time.time()
            site.gateway.signal(signal.SIGTERM)
            rc = site.gateway.wait(timeout=5)
            self.assertEqual(rc, 0)
            self.assertLess(time.time() - t0, 5.0)
            for s in idle:
                closed, _ = is_closed(s, timeout=1.0)
                self.assertTrue(closed)
                s.close()

    def test_sighup_adds_a_node_without_dropping_clients(self):
        with harness.Site(nodes=2, extra="  timeout: 2000\n") as site:
            old = connect(site.port)
            self.assertEqual(ask(old, b"set before 0 0 1\r\nx\r\n", lambda o: o.endswith(b"\r\n")),
                             b"STORED\r\n")
            third = harness.start_memcached()
            site.memcached.append(third)  # stopped with the site
            servers = site.servers + ["127.0.0.1:%d:1" % third.port]
            harness.write_gateway_config(site.dir, servers, port=site.port,
                                         extra="  timeout: 2000\n")
            site.gateway.signal(signal.SIGHUP)

            # new keys reach the third node once the reload is in (bounded wait)
            keys = [b"hup:%d" % i for i in range(600)]
            deadline = time.time() + 5
            while True:
                self.assertEqual(set_keys(site.port, keys), b"STORED\r\n" * len(keys))
                if keys_on(third.port, keys) or time.time() > deadline:
                    break
                time.sleep(0.2)
            # a round written before the reload left copies on the old ring's nodes (keys
            # move, old copies stay, as with any consistent hash): start clean, write once
            for m in site.memcached:
                with socket.create_connection(("127.0.0.1", m.port), timeout=5) as ms:
                    ask(ms, b"flush_all\r\n", lambda o: o.endswith(b"OK\r\n"))
            self.assertEqual(set_keys(site.port, keys), b"STORED\r\n" * len(keys))
            per_node = [len(keys_on(m.port, keys)) for m in site.memcached]
            # every key is on exactly one node; all three nodes hold a share
            self.assertEqual(sum(per_node), len(keys), per_node)
            self.assertTrue(all(n >= len(keys) // 10 for n in per_node), per_node)

            # the connection opened before the reload is the same socket and still served
            out = ask(old, b"get " + b" ".join(keys[:20]) + b"\r\nversion\r\n",
                      lambda o: o.endswith(b"\r\n") and b"VERSION" in o)
            self.assertEqual(out.count(b"VALUE "), 20, out)
            self.assertIn(b"VERSION", out)
            self.assertEqual(ask(old, b"set after 0 0 1\r\ny\r\nget after\r\n",
                                 lambda o: o.endswith(b"END\r\n")),
                             b"STORED\r\nVALUE after 0 1\r\ny\r\nEND\r\n")
            old.close()
            self.assertTrue(site.gateway.alive(), site.gateway.log()[-2000:])

    def test_sighup_with_a_bad_config_keeps_running(self):
        with harness.Site(nodes=1) as site:
            s = connect(site.port)
            with open(site.config, "a") as f:
                f.write("threads: [\n")
            site.gateway.signal(signal.SIGHUP)
            time.sleep(0.5)
            self.assertTrue(site.gateway.alive())
            self.assertEqual(ask(s, b"set k 0 0 1\r\nx\r\nget k\r\n",
                                 lambda o: o.endswith(b"END\r\n")),
                             b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n")
            s.close()


class LimitsTest(unittest.TestCase):
    def test_max_connections(self):
        n = 5
        with harness.Site(nodes=1, extra="max_connections: %d\n" % n) as site:
            # the harness's own probe connection must be gone before we count
            time.sleep(0.3)
            conns = []
            for _ in range(n):  # all established and served
                s = connect(site.port)
                self.addCleanup(s.close)
                conns.append(s)
                self.assertEqual(ask(s, b"version\r\n", lambda o: o.endswith(b"\r\n"))[:8],
                                 b"VERSION ")
            extra = connect(site.port)
            self.addCleanup(extra.close)
            out, closed = read_until(extra, lambda o: False, timeout=2.0)
            extra.close()
            self.assertTrue(closed, "connection %d was not closed: %r" % (n + 1, out))
            # a clear error line: geogate's own SERVER_ERROR, or memcached's exact
            # "ERROR Too many open connections"
            self.assertRegex(out, rb"^(SERVER_ERROR [^\r\n]+|ERROR Too many open connections)"
                                  rb"\r\n$")
            for s in conns:  # earlier ones unaffected
                self.assertEqual(ask(s, b"set a 0 0 1\r\nx\r\nget a\r\n",
                                     lambda o: o.endswith(b"END\r\n")),
                                 b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n")
            # a freed slot can be used again
            conns.pop().close()
            deadline = time.time() + 3
            while True:
                s = connect(site.port)
                out = ask(s, b"version\r\n", lambda o: o.endswith(b"\r\n"))
                s.close()
                if out.startswith(b"VERSION ") or time.time() > deadline:
                    break
                time.sleep(0.1)
            self.assertTrue(out.startswith(b"VERSION "), out)
            for s in conns:
                s.close()

    def test_overlong_lines(self):
        with harness.Site(nodes=1, extra="max_request_bytes: 4096\n") as site:
            # a non-get line over 2048 bytes without a newline: closed, like memcached
            s = connect(site.port)
            s.sendall(b"set " + b"k" * 3000)
            closed, out = is_closed(s)
            s.close()
            self.assertTrue(closed)
            self.assertEqual(out, b"")
            # a multi-get within max_request_bytes is served
            keys = [b"ol:%04d" % i for i in range(400)]  # ~3200 bytes
            set_keys(site.port, keys[:10])
            s = connect(site.port)
            out = ask(s, b"get " + b" ".join(keys) + b"\r\n", lambda o: o.endswith(b"END\r\n"))
            s.close()
            self.assertEqual(out.count(b"VALUE "), 10)
            # a multi-get line beyond max_request_bytes: a clear error, then closed
            s = connect(site.port)
            s.sendall(b"get " + b" ".join(b"toolong:%05d" % i for i in range(1000)))
            out, closed = read_until(s, lambda o: False, timeout=3.0)
            s.close()
            self.assertTrue(closed)
            self.assertRegex(out, rb"^SERVER_ERROR [^\r\n]+\r\n$")
            self.assertTrue(site.gateway.alive())

    def test_value_over_max_value_bytes(self):
        with harness.Site(nodes=1, extra="max_value_bytes: 2048\n") as site:
            s = connect(site.port)
            out = ask(s, b"set big 0 0 2049\r\n" + b"v" * 2049 + b"\r\nget big\r\n",
                      lambda o: o.endswith(b"END\r\n"))
            self.assertEqual(out, b"SERVER_ERROR object too large for cache\r\nEND\r\n")
            out = ask(s, b"set big 0 0 2048\r\n" + b"w" * 2048 + b"\r\nget big\r\n",
                      lambda o: o.endswith(b"END\r\n"))
            self.assertEqual(out, b"STORED\r\nVALUE big 0 2048\r\n" + b"w" * 2048 + b"\r\nEND\r\n")
            # noreply silences it, the data block is still swallowed
            out = ask(s, b"set big 0 0 5000 noreply\r\n" + b"x" * 5000 + b"\r\nversion\r\n",
                      lambda o: o.endswith(b"\r\n"))
            self.assertTrue(out.startswith(b"VERSION "), out)
            # the default limit is memcached's 1 MiB
            s.close()
        with harness.Site(nodes=1) as site:
            s = connect(site.port)
            n = 1024 * 1024 + 1
            out = ask(s, b"set big 0 0 %d\r\n" % n + b"v" * n + b"\r\nversion\r\n",
                      lambda o: b"VERSION" in o)
            s.close()
            self.assertTrue(out.startswith(b"SERVER_ERROR object too large for cache\r\n"), out)


if __name__ == "__main__":
    unittest.main()
