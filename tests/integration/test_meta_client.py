"""A meta-protocol load through a single-site geogate (no wan:) with two memcached nodes,
driven with metaclient: pipelined quiet ms/mg/md with mn terminators, meta and text
views of the same keys agreeing, base64 keys (bytes no text key may hold) routed by
their decoded key, and opaque tokens matching their requests under pipelining.

MetaClientGatewayTest is the real test.  MetaClientMemcachedTest runs the same checks
against one memcached directly, to show that the test itself is right (the per-node
checks then see that single node).
"""
import base64
import os
import random
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import metaclient  # noqa: E402
from metaclient import MetaClient  # noqa: E402

N_KEYS = 2000
TIMEOUT = 10.0


def text_get(port, keys, batch=100):
    """{key: value} via plain text `get` on a raw socket."""
    out = {}
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    f = s.makefile("rb")
    try:
        for i in range(0, len(keys), batch):
            chunk = keys[i:i + batch]
            s.sendall(b"get " + b" ".join(chunk) + b"\r\n")
            while True:
                line = f.readline()
                if not line:
                    raise AssertionError("connection closed during get")
                if line == b"END\r\n":
                    break
                w = line.split()
                assert w[0] == b"VALUE", line
                data = f.read(int(w[3]) + 2)
                out[w[1]] = data[:-2]
    finally:
        f.close()
        s.close()
    return out


def text_set(port, items):
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    f = s.makefile("rb")
    try:
        s.sendall(b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v) for k, v in items))
        for _ in items:
            line = f.readline()
            assert line == b"STORED\r\n", line
    finally:
        f.close()
        s.close()


class _MetaClientBase:
    """Subclasses set cls.port (where the client talks) and cls.nodes (memcached ports
    behind it) and cls.alive()."""

    def setUp(self):
        for p in set(self.nodes + [self.port]):
            with MetaClient(p, timeout=TIMEOUT) as c:
                c.send(b"flush_all\r\n")
                self.assertEqual(c.read_line(), b"OK")

    def tearDown(self):
        self.assertTrue(self.alive(), "the target died")

    def holders(self, key, b64=False):
        """Ports of the nodes that hold key (asked directly)."""
        found = []
        for p in self.nodes:
            with MetaClient(p, timeout=TIMEOUT) as c:
                r = c.mg(key, "v", b64=b64)
                if r.status == "VA":
                    found.append((p, r.value))
                else:
                    self.assertEqual(r.status, "EN", r)
        return found

    def test_set_many_get_many_and_text_agree(self):
        keys = [b"mk:%05d" % i for i in range(N_KEYS)]
        items = [(k, b"val-%s-" % k + b"x" * (i % 50)) for i, k in enumerate(keys)]
        want = dict(items)
        with MetaClient(self.port, timeout=TIMEOUT) as c:
            self.assertEqual(c.set_many(items), {})
            got = c.get_many(keys + [b"mk:missing:%d" % i for i in range(100)])
        self.assertEqual(len(got), N_KEYS)
        self.assertEqual(got, want)
        # the text protocol sees what ms stored
        self.assertEqual(text_get(self.port, keys), want)
        # and meta sees what text set stored
        tkeys = [b"tk:%04d" % i for i in range(500)]
        text_set(self.port, [(k, k[::-1]) for k in tkeys])
        with MetaClient(self.port, timeout=TIMEOUT) as c:
            self.assertEqual(c.get_many(tkeys), {k: k[::-1] for k in tkeys})
            r = c.mg(tkeys[3], "v", "f", "s", "k")
            self.assertEqual((r.status, r.value, r.flags), ("VA", tkeys[3][::-1],
                                                            {"f": "0", "s": "7", "k": "tk:0003"}))
        # every key is on exactly one node, and with 2+ nodes each holds a fair share
        per_node = [len(text_get(p, keys)) for p in self.nodes]
        self.assertEqual(sum(per_node), N_KEYS, per_node)
        if len(self.nodes) > 1:
            self.assertTrue(all(n > N_KEYS // 5 for n in per_node), per_node)

    def test_delete_many(self):
        keys = [b"dk:%05d" % i for i in range(N_KEYS)]
        with MetaClient(self.port, timeout=TIMEOUT) as c:
            self.assertEqual(c.set_many([(k, b"v") for k in keys]), {})
            self.assertEqual(len(c.get_many(keys)), N_KEYS)
            self.assertEqual(c.delete_many(keys[::2]), {})
            again = c.delete_many(keys[::2] + [keys[1]])
            self.assertEqual(set(again), set(keys[::2]))
            self.assertTrue(all(r.status == "NF" for r in again.values()))
            left = c.get_many(keys)
        self.assertEqual(sorted(left), keys[1::2][1:])
        self.assertEqual(text_get(self.port, keys), {k: b"v" for k in keys[1::2][1:]})

    def test_base64_keys_route_by_decoded_key(self):
        keys = [b"sp ace %d" % i for i in range(50)] + [b"new\nline\r\n%d" % i for i in range(50)]
        keys += [bytes([0, 255, 32, 10, 13, i]) for i in range(50)] + [b"\x00"]
        with MetaClient(self.port, timeout=TIMEOUT) as c:
            for round_ in (1, 2):
                self.assertEqual(c.set_many([(k, b"r%d:%r" % (round_, k)) for k in keys], b64=True), {})
            got = c.get_many(keys, b64=True)
            self.assertEqual(got, {k: b"r2:%r" % k for k in keys})
            r = c.mg(keys[0], "k", "v", b64=True)
            self.assertEqual((r.status, r.key, r.flags.get("b")), ("VA", keys[0], ""))
            # a base64 key whose decoded form is a text key is that text key
            r = c.ms(b"plain-text-key", b"via-b64", b64=True)
            self.assertEqual(r.status, "HD", r)
        self.assertEqual(text_get(self.port, [b"plain-text-key"]), {b"plain-text-key": b"via-b64"})
        for k in keys[::7] + [b"plain-text-key"]:
            holders = self.holders(k, b64=True)
            self.assertEqual(len(holders), 1, "%r held by %r" % (k, holders))
        # and a decoded key lands where the same text key lands
        text_set(self.port, [(b"route-me", b"text")])
        with MetaClient(self.port, timeout=TIMEOUT) as c:
            self.assertEqual(c.ms(b"route-me", b"b64", b64=True).status, "HD")
        holders = self.holders(b"route-me")
        self.assertEqual([v for _, v in holders], [b"b64"], holders)

    def test_opaques_match_under_pipelining(self):
        rng = random.Random(7)
        with MetaClient(self.port, timeout=TIMEOUT) as c:
            self.assertEqual(c.set_many([(b"ok:%d" % i, b"%d" % i) for i in range(0, 1000, 2)]), {})
            p = c.pipeline(auto_opaque=False)
            expect = []
            for i in range(1500):
                k = b"ok:%d" % rng.randrange(1000)
                tok = "%x" % rng.getrandbits(64)
                op = rng.choice(["mg", "mgq", "ma", "md", "msq", "ms"])
                if op == "mg":
                    p.mg(k, "v", "k", "O" + tok)
                elif op == "mgq":
                    p.mg(k, "v", "k", "q", "O" + tok)
                elif op == "ma":
                    p.ma(k, "N0", "J5", "v", "O" + tok)
                elif op == "md":
                    p.md(k, "O" + tok)
                elif op == "msq":
                    p.ms(k, b"%d" % i, "q", "O" + tok)
                else:
                    p.ms(k, b"%d" % i, "O" + tok, "k")
                expect.append((op, k, tok))
            p.mn()
            res = p.execute()
        self.assertEqual(res[-1].status, "MN")
        answered = 0
        for (op, k, tok), r in zip(expect, res):
            if r is None:
                self.assertIn(op, ("mgq", "msq"))
                continue
            answered += 1
            self.assertEqual(r.opaque, tok, (op, k, r))
            if "k" in r.flags:
                self.assertEqual(r.key, k)
            self.assertIn(r.status, ("VA", "HD", "EN", "NF", "NS"), r)
            if op in ("mg", "ma", "md", "ms"):
                self.assertNotEqual(r, None)
        self.assertGreater(answered, 700)

    def test_parallel_connections(self):
        errors = []

        def worker(n):
            try:
                keys = [b"par:%d:%d" % (n, i) for i in range(400)]
                with MetaClient(self.port, timeout=TIMEOUT) as c:
                    for rnd in range(3):
                        items = [(k, b"%d-%d" % (rnd, i)) for i, k in enumerate(keys)]
                        if c.set_many(items):
                            errors.append("set_many failed")
                        if c.get_many(keys) != dict(items):
                            errors.append("get_many differs (worker %d round %d)" % (n, rnd))
                    if c.delete_many(keys):
                        errors.append("delete_many failed")
            except Exception as e:  # reported below
                errors.append("worker %d: %r" % (n, e))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertFalse(any(t.is_alive() for t in threads), "workers hung")
        self.assertEqual(errors, [])
        self.assertLess(time.time() - t0, 60)


class MetaClientGatewayTest(_MetaClientBase, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = harness.Site(nodes=2, extra="  timeout: 2000\n")
        cls.port = cls.site.port
        cls.nodes = [m.port for m in cls.site.memcached]

    @classmethod
    def tearDownClass(cls):
        cls.site.stop()

    def alive(self):
        return self.site.gateway.alive()


class MetaClientMemcachedTest(_MetaClientBase, unittest.TestCase):
    """The same checks against one memcached directly: the test's own check."""

    @classmethod
    def setUpClass(cls):
        cls.mc = harness.start_memcached()
        cls.port = cls.mc.port
        cls.nodes = [cls.mc.port]

    @classmethod
    def tearDownClass(cls):
        cls.mc.stop()

    def alive(self):
        return self.mc.alive()


if __name__ == "__main__":
    unittest.main()
