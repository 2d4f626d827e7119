"""Real memcached clients work through geogate unmodified: libmemcached's memccapable
(all 27 ASCII tests), pymemcache, python-memcache and libmemcached's command-line tools.

One site (two memcached nodes + geogate) is shared by the whole file; every test starts
from flush_all.  Every client call has a socket timeout, every tool a process timeout.
"""
import os
import re
import subprocess
import tempfile
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import memcache  # python-memcache (Debian python3-memcache)  # noqa: E402
from pymemcache.client.base import Client as PymClient  # noqa: E402

TOOL_TIMEOUT = 30


def setUpModule():
    global SITE
    # a generous pool timeout: this file tests compatibility, not timeouts, and a
    # loaded CI machine must not turn a slow reply into a SERVER_ERROR
    SITE = harness.Site(nodes=2, extra="  timeout: 2000\n")


def tearDownModule():
    SITE.stop()


def pym(**kw):
    return PymClient(("127.0.0.1", SITE.port), connect_timeout=2, timeout=5, **kw)


def flush():
    c = pym()
    try:
        assert c.flush_all(noreply=False)
    finally:
        c.close()


class MemcapableTest(unittest.TestCase):
    def test_memccapable_ascii_all_27_pass(self):
        flush()
        r = subprocess.run(["memccapable", "-a", "-h", "127.0.0.1", "-p", str(SITE.port),
                            "-t", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=120)
        out = r.stdout.decode("utf-8", "replace")
        passed = re.findall(r"^ascii \S+.*\[pass\]\s*$", out, re.M)
        failed = [line for line in out.splitlines() if "[pass]" not in line and
                  line.startswith("ascii ")]
        self.assertEqual(failed, [], "memccapable failures:\n" + out)
        self.assertEqual(len(passed), 27, out)
        self.assertIn("All tests passed", out)
        self.assertEqual(r.returncode, 0, out)

    def test_memccapable_direct_reference(self):
        """The same run against a bare memcached: 27 passes (sanity for the parsing above)."""
        m = harness.start_memcached()
        try:
            r = subprocess.run(["memccapable", "-a", "-h", "127.0.0.1", "-p", str(m.port),
                                "-t", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, timeout=120)
        finally:
            m.stop()
        out = r.stdout.decode("utf-8", "replace")
        self.assertEqual(len(re.findall(r"\[pass\]", out)), 27, out)
        self.assertIn("All tests passed", out)


class PymemcacheTest(unittest.TestCase):
    def setUp(self):
        flush()
        self.c = pym()

    def tearDown(self):
        self.c.close()

    def test_basics(self):
        c = self.c
        self.assertTrue(c.set("a", b"1", noreply=False))
        self.assertEqual(c.get("a"), b"1")
        self.assertIsNone(c.get("missing"))
        self.assertTrue(c.set("b", b"2", expire=100, noreply=False))
        self.assertEqual(c.get_many(["a", "b", "missing", "a"]), {"a": b"1", "b": b"2"})
        self.assertFalse(c.add("a", b"x", noreply=False))
        self.assertTrue(c.add("c", b"3", noreply=False))
        self.assertTrue(c.replace("c", b"33", noreply=False))
        self.assertFalse(c.replace("nope", b"x", noreply=False))
        self.assertTrue(c.append("c", b"4", noreply=False))
        self.assertTrue(c.prepend("c", b"2", noreply=False))
        self.assertEqual(c.get("c"), b"2334")
        self.assertFalse(c.append("nope", b"x", noreply=False))
        self.assertEqual(c.incr("a", 41, noreply=False), 42)
        self.assertEqual(c.decr("a", 50, noreply=False), 0)
        self.assertIsNone(c.incr("nope", 1, noreply=False))
        self.assertTrue(c.touch("a", 100, noreply=False))
        self.assertFalse(c.touch("nope", 100, noreply=False))
        self.assertTrue(c.delete("a", noreply=False))
        self.assertFalse(c.delete("a", noreply=False))
        self.assertIsNone(c.get("a"))

    def test_gets_cas(self):
        c = self.c
        self.assertTrue(c.set("k", b"v1", noreply=False))
        value, token = c.gets("k")
        self.assertEqual(value, b"v1")
        self.assertTrue(token)
        self.assertTrue(c.cas("k", b"v2", token, noreply=False))
        self.assertFalse(c.cas("k", b"v3", token, noreply=False))  # EXISTS
        self.assertIsNone(c.cas("nope", b"v", token, noreply=False))  # NOT_FOUND
        self.assertEqual(c.get("k"), b"v2")
        many = c.gets_many(["k", "nope"])
        self.assertEqual(list(many), ["k"])
        self.assertEqual(many["k"][0], b"v2")

    def test_noreply_variants(self):
        c = self.c
        self.assertTrue(c.set("n", b"10", noreply=True))
        self.assertTrue(c.add("n2", b"x", noreply=True))
        self.assertTrue(c.replace("n2", b"y", noreply=True))
        self.assertTrue(c.append("n2", b"z", noreply=True))
        self.assertTrue(c.prepend("n2", b"w", noreply=True))
        self.assertIsNone(c.incr("n", 5, noreply=True))
        self.assertIsNone(c.decr("n", 2, noreply=True))
        self.assertTrue(c.touch("n", 100, noreply=True))
        self.assertTrue(c.set_many({"m1": b"1", "m2": b"2"}, noreply=True) in ([], True))
        self.assertTrue(c.delete("m1", noreply=True))
        # the replies that never came must not leak into the next answers
        self.assertEqual(c.get_many(["n", "n2", "m1", "m2"]),
                         {"n": b"13", "n2": b"wyz", "m2": b"2"})
        self.assertTrue(c.flush_all(noreply=True))
        self.assertIsNone(c.get("n"))
        self.assertTrue(c.version())

    def test_binaryish_and_large_values(self):
        c = self.c
        tricky = b"line1\r\nEND\r\nVALUE x 0 1\r\n\x00\xff\r\n"
        self.assertTrue(c.set("bin", tricky, noreply=False))
        self.assertEqual(c.get("bin"), tricky)
        allbytes = bytes(range(256)) * 4
        self.assertTrue(c.set("all", allbytes, noreply=False))
        self.assertEqual(c.get("all"), allbytes)
        big = os.urandom(500 * 1024)
        self.assertTrue(c.set("big", big, noreply=False))
        self.assertEqual(c.get("big"), big)
        self.assertEqual(c.get_many(["bin", "big", "all"]),
                         {"bin": tricky, "big": big, "all": allbytes})
        self.assertTrue(c.set("empty", b"", noreply=False))
        self.assertEqual(c.get("empty"), b"")

    def test_flush_version_stats(self):
        c = self.c
        c.set("f", b"1", noreply=False)
        self.assertTrue(c.flush_all(noreply=False))
        self.assertIsNone(c.get("f"))
        self.assertRegex(c.version(), rb"^\d+\.\d+")
        stats = c.stats()
        for name in (b"uptime", b"curr_connections", b"total_connections", b"cmd_get",
                     b"get_hits", b"get_misses", b"cmd_set"):
            self.assertIn(name, stats)
        self.assertGreaterEqual(int(stats[b"curr_connections"]), 1)

    def test_many_keys(self):
        c = self.c
        data = {"key:%d" % i: ("value:%d" % i).encode() for i in range(500)}
        self.assertEqual(c.set_many(data, noreply=False), [])
        got = c.get_many(list(data) + ["absent:%d" % i for i in range(50)])
        self.assertEqual(got, data)


class PythonMemcacheTest(unittest.TestCase):
    def setUp(self):
        flush()
        self.c = memcache.Client(["127.0.0.1:%d" % SITE.port], socket_timeout=5,
                                 dead_retry=0, cache_cas=True)

    def tearDown(self):
        self.c.disconnect_all()

    def test_basics(self):
        c = self.c
        self.assertTrue(c.set("a", "1"))
        self.assertEqual(c.get("a"), "1")
        self.assertIsNone(c.get("missing"))
        self.assertTrue(c.set("obj", {"x": [1, 2, 3]}))  # pickled, flags set
        self.assertEqual(c.get("obj"), {"x": [1, 2, 3]})
        self.assertTrue(c.set("int", 42))
        self.assertEqual(c.get("int"), 42)
        self.assertEqual(c.set_multi({"m1": "v1", "m2": "v2"}), [])
        self.assertEqual(c.get_multi(["m1", "m2", "missing"]), {"m1": "v1", "m2": "v2"})
        self.assertFalse(c.add("a", "x"))
        self.assertTrue(c.add("b", "2"))
        self.assertTrue(c.replace("b", "22"))
        self.assertFalse(c.replace("nope", "x"))
        self.assertTrue(c.append("b", "3"))
        self.assertTrue(c.prepend("b", "1"))
        self.assertEqual(c.get("b"), "1223")
        self.assertEqual(c.incr("a", 9), 10)
        self.assertEqual(c.decr("a", 3), 7)
        self.assertIsNone(c.incr("nope"))
        self.assertTrue(c.touch("a", 100))
        self.assertTrue(c.delete("a"))
        self.assertIsNone(c.get("a"))
        self.assertEqual(c.delete_multi(["m1", "m2"]), 1)
        self.assertIsNone(c.get("m1"))
        tricky = "x\r\nEND\r\ny"
        self.assertTrue(c.set("tricky", tricky))
        self.assertEqual(c.get("tricky"), tricky)
        big = "z" * (500 * 1024)
        self.assertTrue(c.set("big", big))
        self.assertEqual(c.get("big"), big)

    def test_gets_cas_flush_stats(self):
        c = self.c
        self.assertTrue(c.set("k", "v1"))
        self.assertEqual(c.gets("k"), "v1")
        self.assertTrue(c.cas("k", "v2"))
        self.assertEqual(c.get("k"), "v2")
        c.flush_all()
        self.assertIsNone(c.get("k"))
        stats = c.get_stats()
        self.assertEqual(len(stats), 1)
        self.assertIn("curr_connections", stats[0][1])


class LibmemcachedToolsTest(unittest.TestCase):
    def setUp(self):
        flush()
        self.servers = "--servers=127.0.0.1:%d" % SITE.port

    def tool(self, *argv, ok=True):
        r = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, timeout=TOOL_TIMEOUT)
        if ok:
            self.assertEqual(r.returncode, 0, "%s: rc=%d\n%s%s" % (
                " ".join(argv), r.returncode, r.stdout.decode(errors="replace"),
                r.stderr.decode(errors="replace")))
        return r

    def test_cp_cat_touch_rm_flush_stat(self):
        with tempfile.TemporaryDirectory() as d:
            paths = []
            for i, content in enumerate([b"hello file\n", os.urandom(100 * 1024),
                                         b"line\r\nEND\r\n"]):
                p = os.path.join(d, "file%d.bin" % i)
                with open(p, "wb") as f:
                    f.write(content)
                paths.append((p, content))
            for p, _ in paths:
                self.tool("memccp", self.servers, p)
            for p, content in paths:
                r = self.tool("memccat", self.servers, os.path.basename(p))
                self.assertTrue(r.stdout.startswith(content), os.path.basename(p))
            # pymemcache sees what memccp stored, under the file's base name
            c = pym()
            try:
                self.assertEqual(c.get("file0.bin"), b"hello file\n")
            finally:
                c.close()
            self.tool("memctouch", self.servers, "--expire=100", "file0.bin")
            r = self.tool("memctouch", self.servers, "--expire=100", "nosuchkey", ok=False)
            self.assertNotEqual(r.returncode, 0)
            self.tool("memcrm", self.servers, "file0.bin")
            r = self.tool("memccat", self.servers, "file0.bin", ok=False)
            self.assertNotEqual(r.returncode, 0)
            r = self.tool("memcstat", self.servers)
            self.assertIn(b"127.0.0.1", r.stdout)
            self.assertIn(b"curr_connections", r.stdout)
            self.tool("memcflush", self.servers)
            r = self.tool("memccat", self.servers, "file1.bin", ok=False)
            self.assertNotEqual(r.returncode, 0)


if __name__ == "__main__":
    unittest.main()
