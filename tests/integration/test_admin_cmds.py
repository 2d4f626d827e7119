"""The text protocol's admin commands through geogate, in memcached's shape (issue 16.4).

A two-node site and a reference memcached started by this test.  For each command the
gateway's reply is checked against what memcached itself says (same STAT names for the
settings the gateway maps, parseable STAT lines, END at the end, the same error lines),
and never hangs: every read is bounded by a deadline.  The fan-out commands are checked
against the nodes themselves: stats slabs/items sums equal the sum of each node's own
numbers, metadump lists every key written through the gateway exactly once, and
cache_memlimit changes every node's maxbytes.  python3-memcache's get_stats('settings')
and get_slabs() must return.
"""
import os
import socket
import sys
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

TIMEOUT = 10.0
POOL_EXTRA = "  timeout: 2000\n"
# memcached's final lines: a reply is complete once one of these ends it
FINAL = (b"END\r\n", b"OK\r\n", b"RESET\r\n")


def ask(port, cmd, done=None, timeout=TIMEOUT):
    """Send cmd on a fresh connection; read until done(out) (default: a final line or any
    error line ends the reply), EOF or the deadline.  Returns the bytes."""
    if done is None:
        def done(o):
            if o.endswith(FINAL):
                return True
            last = o.rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
            return o.endswith(b"\r\n") and not last.startswith((b"STAT ", b"key=", b"VALUE "))
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    out = b""
    deadline = time.time() + timeout
    try:
        s.sendall(cmd)
        while not done(out) and time.time() < deadline:
            s.settimeout(max(0.01, deadline - time.time()))
            try:
                data = s.recv(1 << 20)
            except socket.timeout:
                break
            if not data:
                break
            out += data
    finally:
        s.close()
    return out


def stats(port, sub):
    """`stats <sub>` as {name: value}, after checking memcached's shape."""
    out = ask(port, b"stats %s\r\n" % sub)
    if not out.endswith(b"END\r\n"):
        raise AssertionError("stats %r: no END: %r" % (sub, out[-300:]))
    d = {}
    for line in out.split(b"\r\n")[:-2]:
        parts = line.split(b" ", 2)
        if len(parts) != 3 or parts[0] != b"STAT":
            raise AssertionError("stats %r: not a STAT line: %r" % (sub, line))
        d[parts[1].decode()] = parts[2].decode()
    return d


def names_in_order(port, sub):
    out = ask(port, b"stats %s\r\n" % sub)
    return [line.split(b" ")[1].decode() for line in out.split(b"\r\n")[:-2]]


class AdminCommandsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = harness.Site(nodes=2, extra=POOL_EXTRA)
        try:
            cls.ref = harness.start_memcached()
        except Exception:
            cls.site.stop()
            raise
        cls.nodes = [m.port for m in cls.site.memcached]

    @classmethod
    def tearDownClass(cls):
        cls.ref.stop()
        cls.site.stop()

    def setUp(self):
        for port in [self.site.port, self.ref.port]:
            self.assertEqual(ask(port, b"flush_all\r\n"), b"OK\r\n")

    def write_keys(self, n=60, prefix="adm"):
        """n keys of assorted sizes (several slab classes) through the gateway."""
        keys = ["%s:%03d" % (prefix, i) for i in range(n)]
        cmd = b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k.encode(), 20 + 37 * i, b"v" * (20 + 37 * i))
                       for i, k in enumerate(keys))
        out = ask(self.site.port, cmd, done=lambda o: o.count(b"STORED\r\n") == n)
        self.assertEqual(out.count(b"STORED\r\n"), n, out[-200:])
        return keys

    def alive(self):
        self.assertTrue(self.site.gateway.alive(), self.site.gateway.log()[-3000:])

    # ---- the gateway's own

    def test_stats_settings_shape(self):
        got = stats(self.site.port, b"settings")
        want = stats(self.ref.port, b"settings")
        mapped = ["maxconns", "tcpport", "udpport", "num_threads", "item_size_max",
                  "binding_protocol", "cas_enabled", "tcp_backlog", "idle_timeout",
                  "shutdown_command", "flush_enabled", "dump_enabled", "auth_enabled_sasl",
                  "auth_enabled_ascii", "ssl_enabled", "inter"]
        for name in mapped:
            self.assertIn(name, got)
            self.assertIn(name, want, "%s is not a memcached name" % name)
        self.assertEqual(got["tcpport"], str(self.site.port))
        self.assertEqual(got["num_threads"], "2")
        self.assertEqual(got["maxconns"], "10000")
        self.assertEqual(got["item_size_max"], "1048576")
        self.assertEqual(got["binding_protocol"], "ascii")
        self.assertEqual(got["shutdown_command"], "no")

    def test_stats_conns_shape(self):
        held = socket.create_connection(("127.0.0.1", self.site.port), timeout=TIMEOUT)
        try:
            held.sendall(b"version\r\n")
            held.recv(100)
            held_port = "tcp:127.0.0.1:%d" % held.getsockname()[1]
            got = stats(self.site.port, b"conns")
        finally:
            held.close()
        by_id = {}
        for name, value in got.items():
            cid, field = name.split(":", 1)
            by_id.setdefault(cid, {})[field] = value
        listening = [c for c in by_id.values() if c.get("state") == "conn_listening"]
        self.assertEqual(len(listening), 1, got)
        self.assertEqual(listening[0]["addr"], "tcp:127.0.0.1:%d" % self.site.port)
        clients = [c for c in by_id.values() if c.get("state") != "conn_listening"]
        # the asking client and the held one (they may be on different workers)
        self.assertGreaterEqual(len(clients), 2, got)
        self.assertIn(held_port, [c["addr"] for c in clients])
        for c in clients:
            self.assertRegex(c["addr"], r"^tcp:127\.0\.0\.1:\d+$")
            self.assertEqual(c["listen_addr"], "tcp:127.0.0.1:%d" % self.site.port)
            self.assertTrue(c["state"].startswith("conn_"))
            self.assertRegex(c["secs_since_last_cmd"], r"^\d+$")
        self.assertEqual(sorted(set(f for c in clients for f in c)),
                         ["addr", "listen_addr", "secs_since_last_cmd", "state"])

    # ---- sums over the nodes

    def sum_nodes(self, sub):
        total = {}
        for port in self.nodes:
            for k, v in stats(port, sub).items():
                if v.isdigit():
                    total[k] = total.get(k, 0) + int(v)
        return total

    def test_stats_slabs_items_are_sums(self):
        self.write_keys()
        for sub, skip in [(b"slabs", ("chunk_size", "chunks_per_page")),
                          # memcached's LRU maintainer moves items between the hot, warm
                          # and cold segments on its own time, between our two reads
                          (b"items", ("age", "age_hot", "age_warm", "evicted_time",
                                      "number_hot", "number_warm", "number_cold",
                                      "moves_to_cold", "moves_to_warm", "moves_within_lru"))]:
            got = stats(self.site.port, sub)
            want = self.sum_nodes(sub)
            self.assertEqual(set(got), set(want), sub)
            for name, total in want.items():
                if name.rsplit(":", 1)[-1] in skip:
                    continue
                self.assertEqual(int(got[name]), total, "%s %s" % (sub, name))
        items = stats(self.site.port, b"items")
        self.assertEqual(sum(int(v) for k, v in items.items() if k.endswith(":number")), 60)
        # memcached's order: classes ascending, totals last
        names = names_in_order(self.site.port, b"slabs")
        classes = [int(n.split(":")[0]) for n in names if ":" in n]
        self.assertEqual(classes, sorted(classes))
        self.assertEqual(names[-2:], ["active_slabs", "total_malloced"])
        node_names = names_in_order(self.nodes[0], b"slabs")
        cls = node_names[0].split(":")[0] + ":"
        node_fields = [n.split(":", 1)[1] for n in node_names if n.startswith(cls)]
        self.assertEqual([n.split(":", 1)[1] for n in names if n.startswith(cls)], node_fields)

    def test_stats_sizes(self):
        got = ask(self.site.port, b"stats sizes\r\n")
        self.assertEqual(got, ask(self.ref.port, b"stats sizes\r\n"))

    # ---- passed to every node

    def test_metadump_lists_every_key_once(self):
        keys = self.write_keys(prefix="md")
        for arg in (b"all", b"hash"):
            out = ask(self.site.port, b"lru_crawler metadump %s\r\n" % arg)
            self.assertTrue(out.endswith(b"END\r\n"), out[-200:])
            self.assertEqual(out.count(b"END\r\n"), 1)
            lines = out[:-5].split(b"\n")
            self.assertEqual(lines[-1], b"")
            listed = [urllib.parse.unquote(line.split(b" ")[0][4:].decode())
                      for line in lines[:-1]]
            self.assertTrue(all(line.startswith(b"key=") for line in lines[:-1]))
            self.assertEqual(sorted(listed), sorted(keys), arg)
        # a reply behind it on the same connection is not held up
        out = ask(self.site.port, b"lru_crawler metadump all\r\nversion\r\n",
                  done=lambda o: o.endswith(b"\r\n") and b"VERSION" in o)
        self.assertIn(b"END\r\nVERSION ", out)

    def test_metadump_errors_as_memcached(self):
        for cmd in [b"lru_crawler metadump 99\r\n", b"lru_crawler metadump\r\n",
                    b"lru_crawler metadump all noreply\r\n", b"lru_crawler\r\n",
                    b"lru_crawler foo\r\n"]:
            self.assertEqual(ask(self.site.port, cmd), ask(self.ref.port, cmd), cmd)
        for cmd in [b"lru_crawler crawl all\r\n", b"lru_crawler enable\r\n"]:
            self.assertEqual(ask(self.site.port, cmd),
                             b"SERVER_ERROR command not supported through geogate\r\n")

    def test_cache_memlimit_sets_every_node(self):
        try:
            self.assertEqual(ask(self.site.port, b"cache_memlimit 100\r\n"), b"OK\r\n")
            for port in self.nodes:
                self.assertEqual(stats(port, b"settings")["maxbytes"], str(100 << 20))
            # noreply: nothing back, the next reply is the next command's
            out = ask(self.site.port, b"cache_memlimit 90 noreply\r\nversion\r\n",
                      done=lambda o: b"\r\n" in o)
            self.assertTrue(out.startswith(b"VERSION "), out)
            deadline = time.time() + 5
            while time.time() < deadline and any(
                    stats(p, b"settings")["maxbytes"] != str(90 << 20) for p in self.nodes):
                time.sleep(0.05)
            for port in self.nodes:
                self.assertEqual(stats(port, b"settings")["maxbytes"], str(90 << 20))
            for cmd in [b"cache_memlimit 1\r\n", b"cache_memlimit abc\r\n",
                        b"cache_memlimit\r\n", b"cache_memlimit 64 noreply extra\r\n"]:
                self.assertEqual(ask(self.site.port, cmd, timeout=1.0),
                                 ask(self.ref.port, cmd, timeout=1.0), cmd)
        finally:
            for port in self.nodes + [self.ref.port]:
                ask(port, b"cache_memlimit 64\r\n")

    # ---- refused or unknown: memcached's reply

    def test_unknown_and_refused_as_memcached(self):
        same = [b"shutdown\r\n", b"shutdown graceful\r\n", b"stats foo\r\n",
                b"stats detail\r\n", b"stats detail dump\r\n", b"slabs\r\n",
                b"misbehave\r\n", b"debugtime\r\n", b"bogus\r\n", b"STATS\r\n",
                b"stats reset x\r\n"]
        for cmd in same:
            self.assertEqual(ask(self.site.port, cmd, timeout=2.0),
                             ask(self.ref.port, cmd, timeout=2.0), cmd)
        self.assertTrue(ask(self.site.port, b"version x\r\n").startswith(b"VERSION 1.6.18"))
        # these change one node's memory layout, LRU or logging: refused, clearly
        for cmd in [b"slabs reassign 1 2\r\n", b"slabs automove 1\r\n", b"watch\r\n",
                    b"lru mode flat\r\n", b"stats detail on\r\n"]:
            self.assertEqual(ask(self.site.port, cmd, timeout=2.0),
                             b"SERVER_ERROR command not supported through geogate\r\n", cmd)
        self.alive()

    def test_node_down_names_it(self):
        with harness.Site(nodes=2, extra=POOL_EXTRA + "  failure_limit: 1\n") as site:
            down = site.memcached[1]
            down.stop()
            label = "127.0.0.1:%d" % down.port
            for cmd in [b"stats slabs\r\n", b"lru_crawler metadump all\r\n",
                        b"cache_memlimit 100\r\n"]:
                out = b""
                deadline = time.time() + TIMEOUT
                while time.time() < deadline:  # the first try may be what finds it down
                    out = ask(site.port, cmd)
                    if out.startswith(b"SERVER_ERROR") and b"is down" in out:
                        break
                    time.sleep(0.1)
                self.assertTrue(out.startswith(b"SERVER_ERROR"), (cmd, out[-200:]))
                self.assertIn(label.encode(), out)
                self.assertEqual(out.count(b"\r\n"), 1, out)


class PythonMemcacheClientTest(unittest.TestCase):
    """python3-memcache's admin calls return (they read until END) with real data."""

    @staticmethod
    def slabs_or_error(memcache, port):
        mc = memcache.Client(["127.0.0.1:%d" % port], socket_timeout=TIMEOUT)
        try:
            mc.set("pyk", "x" * 500)
            return mc.get_slabs()
        except TypeError as e:
            return e
        finally:
            mc.disconnect_all()

    def test_get_stats_settings_and_slabs(self):
        import memcache
        with harness.Site(nodes=2, extra=POOL_EXTRA) as site:
            mc = memcache.Client(["127.0.0.1:%d" % site.port], socket_timeout=TIMEOUT)
            try:
                self.assertTrue(mc.set("pyk", "x" * 500))
                started = time.time()
                settings = mc.get_stats("settings")
                self.assertEqual(len(settings), 1)
                self.assertEqual(settings[0][1]["tcpport"], str(site.port))
                # get_slabs() of python3-memcache 1.58 splits bytes with a str and raises
                # TypeError against memcached itself; it must fail the same way here, at
                # once, not hang
                ref = harness.start_memcached()
                try:
                    want = self.slabs_or_error(memcache, ref.port)
                finally:
                    ref.stop()
                got = self.slabs_or_error(memcache, site.port)
                self.assertEqual(type(got), type(want), (got, want))
                if not isinstance(got, Exception):
                    self.assertEqual(len(got), 1)
                items = mc.get_stats("items")
                self.assertTrue(any(k.endswith(":number") for k in items[0][1]))
                self.assertTrue(mc.get_stats())
                self.assertLess(time.time() - started, TIMEOUT)
            finally:
                mc.disconnect_all()


if __name__ == "__main__":
    unittest.main()
