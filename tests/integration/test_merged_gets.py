"""One-key gets from many clients leave for a node as one multi-key get (backend.c,
gw_backend_send_get); each client must still get exactly its own reply.

A one-thread gateway over two real memcached nodes, driven by many raw sockets at once:
every socket's request is written before any reply is read, so they meet in one pass of
the gateway's loop.  Keys mix hits and misses, small, ~16 kB and 200 kB values (which
arrive over several reads, so reply lines and blocks are cut at read boundaries),
duplicates across clients, `get` and `gets`, pipelined gets on one socket, and sets in
between (which must close a group, so a client's set-then-get stays ordered).
Every reply is compared with what memcached itself holds.
"""
import os
import random
import re
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

CLIENTS = 40
ROUNDS = 150
KEYS = ["mg:%d" % i for i in range(60)]
MISSING = ["mg:none:%d" % i for i in range(20)]


def setUpModule():
    global SITE
    SITE = harness.Site(nodes=2, threads=1, extra="  timeout: 3000\n")


def tearDownModule():
    SITE.stop()


def value_for(key, gen):
    i = int(key.split(":")[1])
    if i % 15 == 0:
        n = 200000
    elif i % 7 == 0:
        n = 15000 + (hash(key) % 3000)  # around the gateway's 16 KiB read: cut lines
    else:
        n = 10 + (hash(key) % 90)
    head = ("%s/%d/" % (key, gen)).encode()
    return (head * (n // len(head) + 1))[:n]


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def _fill(self):
        chunk = self.s.recv(262144)
        if not chunk:
            raise AssertionError("gateway closed the connection")
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def retrieval(self):
        """One get/gets reply: [(key, flags, data, cas or None)], up to its END."""
        items = []
        while True:
            line = self.line()
            if line == b"END":
                return items
            m = re.match(rb"VALUE (\S+) (\d+) (\d+)(?: (\d+))?$", line)
            if m is None:
                raise AssertionError("unexpected line %r" % line)
            data = self.exact(int(m.group(3)) + 2)
            assert data.endswith(b"\r\n"), data[-10:]
            items.append((m.group(1).decode(), int(m.group(2)), data[:-2],
                          int(m.group(4)) if m.group(4) else None))

    def close(self):
        self.s.close()


def stat(port, name):
    c = Conn(port)
    try:
        c.send(b"stats\r\n")
        while True:
            line = c.line()
            if line == b"END":
                return None
            parts = line.split()
            if parts[1].decode() == name:
                return int(parts[2])
    finally:
        c.close()


class MergedGetsTest(unittest.TestCase):
    def test_many_clients_each_get_their_own_reply(self):
        rnd = random.Random(7)
        model = {}  # key -> (flags, value)
        setup = Conn(SITE.port)
        try:
            for i, k in enumerate(KEYS):
                v = value_for(k, 0)
                model[k] = (i, v)
                setup.send(b"set %s %d 0 %d\r\n%s\r\n" % (k.encode(), i, len(v), v))
                self.assertEqual(setup.line(), b"STORED")
            for k in MISSING:
                setup.send(b"delete %s\r\n" % k.encode())
                setup.line()
        finally:
            setup.close()
        merged0 = stat(SITE.port, "backend_gets_merged")
        self.assertIsNotNone(merged0, "stats has no backend_gets_merged")

        conns = [Conn(SITE.port) for _ in range(CLIENTS)]
        checked = 0
        try:
            for rnd_no in range(ROUNDS):
                before = dict(model)
                plans = []
                for c in conns:
                    kind = rnd.random()
                    if kind < 0.55:
                        plan = [("get", rnd.choice(KEYS + MISSING))]
                    elif kind < 0.70:
                        plan = [("gets", rnd.choice(KEYS + MISSING))]
                    elif kind < 0.85:
                        # two one-key gets pipelined on one socket, maybe the same key
                        k = rnd.choice(KEYS)
                        plan = [("get", k), ("get", rnd.choice([k] + KEYS + MISSING))]
                    else:
                        # set, then read it back: the get must see the new value
                        k = rnd.choice(KEYS)
                        plan = [("set", k, rnd_no + 1), ("get", k)]
                    wire = b""
                    for step in plan:
                        if step[0] == "set":
                            v = value_for(step[1], step[2])
                            wire += b"set %s 77 0 %d\r\n%s\r\n" % (step[1].encode(), len(v), v)
                        else:
                            wire += b"%s %s\r\n" % (step[0].encode(), step[1].encode())
                    plans.append(plan)
                    c.send(wire)
                for c, plan in zip(conns, plans):
                    for step in plan:
                        if step[0] == "set":
                            self.assertEqual(c.line(), b"STORED")
                            model[step[1]] = (77, value_for(step[1], step[2]))
                            continue
                        items = c.retrieval()
                        key = step[1]
                        if key not in model:
                            self.assertEqual(items, [], "miss %s answered %r" % (key, items))
                        else:
                            self.assertEqual(len(items), 1, "%s: %d items" % (key, len(items)))
                            got_key, flags, data, cas = items[0]
                            self.assertEqual(got_key, key)
                            # another client may have set it in this very round
                            want = [before[key], (77, value_for(key, rnd_no + 1))]
                            self.assertIn((flags, data), want, "wrong value for %s" % key)
                            if step[0] == "gets":
                                self.assertIsNotNone(cas)
                            else:
                                self.assertIsNone(cas)
                        checked += 1
        finally:
            for c in conns:
                c.close()
        merged = stat(SITE.port, "backend_gets_merged") - merged0
        self.assertGreater(checked, CLIENTS * ROUNDS)
        # the point of the test: gets did travel together (and still came back right)
        self.assertGreater(merged, checked // 10, "only %d of %d gets merged" % (merged, checked))

    def test_gets_cas_from_a_merged_get_is_usable(self):
        c = Conn(SITE.port)
        d = Conn(SITE.port)
        try:
            c.send(b"set mg:cas 0 0 1\r\na\r\n")
            self.assertEqual(c.line(), b"STORED")
            c.send(b"gets mg:cas\r\n")
            d.send(b"gets mg:cas\r\n")
            (_, _, _, cas1), = c.retrieval()
            (_, _, _, cas2), = d.retrieval()
            self.assertEqual(cas1, cas2)
            c.send(b"cas mg:cas 0 0 1 %d\r\nb\r\n" % cas1)
            self.assertEqual(c.line(), b"STORED")
            d.send(b"cas mg:cas 0 0 1 %d\r\nc\r\n" % cas2)
            self.assertEqual(d.line(), b"EXISTS")
        finally:
            c.close()
            d.close()


if __name__ == "__main__":
    unittest.main()
