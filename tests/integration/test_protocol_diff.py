"""Differential test: the same bytes sent to a real memcached and through geogate must
get byte-identical replies.

Each case is a list of byte chunks sent on a fresh connection (with a pause and a read
after each chunk); the reference is a fresh memcached started by this test, the gateway
fronts one memcached node so every key lands on one server.  Both are flushed between
cases.  Only what must differ is normalised: cas unique values, the `VERSION` string and
the contents of `stats`.  Whether the peer closed the connection is compared too.

A second test runs a 200-key multi-get over two nodes and checks the reply order.
"""
import os
import re
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SETTLE = 0.3        # between chunks: time the peer gets to react to a partial request
NO_EOL_SETTLE = 1.0  # after a chunk without '\n': time memcached gets to hang up
CASE_TIMEOUT = 10.0  # no case may take longer than this on one side
# This file tests bytes, not timeouts: a loaded machine must not turn a slow node
# reply into a SERVER_ERROR.
POOL_EXTRA = "  timeout: 2000\n"

# Sent after a case's last chunk, so a reply is known to be complete without guessing
# from silence (which a loaded machine turns into flaky failures).  Its reply is unique
# and stripped before comparing.  Every case ends where a new command may start, or
# with a closed connection (then EOF ends the read).
SENTINEL = b"set __case_end__ 0 0 4\r\nDONE\r\nget __case_end__\r\n"
SENTINEL_REPLY = b"STORED\r\nVALUE __case_end__ 0 4\r\nDONE\r\nEND\r\n"


def exchange(port, chunks, settle=SETTLE, timeout=CASE_TIMEOUT, done=None, sentinel=False):
    """Send each chunk on one connection, reading after each.  After the last chunk read
    until SENTINEL's reply (sentinel=True, stripped from the result), or done(out), or
    EOF, or the deadline; without either, until the peer is quiet for `settle` s.
    Returns (bytes, closed)."""
    out = b""
    closed = False
    deadline = time.time() + timeout
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        for i, chunk in enumerate(chunks):
            if closed:
                break
            last = i == len(chunks) - 1
            try:
                s.sendall(chunk + (SENTINEL if last and sentinel else b""))
            except OSError:
                closed = True
                break
            if last and sentinel:
                finished = lambda o: o.endswith(SENTINEL_REPLY)  # noqa: E731
            elif last and done is not None:
                finished = done
            else:
                finished = None
            quiet = settle if b"\n" in chunk or last else NO_EOL_SETTLE
            while time.time() < deadline:
                if finished is not None and finished(out):
                    break
                s.settimeout(max(0.01, deadline - time.time()) if finished else quiet)
                try:
                    data = s.recv(1 << 20)
                except socket.timeout:
                    break
                except ConnectionResetError:
                    closed = True
                    break
                if not data:
                    closed = True
                    break
                out += data
        if sentinel and out.endswith(SENTINEL_REPLY):
            out = out[:-len(SENTINEL_REPLY)]
    finally:
        s.close()
    return out, closed


_CAS = re.compile(rb"^(VALUE \S+ \d+ \d+) \d+\r\n", re.M)
_VERSION = re.compile(rb"^VERSION [^\r\n]*\r\n", re.M)
_STATS = re.compile(rb"(?:^STAT [^\r\n]*\r\n)+END\r\n", re.M)


def normalise(b):
    b = _CAS.sub(rb"\1 <cas>\r\n", b)
    b = _VERSION.sub(b"VERSION <v>\r\n", b)
    b = _STATS.sub(b"STAT <stats>\r\nEND\r\n", b)
    return b


K250 = b"k" * 250
K251 = b"k" * 251
MIB = 1048576


def one(b):
    return [b]


def multi_set(keys, value=b"v"):
    return b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(value), value) for k in keys)


KEYS100 = [b"key%03d" % i for i in range(100)]
LONG_GET = b"get " + b" ".join(b"multikey%04d" % i for i in range(300))  # > 2048 bytes

# (name, chunks).  Every expectation is whatever the reference memcached answers.
CASES = [
    # --- every command, plain
    ("set_get", one(b"set a 0 0 5\r\nhello\r\nget a\r\n")),
    ("set_flags_exptime", one(b"set a 123 3600 3\r\nabc\r\nget a\r\n")),
    ("gets", one(b"set a 5 0 3\r\nabc\r\ngets a\r\n")),
    ("get_miss", one(b"get nothere\r\n")),
    ("get_multi_hits_misses", one(b"set a 0 0 1\r\n1\r\nset c 0 0 1\r\n3\r\nget a b c a\r\n")),
    ("gets_multi", one(b"set a 0 0 1\r\n1\r\nset b 0 0 1\r\n2\r\ngets a b zz\r\n")),
    ("bget", one(b"set a 0 0 1\r\nx\r\nbget a\r\n")),
    ("add", one(b"add a 0 0 1\r\nx\r\nadd a 0 0 1\r\ny\r\nget a\r\n")),
    ("replace", one(b"replace a 0 0 1\r\nx\r\nset a 0 0 1\r\ny\r\nreplace a 0 0 1\r\nz\r\nget a\r\n")),
    ("append_prepend", one(b"append a 0 0 1\r\nx\r\nprepend a 0 0 1\r\nx\r\nset a 7 0 2\r\nmm\r\n"
                           b"append a 0 0 2\r\nzz\r\nprepend a 0 0 2\r\naa\r\nget a\r\n")),
    ("delete", one(b"set a 0 0 1\r\nx\r\ndelete a\r\ndelete a\r\nget a\r\n")),
    ("delete_variants", one(b"set d 0 0 1\r\nx\r\ndelete d 0\r\ndelete d 1\r\ndelete d 0 0\r\n"
                            b"delete\r\ndelete a b c d\r\ndelete d noreply extra\r\n")),
    ("incr_decr", one(b"set n 0 0 2\r\n99\r\nincr n 1\r\ndecr n 5\r\ndecr n 1000\r\nget n\r\n"
                      b"incr nokey 1\r\ndecr nokey 1\r\n")),
    ("incr_overflow", one(b"set n 0 0 20\r\n18446744073709551615\r\nincr n 1\r\nget n\r\n"
                          b"incr n 18446744073709551615\r\n")),
    ("incr_non_numeric", one(b"set n 0 0 3\r\nabc\r\nincr n 1\r\ndecr n 1\r\n"
                             b"set m 0 0 2\r\n-1\r\nincr m 1\r\n")),
    ("incr_bad_delta", one(b"set n 0 0 1\r\n5\r\nincr n abc\r\nincr n -1\r\n"
                           b"incr n 18446744073709551616\r\nincr n 1x\r\nincr n\r\nincr n 1 2 3\r\n"
                           b"incr n 1 2\r\nincr n -9223372036854775809\r\n")),
    ("touch", one(b"set t 0 0 1\r\nx\r\ntouch t 100\r\ntouch nokey 10\r\ntouch t abc\r\n"
                  b"touch t\r\ntouch t 1 2\r\ntouch a b c d\r\nget t\r\n")),
    ("touch_expire", one(b"set t 0 0 1\r\nx\r\ntouch t -1\r\nget t\r\n")),
    ("gat_gats", one(b"set a 0 0 1\r\nx\r\nset b 0 0 1\r\ny\r\ngat 100 a b c\r\ngats 0 a\r\n"
                     b"gat -1 b\r\nget b\r\n")),
    ("gat_no_key", one(b"gat 10\r\ngats 1 \r\n")),
    ("gat_errors", one(b"gat abc k\r\ngat abc\r\ngat\r\ngats\r\ngats 1x a\r\n")),
    # alone: memcached drops the unsent replies of earlier pipelined commands when a get
    # has a too-long key (conn_release_items), a quirk nobody should rely on
    ("gat_key_251", one(b"gat 10 " + K251 + b"\r\n")),
    ("flush_all", one(b"set a 0 0 1\r\nx\r\nflush_all\r\nget a\r\nflush_all 0\r\nflush_all -1\r\n"
                      b"flush_all abc\r\nflush_all 1 2 3\r\nflush_all 0 noreply extra\r\n")),
    ("flush_all_delay", one(b"flush_all 100\r\nflush_all\r\n")),
    ("version", one(b"version\r\nversion x y\r\n")),
    ("verbosity", one(b"verbosity 1\r\nverbosity\r\nverbosity abc\r\nverbosity 1 2\r\n"
                      b"verbosity 1 2 3\r\nverbosity -1\r\nverbosity 0\r\n")),
    ("stats", one(b"stats\r\n")),
    ("shutdown", one(b"shutdown\r\n")),
    ("quit", one(b"set a 0 0 1\r\nx\r\nget a\r\nquit\r\nget a\r\n")),
    ("quit_args", one(b"quit now\r\nversion\r\n")),

    # --- noreply everywhere
    ("noreply_storage", one(b"set a 0 0 1 noreply\r\nx\r\nadd a 0 0 1 noreply\r\ny\r\n"
                            b"add b 0 0 1 noreply\r\nb\r\nreplace a 0 0 1 noreply\r\nz\r\n"
                            b"append a 0 0 1 noreply\r\n+\r\nprepend a 0 0 1 noreply\r\n-\r\n"
                            b"get a b\r\n")),
    ("noreply_other", one(b"set n 0 0 1\r\n5\r\nincr n 3 noreply\r\ndecr n 1 noreply\r\n"
                          b"touch n 100 noreply\r\ndelete x noreply\r\ndelete n 0 noreply\r\n"
                          b"get n\r\nflush_all noreply\r\nflush_all 0 noreply\r\n"
                          b"verbosity 1 noreply\r\nversion\r\n")),
    ("noreply_errors_silenced", one(b"set a 0 0 abc noreply\r\nx\r\nincr n abc noreply\r\n"
                                    b"touch t abc noreply\r\ndelete d 1 noreply\r\n"
                                    b"flush_all abc noreply\r\nverbosity abc noreply\r\n"
                                    b"cas a 0 0 1 noreply\r\nx\r\nversion\r\n")),
    ("noreply_key_too_long", one(b"set " + K251 + b" 0 0 5 noreply\r\nhello\r\ndelete " + K251 +
                                 b" noreply\r\nincr " + K251 + b" 1 noreply\r\nversion\r\n")),
    ("noreply_bad_chunk", one(b"set a 0 0 1 noreply\r\nxyz\r\nget a\r\n")),
    ("noreply_too_large", one(b"set big 0 0 %d noreply\r\n" % (MIB + 1) + b"v" * (MIB + 1) +
                              b"\r\nversion\r\n")),
    ("noreply_not_a_flag", one(b"set a 0 0 1 NOREPLY\r\nx\r\nset a 0 0 1 2\r\ny\r\nget a noreply\r\n")),

    # --- bad numbers, lengths, tokens
    ("set_too_few_tokens", one(b"set a 0 0\r\nx\r\nset\r\nset a\r\n")),
    ("set_too_many_tokens", one(b"set a 0 0 1 noreply extra\r\nx\r\n")),
    ("set_many_tokens", one(b"set a 0 0 1" + b" x" * 30 + b"\r\nx\r\n")),
    ("set_bad_flags", one(b"set a -1 0 1\r\nx\r\nset a abc 0 1\r\nx\r\n"
                          b"set a 18446744073709551616 0 1\r\nx\r\n")),
    ("set_flags_wrap", one(b"set a 4294967296 0 1\r\nx\r\nget a\r\nset b 4294967295 0 1\r\ny\r\n"
                           b"get b\r\nset c -0 0 1\r\nz\r\nget c\r\n")),
    ("set_bad_exptime", one(b"set a 0 abc 1\r\nx\r\nset a 0 1x 1\r\nx\r\n")),
    ("set_bad_length", one(b"set a 0 0 abc\r\nx\r\nset a 0 0 1x\r\nx\r\nset a 0 0 1.0\r\nx\r\n")),
    ("set_negative_length", one(b"set a 0 0 -1\r\nx\r\nset a 0 0 -2147483648\r\nx\r\n")),
    ("set_overflowing_length", one(b"set a 0 0 2147483647\r\nx\r\nset a 0 0 2147483648\r\nx\r\n"
                                   b"set a 0 0 99999999999999999999\r\nx\r\n")),
    ("set_length_truncated", one(b"set a 0 0 4294967297\r\nx\r\nget a\r\n")),
    ("set_length_odd_syntax", one(b"set a 0 0 +1\r\nx\r\nset b 0 0 1\tj\r\ny\r\n"
                                  b"set  c  0  0  1 \r\nz\r\nget a b c\r\n")),
    ("key_250", one(b"set " + K250 + b" 0 0 5\r\nhello\r\nget " + K250 + b"\r\nincr " + K250 +
                    b" 1\r\ntouch " + K250 + b" 10\r\ndelete " + K250 + b"\r\n")),
    ("key_251_set", one(b"set " + K251 + b" 0 0 5\r\nhello\r\n")),
    ("key_251_get", one(b"get " + K251 + b"\r\n")),
    ("key_251_in_multiget", one(b"get a " + K251 + b" b\r\n")),
    ("key_251_other", one(b"delete " + K251 + b"\r\nincr " + K251 + b" 1\r\ntouch " + K251 +
                          b" 1\r\ndelete " + K251 + b" 1\r\ncas " + K251 + b" 0 0 1 1\r\nx\r\n")),
    ("cas_errors", one(b"cas a 0 0 1\r\nx\r\ncas a 0 0 1 abc\r\nx\r\ncas a 0 0 1 -1\r\nx\r\n"
                       b"cas a 0 0 1 1 2 3\r\nx\r\ncas nokey 0 0 1 1\r\nx\r\n")),

    # --- data blocks
    ("bad_chunk_short", one(b"set a 0 0 1\r\nxy\r\nget a\r\n")),
    ("bad_chunk_lf_only", one(b"set a 0 0 1\r\nx\n\r\nget a\r\n")),
    ("bad_chunk_long", one(b"set a 0 0 3\r\nabcde\r\nget a\r\n")),
    ("chunk_with_crlf_inside", one(b"set a 0 0 6\r\na\r\nb\r\n\r\nget a\r\n")),
    ("empty_value", one(b"set a 0 0 0\r\n\r\nget a\r\n")),
    ("data_split", [b"set a 0 0 10\r\nhel", b"lo wor", b"ld\r", b"\nget a\r\n"]),
    ("value_500k", one(b"set big 0 0 512000\r\n" + bytes(range(256)) * 2000 + b"\r\nget big\r\n")),
    ("too_large_1mib_plus_1", one(b"set big 0 0 %d\r\n" % (MIB + 1) + b"v" * (MIB + 1) +
                                  b"\r\nget big\r\n")),
    ("too_large_1mib", one(b"set big 0 0 %d\r\n" % MIB + b"v" * MIB + b"\r\nget big\r\n")),
    ("too_large_2mib", one(b"set big 0 0 %d\r\n" % (2 * MIB) + b"v" * (2 * MIB) +
                           b"\r\nversion\r\n")),
    ("too_large_then_junk", one(b"set big 0 0 2000000\r\n" + b"v" * 2000000 + b"XX\r\nversion\r\n")),

    # --- unknown, empty, odd bytes
    ("unknown_commands", one(b"foo\r\nGET a\r\ngetx a\r\nmisbehave\r\nsets a 0 0 1\r\nx\r\n")),
    ("empty_crlf", one(b"\r\n")),
    ("empty_lf", one(b"\n")),
    ("empty_mixed", one(b"\r\n\n \r\n\r\r\n   \r\nversion\r\n")),
    ("short_tokens", one(b"a\r\nab\r\ng\r\n")),
    ("tabs", one(b"set a\tb 0 0 1\r\nx\r\nget a\tb\r\nget\ta\r\nversion\r\r\n")),
    ("cr_inside_line", one(b"set a 0 0 1\rx\r\nx\r\nget a\r\n")),
    ("lf_only_lines", one(b"set a 0 0 1\nx\r\nget a\nversion\n")),
    ("nul_in_line", one(b"set a 0 0 1\r\nx\r\nset b 0 0 1\r\ny\r\nget a\x00b\r\nget b\x00\r\n")),
    ("extra_spaces", one(b"set a 0 0 1\r\nx\r\nset bb 0 0 2\r\nyy\r\n   get  a   bb  a \r\n")),
    ("extra_spaces_key_250", one(b"set " + K250 + b" 0 0 1\r\nx\r\nget  " + K250 + b"\r\n")),
    ("binary_key_bytes", one(b"set \xff\xfe\x01 0 0 1\r\nx\r\nget \xff\xfe\x01\r\n")),

    # --- pipelines and long lines
    ("pipeline_mix", one(b"set a 0 0 1\r\n1\r\nget a\r\nincr a 5\r\nfoo\r\nappend a 0 0 1\r\n0\r\n"
                         b"gets a\r\ndelete a\r\nget a\r\nset a 0 0 1\r\nxy\r\ntouch a 1\r\n"
                         b"version\r\n")),
    ("pipeline_100_sets", one(multi_set(KEYS100) + b"get " + b" ".join(KEYS100) + b"\r\n")),
    ("multiget_many_keys", one(multi_set(KEYS100[::2], b"val") + b"get " +
                               b" ".join(KEYS100 + KEYS100[::-3]) + b"\r\n")),
    ("multiget_long_line", one(multi_set([b"multikey%04d" % i for i in range(0, 300, 7)]) +
                               LONG_GET + b"\r\n")),
    ("multiget_long_line_split", [LONG_GET, b"\r\n"]),
    ("long_junk_line_no_newline", [b"x" * 3000, b"\r\nversion\r\n"]),
    ("long_set_line_no_newline", [b"set " + b"k" * 3000, b" 0 0 1\r\nx\r\n"]),
    ("long_junk_line_with_newline", one(b"x" * 3000 + b"\r\nversion\r\n")),
    ("long_key_line_with_newline", one(b"get " + b"k" * 3000 + b"\r\nversion\r\n")),
    ("2048_bytes_then_newline", [b"x" * 2048, b"\r\nversion\r\n"]),
    ("spaces_then_get", [b" " * 100 + LONG_GET, b"\r\n"]),
    ("too_many_spaces_then_get", [b" " * 101 + LONG_GET, b"\r\n"]),
    ("gat_long_line_no_newline", [b"gat 0 " + LONG_GET[4:], b"\r\n"]),
]


class ProtocolDiffTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = harness.Site(nodes=1, extra=POOL_EXTRA)
        try:
            cls.ref = harness.start_memcached()
        except Exception:
            cls.site.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.ref.stop()
        cls.site.stop()

    def flush(self, port):
        """Empty the node(s) behind port; its own correctness is tested by the cases."""
        out, _ = exchange(port, [b"flush_all\r\nverbosity 0\r\n"],
                          done=lambda o: o.count(b"\r\n") >= 2)
        self.assertTrue(out.startswith(b"OK\r\n"), "flush on port %d: %r" % (port, out))

    def compare(self, name, chunks):
        self.flush(self.ref.port)
        self.flush(self.site.port)
        want, want_closed = exchange(self.ref.port, chunks, sentinel=True)
        want = normalise(want)
        got, got_closed = exchange(self.site.port, chunks, sentinel=True)
        got = normalise(got)
        self.assertEqual(got[:3000], want[:3000], "%s: reply differs" % name)
        self.assertEqual(len(got), len(want), "%s: reply length differs" % name)
        self.assertEqual(got, want, "%s: reply differs" % name)
        self.assertEqual(got_closed, want_closed,
                         "%s: memcached %s the connection, geogate %s" %
                         (name, "closed" if want_closed else "kept",
                          "closed" if got_closed else "kept"))

    def test_cases(self):
        self.assertGreaterEqual(len(CASES), 80)
        for name, chunks in CASES:
            with self.subTest(case=name):
                if not self.site.gateway.alive():
                    self.fail("geogate died before %s:\n%s" % (name, self.site.gateway.log()[-6000:]))
                self.compare(name, chunks)
        self.assertTrue(self.site.gateway.alive(), "geogate died:\n" + self.site.gateway.log()[-3000:])

    def run_cas_flow(self, port):
        """set, gets, then cas with the token from gets (twice: STORED then EXISTS)."""
        s = socket.create_connection(("127.0.0.1", port), timeout=CASE_TIMEOUT)
        try:
            f = s.makefile("rb")
            s.sendall(b"set c 0 0 1\r\nx\r\ngets c\r\n")
            lines = [f.readline() for _ in range(4)]
            self.assertEqual(lines[0], b"STORED\r\n")
            m = re.match(rb"VALUE c 0 1 (\d+)\r\n", lines[1])
            self.assertIsNotNone(m, lines)
            token = m.group(1)
            s.sendall(b"cas c 0 0 1 " + token + b"\r\ny\r\ncas c 0 0 1 " + token +
                      b"\r\nz\r\ncas c 0 0 1 " + token + b" noreply\r\nw\r\ncas missing 0 0 1 " +
                      token + b"\r\nq\r\ngets c\r\n")
            out = b""
            deadline = time.time() + CASE_TIMEOUT
            while not out.endswith(b"END\r\n") and time.time() < deadline:
                data = s.recv(65536)
                if not data:
                    break
                out += data
            return normalise(out)
        finally:
            s.close()

    def test_cas_with_tokens_from_gets(self):
        self.flush(self.ref.port)
        self.flush(self.site.port)
        want = self.run_cas_flow(self.ref.port)
        self.assertEqual(want, b"STORED\r\nEXISTS\r\nNOT_FOUND\r\nVALUE c 0 1 <cas>\r\ny\r\nEND\r\n")
        self.assertEqual(self.run_cas_flow(self.site.port), want)

    def test_stats_shape(self):
        """stats through geogate is memcached's shape: STAT lines then END."""
        out, _ = exchange(self.site.port, [b"stats\r\n"], done=lambda o: o.endswith(b"END\r\n"))
        self.assertTrue(out.endswith(b"END\r\n"), out[-200:])
        lines = out.split(b"\r\n")[:-2]
        self.assertTrue(lines)
        names = set()
        for line in lines:
            self.assertRegex(line, rb"^STAT \S+ \S")
            names.add(line.split(b" ")[1])
        for n in (b"uptime", b"curr_connections", b"total_connections", b"cmd_get",
                  b"get_hits", b"get_misses", b"cmd_set"):
            self.assertIn(n, names)


class MultiNodeOrderTest(unittest.TestCase):
    def test_200_keys_in_client_order(self):
        with harness.Site(nodes=2, extra=POOL_EXTRA) as site:
            keys = [b"order:%d" % i for i in range(200)]
            payload = b"".join(b"set %s %d 0 %d\r\n%s\r\n" % (k, i, len(k) + 1, k + b"!")
                               for i, k in enumerate(keys))
            out, _ = exchange(site.port, [payload],
                              done=lambda o: o.count(b"STORED\r\n") == 200)
            self.assertEqual(out, b"STORED\r\n" * 200)
            # both nodes hold some of the keys, so the get really is split
            per_node = []
            for m in site.memcached:
                got, _ = exchange(m.port, [b"get " + b" ".join(keys) + b"\r\n"],
                                  done=lambda o: o.endswith(b"END\r\n"))
                per_node.append(got.count(b"VALUE "))
            self.assertEqual(sum(per_node), 200, per_node)
            self.assertTrue(all(n > 20 for n in per_node), per_node)

            # the client's order, with duplicates and misses mixed in
            order = (keys[::-1] + keys[::3] + [b"order:missing%d" % i for i in range(10)] +
                     keys[:50] + [keys[7]] * 5)
            want = b"".join(b"VALUE %s %d %d\r\n%s\r\n" % (k, keys.index(k), len(k) + 1, k + b"!")
                            for k in order if k in keys) + b"END\r\n"
            for cmd in (b"get", b"gets"):
                got, _ = exchange(site.port, [cmd + b" " + b" ".join(order) + b"\r\n"],
                                  done=lambda o: o.endswith(b"END\r\n"))
                if cmd == b"gets":
                    got = _CAS.sub(rb"\1\r\n", got)
                self.assertEqual(got, want)
            # many multi-gets pipelined on one connection keep their order too
            got, _ = exchange(site.port, [b"".join(b"get %s %s\r\n" % (keys[i], keys[199 - i])
                                                   for i in range(100))],
                              done=lambda o: o.count(b"END\r\n") == 100)
            want = b"".join(b"VALUE %s %d %d\r\n%s\r\nVALUE %s %d %d\r\n%s\r\nEND\r\n" %
                            (keys[i], i, len(keys[i]) + 1, keys[i] + b"!",
                             keys[199 - i], 199 - i, len(keys[199 - i]) + 1, keys[199 - i] + b"!")
                            for i in range(100))
            self.assertEqual(got, want)


if __name__ == "__main__":
    unittest.main()


class VersionedProtocolDiffTest(ProtocolDiffTest):
    """The same byte-for-byte comparison through a replicating gateway (one with a wan:
    section), which stores a version header with every item, rewrites replace/append/
    prepend/incr/decr/touch as read-modify-write and delete as a tombstone: clients must
    not be able to tell."""

    @classmethod
    def setUpClass(cls):
        cls.site = harness.Site(nodes=1, extra="wan:\n  listen: 127.0.0.1:%d\n" % harness.free_port())
        try:
            cls.ref = harness.start_memcached()
        except Exception:
            cls.site.stop()
            raise
