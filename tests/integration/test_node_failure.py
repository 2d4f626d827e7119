"""One of two memcached nodes fails under load.

A load thread does set-then-get over 2,000 keys through geogate.  When one node is
killed (or frozen with SIGSTOP, a black hole), the other node's keys keep being served
with no error, the failed node's keys get a SERVER_ERROR line quickly (never a hang:
every reply within ~1 s), and after the node comes back every key is served again
within retry_timeout + probe + slack.  Every value read back is checked, so a reply
stream that slipped out of step with its requests would show up as a wrong value.
"""
import os
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

NKEYS = 2000
TIMEOUT_MS = 500       # pool timeout: longer than the 250 ms default so that a loaded
                       # machine does not time out the healthy node by itself
FAILURE_LIMIT = 3
RETRY_MS = 2000
POOL_EXTRA = ("  timeout: %d\n  failure_limit: %d\n  retry_timeout: %d\n" %
              (TIMEOUT_MS, FAILURE_LIMIT, RETRY_MS))
REPLY_BOUND = 1.5      # every reply, error or not, within this many seconds (~1 s)
SOCKET_TIMEOUT = 3.0   # a client gives up on a reply after this (then it is a hang)
RECOVERY_SLACK = 4.0   # after retry_timeout, time allowed for the probe and reconnects


class ProtocolError(Exception):
    pass


class MiniClient:
    """A blocking memcached text client that reports exactly what came back."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
        self.buf = b""

    def close(self):
        self.s.close()

    def _fill(self):
        data = self.s.recv(65536)
        if not data:
            raise ProtocolError("connection closed by geogate")
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def block(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def set(self, key, value):
        self.s.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))
        return self.line()

    def get(self, key):
        """Returns (value or None, error line or None)."""
        self.s.sendall(b"get %s\r\n" % key)
        value = None
        while True:
            line = self.line()
            if line == b"END":
                return value, None
            if line.startswith(b"VALUE "):
                parts = line.split(b" ")
                if len(parts) != 4 or parts[1] != key or value is not None:
                    raise ProtocolError("unexpected %r for get %r" % (line, key))
                value = self.block(int(parts[3]))
                continue
            if value is None:
                return None, line
            raise ProtocolError("unexpected %r after a VALUE for %r" % (line, key))


class Load(threading.Thread):
    """set key=unique value, then get it back, over `keys` in a loop until stopped.
    records: (t_start, key, op, outcome, seconds); outcome is 'ok', 'miss',
    'server_error', or a description of anything else (a failure)."""

    def __init__(self, port, keys, name):
        super().__init__(name=name, daemon=True)
        self.port = port
        self.keys = keys
        self.stop_event = threading.Event()
        self.records = []
        self.lock = threading.Lock()

    def record(self, *r):
        with self.lock:
            self.records.append(r)

    def snapshot(self):
        with self.lock:
            return list(self.records)

    def run(self):
        conn = None
        i = 0
        while not self.stop_event.is_set():
            key = self.keys[i % len(self.keys)]
            i += 1
            value = b"%s=%d" % (key, i)
            try:
                if conn is None:
                    conn = MiniClient(self.port)
                t0 = time.time()
                r = conn.set(key, value)
                dt = time.time() - t0
                if r == b"STORED":
                    self.record(t0, key, "set", "ok", dt)
                elif r.startswith(b"SERVER_ERROR"):
                    self.record(t0, key, "set", "server_error", dt)
                    continue
                else:
                    self.record(t0, key, "set", "bad reply %r" % r, dt)
                    continue
                t0 = time.time()
                got, err = conn.get(key)
                dt = time.time() - t0
                if err is not None:
                    self.record(t0, key, "get", "server_error" if err.startswith(b"SERVER_ERROR")
                                else "bad reply %r" % err, dt)
                elif got is None:
                    self.record(t0, key, "get", "miss", dt)
                elif got != value:
                    self.record(t0, key, "get", "wrong value %r, want %r" % (got, value), dt)
                else:
                    self.record(t0, key, "get", "ok", dt)
            except socket.timeout:
                self.record(time.time() - SOCKET_TIMEOUT, key, "?", "hang (no reply in %ss)"
                            % SOCKET_TIMEOUT, SOCKET_TIMEOUT)
                conn.close()
                conn = None
            except (OSError, ProtocolError) as e:
                self.record(time.time(), key, "?", "connection: %s" % e, 0.0)
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()


def node_of_keys(site, keys):
    """Ask each memcached directly which keys it holds: {key: node index}."""
    owner = {}
    for idx, m in enumerate(site.memcached):
        c = MiniClient(m.port)
        try:
            for start in range(0, len(keys), 200):
                batch = keys[start:start + 200]
                c.s.sendall(b"get " + b" ".join(batch) + b"\r\n")
                while True:
                    line = c.line()
                    if line == b"END":
                        break
                    parts = line.split(b" ")
                    c.block(int(parts[3]))
                    owner[parts[1]] = idx
        finally:
            c.close()
    return owner


def preload(port, keys):
    c = MiniClient(port)
    try:
        for k in keys:
            r = c.set(k, b"init")
            assert r == b"STORED", (k, r)
    finally:
        c.close()


def failures(records, keys=None, since=None, until=None, allowed=("ok",)):
    return [r for r in records
            if (keys is None or r[1] in keys) and (since is None or r[0] >= since) and
            (until is None or r[0] < until) and r[3] not in allowed]


def wait_stopped(pid, timeout=5.0):
    """Wait until every thread of pid is stopped (state T); return that moment."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = []
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except OSError:
                continue
        if states and all(st in ("T", "t") for st in states):
            return time.time()
        time.sleep(0.002)
    raise AssertionError("memcached %d did not stop within %.0fs" % (pid, timeout))


def slow(records, bound=REPLY_BOUND):
    return [r for r in records if r[4] > bound]


def summary(records, limit=10):
    return "\n".join("  t=%.3f key=%s %s: %s (%.3fs)" % (r[0], r[1].decode(), r[2], r[3], r[4])
                     for r in records[:limit]) + ("\n  ... %d more" % (len(records) - limit)
                                                  if len(records) > limit else "")


class NodeFailureTest(unittest.TestCase):
    def setUp(self):
        self.site = harness.Site(nodes=2, extra=POOL_EXTRA)
        self.loads = []
        self.keys = [b"nf:%d" % i for i in range(NKEYS)]
        preload(self.site.port, self.keys)
        owner = node_of_keys(self.site, self.keys)
        self.assertEqual(len(owner), NKEYS)
        self.victim = 1
        self.victim_keys = {k for k, n in owner.items() if n == self.victim}
        self.other_keys = {k for k, n in owner.items() if n != self.victim}
        self.assertTrue(len(self.victim_keys) > NKEYS // 5 and len(self.other_keys) > NKEYS // 5)

    def tearDown(self):
        for load in self.loads:
            load.stop_event.set()
        for load in self.loads:
            load.join(timeout=SOCKET_TIMEOUT + 2)
        for m in self.site.memcached:
            try:
                m.signal(signal.SIGCONT)
            except Exception:
                pass
        self.site.stop()

    def start_load(self, keys, name):
        load = Load(self.site.port, sorted(keys), name)
        self.loads.append(load)
        load.start()
        return load

    def wait_recovered(self, loads, t_back, deadline):
        """After the node is back, wait until the load reads the node's keys again.
        Returns seconds from t_back."""
        while time.time() < deadline:
            for load in loads:
                for r in reversed(load.snapshot()):
                    if r[0] < t_back:
                        break
                    if r[1] in self.victim_keys and r[2] == "get" and r[3] == "ok":
                        return r[0] - t_back
            time.sleep(0.05)
        self.fail("the failed node's keys were not served %.1fs after it came back"
                  % (deadline - t_back))

    def check_every_key(self):
        """With the load stopped: one pass that writes and reads back every key."""
        c = MiniClient(self.site.port)
        try:
            bad = []
            for k in self.keys:
                v = b"back:" + k
                r = c.set(k, v)
                got, err = c.get(k) if r == b"STORED" else (None, r)
                if got != v:
                    bad.append((k, err or got))
        finally:
            c.close()
        self.assertEqual(bad[:10], [], "%d keys not served after recovery" % len(bad))

    def check_during_outage(self, records, t_fail, t_back):
        # the healthy node's keys never saw an error, nor a slow reply
        bad = failures(records, self.other_keys)
        self.assertEqual(bad, [], "healthy node's keys failed:\n" + summary(bad))
        # every reply, for every key, came within the bound
        late = slow(records)
        self.assertEqual(late, [], "replies slower than %.1fs:\n%s" % (REPLY_BOUND, summary(late)))
        # before the failure nothing failed at all (a request in flight when the node
        # failed may fail: it counts as during the outage)
        bad = [r for r in failures(records, until=t_fail) if r[0] + r[4] < t_fail]
        self.assertEqual(bad, [], "failures before the node failed:\n" + summary(bad))
        # the failed node's keys got SERVER_ERROR lines: no other answer, no wrong value.
        # Only requests answered before t_back count.  t_back is read just before the node
        # is resumed, and the probe that is in flight then usually brings the node back up
        # within a millisecond, so a request sent a moment before t_back that reaches the
        # gateway after that is rightly forwarded and STORED.  Like a request in flight when
        # the node failed (above), a request in flight when it came back may go either way.
        outage = [r for r in records if r[1] in self.victim_keys and t_fail + 0.05 <= r[0] and
                  r[0] + r[4] < t_back]
        self.assertTrue(outage, "no request reached the failed node's keys during the outage")
        errs = [r for r in outage if r[3] == "server_error"]
        self.assertTrue(errs, "failed node's keys never got a SERVER_ERROR:\n" + summary(outage))
        odd = failures(outage, allowed=("server_error",))
        self.assertEqual(odd, [], "failed node's keys got something else than SERVER_ERROR:\n" +
                         summary(odd))
        # and anything that looks like a reply stream out of step is a failure anywhere
        wrong = [r for r in records if r[3].startswith(("wrong", "bad", "connection", "hang"))]
        self.assertEqual(wrong, [], summary(wrong))

    def test_kill_and_restart_node(self):
        victim = self.site.memcached[self.victim]
        load = self.start_load(self.keys, "load-all")
        time.sleep(1.0)
        t_fail = time.time()
        victim.kill()
        time.sleep(3.0)
        # back on the same port, empty
        t_back = time.time()
        self.site.memcached[self.victim] = harness.start_memcached(port=victim.port)
        recovered = self.wait_recovered([load], t_back,
                                        t_back + RETRY_MS / 1000.0 + RECOVERY_SLACK)
        time.sleep(1.0)
        load.stop_event.set()
        load.join(timeout=SOCKET_TIMEOUT + 2)
        self.check_every_key()
        records = load.snapshot()
        self.assertGreater(len(records), 500, "the load barely ran")
        self.check_during_outage(records, t_fail, t_back)
        # after recovery nothing fails any more (the node is empty: misses are fine
        # only for keys not yet written since it came back, and the load writes first)
        bad = failures(records, since=t_back + recovered + 0.5)
        self.assertEqual(bad, [], "failures after recovery:\n" + summary(bad))
        self.assertTrue(self.site.gateway.alive(), self.site.gateway.log()[-3000:])

    def test_black_holed_node(self):
        victim = self.site.memcached[self.victim]
        load_other = self.start_load(self.other_keys, "load-healthy")
        load_victim = self.start_load(self.victim_keys, "load-victim")
        time.sleep(1.0)
        victim.signal(signal.SIGSTOP)
        # the outage starts when every thread of the node has stopped: on a loaded
        # machine a thread can go on serving for a while after the signal was sent
        t_fail = wait_stopped(victim.pid)
        time.sleep(4.0)
        t_back = time.time()
        victim.signal(signal.SIGCONT)
        recovered = self.wait_recovered([load_victim], t_back,
                                        t_back + RETRY_MS / 1000.0 + RECOVERY_SLACK)
        time.sleep(1.0)
        for load in (load_other, load_victim):
            load.stop_event.set()
            load.join(timeout=SOCKET_TIMEOUT + 2)
        self.check_every_key()
        rec_other = load_other.snapshot()
        rec_victim = load_victim.snapshot()
        records = sorted(rec_other + rec_victim)
        self.check_during_outage(records, t_fail, t_back)
        # a timed-out request is answered within the pool timeout (plus scheduling slack)
        timed = [r for r in rec_victim if r[3] == "server_error"]
        self.assertLess(max(r[4] for r in timed), TIMEOUT_MS / 1000.0 + 0.5, summary(timed))
        # the healthy node's keys never stalled behind the black hole: they kept a
        # steady pace during the outage and stayed fast
        during = [r for r in rec_other if t_fail <= r[0] < t_back]
        self.assertGreater(len(during), 100, "healthy keys stalled during the outage")
        worst = max(r[4] for r in during)
        # (a request queued behind a black-holed one would take the whole pool timeout)
        self.assertLess(worst, TIMEOUT_MS / 1000.0 * 0.9,
                        "healthy keys slowed to %.3fs during the outage" % worst)
        bad = failures(records, since=t_back + recovered + 0.5)
        self.assertEqual(bad, [], "failures after recovery:\n" + summary(bad))
        self.assertTrue(self.site.gateway.alive(), self.site.gateway.log()[-3000:])


if __name__ == "__main__":
    unittest.main()
