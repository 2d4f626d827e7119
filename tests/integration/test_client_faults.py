"""Client-side faults: how geogate treats clients that half-close, vanish, reset, stop
reading, idle, crowd in, or send what is not memcached's protocol.

Where memcached has the behaviour, the same case runs against a real memcached started
by the test, and geogate must give the byte-identical result: the same reply bytes and
the same answer to "did the server close the connection".  What memcached does not have
(a node closing under the gateway, back-pressure towards a client that does not read,
client_output_limit, max_connections with a tiny limit) is checked against fixed
expectations.

1. Connection life cycle: nc -q1 / nc -N, a pipelining client that half-closes, 10000
   clients that send and close at once, resets in the middle of a request line, a data
   block and a large reply, a memcached node that dies under an idle gateway.
2. Back-pressure: clients that pipeline many gets of a 512 KiB value and never read
   must not grow the gateway's memory without bound or slow down other clients;
   client_output_limit disconnects such a client.
3. Hostile and malformed input: HTTP request lines, lines too long, values too large,
   idle_timeout, max_connections.

Every test starts what it needs on free loopback ports and stops it at the end; every
wait is bounded.  Environment: GEOGATE_FAULT_CLIENTS shrinks the send-and-close crowd
(default 10000, 2000 under GEOGATE_SANITIZED=1).
"""
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

# Time bounds stretch on a sanitized build and on a loaded machine; 1 on a quiet one.
SLOW = (2.0 if harness.SANITIZED else 1.0) * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
SOCK_TIMEOUT = 5.0 * SLOW
QUIET = 0.4          # "the server is quiet": no byte for this long
NO_EOL_QUIET = 1.0   # after bytes without '\n': time memcached gets to hang up
# A loaded machine must not turn a slow node reply into a SERVER_ERROR.
POOL_EXTRA = "  timeout: 2000\n"
CLIENTS = int(os.environ.get("GEOGATE_FAULT_CLIENTS") or (2000 if harness.SANITIZED else 10000))
MIB = 1 << 20
NC = "/usr/bin/nc"


# ---------------------------------------------------------------- processes

class FaultSite:
    """memcached nodes plus one geogate in front of them, in a temp dir.  Unlike
    harness.Site it stops whatever it started when the gateway does not come up (a
    config key the binary does not know yet): the test then fails with the log."""

    def __init__(self, nodes=1, threads=2, extra=""):
        self.tmp = tempfile.TemporaryDirectory(prefix="geogate-faults-")
        self.dir = self.tmp.name
        self.memcached = []
        self.gateway = None
        try:
            for _ in range(nodes):
                self.memcached.append(harness.start_memcached())
            self.servers = ["127.0.0.1:%d:1" % m.port for m in self.memcached]
            self.config, self.port = harness.write_gateway_config(
                self.dir, self.servers, threads=threads, extra=POOL_EXTRA + extra)
            # a binary being rebuilt is briefly missing or not executable
            wait_until(lambda: os.access(harness.GEOGATE, os.X_OK), 10)
            err = os.path.join(self.dir, "geogate-%d.log" % self.port)
            self.gateway = harness.Proc([harness.GEOGATE, "--config", self.config],
                                        "geogate:%d" % self.port, stderr_path=err)
            self.gateway.port = self.port
            try:
                harness.wait_port(self.port, proc=self.gateway.p, timeout=15 * SLOW)
            except Exception as e:
                with open(self.config) as f:
                    config = f.read()
                raise RuntimeError("geogate did not start (%s); config:\n%s\nlog:\n%s" %
                                   (e, config, self.gateway.log()[-3000:]))
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self):
        return self.gateway.pid

    def log(self):
        return self.gateway.log() if self.gateway else ""

    def stop(self):
        for p in ([self.gateway] if self.gateway else []) + self.memcached:
            try:
                p.stop()
            except Exception:
                pass
        self.tmp.cleanup()


def site_or_fail(test, **kw):
    """Start a FaultSite that test.addCleanup stops; a start failure fails the test."""
    try:
        site = FaultSite(**kw)
    except RuntimeError as e:
        test.fail(str(e))
    test.addCleanup(site.stop)
    return site


def memcached_for(test, extra=()):
    m = harness.start_memcached(extra=list(extra))
    test.addCleanup(m.stop)
    return m


# ---------------------------------------------------------------- sockets

def connect(port, timeout=SOCK_TIMEOUT, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
    except BaseException:
        s.close()
        raise
    return s


def read_until(s, pred=None, timeout=SOCK_TIMEOUT):
    """Read until pred(out), EOF/reset or the deadline; returns (out, closed)."""
    out = b""
    deadline = time.monotonic() + timeout
    while pred is None or not pred(out):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            data = s.recv(1 << 20)
        except socket.timeout:
            break
        except (ConnectionResetError, BrokenPipeError):
            return out, True
        if not data:
            return out, True
        out += data
    return out, False


def read_quiet(s, quiet=QUIET, timeout=SOCK_TIMEOUT):
    """Read until the peer closes (closed=True) or sends nothing for `quiet` s
    (closed=False), bounded by timeout; returns (out, closed)."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, min(quiet, deadline - time.monotonic())))
        try:
            data = s.recv(1 << 20)
        except socket.timeout:
            return out, False
        except (ConnectionResetError, BrokenPipeError):
            return out, True
        if not data:
            return out, True
        out += data
    return out, False


def ends_with_line(prefix):
    pat = re.compile(rb"(?:^|\n)" + re.escape(prefix) + rb"[^\r\n]*\r\n\Z")
    return lambda o: bool(pat.search(o))


def ask(s, req, pred, timeout=SOCK_TIMEOUT):
    s.sendall(req)
    return read_until(s, pred, timeout)[0]


def exchange(port, chunks, done=None, timeout=SOCK_TIMEOUT):
    """Send each chunk on a fresh connection.  After a chunk that is not the last, wait
    until the peer is quiet (longer after a chunk without '\\n', so memcached can hang
    up on a line too long); after the last one read until done(out), EOF, or quiet.
    Returns (bytes, closed)."""
    out = b""
    s = connect(port)
    try:
        for i, chunk in enumerate(chunks):
            try:
                s.sendall(chunk)
            except OSError:
                return out, True
            last = i == len(chunks) - 1
            if last and done is not None:
                got, closed = read_until(s, done, timeout)
            else:
                got, closed = read_quiet(s, QUIET if b"\n" in chunk else NO_EOL_QUIET, timeout)
            out += got
            if closed:
                return out, True
        return out, False
    finally:
        s.close()


def reset_close(s):
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        s.close()


_VERSION = re.compile(rb"^VERSION [^\r\n]*\r\n", re.M)


def normalise(b):
    return _VERSION.sub(b"VERSION <v>\r\n", b)


def value_reply(key, value, flags=0):
    return b"VALUE %s %d %d\r\n%s\r\nEND\r\n" % (key, flags, len(value), value)


# ---------------------------------------------------------------- process state

def stats(port):
    s = connect(port)
    try:
        out = ask(s, b"stats\r\n", lambda o: o.endswith(b"END\r\n"))
    finally:
        s.close()
    return {m.group(1).decode(): m.group(2).decode()
            for m in re.finditer(rb"^STAT (\S+) ([^\r\n]*)\r\n", out, re.M)}


def curr_connections(port):
    """curr_connections as `stats` on a fresh connection reports it (counting itself)."""
    return int(stats(port)["curr_connections"])


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS for pid %d" % pid)


def sockets_to(pid, remote_port):
    """TCP states (hex strings, '01' established, '08' close-wait) of the sockets that
    process pid holds open with 127.0.0.1:remote_port as their peer."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]$", target)
        if m:
            inodes.add(m.group(1))
    states = []
    with open("/proc/%d/net/tcp" % pid) as f:
        next(f)
        for line in f:
            cols = line.split()
            rem_port = int(cols[2].split(":")[1], 16)
            if rem_port == remote_port and cols[9] in inodes:
                states.append(cols[3])
    return states


def wait_until(fn, timeout, interval=0.05):
    """Call fn until it returns something true or timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def settled_fd_count(pid, timeout=3.0 * SLOW):
    """The fd count once it has stopped moving (closes of earlier probes processed)."""
    last, same = fd_count(pid), 0
    deadline = time.monotonic() + timeout
    while same < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
        now = fd_count(pid)
        same = same + 1 if now == last else 0
        last = now
    return last


class Baseline:
    """fd count and curr_connections of a server, taken once it is warm, so that
    'everything is back' can be checked after a fault."""

    def __init__(self, port, pid):
        self.port, self.pid = port, pid
        self.fds = settled_fd_count(pid)
        self.conns = curr_connections(port)

    def now(self):
        return fd_count(self.pid), curr_connections(self.port)

    def wait_back(self, test, timeout, what):
        seen = []

        def back():
            fds, conns = self.now()
            seen.append((fds, conns))
            return fds == self.fds and conns == self.conns
        ok = wait_until(back, timeout, interval=0.1)
        test.assertTrue(ok, "%s: after %.0fs fds/curr_connections are %s, started at %s" %
                        (what, timeout, seen[-1], (self.fds, self.conns)))


def warm_up(port, nconns=4):
    """Open the gateway's lazy node connections on every worker (connections are dealt
    round robin): a 64-key get from a few connections reaches every node."""
    keys = b" ".join(b"warm:%d" % i for i in range(64))
    for _ in range(nconns):
        s = connect(port)
        try:
            out = ask(s, b"get " + keys + b"\r\n", lambda o: o.endswith(b"END\r\n"))
            assert out == b"END\r\n", out
        finally:
            s.close()


def store(port, key, value):
    s = connect(port)
    try:
        out = ask(s, b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value),
                  lambda o: o.endswith(b"\r\n"), timeout=10 * SLOW)
    finally:
        s.close()
    if out != b"STORED\r\n":
        raise AssertionError("set %r on port %d: %r" % (key, port, out))


def get(port, keys, timeout=SOCK_TIMEOUT):
    s = connect(port)
    try:
        s.sendall(b"get " + b" ".join(keys) + b"\r\n")
        out, _ = read_until(s, lambda o: o.endswith(b"END\r\n"), timeout)
        return out
    finally:
        s.close()


def round_trip(port, key, value, timeout=SOCK_TIMEOUT):
    """set + get on a fresh connection; returns (reply, seconds)."""
    t0 = time.monotonic()
    s = connect(port)
    try:
        want = b"STORED\r\n" + value_reply(key, value)
        out = ask(s, b"set %s 0 0 %d\r\n%s\r\nget %s\r\n" % (key, len(value), value, key),
                  lambda o: len(o) >= len(want), timeout)
        return out, time.monotonic() - t0
    finally:
        s.close()


# =============================================================== 1. life cycle

SET_GET = b"set k 0 0 2\r\nhi\r\nget k\r\n"
SET_GET_REPLY = b"STORED\r\nVALUE k 0 2\r\nhi\r\nEND\r\n"
BIG200 = bytes(range(256)) * 800  # 204800 bytes


class LifeCycleTest(unittest.TestCase):
    """1: each test gets its own gateway (2 nodes, 2 workers) and reference memcached."""

    def setUp(self):
        self.site = site_or_fail(self, nodes=2)
        self.ref = memcached_for(self)

    def targets(self):
        """(name, port, pid) of the reference first, then the gateway."""
        return [("memcached", self.ref.port, self.ref.pid),
                ("geogate", self.site.port, self.site.pid)]

    def assert_gateway_alive(self):
        self.assertTrue(self.site.gateway.alive(), "geogate died:\n" + self.site.log()[-4000:])

    # --- a. netcat

    def nc(self, flag, port):
        t0 = time.monotonic()
        try:
            r = subprocess.run([NC, flag, "127.0.0.1", str(port)], input=SET_GET,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
        except subprocess.TimeoutExpired as e:
            return ("timeout", e.stdout), time.monotonic() - t0
        return (r.returncode, r.stdout), time.monotonic() - t0

    def check_nc(self, flag):
        results = {}
        for name, port, _ in self.targets():
            with self.subTest(server=name, nc=flag):
                results[name], took = self.nc(flag, port)
                self.assertEqual(results[name], (0, SET_GET_REPLY),
                                 "nc %s against %s (%.1fs)" % (flag, name, took))
        self.assertEqual(results["geogate"], results["memcached"])
        self.assert_gateway_alive()

    def test_1a_nc_q1(self):
        """`printf ... | nc -q1`: every reply arrives before nc gives up."""
        self.check_nc("-q1")

    def test_1a_nc_N(self):
        """`printf ... | nc -N` half-closes after stdin and waits for the server to close:
        the server must answer everything, then close."""
        self.check_nc("-N")

    # --- b. pipeline then SHUT_WR

    def test_1b_pipeline_then_shutdown_wr(self):
        """Pipelined sets and gets (one of a ~200 kB value), then shutdown(SHUT_WR): every
        reply arrives in order, then EOF, within a few seconds."""
        req = (b"set big 0 0 %d\r\n%s\r\n" % (len(BIG200), BIG200) +
               b"set a 0 0 1\r\n1\r\nset b 5 0 2\r\n22\r\nget a\r\nget big\r\n"
               b"get nothere\r\nget b a\r\ndelete a\r\nget a big b\r\nversion\r\n")
        want = (b"STORED\r\nSTORED\r\nSTORED\r\n" + value_reply(b"a", b"1") +
                value_reply(b"big", BIG200) + b"END\r\n" +
                b"VALUE b 5 2\r\n22\r\nVALUE a 0 1\r\n1\r\nEND\r\nDELETED\r\n" +
                b"VALUE big 0 %d\r\n%s\r\nVALUE b 5 2\r\n22\r\nEND\r\nVERSION <v>\r\n" %
                (len(BIG200), BIG200))
        results = {}
        for name, port, _ in self.targets():
            s = connect(port)
            try:
                t0 = time.monotonic()
                s.sendall(req)
                s.shutdown(socket.SHUT_WR)
                out, closed = read_until(s, None, timeout=5 * SLOW)
                took = time.monotonic() - t0
            finally:
                s.close()
            results[name] = (normalise(out), closed)
            with self.subTest(server=name):
                self.assertTrue(closed, "%s: no EOF after %.1fs (got %d of %d bytes)" %
                                (name, took, len(out), len(want)))
                self.assertEqual(normalise(out), want, name)
        self.assertEqual(results["geogate"], results["memcached"])
        self.assert_gateway_alive()

    # --- c. send and close

    def send_and_close(self, port, n, nthreads=8):
        """n clients, each: connect, send a noreply set (every 4th also a get), close at
        once without reading.  Returns the errors seen (connects that failed)."""
        errors = []

        def run(t):
            for i in range(t, n, nthreads):
                payload = b"set sc%d 0 0 1 noreply\r\nx\r\n" % i
                if i % 4 == 0:
                    payload += b"get k\r\n"
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=SOCK_TIMEOUT)
                    try:
                        s.sendall(payload)
                    finally:
                        s.close()
                except OSError as e:
                    errors.append((i, repr(e)))
                    if len(errors) > 20:
                        return
        threads = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(nthreads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120 * SLOW)
        self.assertFalse(any(t.is_alive() for t in threads), "send-and-close clients hung")
        return errors

    def test_1c_send_and_close(self):
        """CLIENTS clients send a request and close at once: afterwards the fd count and
        curr_connections are back where they started, and the noreply sets that arrived
        before the close were executed (memcached executes them)."""
        warm_up(self.site.port)
        store(self.ref.port, b"k", b"v")
        store(self.site.port, b"k", b"v")
        sample = list(range(0, CLIENTS, max(1, CLIENTS // 200)))
        want = b"".join(b"VALUE sc%d 0 1\r\nx\r\n" % i for i in sample) + b"END\r\n"
        for name, port, pid in self.targets():
            with self.subTest(server=name):
                base = Baseline(port, pid)
                t0 = time.monotonic()
                errors = self.send_and_close(port, CLIENTS)
                took = time.monotonic() - t0
                print("\n    1c: %d send-and-close clients against %s in %.1fs" %
                      (CLIENTS, name, took), file=sys.stderr)
                self.assertEqual(errors, [], "%s: connects failed" % name)
                base.wait_back(self, 10 * SLOW, "%s after %d send-and-close clients (%.1fs)" %
                               (name, CLIENTS, took))
                got = get(port, [b"sc%d" % i for i in sample], timeout=10 * SLOW)
                missing = set(sample) - {int(k) for k in re.findall(rb"^VALUE sc(\d+) ", got, re.M)}
                self.assertEqual(sorted(missing)[:20], [],
                                 "%s: %d of %d sampled noreply sets sent before the close "
                                 "were not stored" % (name, len(missing), len(sample)))
                self.assertEqual(got, want, name)
        self.assert_gateway_alive()

    # --- d. resets

    HUGE = (b"0123456789abcdef" * 56250)  # 900000 bytes, under the 1 MiB item limit

    def resets(self, port, rounds=8):
        """Reset connections mid request line, mid data block, mid large reply."""
        for i in range(rounds):
            # in the middle of a request line
            s = connect(port)
            s.sendall(b"get abort:line%d abort:more" % i)
            time.sleep(0.05)
            reset_close(s)
            # in the middle of a storage command's data block
            s = connect(port)
            s.sendall(b"set abort:%d 0 0 100000\r\n" % i + b"d" * 50000)
            time.sleep(0.1)
            reset_close(s)
            # in the middle of receiving a large get reply
            s = connect(port, rcvbuf=16384)
            s.sendall(b"get huge\r\n")
            got = b""
            deadline = time.monotonic() + SOCK_TIMEOUT
            while len(got) < 16384 and time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    chunk = s.recv(4096)
                except socket.timeout:
                    break
                if not chunk:
                    break
                got += chunk
            reset_close(s)
            self.assertTrue(got.startswith(b"VALUE huge 0 %d\r\n" % len(self.HUGE)),
                            "round %d: a new client's `get huge` got %r within %.0fs "
                            "(after the resets before it)" % (i, got[:80], SOCK_TIMEOUT))

    def test_1d_resets(self):
        """RST in the middle of a request line, of a set's data block and of a large get
        reply: the server's fds and curr_connections come back, a fresh client is served
        correctly, and the aborted set stored nothing."""
        warm_up(self.site.port)
        results = {}
        fresh = (b"set fresh 0 0 5\r\nhello\r\nget fresh\r\nget " +
                 b" ".join(b"abort:%d" % i for i in range(5)) + b"\r\nget huge\r\nversion\r\n")
        want = (b"STORED\r\n" + value_reply(b"fresh", b"hello") + b"END\r\n" +
                value_reply(b"huge", self.HUGE) + b"VERSION <v>\r\n")
        for name, port, pid in self.targets():
            with self.subTest(server=name):
                store(port, b"huge", self.HUGE)
                base = Baseline(port, pid)
                self.resets(port)
                base.wait_back(self, 10 * SLOW, "%s after resets" % name)
                out, closed = exchange(port, [fresh], done=ends_with_line(b"VERSION"))
                results[name] = (normalise(out), closed)
                self.assertEqual(results[name], (want, False), name)
        if len(results) == 2:
            self.assertEqual(results["geogate"], results["memcached"])
        self.assert_gateway_alive()

    def test_1d_reset_with_the_last_bytes(self):
        """Clients that send part of a command and reset at once, so that the bytes and
        the RST arrive together (the chaos soak's closing clients found this: the reset
        raised no edge of its own, and each such connection stayed open for good): the
        server's fds and curr_connections come back."""
        warm_up(self.site.port)
        parts = [b"set abort:a 0 0", b"set abort:b 0 0 100\r\nabc", b"get abort:c abort:d"]
        for name, port, pid in self.targets():
            with self.subTest(server=name):
                base = Baseline(port, pid)
                for i in range(300):
                    s = connect(port)
                    s.sendall(parts[i % len(parts)])
                    reset_close(s)
                base.wait_back(self, 10 * SLOW, "%s after 300 clients reset with a partial "
                               "command" % name)
        self.assert_gateway_alive()


class NodeCloseTest(unittest.TestCase):
    def test_1e_dead_node_connection_closed_while_idle(self):
        """A memcached node dies while the gateway is idle with connections open to it:
        the gateway closes its end within ~2 s, without any client request."""
        site = site_or_fail(self, nodes=2)
        warm_up(site.port)
        victim = site.memcached[0]
        before = sockets_to(site.pid, victim.port)
        self.assertTrue(before and all(st == "01" for st in before),
                        "warm-up left no established connection to the node: %s" % before)
        fds0 = settled_fd_count(site.pid)
        victim.kill()
        t0 = time.monotonic()
        # gone: no socket to the node in any TCP state (CLOSE_WAIT = never closed), and
        # the fds really closed (a socket in state CLOSE is not listed in net/tcp)
        gone = wait_until(lambda: not sockets_to(site.pid, victim.port) and
                          fd_count(site.pid) <= fds0 - len(before), 2.5 * SLOW)
        took = time.monotonic() - t0
        left, fds = sockets_to(site.pid, victim.port), fd_count(site.pid)
        if not gone:
            try:
                s = connect(site.port)
                try:
                    nodes = ask(s, b"stats nodes\r\n", lambda o: o.endswith(b"END\r\n")).decode()
                finally:
                    s.close()
            except OSError as e:
                nodes = repr(e)
            self.fail("%.1fs after the node died the gateway still holds %d socket(s) to it "
                      "(TCP states %s; 08 = CLOSE_WAIT, never closed) and %d fds (%d before, "
                      "%d node sockets)\nstats nodes:\n%s" %
                      (took, len(left), left, fds, fds0, len(before), nodes))
        self.assertTrue(site.gateway.alive(), site.log()[-3000:])


class AdminListenerTest(unittest.TestCase):
    def test_1f_admin_half_close_and_send_and_close(self):
        """The admin listener keeps the same life cycle: a client that half-closes after
        its request gets the whole answer and then EOF; 500 clients that send a request
        and close at once leave no fd behind."""
        admin_port = harness.free_port()
        site = site_or_fail(self, nodes=1, extra="admin: 127.0.0.1:%d\n" % admin_port)
        harness.wait_port(admin_port, timeout=10 * SLOW)
        s = connect(admin_port)
        try:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            out, closed = read_until(s, None, SOCK_TIMEOUT)
        finally:
            s.close()
        self.assertTrue(closed, "the admin listener kept a half-closed client open")
        self.assertTrue(out.startswith(b"HTTP/1.1 200") and out.endswith(b"ok"), out[:200])
        fds0 = settled_fd_count(site.pid)
        for _ in range(500):
            c = socket.create_connection(("127.0.0.1", admin_port))
            c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            c.close()
        back = wait_until(lambda: fd_count(site.pid) <= fds0, 10 * SLOW, interval=0.1)
        self.assertTrue(back, "admin: %d fds, %d before 500 send-and-close clients" %
                        (fd_count(site.pid), fds0))
        self.assertTrue(site.gateway.alive(), site.log()[-3000:])


class WanListenerTest(unittest.TestCase):
    def test_1g_wan_listener_reaps_what_is_not_a_peer(self):
        """The WAN listener (TLS, HTTP/2) keeps the same life cycle: 300 connections that
        send a few bytes that are not TLS and close, 300 that half-close after a partial
        ClientHello, and 100 reset at once leave no fd behind, and replication between the
        two sites still works afterwards."""
        from multisite import Lab
        lab = Lab(["fa", "fb"], threads=1)
        self.addCleanup(lab.stop)
        a = lab.sites["fa"]
        pid = a.gateway.pid
        fds0 = settled_fd_count(pid)
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32
        for i in range(700):
            c = socket.create_connection(("127.0.0.1", a.wan_port))
            if i < 300:
                c.sendall(b"GET / HTTP/1.1\r\n\r\n")
                c.close()
            elif i < 600:
                c.sendall(hello)
                c.shutdown(socket.SHUT_WR)
                c.close()
            else:
                reset_close(c)
        back = wait_until(lambda: fd_count(pid) <= fds0, 15 * SLOW, interval=0.2)
        self.assertTrue(back, "WAN listener: %d fds, %d before" % (fd_count(pid), fds0))
        self.assertTrue(a.gateway.alive(), "\n".join(open(l).read()[-2000:] for l in a.logs))
        lab.client("fa").set("wan-after", b"still-here")
        got = wait_until(lambda: lab.client("fb").get("wan-after"), 15 * SLOW, interval=0.2)
        self.assertEqual(got, b"still-here")


# =============================================================== 2. back-pressure

BIG512 = bytes(range(256)) * 2048  # 512 KiB


class BackPressureTest(unittest.TestCase):
    NON_READERS = 10
    GETS_EACH = 200

    def test_2c_multi_node_multiget_streams_in_order(self):
        """A get of many keys over two nodes, large values among them, misses and repeats:
        the answers stream on as each node moves past a key, and the client still gets
        exactly memcached's bytes, in its own key order."""
        site = site_or_fail(self, nodes=2)
        sizes = [10, 600000, 3000, 300000, 0, 70000, 1, 500000]
        values = {}
        for i in range(24):
            key = b"mg:%d" % i
            values[key] = bytes([65 + i % 26]) * sizes[i % len(sizes)]
            store(site.port, key, values[key])
        keys = list(values) + [b"mg:none", b"mg:1", b"mg:1", b"mg:none2", b"mg:3"]
        want = b"".join(b"VALUE %s 0 %d\r\n%s\r\n" % (k, len(values[k]), values[k])
                        for k in keys if k in values) + b"END\r\n"
        for _ in range(3):
            s = connect(site.port)
            try:
                s.sendall(b"get " + b" ".join(keys) + b"\r\n")
                out, closed = read_until(s, lambda o: len(o) >= len(want), 20 * SLOW)
            finally:
                s.close()
            self.assertFalse(closed)
            self.assertEqual(len(out), len(want))
            self.assertTrue(out == want, "the multi-get's bytes differ from the expected")


    def test_2a_non_reading_clients(self):
        """10 clients pipeline 200 gets of a 512 KiB value and never read: the gateway's
        RSS grows by at most 64 MiB, another client's round trips stay under 1 s, and
        after the 10 close, memory, fds and curr_connections come back."""
        site = site_or_fail(self, nodes=1)
        store(site.port, b"big", BIG512)
        warm_up(site.port)
        self.assertEqual(get(site.port, [b"big"]), value_reply(b"big", BIG512))
        base = Baseline(site.port, site.pid)
        rss0 = rss_bytes(site.pid)
        hogs = []
        self.addCleanup(lambda: [h.close() for h in hogs])
        req = b"get big\r\n" * self.GETS_EACH
        for _ in range(self.NON_READERS):
            h = connect(site.port, rcvbuf=65536)
            hogs.append(h)
            h.sendall(req)
        # normal traffic for ~3 s, RSS sampled all along
        peak, slowest, bad, n = rss0, 0.0, [], 0
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            value = b"v%d" % n
            out, took = round_trip(site.port, b"normal", value)
            n += 1
            slowest = max(slowest, took)
            if out != b"STORED\r\n" + value_reply(b"normal", value):
                bad.append(out[:200])
            peak = max(peak, rss_bytes(site.pid))
            time.sleep(0.05)
        self.assertEqual(bad, [], "the normal client got wrong answers")
        self.assertLess(slowest, 1.0 * SLOW, "a normal round trip took %.2fs" % slowest)
        growth = peak - rss0
        print("\n    2a: RSS %.1f MiB at start, +%.1f MiB at peak; %d round trips, slowest %.3fs" %
              (rss0 / MIB, growth / MIB, n, slowest), file=sys.stderr)
        if not harness.SANITIZED:  # ASan's redzones and quarantine make RSS meaningless
            self.assertLessEqual(growth, 64 * MIB, "RSS grew by %.1f MiB" % (growth / MIB))
        for h in hogs:
            h.close()
        hogs.clear()
        # one bounded wait for everything to come back: fds, curr_connections, memory
        seen = []

        def back():
            fds, conns = base.now()
            rss = rss_bytes(site.pid)
            seen.append((fds, conns, rss))
            return (fds, conns) == (base.fds, base.conns) and (
                harness.SANITIZED or rss <= rss0 + 16 * MIB)
        ok = wait_until(back, 30, 0.2)
        fds, conns, rss = seen[-1]
        self.assertTrue(ok, "30s after the non-reading clients closed: fds %d (started at %d), "
                        "curr_connections %d (started at %d), RSS %.1f MiB (started at %.1f)" %
                        (fds, base.fds, conns, base.conns, rss / MIB, rss0 / MIB))
        out, took = round_trip(site.port, b"normal", b"after")
        self.assertEqual(out, b"STORED\r\n" + value_reply(b"normal", b"after"))
        self.assertTrue(site.gateway.alive(), site.log()[-3000:])

    def test_2b_client_output_limit(self):
        """client_output_limit: a client whose unsent replies pass it is disconnected
        (logged with the word client_output_limit); other clients keep working."""
        site = site_or_fail(self, nodes=1, extra="client_output_limit: 2097152\n")
        store(site.port, b"big", BIG512)
        warm_up(site.port)
        base = Baseline(site.port, site.pid)
        full = 20 * len(value_reply(b"big", BIG512)[:-5]) + 5  # 20 VALUEs and one END
        hog = connect(site.port, rcvbuf=65536)
        self.addCleanup(hog.close)
        hog.sendall(b"get" + b" big" * 20 + b"\r\n")
        logged = wait_until(lambda: "client_output_limit" in site.log(), 5 * SLOW, 0.1)
        out, took = round_trip(site.port, b"normal", b"ok")
        self.assertEqual(out, b"STORED\r\n" + value_reply(b"normal", b"ok"))
        self.assertLess(took, 1.0 * SLOW)
        got, closed = read_until(hog, None, timeout=10 * SLOW)
        self.assertTrue(closed, "the non-reading client was not disconnected (read %d of %d "
                        "bytes, then the server went quiet)" % (len(got), full))
        self.assertLess(len(got), full, "the whole ~10 MB reply was delivered")
        self.assertTrue(logged, "no log line with 'client_output_limit':\n" + site.log()[-2000:])
        hog.close()
        base.wait_back(self, 10 * SLOW, "after the disconnect")
        self.assertTrue(site.gateway.alive(), site.log()[-3000:])


# =============================================================== 3. hostile input

LONG_GET = b"get " + b" ".join(b"longkey%04d" % i for i in range(400))  # ~4.8 kB

# (name, chunks): every expectation is whatever the reference memcached does.
HTTP_LINES = [
    # a. HTTP request lines: memcached hangs up on an unknown command whose last token
    # starts with HTTP/, unless the command starts with a,c,d,g,i,m,s,t or is 1 byte.
    # The HTTP line comes first: memcached drops the unsent replies of commands before
    # it on the same connection when it hangs up, a quirk nobody should rely on.
    ("http_get", [b"GET / HTTP/1.0\r\nversion\r\n"]),
    ("http_put", [b"PUT /a/b HTTP/1.1\r\nversion\r\n"]),
    ("http_delete_upper", [b"DELETE HTTP/1.1\r\nversion\r\n"]),
    ("http_post_headers", [b"POST /x HTTP/1.1\r\nHost: a\r\n\r\nversion\r\n"]),
    ("http_head", [b"HEAD / HTTP/1.1\r\nversion\r\n"]),
    ("http_options", [b"OPTIONS * HTTP/1.1\r\nversion\r\n"]),
    ("http2_preface", [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nversion\r\n"]),
    ("http_only_token", [b"HTTP/1.0\r\nversion\r\n"]),
    ("http_trailing_space", [b"GET / HTTP/1.0 \r\nversion\r\n"]),
    ("http_lf_only", [b"GET / HTTP/1.0\nversion\r\n"]),
    ("http_bare_prefix", [b"xyz HTTP/\r\nversion\r\n"]),
    ("http_v_command", [b"vx / HTTP/1.0\r\nversion\r\n"]),
    ("http_split", [b"GET / HT", b"TP/1.0\r\nversion\r\n"]),
    # ... and the lines memcached answers normally
    ("http_lower_get", [b"get / HTTP/1.0\r\nversion\r\n"]),
    ("http_lower_version", [b"GET / http/1.0\r\nversion\r\n"]),
    ("http_no_version", [b"GET /\r\nversion\r\n"]),
    ("http_stats", [b"stats HTTP/1.0\r\nversion\r\n"]),
    ("http_not_last", [b"a b HTTP/1.0 c\r\nversion\r\n"]),
    ("http_one_byte_command", [b"x HTTP/1.0\r\nversion\r\n"]),
    ("http_g_command", [b"gx / HTTP/1.0\r\nversion\r\n"]),
    ("http_httpx", [b"zz HTTPX\r\nversion\r\n"]),
    ("http_known_command", [b"version HTTP/1.0\r\ndelete HTTP/1.0\r\nversion\r\n"]),
]

LONG_LINES = [
    # b. a line without '\n' past memcached's limit closes; a long get line does not
    ("no_newline_4096", [b"x" * 4096, b"\r\nversion\r\n"]),
    ("no_newline_3000", [b"x" * 3000, b"\r\nversion\r\n"]),
    ("no_newline_3000_in_pieces", [b"x" * 1000, b"x" * 1000, b"x" * 1000, b"\r\nversion\r\n"]),
    ("long_get_line", [LONG_GET + b"\r\nversion\r\n"]),
    ("long_get_line_split", [LONG_GET, b"\r\nversion\r\n"]),
    ("long_get_line_hits", [b"set longkey0007 0 0 1\r\nx\r\nset longkey0399 0 0 2\r\nyy\r\n" +
                            LONG_GET + b"\r\nversion\r\n"]),
]


class HostileInputTest(unittest.TestCase):
    """3a-c: byte-level diffs against memcached, one fresh connection per case."""

    @classmethod
    def setUpClass(cls):
        cls.site = FaultSite(nodes=1, extra="max_value_bytes: 1048576\n")
        try:
            cls.ref = harness.start_memcached()
        except BaseException:
            cls.site.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.ref.stop()
        cls.site.stop()

    def flush(self, port):
        out, _ = exchange(port, [b"flush_all\r\n"], done=lambda o: o.endswith(b"\r\n"))
        self.assertEqual(out, b"OK\r\n")

    def both(self, chunks, done=None, timeout=SOCK_TIMEOUT):
        """(memcached's, geogate's) (reply, closed) for chunks on a fresh connection of a
        flushed server; the reply is complete once it holds as many VERSION lines as the
        case sends `version` commands (or at EOF)."""
        if done is None:
            n = len(re.findall(rb"(?:^|\n)version", b"".join(chunks)))
            done = lambda o: len(re.findall(rb"(?:^|\n)VERSION [^\r\n]*\r\n", o)) >= n  # noqa: E731
        self.assertTrue(self.site.gateway.alive(), "geogate died:\n" + self.site.log()[-4000:])
        got = []
        for port in (self.ref.port, self.site.port):
            self.flush(port)
            out, closed = exchange(port, chunks, done=done, timeout=timeout)
            got.append((normalise(out), closed))
        return got

    def diff_cases(self, cases):
        """Run each case on both; returns how many the reference closed."""
        closing = 0
        for name, chunks in cases:
            with self.subTest(case=name):
                want, have = self.both(chunks)
                closing += want[1]
                self.assertEqual(have, want, "%s: geogate %r, memcached %r" %
                                 (name, have, want))
        self.assertTrue(self.site.gateway.alive(), self.site.log()[-3000:])
        return closing

    def test_3a_http_lines(self):
        """HTTP request lines: memcached hangs up on most, answers a few."""
        closing = self.diff_cases(HTTP_LINES)
        self.assertGreaterEqual(closing, 10, "the reference closed too few cases to mean much")
        self.assertLess(closing, len(HTTP_LINES))

    def test_3b_long_lines(self):
        """A line without a newline past memcached's limit closes the connection; a long
        get line with many keys is answered."""
        closing = self.diff_cases(LONG_LINES)
        self.assertEqual(closing, 3, "the reference should close exactly the no-newline cases")

    def test_3c_value_too_large(self):
        """A set over max_value_bytes: SERVER_ERROR object too large for cache, the data
        block swallowed, the key's old value dropped."""
        n = 2000000
        chunks = [b"set big 0 0 5\r\nsmall\r\nget big\r\nset big 0 0 %d\r\n" % n +
                  b"v" * n + b"\r\nget big\r\nversion\r\n"]
        want, have = self.both(chunks, timeout=15 * SLOW)
        self.assertEqual(want, (b"STORED\r\n" + value_reply(b"big", b"small") +
                                b"SERVER_ERROR object too large for cache\r\nEND\r\n"
                                b"VERSION <v>\r\n", False))
        self.assertEqual(have, want)
        # and a later, fresh look at the key agrees
        self.assertEqual(get(self.site.port, [b"big"]), b"END\r\n")


# --- d. idle_timeout

def idle_and_active(port, duration, idle_limit):
    """Two clients: one sends `version` every 300 ms for `duration` s, the other goes idle
    after one `version`.  Returns (seconds until the idle one was closed or None,
    [problems of the active one])."""
    idle, active = connect(port), connect(port)
    try:
        vp = ends_with_line(b"VERSION")
        for s in (idle, active):
            out = ask(s, b"version\r\n", vp)
            if not vp(out):
                return None, ["no VERSION before going idle: %r" % out]
        t0 = time.monotonic()
        idle_closed, problems = None, []
        end = t0 + max(duration, idle_limit)
        next_cmd = t0
        while time.monotonic() < end:
            now = time.monotonic()
            if now - t0 < duration and now >= next_cmd:
                try:
                    active.sendall(b"version\r\n")
                    out, closed = read_until(active, vp, SOCK_TIMEOUT)
                except OSError as e:
                    out, closed = b"", repr(e)
                if closed or not vp(out):
                    problems.append("at %.1fs: %r closed=%s" % (time.monotonic() - t0, out, closed))
                    break
                next_cmd = now + 0.3
            if idle_closed is None:
                out, closed = read_until(idle, None, 0.05)
                if out:
                    problems.append("the idle client got %r" % out)
                if closed:
                    idle_closed = time.monotonic() - t0
            else:
                time.sleep(0.05)
            if idle_closed is not None and now - t0 >= duration:
                break
        return idle_closed, problems
    finally:
        idle.close()
        active.close()


class IdleTimeoutTest(unittest.TestCase):
    def test_3d_memcached_reference(self):
        """memcached -o idle_timeout=1: an idle client is closed within a few seconds, one
        that sends every 300 ms is not."""
        m = memcached_for(self, extra=["-o", "idle_timeout=1"])
        closed_after, problems = idle_and_active(m.port, 3.0, 6.0 * SLOW)
        self.assertEqual(problems, [])
        self.assertIsNotNone(closed_after, "memcached did not close the idle client")
        self.assertGreaterEqual(closed_after, 0.9)
        self.assertLessEqual(closed_after, 5.0 * SLOW)

    def test_3d_idle_timeout(self):
        """idle_timeout: 1000 (ms): an idle client is closed after 1-3 s, one that sends
        every 300 ms stays open for 3 s."""
        site = site_or_fail(self, nodes=1, extra="idle_timeout: 1000\n")
        closed_after, problems = idle_and_active(site.port, 3.0, 4.0 * SLOW)
        self.assertEqual(problems, [], "the active client")
        self.assertIsNotNone(closed_after, "the idle client was not closed within %.0fs" %
                             (4.0 * SLOW))
        self.assertGreaterEqual(closed_after, 0.9, "closed before idle_timeout passed")
        self.assertLessEqual(closed_after, 3.0 * SLOW)
        self.assertEqual(get(site.port, [b"nothere"]), b"END\r\n")

    def test_3d_no_idle_timeout_by_default(self):
        """Without idle_timeout an idle client stays open (3 s here)."""
        site = site_or_fail(self, nodes=1)
        s = connect(site.port)
        self.addCleanup(s.close)
        vp = ends_with_line(b"VERSION")
        self.assertTrue(vp(ask(s, b"version\r\n", vp)))
        out, closed = read_until(s, None, 3.0)
        self.assertEqual((out, closed), (b"", False))
        self.assertTrue(vp(ask(s, b"version\r\n", vp)))


# --- e. max_connections

TOO_MANY = b"ERROR Too many open connections\r\n"


class MaxConnectionsTest(unittest.TestCase):
    def works(self, s, tag):
        value = b"v-%s" % tag
        out = ask(s, b"set mc 0 0 %d\r\n%s\r\nget mc\r\n" % (len(value), value),
                  lambda o: o.endswith(b"END\r\n") or o == TOO_MANY)
        return out == b"STORED\r\n" + value_reply(b"mc", value), out

    def accept_one(self, port, tag, timeout):
        """A new client that gets served, retrying while the gateway still counts a
        connection that was closed a moment ago.  Returns (socket or None, last reply)."""
        deadline = time.monotonic() + timeout
        while True:
            s = connect(port)
            ok, out = self.works(s, tag)
            if ok:
                return s, out
            s.close()
            if time.monotonic() >= deadline:
                return None, out
            time.sleep(0.1)

    def test_3e_max_connections(self):
        site = site_or_fail(self, nodes=1, extra="max_connections: 5\n")
        clients = []
        self.addCleanup(lambda: [c.close() for c in clients])
        for i in range(5):
            s, out = self.accept_one(site.port, b"%d" % i, 3.0 * SLOW)
            self.assertIsNotNone(s, "client %d of 5 was not served: %r" % (i + 1, out))
            clients.append(s)
        sixth = connect(site.port)
        self.addCleanup(sixth.close)
        out, closed = read_until(sixth, None, SOCK_TIMEOUT)
        self.assertEqual((out, closed), (TOO_MANY, True))
        for i, s in enumerate(clients):
            ok, out = self.works(s, b"again%d" % i)
            self.assertTrue(ok, "client %d after the refusal: %r" % (i + 1, out))
        # one leaves (quit: the gateway closes it), a new one gets its place
        gone = clients.pop(0)
        gone.sendall(b"quit\r\n")
        self.assertEqual(read_until(gone, None, SOCK_TIMEOUT), (b"", True))
        gone.close()
        s, out = self.accept_one(site.port, b"new", 3.0 * SLOW)
        self.assertIsNotNone(s, "no new client accepted after one left: %r" % out)
        clients.append(s)
        self.assertTrue(site.gateway.alive(), site.log()[-3000:])


if __name__ == "__main__":
    unittest.main()
