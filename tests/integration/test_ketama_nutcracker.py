"""Placement compatibility with twemproxy: geogate and a real nutcracker, given the same
server list and hash, must put every key on the same memcached node, so a site can move
from twemproxy to geogate without a miss storm.

For md5 and fnv1a_64: two real memcached nodes, geogate and nutcracker in front of the
same nodes (built from the harness helpers harness.Site uses).  10,000 keys (a fifth
with UTF-8 or raw bytes >= 0x80, which exercise twemproxy's signed-char fnv quirk) are set through geogate; each node is
then asked directly which keys it holds, and every key is fetched through nutcracker,
which only finds it if it routes the key to the node geogate chose.  The other way round,
keys set through nutcracker must all be found through geogate.  Both must be 100%.
Talks only to 127.0.0.1; every process is stopped at the end.
"""
import os
import random
import signal
import socket
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

NKEYS = 10000
BATCH = 500
IO_TIMEOUT = 20.0


def make_keys(n, tag):
    """Distinct valid memcached keys; one in five has bytes >= 0x80."""
    rnd = random.Random(tag)
    words = ["clé", "ключ", "日本語", "naïve", "Straße", "😀"]
    keys = []
    for i in range(n):
        if i % 10 == 3:
            k = ("%s:%s:%d" % (tag, rnd.choice(words), i)).encode("utf-8")
        elif i % 10 == 7:
            k = b"%s:" % tag.encode() + bytes(rnd.randint(0x80, 0xff) for _ in range(4)) + b":%d" % i
        else:
            k = ("%s:user:%d:%x" % (tag, i, rnd.getrandbits(32))).encode()
        keys.append(k)
    assert len(set(keys)) == n
    return keys


class Client:
    """Just enough memcached ASCII protocol for this test: pipelined set and get."""

    def __init__(self, port):
        self.port = port
        self.s = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.buf = b""

    def close(self):
        self.s.close()

    def _fill(self):
        chunk = self.s.recv(262144)
        if not chunk:
            raise ConnectionError("port %d closed the connection" % self.port)
        self.buf += chunk

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill()

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def set_many(self, items):
        """Returns the keys whose reply was not STORED (with the reply)."""
        failed = []
        for start in range(0, len(items), BATCH):
            batch = items[start:start + BATCH]
            self.s.sendall(b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v) for k, v in batch))
            for k, _ in batch:
                line = self._line()
                if line != b"STORED":
                    failed.append((k, line))
        return failed

    def get_many(self, keys):
        """Set of keys that hit (one `get` per key, pipelined)."""
        hits = set()
        for start in range(0, len(keys), BATCH):
            batch = keys[start:start + BATCH]
            self.s.sendall(b"".join(b"get %s\r\n" % k for k in batch))
            for _ in batch:
                while True:
                    line = self._line()
                    if line == b"END":
                        break
                    parts = line.split(b" ")
                    if parts[0] != b"VALUE" or len(parts) < 4:
                        raise AssertionError("port %d: unexpected reply %r" % (self.port, line))
                    self._exact(int(parts[3]) + 2)
                    hits.add(parts[1])
        return hits


def with_client(port, fn):
    c = Client(port)
    try:
        return fn(c)
    finally:
        c.close()


class _Site:
    """Two memcached nodes with geogate and nutcracker in front of the same list, built
    from harness helpers like harness.Site, but stopping what it started even when
    geogate fails to start (geogate may be half-built while this test is written)."""

    def __init__(self, hash_name):
        self.hash_name = hash_name
        self.tmp = tempfile.TemporaryDirectory(prefix="geogate-ketama-")
        self.dir = self.tmp.name
        self.memcached = []
        self.gateway = None
        self.nutcracker = None

    def start(self):
        self.memcached = [harness.start_memcached() for _ in range(2)]
        self.servers = ["127.0.0.1:%d:1" % m.port for m in self.memcached]
        self.nutcracker = harness.start_nutcracker(self.dir, self.servers, hash_name=self.hash_name)
        config, self.port = harness.write_gateway_config(self.dir, self.servers,
                                                         hash_name=self.hash_name)
        self.gateway = harness.start_gateway(self.dir, config, self.port)

    def stop(self):
        procs = [p for p in [self.gateway, self.nutcracker] + self.memcached if p is not None]
        for p in procs:  # signal all first: memcached takes ~1 s to exit
            p.signal(signal.SIGTERM)
        for p in procs:
            try:
                p.stop()
            except Exception:
                pass
        self.tmp.cleanup()


class KetamaMatchesNutcracker(unittest.TestCase):

    def check(self, hash_name):
        deadline = time.time() + 120
        site = _Site(hash_name)
        try:
            site.start()
            self._geogate_to_nutcracker(site, site.nutcracker, hash_name)
            self.assertLess(time.time(), deadline, "took too long")
            self._nutcracker_to_geogate(site, site.nutcracker, hash_name)
        finally:
            site.stop()
        self.assertLess(time.time(), deadline, "took too long")

    def _holders(self, site, keys):
        """For each memcached node (in config order), the set of keys it holds."""
        return [with_client(m.port, lambda c: c.get_many(keys)) for m in site.memcached]

    def _geogate_to_nutcracker(self, site, nut, hash_name):
        keys = make_keys(NKEYS, "gg-" + hash_name)
        failed = with_client(site.port, lambda c: c.set_many([(k, b"v%d" % i) for i, k in enumerate(keys)]))
        self.assertEqual(failed[:5], [], "sets through geogate failed (%d)" % len(failed))

        held = self._holders(site, keys)
        both = held[0] & held[1]
        nowhere = set(keys) - held[0] - held[1]
        self.assertEqual(len(both), 0, "keys on both nodes, e.g. %r" % list(both)[:3])
        self.assertEqual(len(nowhere), 0, "keys on no node, e.g. %r" % list(nowhere)[:3])
        for i, h in enumerate(held):
            self.assertGreater(len(h), NKEYS // 10, "node %d got almost no keys: %d" % (i, len(h)))

        # nutcracker finds a key only if it routes it to the node geogate stored it on
        hits = with_client(nut.port, lambda c: c.get_many(keys))
        misses = [k for k in keys if k not in hits]
        self.assertEqual(len(misses), 0,
                         "%s: %d of %d keys set through geogate are not where nutcracker looks, e.g. %r"
                         % (hash_name, len(misses), NKEYS, misses[:3]))

    def _nutcracker_to_geogate(self, site, nut, hash_name):
        keys = make_keys(NKEYS, "nc-" + hash_name)
        failed = with_client(nut.port, lambda c: c.set_many([(k, b"n%d" % i) for i, k in enumerate(keys)]))
        self.assertEqual(failed[:5], [], "sets through nutcracker failed (%d)" % len(failed))
        hits = with_client(site.port, lambda c: c.get_many(keys))
        misses = [k for k in keys if k not in hits]
        self.assertEqual(len(misses), 0,
                         "%s: %d of %d keys set through nutcracker miss through geogate, e.g. %r"
                         % (hash_name, len(misses), NKEYS, misses[:3]))

    def test_md5(self):
        self.check("md5")

    def test_fnv1a_64(self):
        self.check("fnv1a_64")


if __name__ == "__main__":
    unittest.main()
