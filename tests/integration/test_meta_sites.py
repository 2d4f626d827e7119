"""Meta commands on replicating sites (issue 16, points 2 and 3): real memcached, real
geogate sites replicating over mTLS gRPC (multisite.Lab).

A meta command keeps its meaning over the 32-byte version header: `s` is the client's
value size, `f` the client's flags, `v` the client's value, `c` the cas a `gets` gives,
and every meta write ships like its text twin (ms: set/add/append/prepend/replace/cas,
md: a tombstone, ma: incr/decr).  What needs more than the twin (stale-while-revalidate,
mg T, client versions E) is refused with a SERVER_ERROR naming the flag, never silently.

Stale-while-revalidate across sites (three sites): `md <key> I` at one site marks the item
stale there and ships a stale mark; at every site the next `mg` wins the recache (W) once
and every other reader gets the stale value with X and Z, never a miss, until a fresh `ms`
lands, which ships and clears the mark everywhere.
"""
import threading
import os
import socket
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from multisite import Lab  # noqa: E402

SLOW = 2.0 if os.environ.get("GEOGATE_SANITIZED") == "1" else 1.0


def exchange(port, data, timeout=10.0):
    """Send data then "mn"; read until the MN that answers it (every reply before it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW) as s:
        s.sendall(data + b"mn\r\n")
        out = b""
        deadline = time.monotonic() + timeout * SLOW
        while not out.endswith(b"MN\r\n"):
            if time.monotonic() > deadline:
                raise AssertionError("no MN within %.0f s; got %r" % (timeout, out))
            chunk = s.recv(65536)
            if not chunk:
                raise AssertionError("closed; got %r" % out)
            out += chunk
        return out[:-4]


def raw_get(port, key):
    return exchange(port, b"gets " + key + b"\r\n")


class MetaSitesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = Lab(["us-east", "eu-west"], nodes=2)
        cls.lab.__enter__()
        cls.a = cls.lab.sites["us-east"].port
        cls.b = cls.lab.sites["eu-west"].port

    @classmethod
    def tearDownClass(cls):
        cls.lab.__exit__(None, None, None)

    def drained(self):
        self.lab.wait_drained(60 * SLOW)

    def test_writes_ship_and_reads_hide_the_header(self):
        a, b = self.a, self.b
        self.assertEqual(exchange(a, b"ms w:one 5 F7 T0\r\nhello\r\n"), b"HD\r\n")
        self.assertEqual(exchange(a, b"set w:text 3 0 3\r\nabc\r\n"), b"STORED\r\n")
        self.assertEqual(exchange(a, b"ms w:add 1 ME\r\nx\r\nms w:add 1 ME\r\ny\r\n"),
                         b"HD\r\nNS\r\n")
        self.assertEqual(exchange(a, b"ms w:one 3 MA\r\n!!!\r\n"), b"HD\r\n")
        self.assertEqual(exchange(a, b"ms w:none 1 MR\r\nx\r\n"), b"NS\r\n")
        self.assertEqual(exchange(a, b"ms w:n 2\r\n40\r\nma w:n D2 v\r\nma w:n MD\r\n"),
                         b"HD\r\nVA 2\r\n42\r\nHD\r\n")
        self.assertEqual(exchange(a, b"ma w:missing\r\n"), b"NF\r\n")
        self.assertEqual(exchange(a, b"set w:gone 0 0 1\r\nx\r\nmd w:gone\r\nmd w:gone\r\n"),
                         b"STORED\r\nHD\r\nNF\r\n")
        self.drained()
        for port in (a, b):
            self.assertEqual(exchange(port, b"mg w:one s f v k\r\n"),
                             b"VA 8 s8 f7 kw:one\r\nhello!!!\r\n")
            # a text write reads the same through meta: the client's size, flags and value
            self.assertEqual(exchange(port, b"mg w:text v f s\r\n"), b"VA 3 f3 s3\r\nabc\r\n")
            self.assertEqual(exchange(port, b"mg w:add v\r\n"), b"VA 1\r\nx\r\n")
            self.assertEqual(exchange(port, b"mg w:n v\r\nget w:n\r\n"),
                             b"VA 2\r\n41\r\nVALUE w:n 0 2\r\n41\r\nEND\r\n")
            # a tombstone is held by the nodes but is a miss to meta and text alike
            self.assertEqual(exchange(port, b"mg w:gone v\r\nmg w:gone\r\nget w:gone\r\n"),
                             b"EN\r\nEN\r\nEND\r\n")
            self.assertEqual(exchange(port, b"mg w:none v\r\n"), b"EN\r\n")
            # the return flags a miss carries, in the client's order, as memcached's
            self.assertEqual(exchange(port, b"mg w:none v O9 k\r\nmg w:gone k v O1\r\n"),
                             b"EN O9 kw:none\r\nEN kw:gone O1\r\n")
        self.assertEqual(exchange(a, b"ms w:ret 1 k O5\r\nx\r\nmd w:ret O6 k\r\n"),
                         b"HD kw:ret O5\r\nHD O6 kw:ret\r\n")

    def test_cas_is_the_cas_gets_gives(self):
        a = self.a
        exchange(a, b"ms c:1 2\r\nhi\r\n")
        out = raw_get(a, b"c:1")
        cas = out.split(b"\r\n")[0].split()[-1]
        self.assertEqual(exchange(a, b"mg c:1 c\r\n"), b"HD c" + cas + b"\r\n")
        self.assertEqual(exchange(a, b"ms c:1 2 C999999\r\nno\r\n"), b"EX\r\n")
        self.assertEqual(exchange(a, b"ms c:1 2 C" + cas + b"\r\nok\r\n"), b"HD\r\n")
        self.assertEqual(exchange(a, b"mg c:1 v\r\n"), b"VA 2\r\nok\r\n")

    def test_quiet_opaque_base64_pipeline(self):
        a, b = self.a, self.b
        pipeline = (b"ms q:1 1 q O1\r\nx\r\n"      # HD held back
                    b"ms q:1 1 ME q O2\r\ny\r\n"   # NS is said
                    b"mg q:1 v q k O3\r\n"         # a hit is said
                    b"mg q:none v q O4\r\n"        # EN held back
                    b"md q:none q O5\r\n"          # NF is said
                    b"ma q:1 q\r\n")               # not a number: said
        out = exchange(a, pipeline)
        self.assertEqual(out.split(b"\r\n")[:5],
                         [b"NS O2", b"VA 1 kq:1 O3", b"x", b"NF O5",
                          b"CLIENT_ERROR cannot increment or decrement non-numeric value"])
        # base64 "cTox" is "q:1": the same item as the text key
        self.assertEqual(exchange(a, b"ms cTox 2 b\r\nzz\r\nget q:1\r\nmg cTox b v\r\n"),
                         b"HD\r\nVALUE q:1 0 2\r\nzz\r\nEND\r\nVA 2\r\nzz\r\n")
        self.drained()
        self.assertEqual(exchange(b, b"mg q:1 v\r\n"), b"VA 2\r\nzz\r\n")

    def test_mg_touch_ships_the_new_expiry(self):
        a, b = self.a, self.b
        self.assertEqual(exchange(a, b"ms t:1 2 T0\r\nhi\r\n"), b"HD\r\n")
        self.drained()
        out = exchange(a, b"mg t:1 v t T500\r\nmg t:none v T5\r\n")
        self.assertRegex(out, rb"^VA 2 t(499|50[01])\r\nhi\r\nEN\r\n$")
        self.drained()
        # the touch is a versioned write: the peer holds the new expiry too
        self.assertRegex(exchange(b, b"mg t:1 t v\r\n"), rb"^VA 2 t(49[5-9]|50[01])\r\nhi\r\n$")

    def test_ma_autovivify(self):
        a, b = self.a, self.b
        # N on a miss makes the item with J (default 0) and answers it, even with q
        self.assertEqual(exchange(a, b"ma v:1 N0 J5 v O1 k\r\nma v:1 N0 J5 v\r\n"),
                         b"VA 1 O1 kv:1\r\n5\r\nVA 1\r\n6\r\n")
        self.assertEqual(exchange(a, b"ma v:2 q N0\r\nma v:2 q\r\nmg v:2 v\r\n"),
                         b"HD\r\nVA 1\r\n1\r\n")
        self.drained()
        self.assertEqual(exchange(b, b"mg v:1 v\r\nmg v:2 v\r\n"),
                         b"VA 1\r\n6\r\nVA 1\r\n1\r\n")

    def test_client_versions_order_among_themselves(self):
        a, b = self.a, self.b
        # E<token> is the version's clock part: the higher token wins wherever it was
        # written and whenever it arrives; a write on the clock beats any token in the past
        self.assertEqual(exchange(a, b"ms e:1 4 E100\r\nv100\r\n"), b"HD\r\n")
        self.assertEqual(exchange(b, b"ms e:1 3 E50\r\nv50\r\n"), b"HD\r\n")
        self.drained()
        for port in (a, b):
            self.assertEqual(exchange(port, b"mg e:1 v\r\n"), b"VA 4\r\nv100\r\n")
        self.assertEqual(exchange(b, b"ms e:1 3 E18446744073709551615\r\nbig\r\n"),
                         b"CLIENT_ERROR version E is ahead of the gateway's clock\r\n")
        self.assertEqual(exchange(b, b"ms e:1 3 Eabc\r\nbad\r\n"),
                         b"CLIENT_ERROR bad token in command line format\r\n")
        self.assertEqual(exchange(b, b"ms e:1 5\r\nclock\r\n"), b"HD\r\n")
        self.drained()
        for port in (a, b):
            self.assertEqual(exchange(port, b"mg e:1 v\r\n"), b"VA 5\r\nclock\r\n")

    def test_what_needs_more_is_refused_out_loud(self):
        a = self.a
        exchange(a, b"ms r:1 2\r\nhi\r\n")
        for cmd, flag in ((b"md r:1 C5\r\n", b"C"),
                          (b"ms r:1 2 I\r\nhi\r\n", b"I"), (b"ma r:1 t\r\n", b"t")):
            out = exchange(a, cmd)
            self.assertEqual(out, b"SERVER_ERROR meta flag " + flag +
                             b" is not supported on a replicating geogate yet\r\n", cmd)
        # the refused ms swallowed its block: the connection still reads commands
        self.assertEqual(exchange(a, b"ms r:1 2 I\r\nhi\r\nmg r:1 v\r\n").split(b"\r\n")[1:3],
                         [b"VA 2", b"hi"])


class StaleWhileRevalidateTest(unittest.TestCase):
    SITES = ["us-east", "eu-west", "ap-south"]

    def test_one_recache_per_site_no_miss_then_converge(self):
        with Lab(self.SITES, nodes=2) as lab:
            ports = {n: lab.sites[n].port for n in self.SITES}
            self.assertEqual(exchange(ports["us-east"], b"ms swr:hot 3 T300\r\nold\r\n"),
                             b"HD\r\n")
            lab.wait_drained(60 * SLOW)
            # invalidate at one site; the mark reaches the others
            self.assertEqual(exchange(ports["eu-west"], b"md swr:hot I T60 q\r\n"), b"")
            self.assertEqual(exchange(ports["eu-west"], b"md swr:none I\r\n"), b"NF\r\n")
            lab.wait_drained(60 * SLOW)
            # 8 readers per site at once, 5 reads each
            replies = {n: [] for n in self.SITES}
            lock = threading.Lock()

            def reader(site):
                for _ in range(5):
                    out = exchange(ports[site], b"mg swr:hot v\r\n")
                    with lock:
                        replies[site].append(out)
            threads = [threading.Thread(target=reader, args=(n,)) for n in self.SITES
                       for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60 * SLOW)
            for site in self.SITES:
                got = replies[site]
                self.assertEqual(len(got), 40, site)
                heads = [r.split(b"\r\n")[0] for r in got]
                values = [r.split(b"\r\n")[1] for r in got]
                self.assertEqual(values, [b"old"] * 40, site)  # no reader misses
                self.assertTrue(all(b" X" in h for h in heads), (site, heads))  # all stale
                wins = [h for h in heads if b" W" in h]
                self.assertEqual(len(wins), 1, (site, heads))  # exactly one recache win
                self.assertEqual(sum(1 for h in heads if b" Z" in h), 39, (site, heads))
                print("    %s: 40 reads, 1 W, 39 Z, all X, value old" % site, file=sys.stderr)
            # the winner at one site recaches: the fresh value lands everywhere, unmarked
            self.assertEqual(exchange(ports["ap-south"], b"ms swr:hot 3 T300\r\nnew\r\n"),
                             b"HD\r\n")
            lab.wait_drained(60 * SLOW)
            for site in self.SITES:
                self.assertEqual(exchange(ports[site], b"mg swr:hot v\r\nget swr:hot\r\n"),
                                 b"VA 3\r\nnew\r\nVALUE swr:hot 0 3\r\nnew\r\nEND\r\n", site)

    def test_placeholder_is_local_and_older_marks_lose(self):
        with Lab(self.SITES[:2], nodes=1) as lab:
            a, b = lab.sites["us-east"].port, lab.sites["eu-west"].port
            # N on a miss: a placeholder at this site only, never shipped
            self.assertEqual(exchange(a, b"mg swr:ph v N30\r\nmg swr:ph v N30\r\n"),
                             b"VA 0 W\r\n\r\nVA 0 Z\r\n\r\n")
            # a fresh write after the invalidation wins over the mark at every site
            exchange(a, b"ms swr:k 1\r\n1\r\n")
            lab.wait_drained(60 * SLOW)
            self.assertEqual(exchange(a, b"md swr:k I\r\nms swr:k 1\r\n2\r\n"),
                             b"HD\r\nHD\r\n")
            lab.wait_drained(60 * SLOW)
            self.assertEqual(exchange(b, b"mg swr:ph v\r\n"), b"EN\r\n")
            for port in (a, b):
                self.assertEqual(exchange(port, b"mg swr:k v\r\n"), b"VA 1\r\n2\r\n")


if __name__ == "__main__":
    unittest.main()
