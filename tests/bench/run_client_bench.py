#!/usr/bin/python3
"""Clients that do not read: server memory, other clients' latency, connection churn.

    /usr/bin/python3 tests/bench/run_client_bench.py [--clients 10,100,1000]
        [--servers geogate,nutcracker,memcached] [--threads 2] [--out docs/BENCHMARKS.md]

Three servers side by side, each started fresh (on free loopback ports) for every
measurement so no run affects the next:

  * geogate: bin/geogate (copied once at the start, so a rebuild during the run changes
    nothing), single site, `threads: --threads` (default 2, geogate's default), over two
    memcached nodes;
  * nutcracker: Debian's twemproxy over two memcached nodes, configured as
    tests/integration/harness.start_nutcracker does (ketama, md5, auto_eject_hosts false)
    but without its `timeout: 2000` (--nutcracker-timeout): with it, nutcracker gives up on
    a node once a reply has been queued behind the non-reading clients' 100 MiB for 2 s,
    answers everything queued there with errors and stops growing at whatever it held
    then, which depends on how fast the machine is (190 MiB to 1 GiB for 10 clients on a
    busy 2-core box); without it, it shows what it does with replies nobody reads;
  * memcached: one memcached, clients talk to it directly.

Every memcached runs with `-c 4096 -t 1 -m 64`; this script raises its own RLIMIT_NOFILE
(inherited by the servers) so thousands of sockets work.

For each N in --clients (default 10, 100, 1000) and each server:

  1. a 512 KiB value `big` is stored through the server (so on the node it hashes to) and
     100 small keys for the latency client; the latency client runs --latency-seconds
     (default 5) with nothing else connected: the baseline;
  2. RSS (VmRSS, /proc/PID/status; the proxy process alone for geogate and nutcracker,
     the memcached process for memcached) is read: *before*;
  3. N clients connect (non-blocking sockets, one selector; TCP_MAXSEG 1448, --mss, so the
     kernel's buffers for them are sized as on a real network), each sends 200 pipelined
     `get big` (100 MiB of replies per client) and never reads; RSS is polled every 0.5 s
     until it has stayed within 1 MiB for 3 s while the process used under 0.2 of a core,
     at most 30 s: *steady*;
  4. with the N clients still connected, the latency client again: one connection,
     alternating `set lat:K 0 0 100` and `get lat:K` (100-byte values), paced at
     --latency-rate round trips per second (2000; 0 = back to back), each round trip
     timed; p50/p99 and p99(with N) / p99(baseline);
  5. the N clients close; RSS 30 s later (--after-close-seconds) against *before*.

A guard thread reads the server's RSS every 50 ms the whole time the N clients exist: when
it passes --cap-mib (default 3072) the server is frozen at once (SIGSTOP), the clients are
closed, the server is killed, and the cell reads ">= cap (stopped)".  It does the same when
the machine's MemAvailable falls below --min-available-mib.  nutcracker buffers every reply
(about 1 GiB for 10 such clients), so it is stopped at 100 and 1000.

Then, per server (fresh again): for --churn-seconds (10), --churn-threads (4) threads
connect, send `set k<i> 0 0 1 noreply\\r\\nx\\r\\n` and close, as fast as they can;
reported: connections/s, the server's open fds (/proc/PID/fd) before and 2 s after (they
must be equal), `stats` curr_connections before and after, and how many of a sample of
the keys were stored.

A table is printed to stdout as the runs finish; the markdown report goes between
`<!-- client-bench:start -->` and `<!-- client-bench:end -->` of --out (appended at the end
if missing; nothing outside the markers is touched), or to stdout without --out.
Every child is stopped on exit, error, Ctrl-C or SIGTERM; every wait is bounded.
"""
import argparse
import datetime
import errno
import hashlib
import json
import os
import platform
import random
import resource
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "bench"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from benchdoc import write_marked_section  # noqa: E402
from harness import free_port  # noqa: E402

SECTION = "client-bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
WANT_NOFILE = 65536
KiB = 1024
MiB = 1024 * 1024

# Targets for geogate (the back-pressure work).
TARGET_GROWTH_KB = {10: 32 * 1024, 1000: 256 * 1024}  # RSS growth with N non-reading clients
TARGET_P99_RATIO = 2.0  # p99 with the non-reading clients / without
TARGET_AFTER_CLOSE_KB = 8 * 1024  # RSS 30 s after they close, against before

STEADY_TOLERANCE_KB = 1024  # "not growing": no more than this above the highest so far
STEADY_QUIET_S = 3.0
STEADY_MAX_S = 30.0
STEADY_MAX_CPU = 0.2  # cores
OP_TIMEOUT = 2.0  # the latency client's wait for one reply

SERVER_ORDER = ["geogate", "nutcracker", "memcached"]


class BenchError(Exception):
    pass


def log(msg):
    print("[client-bench] " + msg, file=sys.stderr, flush=True)


def out(msg=""):
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------
# /proc

def raise_nofile(limit=WANT_NOFILE):
    """Raise RLIMIT_NOFILE to `limit` (root may raise the hard limit too); keep what works."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in ((max(limit, hard), max(limit, hard)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, want)
            return
        except (ValueError, OSError):
            continue


def proc_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError("no VmRSS for pid %d" % pid)


def proc_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def proc_cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def mem_available_kb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return None


def tcp_mem_kb():
    """Memory the kernel holds in TCP socket buffers, machine-wide (/proc/net/sockstat)."""
    try:
        with open("/proc/net/sockstat") as f:
            for line in f:
                if line.startswith("TCP:"):
                    v = line.split()
                    return int(v[v.index("mem") + 1]) * PAGE // 1024
    except (OSError, ValueError):
        pass
    return None


def machine_busy_seconds():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def fmt_kb(kb):
    if kb is None:
        return "—"
    if abs(kb) >= 1024 * 1024:
        return "%.2f GiB" % (kb / 1024.0 / 1024.0)
    if abs(kb) >= 10 * 1024:
        return "%.0f MiB" % (kb / 1024.0)
    if abs(kb) >= 1024:
        return "%.1f MiB" % (kb / 1024.0)
    return "%d kB" % kb


def fmt_dkb(kb):
    if kb is None:
        return "—"
    return ("+" if kb >= 0 else "−") + fmt_kb(abs(kb))


# ------------------------------------------------------------------------------------------
# Processes

class Child:
    """A process we started; stop() ends it (TERM then KILL, or KILL at once), by its pid."""

    def __init__(self, name, argv, logdir):
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(logdir, name + ".log")
        self._log = open(self.log_path, "wb")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                  stderr=subprocess.STDOUT, preexec_fn=raise_nofile)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def wait_port(self, port, timeout=15.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.alive():
                raise BenchError("%s exited with status %s before listening on port %d: %s"
                                 % (self.name, self.p.returncode, port, self.log_tail()))
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise BenchError("%s not listening on port %d after %.0f s" % (self.name, port, timeout))

    def log_tail(self, lines=6):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read()[-3000:].decode("utf-8", "replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self, kill=False):
        if self.alive():
            if kill:
                self.p.kill()
            else:
                self.p.terminate()
            try:
                self.p.wait(timeout=6)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)
        if not self._log.closed:
            self._log.close()


def memcached_argv(port):
    argv = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1",
            "-c", "4096", "-m", "64"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    return argv


def nutcracker_config(port, nodes, timeout):
    # As tests/integration/harness.start_nutcracker writes it (timeout 2000).
    return ("pool:\n  listen: 127.0.0.1:%d\n  hash: md5\n  distribution: ketama\n"
            "  auto_eject_hosts: false\n%s  servers:\n%s" % (
                port, "  timeout: %d\n" % timeout if timeout else "",
                "".join("    - 127.0.0.1:%d:1\n" % p for p in nodes)))


def geogate_config(port, nodes, threads):
    return ("site: bench\nlisten: 127.0.0.1:%d\nthreads: %d\npool:\n  distribution: ketama\n"
            "  hash: md5\n  servers:\n%s" % (
                port, threads, "".join("    - 127.0.0.1:%d:1\n" % p for p in nodes)))


class Server:
    """One target, started fresh: its memcached node(s) and, for a proxy, the proxy.
    `pid` is the process whose RSS and fds are measured; `port` is where clients connect."""

    def __init__(self, kind, args, tmp, registry):
        self.kind = kind
        self.args = args
        self.tmp = tmp
        self.children = []
        self.registry = registry  # every Child of the run, for the final clean-up
        self.port = None
        self.main = None
        self.stats_port = None
        self.killed = False

    def _child(self, name, argv):
        c = Child(name, argv, self.tmp)
        self.children.append(c)
        self.registry.append(c)
        return c

    def start(self):
        if self.kind == "memcached":
            self.port = free_port()
            self.main = self._child("memcached-direct", memcached_argv(self.port))
            self.main.wait_port(self.port)
            return self
        nodes = [free_port(), free_port()]
        for i, p in enumerate(nodes):
            self._child("%s-node%d" % (self.kind, i + 1), memcached_argv(p))
        for c, p in zip(self.children, nodes):
            c.wait_port(p)
        self.port = free_port()
        if self.kind == "nutcracker":
            conf = os.path.join(self.tmp, "nutcracker.yml")
            with open(conf, "w") as f:
                f.write(nutcracker_config(self.port, nodes, self.args.nutcracker_timeout))
            self.stats_port = free_port()
            self.main = self._child("nutcracker", [
                "nutcracker", "-c", conf, "-s", str(self.stats_port), "-a", "127.0.0.1",
                "-i", "500",
                "-o", os.path.join(self.tmp, "nutcracker-own.log")])
        else:
            conf = os.path.join(self.tmp, "geogate.yml")
            with open(conf, "w") as f:
                f.write(geogate_config(self.port, nodes, self.args.threads))
            self.main = self._child("geogate", [self.args.geogate_copy, "--config", conf])
        self.main.wait_port(self.port)
        return self

    @property
    def pid(self):
        return self.main.pid

    def freeze(self):
        """SIGSTOP the measured process: its memory stops growing at once."""
        try:
            os.kill(self.main.pid, signal.SIGSTOP)
        except ProcessLookupError:
            pass

    def stop(self, kill=False):
        for c in reversed(self.children):
            try:
                c.stop(kill=kill or self.killed)
            except Exception as e:  # keep stopping the others
                log("stopping %s: %s" % (c.name, e))

    def _nutcracker_stats(self):
        with socket.create_connection(("127.0.0.1", self.stats_port), timeout=2) as s:
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return json.loads(data.decode())

    def backend_timeouts(self):
        """Requests to a memcached node that timed out, as the proxy counts them (geogate's
        backend_timeouts, nutcracker's server_timedout); None for memcached direct or when
        the server does not answer within 2 s."""
        try:
            if self.kind == "nutcracker":
                pool = self._nutcracker_stats()["pool"]
                return sum(int(v.get("server_timedout", 0)) for v in pool.values()
                           if isinstance(v, dict))
            if self.kind == "geogate":
                with MC(self.port, timeout=2) as mc:
                    return int(mc.stats()["backend_timeouts"])
        except (OSError, ValueError, KeyError, TypeError, BenchError):
            pass
        return None

    def conn_stats(self):
        """{curr, total, rejected} connections as the server counts them (`stats`; for
        nutcracker its stats port, which has no rejected count); None where it did not
        answer within 2 s."""
        res = {"curr": None, "total": None, "rejected": None}
        try:
            if self.kind == "nutcracker":
                st = self._nutcracker_stats()
            else:
                with MC(self.port, timeout=2) as mc:
                    st = mc.stats()
            for k in res:
                v = st.get(k + "_connections")
                res[k] = None if v is None else int(v)
        except (OSError, ValueError, KeyError, TypeError, BenchError):
            pass
        return res


# ------------------------------------------------------------------------------------------
# A tiny blocking memcached client

class MC:
    def __init__(self, port, timeout=5.0):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.s.close()

    def _fill(self):
        chunk = self.s.recv(1 << 20)
        if not chunk:
            raise BenchError("connection closed by the server")
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def set(self, key, value):
        self.s.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))
        ln = self.line()
        if ln != b"STORED":
            raise BenchError("set %s: %r" % (key.decode(), ln[:200]))

    def get_many(self, keys):
        self.s.sendall(b"get " + b" ".join(keys) + b"\r\n")
        found = {}
        while True:
            ln = self.line()
            if ln == b"END":
                return found
            parts = ln.split()
            if len(parts) < 4 or parts[0] != b"VALUE":
                raise BenchError("get: %r" % ln[:200])
            found[parts[1]] = self.exact(int(parts[3]) + 2)[:-2]

    def stats(self):
        self.s.sendall(b"stats\r\n")
        st = {}
        while True:
            ln = self.line()
            if ln == b"END":
                return st
            parts = ln.decode("latin-1").split()
            if len(parts) >= 3 and parts[0] == "STAT":
                st[parts[1]] = parts[2]
            else:
                raise BenchError("stats: %r" % ln[:200])


# ------------------------------------------------------------------------------------------
# The latency client

class Aborted(Exception):
    pass


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    return sorted_vals[min(len(sorted_vals) - 1, int(p * len(sorted_vals)))]


def our_cpu_seconds(pids):
    total = 0.0
    for pid in pids:
        try:
            total += proc_cpu_seconds(pid)
        except (OSError, IndexError, ValueError):
            pass
    t = os.times()
    return total + t.user + t.system


def latency_run(port, seconds, rate, our_pids, guard=None):
    """One connection, `set lat:K` then `get lat:K` (100-byte values), K cycling over 100
    keys, paced at `rate` round trips per second (0: back to back).  Every round trip is
    timed; one that gets no complete reply within OP_TIMEOUT counts as OP_TIMEOUT (so a p99
    at that value means "at least") and the connection is opened again."""
    value = b"v" * 100
    samples = []
    errors = timeouts = 0
    first_error = None
    conn = None
    period = 1.0 / rate if rate else 0.0
    busy0, ours0, w0 = machine_busy_seconds(), our_cpu_seconds(our_pids), time.monotonic()
    deadline = w0 + seconds
    next_t = w0
    i = 0
    while time.monotonic() < deadline:
        if guard is not None and guard.tripped:
            raise Aborted(guard.tripped)
        if conn is None:
            try:
                conn = MC(port, timeout=OP_TIMEOUT)
            except OSError as e:
                errors += 1
                first_error = first_error or "connect: %s" % e
                time.sleep(0.1)
                continue
        key = b"lat:%d" % ((i // 2) % 100)
        if i % 2 == 0:
            req = b"set %s 0 0 100\r\n%s\r\n" % (key, value)
            expect = b"STORED\r\n"
        else:
            req = b"get %s\r\n" % key
            expect = b"VALUE %s 0 100\r\n%s\r\nEND\r\n" % (key, value)
        i += 1
        t0 = time.perf_counter()
        try:
            conn.s.sendall(req)
            buf = b""
            while not (buf.endswith(b"\r\n") and
                       (len(buf) >= len(expect) or not expect.startswith(buf))):
                chunk = conn.s.recv(65536)
                if not chunk:
                    raise ConnectionResetError("closed by the server")
                buf += chunk
            samples.append(time.perf_counter() - t0)
            if buf != expect:
                errors += 1
                first_error = first_error or buf[:120].decode("latin-1").strip()
        except socket.timeout:
            samples.append(OP_TIMEOUT)
            timeouts += 1
            conn.close()
            conn = None
        except OSError as e:
            errors += 1
            first_error = first_error or str(e)
            conn.close()
            conn = None
        if period:
            next_t += period
            left = next_t - time.monotonic()
            if left > 0:
                time.sleep(left)
            else:
                next_t = time.monotonic()
    if conn is not None:
        conn.close()
    w1 = time.monotonic()
    other = max(0.0, (machine_busy_seconds() - busy0) - (our_cpu_seconds(our_pids) - ours0))
    samples.sort()
    return {"n": len(samples), "errors": errors, "timeouts": timeouts, "first_error": first_error,
            "p50": pct(samples, 0.50), "p99": pct(samples, 0.99),
            "max": samples[-1] if samples else None,
            "p99_censored": bool(samples) and pct(samples, 0.99) >= OP_TIMEOUT,
            "other_cores": other / max(1e-3, w1 - w0)}


# ------------------------------------------------------------------------------------------
# Non-reading clients

class Hogs:
    """N sockets that connect, send `payload` and never read."""

    def __init__(self, port, n, payload, mss=0):
        self.port, self.n, self.payload, self.mss = port, n, payload, mss
        self.socks = []
        self.failed = 0
        self.first_error = None
        self.sent = 0

    def open(self, timeout=30.0, stop=lambda: False):
        sel = selectors.DefaultSelector()
        left = {}
        try:
            for _ in range(self.n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                if self.mss:
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, self.mss)
                s.setblocking(False)
                rc = s.connect_ex(("127.0.0.1", self.port))
                if rc not in (0, errno.EINPROGRESS):
                    self._fail(s, os.strerror(rc))
                    continue
                self.socks.append(s)
                left[s] = None  # connect not yet confirmed
                sel.register(s, selectors.EVENT_WRITE)
            deadline = time.monotonic() + timeout
            while left and time.monotonic() < deadline and not stop():
                for key, _ in sel.select(timeout=0.5):
                    s = key.fileobj
                    rest = left[s]
                    if rest is None:
                        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            sel.unregister(s)
                            del left[s]
                            self.socks.remove(s)
                            self._fail(s, os.strerror(err))
                            continue
                        rest = self.payload
                    try:
                        k = s.send(rest)
                    except BlockingIOError:
                        k = 0
                    except OSError as e:
                        sel.unregister(s)
                        del left[s]
                        self.socks.remove(s)
                        self._fail(s, str(e))
                        continue
                    rest = rest[k:]
                    if rest:
                        left[s] = rest
                    else:
                        sel.unregister(s)
                        del left[s]
                        self.sent += 1
            for s in list(left):
                self.socks.remove(s)
                self._fail(s, "not connected/sent within %.0f s" % timeout)
        finally:
            sel.close()

    def _fail(self, s, why):
        self.failed += 1
        self.first_error = self.first_error or why
        s.close()

    def close(self):
        for s in self.socks:
            s.close()
        self.socks = []


class Guard(threading.Thread):
    """Reads the server's RSS every 50 ms; freezes the server (SIGSTOP) when it passes the cap
    or when the machine runs low on memory.  `peak` is the highest RSS seen."""

    def __init__(self, server, cap_kb, min_avail_kb):
        super().__init__(daemon=True)
        self.server = server
        self.cap_kb = cap_kb
        self.min_avail_kb = min_avail_kb
        self.peak = 0
        self.tripped = None
        self.stop_ev = threading.Event()

    def run(self):
        pid = self.server.pid
        while not self.stop_ev.wait(0.05):
            try:
                rss = proc_rss_kb(pid)
            except (OSError, BenchError):
                return
            self.peak = max(self.peak, rss)
            avail = mem_available_kb()
            if rss >= self.cap_kb:
                self.server.freeze()
                self.tripped = "RSS %s passed the %s cap" % (fmt_kb(rss), fmt_kb(self.cap_kb))
            elif avail is not None and avail < self.min_avail_kb:
                self.server.freeze()
                self.tripped = "the machine's MemAvailable fell to %s (RSS %s)" % (
                    fmt_kb(avail), fmt_kb(rss))
            if self.tripped:
                self.peak = max(self.peak, proc_rss_kb(pid))
                return

    def stop(self):
        self.stop_ev.set()
        if self.is_alive():
            self.join(timeout=2)


def wait_steady(pid, guard):
    """Poll RSS every 0.5 s until, for STEADY_QUIET_S, it has stayed within
    STEADY_TOLERANCE_KB of where it was and the process has used less than
    STEADY_MAX_CPU of a core (a process still copying replies is not at steady state even
    if the scheduler held it back for a moment); at most STEADY_MAX_S.
    Returns (rss, seconds, steady?, samples)."""
    t0 = time.monotonic()
    base = proc_rss_kb(pid)
    base_t = t0
    cpu = [(t0, proc_cpu_seconds(pid))]
    samples = [(0.0, base)]
    while True:
        time.sleep(0.5)
        if guard.tripped:
            raise Aborted(guard.tripped)
        rss = proc_rss_kb(pid)
        now = time.monotonic()
        cpu.append((now, proc_cpu_seconds(pid)))
        samples.append((now - t0, rss))
        if abs(rss - base) > STEADY_TOLERANCE_KB:
            base, base_t = rss, now
        if now - base_t >= STEADY_QUIET_S:
            then = next(c for c in cpu if c[0] >= now - STEADY_QUIET_S - 0.01)
            if (cpu[-1][1] - then[1]) / max(1e-3, now - then[0]) < STEADY_MAX_CPU:
                return rss, now - t0, True, samples
        if now - t0 >= STEADY_MAX_S:
            return rss, now - t0, False, samples


# ------------------------------------------------------------------------------------------
# The measurements

def seed(port, big):
    with MC(port, timeout=10) as mc:
        mc.set(b"big", big)
        got = mc.get_many([b"big"]).get(b"big")
        if got != big:
            raise BenchError("`get big` returned %s bytes, not the %d stored" % (
                None if got is None else len(got), len(big)))
        for k in range(100):
            mc.set(b"lat:%d" % k, b"v" * 100)


def run_clients(kind, n, args, tmp, registry, big):
    """Steps 1-5 for one server and one N; returns a result dict."""
    r = {"server": kind, "n": n}
    srv = Server(kind, args, tmp, registry)
    guard = None
    hogs = None
    try:
        srv.start()
        pid = srv.pid
        ours = [c.pid for c in srv.children]
        seed(srv.port, big)
        r["base"] = latency_run(srv.port, args.latency_seconds, args.latency_rate, ours)
        time.sleep(0.5)
        r["rss0"] = proc_rss_kb(pid)
        r["fds0"] = proc_fds(pid)
        guard = Guard(srv, args.cap_mib * 1024, args.min_available_mib * 1024)
        guard.start()
        payload = b"get big\r\n" * args.pipeline
        hogs = Hogs(srv.port, n, payload, args.mss)
        t0 = time.monotonic()
        hogs.open(stop=lambda: guard.tripped)
        if guard.tripped:
            raise Aborted(guard.tripped)
        r["connect_s"] = time.monotonic() - t0
        r["connected"], r["hog_failed"], r["hog_error"] = hogs.sent, hogs.failed, hogs.first_error
        r["rss_steady"], r["steady_s"], r["steady"], series = wait_steady(pid, guard)
        log("%s N=%d: RSS every 0.5 s until steady: %s" % (
            kind, n, " ".join("%d" % (kb // 1024) for _, kb in series) + " MiB"))
        r["tcp_mem"] = tcp_mem_kb()
        r["curr_conn"] = srv.conn_stats()["curr"]
        r["with"] = latency_run(srv.port, args.latency_seconds, args.latency_rate, ours, guard)
        r["peak"] = max(guard.peak, proc_rss_kb(pid))
        time.sleep(0.6)  # nutcracker's stats are aggregated every 0.5 s
        r["timeouts"] = srv.backend_timeouts()
        hogs.close()
        t_close = time.monotonic()
        while time.monotonic() - t_close < args.after_close_seconds:
            if guard.tripped:
                raise Aborted(guard.tripped)
            if not srv.main.alive():
                raise BenchError("%s exited (status %s): %s" % (
                    kind, srv.main.p.returncode, srv.main.log_tail()))
            time.sleep(0.5)
        r["rss_after"] = proc_rss_kb(pid)
        r["fds_after"] = proc_fds(pid)
        r["peak"] = max(r["peak"], guard.peak)
    except Aborted as e:
        # Frozen by the guard: close the clients, kill it, report the cap.
        srv.killed = True
        r["capped"] = str(e)
        r["peak"] = guard.peak if guard else None
        if hogs is not None:
            r.setdefault("connected", hogs.sent)
            r.setdefault("hog_failed", hogs.failed)
            r.setdefault("hog_error", hogs.first_error)
    except (BenchError, OSError) as e:
        alive = srv.main.alive() if srv.main else False
        r["error"] = "%s%s" % (e, "" if alive or not srv.main else
                               " (%s exited with status %s: %s)" % (
                                   kind, srv.main.p.returncode, srv.main.log_tail()))
    finally:
        if guard is not None:
            guard.stop()
            if guard.tripped and "capped" not in r:
                srv.killed = True
                r["capped"] = guard.tripped
                r["peak"] = guard.peak
                r.pop("error", None)  # whatever failed, it failed because it was frozen
        if hogs is not None:
            hogs.close()
        srv.stop()
    return r


def run_churn(kind, args, tmp, registry):
    """Send-and-close clients for args.churn_seconds; fds and curr_connections around it."""
    r = {"server": kind}
    srv = Server(kind, args, tmp, registry)
    try:
        srv.start()
        pid = srv.pid
        # Connections a proxy opens lazily (to each node, from each worker) are opened now,
        # so they are not counted as the churn's: a few clients each read 32 keys (on both
        # nodes), one after another.
        for _ in range(4 * max(1, args.threads)):
            with MC(srv.port) as mc:
                mc.get_many([b"warm:%d" % x for x in range(32)])
        time.sleep(0.5)
        r["fds0"] = proc_fds(pid)
        r["cs0"] = srv.conn_stats()
        r["cc0"] = r["cs0"]["curr"]
        r["rss0"] = proc_rss_kb(pid)
        time.sleep(0.2)
        r["fds0"] = proc_fds(pid)  # after the stats connection above has gone
        sent = [[] for _ in range(args.churn_threads)]  # the i of every set sent
        errs = {}
        lock = threading.Lock()
        stop_at = time.monotonic() + args.churn_seconds
        addr = ("127.0.0.1", srv.port)

        def worker(t):
            i = t
            mine = sent[t]
            while time.monotonic() < stop_at:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.settimeout(2.0)
                try:
                    s.connect(addr)
                    s.sendall(b"set k%d 0 0 1 noreply\r\nx\r\n" % i)
                    mine.append(i)
                except OSError as e:
                    name = errno.errorcode.get(e.errno, type(e).__name__) if e.errno else \
                        type(e).__name__
                    with lock:
                        errs[name] = errs.get(name, 0) + 1
                finally:
                    s.close()
                i += args.churn_threads

        threads = [threading.Thread(target=worker, args=(t,), daemon=True)
                   for t in range(args.churn_threads)]
        t0 = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=args.churn_seconds + 30)
        elapsed = time.monotonic() - t0
        ids = [i for mine in sent for i in mine]
        r["conns"] = len(ids)
        r["rate"] = r["conns"] / elapsed
        r["errors"] = errs
        time.sleep(2.0)
        r["fds2"] = proc_fds(pid)
        r["cs2"] = srv.conn_stats()
        r["cc2"] = r["cs2"]["curr"]
        r["rss2"] = proc_rss_kb(pid)
        # How many of the sets landed: a sample of the keys sent.
        sample = random.Random(1).sample(ids, min(1000, len(ids)))
        hits = 0
        r["sampled"], r["stored"] = len(sample), None
        try:
            with MC(srv.port, timeout=10) as mc:
                for j in range(0, len(sample), 100):
                    keys = [b"k%d" % x for x in sample[j:j + 100]]
                    hits += len(mc.get_many(keys))
            r["stored"] = hits
        except (BenchError, OSError) as e:
            r["stored_error"] = str(e)
        if r["fds2"] != r["fds0"]:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline and proc_fds(pid) != r["fds0"]:
                time.sleep(0.5)
            r["fds10"] = proc_fds(pid)
    except (BenchError, OSError) as e:
        r["error"] = str(e)
    finally:
        srv.stop()
    return r


# ------------------------------------------------------------------------------------------
# Report

def machine_info(args):
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def version(argv):
        try:
            r = subprocess.run(argv, capture_output=True, timeout=5)
            return (r.stdout + r.stderr).decode().strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired, IndexError):
            return "?"

    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, timeout=5).stdout.decode().strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "gateway",
                                "ring", "wan", "tls", "proto"],
                               capture_output=True, timeout=5).stdout
        if dirty.strip():
            commit += " plus uncommitted changes in gateway/, ring/, wan/, tls/ or proto/"
    except (OSError, subprocess.TimeoutExpired):
        commit = "?"
    return {
        "load": loadavg(),
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "cpu": model,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "memcached": version(["memcached", "-V"]),
        "nutcracker": version(["nutcracker", "-V"]),
        "commit": commit,
        "tcp_mem_pressure": sysctl_kb("tcp_mem", 1, pages=True),
        "tcp_mem_max": sysctl_kb("tcp_mem", 2, pages=True),
        "tcp_wmem_max": sysctl_kb("tcp_wmem", 2),
        "mem_total": (lambda: next((int(l.split()[1]) for l in open("/proc/meminfo")
                                    if l.startswith("MemTotal:")), None))(),
    }


def sysctl_kb(name, index, pages=False):
    try:
        with open("/proc/sys/net/ipv4/" + name) as f:
            v = int(f.read().split()[index])
        return v * PAGE // 1024 if pages else v // 1024
    except (OSError, ValueError, IndexError):
        return None


def mss_note(args, info):
    limits = "tcp_mem pressure at %s, limit %s; tcp_wmem max %s" % (
        fmt_kb(info["tcp_mem_pressure"]), fmt_kb(info["tcp_mem_max"]),
        fmt_kb(info["tcp_wmem_max"]))
    if not args.mss:
        return (" The non-reading clients use loopback's own 64 KiB segments (`--mss 0`): the "
                "kernel may then grow each server-side send buffer to tcp_wmem's maximum, "
                "and many such sockets can reach the machine's TCP memory limit (%s), which "
                "stalls every TCP socket on the machine, whichever server runs." % limits)
    return (" The non-reading clients set TCP_MAXSEG %d (an Ethernet-sized segment) before "
            "connecting (`--mss`), so the kernel sizes their buffers as for a client across "
            "a real network, about 0.7 MiB per socket. With loopback's own 64 KiB segments "
            "the kernel grows each server-side send buffer to tcp_wmem's maximum, and 1000 "
            "such sockets would hold some 4 GiB, past the machine's whole TCP allowance (%s): "
            "every TCP socket on the machine, the latency client's included, then stalls on "
            "kernel memory (a 1.5 s stall was seen against memcached itself), which would "
            "measure the kernel rather than the server. The latency client and the "
            "send-and-close clients use loopback's defaults." % (args.mss, limits))


def label(kind, args):
    return {"geogate": "geogate (threads: %d)" % args.threads,
            "nutcracker": "nutcracker 0.5 (twemproxy)",
            "memcached": "memcached (direct)"}[kind]


def us(x):
    return "—" if x is None else "%.0f" % (x * 1e6)


def lat_cell(l):
    if not l:
        return "—"
    s = "%s / %s%s" % (us(l["p50"]), "≥ " if l["p99_censored"] else "", us(l["p99"]))
    return s


def lat_errs(l):
    if not l:
        return ""
    if not l["errors"] and not l["timeouts"]:
        return "0"
    s = "%d" % l["errors"]
    if l["timeouts"]:
        s += " + %d timeouts" % l["timeouts"]
    if l["first_error"]:
        s += " (`%s`)" % l["first_error"].replace("|", "/")[:80]
    return s


def p99_ratio(r):
    b, w = r.get("base"), r.get("with")
    if not b or not w or not b["p99"] or w["p99"] is None:
        return None
    return w["p99"] / b["p99"]


def growth(r):
    if r.get("rss_steady") is None or r.get("rss0") is None:
        return None
    return r["rss_steady"] - r["rss0"]


def peak_growth(r):
    if r.get("peak") is None or r.get("rss0") is None:
        return None
    return r["peak"] - r["rss0"]


def after_diff(r):
    if r.get("rss_after") is None or r.get("rss0") is None:
        return None
    return r["rss_after"] - r["rss0"]


def cap_cell(args):
    return "≥ %s (stopped)" % fmt_kb(args.cap_mib * 1024)


def progress_header():
    out("%-11s %5s %9s %11s %11s %9s %9s %19s %19s %7s %8s %11s %9s" % (
        "server", "N", "connected", "RSS before", "RSS steady", "growth", "peak",
        "p50/p99 us without", "p50/p99 us with", "ratio", "node t/o", "RSS +close",
        "vs before"))


def progress_row(r, args):
    if r.get("error"):
        out("%-11s %5d  error: %s" % (r["server"], r["n"], r["error"]))
        return
    if r.get("capped"):
        out("%-11s %5d %9s %11s %11s %9s %9s %19s  %s" % (
            r["server"], r["n"], r.get("connected", "?"), fmt_kb(r.get("rss0")),
            cap_cell(args), "", fmt_kb(r.get("peak")), lat_cell(r.get("base")),
            "stopped: " + r["capped"]))
        return
    ratio = p99_ratio(r)
    out("%-11s %5d %9s %11s %11s %9s %9s %19s %19s %7s %8s %11s %9s" % (
        r["server"], r["n"], r["connected"], fmt_kb(r["rss0"]), fmt_kb(r["rss_steady"]),
        fmt_dkb(growth(r)), fmt_kb(r["peak"]), lat_cell(r["base"]), lat_cell(r["with"]),
        "—" if ratio is None else "%.2fx" % ratio,
        "—" if r.get("timeouts") is None else r["timeouts"], fmt_kb(r["rss_after"]),
        fmt_dkb(after_diff(r))))


def churn_row(c):
    if c.get("error"):
        out("churn %-11s error: %s" % (c["server"], c["error"]))
        return
    out("churn %-11s %7.0f conn/s (%d in %.0f s, errors %s)  fds %d -> %d%s  "
        "curr_connections %s -> %s  accepted %s rejected %s  stored %s" % (
            c["server"], c["rate"], c["conns"], c["conns"] / max(1e-9, c["rate"]),
            sum(c["errors"].values()), c["fds0"], c["fds2"],
            " (%d at +10 s)" % c["fds10"] if "fds10" in c else "", c["cc0"], c["cc2"],
            stat_diff(c, "total"), stat_diff(c, "rejected"), stored_cell(c)))


def stored_cell(c):
    if c.get("stored") is None:
        return "could not read back: %s" % c.get("stored_error", "?")
    return "%d / %d" % (c["stored"], c["sampled"])


def stat_diff(c, key):
    a, b = c["cs0"].get(key), c["cs2"].get(key)
    if a is None or b is None:
        return "—"
    return "%d" % (b - a)


def render(args, info, results, churn, elapsed, binary_note):
    o = []
    w = o.append
    cap = cap_cell(args)
    w("## Clients that do not read: server memory, other clients' latency, connection churn")
    w("")
    cmd = " ".join(["/usr/bin/python3", os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)]
                   + [shlex.quote(a) for a in sys.argv[1:]])
    is_make = sys.argv[1:] == ["--out", "docs/BENCHMARKS.md"]
    w("Made by%s:" % (" `make bench`, which runs" if is_make else ""))
    w("")
    w("    %s" % cmd)
    w("")
    w("| machine | |")
    w("|---|---|")
    w("| cores (nproc) | %s |" % info["nproc"])
    w("| CPU | %s |" % (info["cpu"] or "?"))
    w("| memory | %s |" % fmt_kb(info["mem_total"]))
    w("| kernel | %s |" % info["kernel"])
    w("| date | %s |" % info["date"])
    w("| memcached | %s |" % info["memcached"])
    w("| nutcracker | %s |" % info["nutcracker"])
    w("| geogate commit | %s |" % info["commit"])
    if binary_note:
        w("| geogate binary | %s |" % binary_note)
    w("| load average (1, 5, 15 min) before / after | %s / %s |" % (info["load"], loadavg()))
    w("| whole run took | %.0f s |" % elapsed)
    w("")
    w("Servers, each started fresh for every row below, on free loopback ports: "
      "**geogate** (`threads: %d`, defaults otherwise: `pool.timeout` 250 ms, "
      "`max_connections` 10000) and **nutcracker** (ketama, md5, "
      "`auto_eject_hosts: false` as tests/integration/harness.py starts it, %s), each over two "
      "memcached nodes, and **memcached** alone, talked to directly. Every memcached is "
      "`memcached -l 127.0.0.1 -p PORT -U 0 -t 1 -c 4096 -m 64`. RSS is VmRSS from "
      "/proc/PID/status of the proxy process (geogate, nutcracker) or of the memcached "
      "process (direct); the memcached nodes behind the proxies are not counted.%s"
      % (args.threads,
         "`timeout: %d`" % args.nutcracker_timeout if args.nutcracker_timeout
         else "but without the tests' `timeout: 2000`",
         "" if args.nutcracker_timeout else
         " With `timeout: 2000` nutcracker gives up on a node once a reply has waited 2 s "
         "behind what the non-reading clients asked for, closes that connection and "
         "answers everything queued on it with errors, so its RSS stops wherever the "
         "machine's speed left it (between 190 MiB and 1 GiB for 10 clients in trial runs on a "
         "busy 2-core machine); "
         "without a `timeout` it shows what it does with replies nobody reads "
         "(`--nutcracker-timeout 2000` for the tests' config)."))
    w("")
    w("### Memory and latency with N clients that never read")
    w("")
    w("For each N: a %d KiB value `big` is stored through the server (so on the node it "
      "hashes to), then N clients connect, each sends %d pipelined `get big\\r\\n` "
      "(%.0f MiB of replies per client) and never reads. *Steady* is the RSS once it has "
      "not moved by more than %d MiB for %.0f s while the process used under %.1f of a core "
      "(polled every 0.5 s, at most %.0f s; *still moving* if not by then). A "
      "guard reads the RSS every 50 ms and stops the run when it passes %s: the server is "
      "frozen (SIGSTOP), the clients closed and the server killed; such a cell reads "
      "\"%s\". *Latency*: one more client, one connection, alternating `set lat:K 0 0 100` "
      "and `get lat:K` (100-byte values, 100 keys), %s for %.0f s; each round trip timed "
      "(µs, p50 / p99); a round trip with no reply within %.0f s counts as %.0f s and the "
      "connection is opened again. *without* is that client alone, right before the N "
      "clients connect; *with* is the same while they are connected, after steady state. "
      "*Peak RSS* is the highest RSS the guard read (every 50 ms) while the N clients were "
      "connected, latency run included. "
      "*After close*: the N clients close, RSS %.0f s later, against *before*. *Kernel TCP "
      "memory* is the whole machine's socket buffers (/proc/net/sockstat) at steady state: "
      "what the servers wrote and the clients did not read sits there, not in any RSS. "
      "*Other procs* is the CPU the rest of the machine used during each latency window "
      "(/proc/stat minus this benchmark's processes), in cores: a high value means the "
      "window was disturbed. *Node timeouts* is how many requests to a memcached node the "
      "proxy gave up on during the row (geogate's `backend_timeouts`, nutcracker's "
      "`server_timedout`): nutcracker closes a node connection on which a request has waited "
      "longer than its `timeout` and answers everything queued on it with an error, so its "
      "RSS can stop growing there rather than at everything the clients asked for.%s" % (
          args.value_kib, args.pipeline, args.pipeline * args.value_kib / 1024.0,
          STEADY_TOLERANCE_KB // 1024, STEADY_QUIET_S, STEADY_MAX_CPU, STEADY_MAX_S,
          fmt_kb(args.cap_mib * 1024),
          cap,
          ("paced at %d round trips/s" % args.latency_rate) if args.latency_rate
          else "back to back", args.latency_seconds, OP_TIMEOUT, OP_TIMEOUT,
          args.after_close_seconds, mss_note(args, info)))
    w("")
    w("| server | N | connected | RSS before | RSS steady | growth | to steady | peak RSS | "
      "kernel TCP memory | latency without, µs | latency with, µs | p99 with / without | "
      "errors with | node timeouts | other procs, cores (without / with) | "
      "RSS %.0f s after close | after close − before |" % args.after_close_seconds)
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---:|")
    for r in results:
        lab = label(r["server"], args)
        if r.get("error"):
            w("| %s | %d | error: %s | | | | | | | | | | | | | | |" % (
                lab, r["n"], r["error"].replace("|", "/")))
            continue
        conn = "%d" % r.get("connected", 0)
        if r.get("hog_failed"):
            conn += " (%d failed: %s)" % (r["hog_failed"], r["hog_error"])
        if r.get("capped"):
            w("| %s | %d | %s | %s | **%s** | **%s** | — | %s | — | %s | stopped | — | — | — | "
              "%s / — | — | — |" % (
                  lab, r["n"], conn, fmt_kb(r.get("rss0")), cap, cap.replace(" (stopped)", ""),
                  fmt_kb(r.get("peak")), lat_cell(r.get("base")),
                  "%.2f" % r["base"]["other_cores"] if r.get("base") else "—"))
            continue
        ratio = p99_ratio(r)
        w("| %s | %d | %s | %s | %s | **%s** | %.1f s%s | %s | %s | %s | %s | **%s** | %s | %s | "
          "%.2f / %.2f | %s | **%s** |" % (
              lab, r["n"], conn, fmt_kb(r["rss0"]), fmt_kb(r["rss_steady"]),
              fmt_dkb(growth(r)), r["steady_s"], "" if r["steady"] else " (still moving)",
              fmt_kb(r["peak"]), fmt_kb(r["tcp_mem"]), lat_cell(r["base"]), lat_cell(r["with"]),
              "—" if ratio is None else "%.2f×" % ratio, lat_errs(r["with"]),
              "—" if r.get("timeouts") is None else r["timeouts"],
              r["base"]["other_cores"], r["with"]["other_cores"], fmt_kb(r["rss_after"]),
              fmt_dkb(after_diff(r))))
    w("")
    capped = [r for r in results if r.get("capped")]
    for r in capped:
        w("* %s, N = %d: stopped: %s%s." % (
            label(r["server"], args), r["n"], r["capped"],
            "" if r.get("peak") is None else " (highest RSS read: %s)" % fmt_kb(r["peak"])))
    if capped:
        w("")
    cc = [r for r in results if r.get("curr_conn") is not None and not r.get("capped")]
    if cc:
        w("curr_connections the server reported at steady state: %s." % ", ".join(
            "%s N=%d: %d" % (r["server"], r["n"], r["curr_conn"]) for r in cc))
        w("")

    w("### Send-and-close clients")
    w("")
    if not args.churn_seconds:
        w("Not run (`--churn-seconds 0`).")
        w("")
    else:
        w("A fresh server; for %.0f s, %d threads of this script each connect, send "
          "`set k<i> 0 0 1 noreply\\r\\nx\\r\\n` and close, one connection after another, as fast "
          "as they can. No reply is awaited, but connect() does wait while the server's accept "
          "queue is full, so a server that accepts slowly lowers the rate; otherwise it is "
          "what this Python client reaches on the shared cores. "
          "*fds* is `ls /proc/PID/fd | wc -l` of the measured process before and 2 s after the "
          "last close: equal means no connection was leaked. *curr_connections* is from `stats` "
          "(nutcracker: its stats port), read over a connection of its own, so it counts that "
          "one; *accepted* and *rejected* are the differences of its total_connections and "
          "rejected_connections over the run (nutcracker reports no rejected count). *Stored* "
          "is how many of a sample of 1000 of the keys sent can be read back afterwards: a set "
          "is lost when its connection was refused (memcached closes connections over its `-c` "
          "limit at once) or closed before the set was forwarded." % (
              args.churn_seconds, args.churn_threads))
        w("")
        w("| server | connections/s | connections | connect/send errors | fds before | fds 2 s after | "
          "curr_connections before | after | accepted (total_connections) | rejected "
          "(rejected_connections) | RSS before | after | stored (sample) |")
        w("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in churn:
            lab = label(c["server"], args)
            if c.get("error"):
                w("| %s | error: %s | | | | | | | | | | | |" % (lab, c["error"].replace("|", "/")))
                continue
            errs = ", ".join("%s %d" % kv for kv in sorted(c["errors"].items())) or "0"
            fds2 = "%d" % c["fds2"]
            if "fds10" in c:
                fds2 += " (%d 10 s after)" % c["fds10"]
            fds2 = "**%s**" % fds2 if c["fds2"] != c["fds0"] else fds2
            w("| %s | %.0f | %d | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                lab, c["rate"], c["conns"], errs, c["fds0"], fds2,
                "—" if c["cc0"] is None else c["cc0"], "—" if c["cc2"] is None else c["cc2"],
                stat_diff(c, "total"), stat_diff(c, "rejected"),
                fmt_kb(c["rss0"]), fmt_kb(c["rss2"]), stored_cell(c).replace("|", "/")))
        w("")

    w("### Targets (geogate)")
    w("")
    w("| target | goal | geogate | nutcracker | memcached | |")
    w("|---|---|---:|---:|---:|---|")
    by = {(r["server"], r["n"]): r for r in results}
    ran = set(r["server"] for r in results) | set(c["server"] for c in churn)

    def cell(kind, n, fn, capped=None):
        r = by.get((kind, n))
        if kind not in ran or r is None:
            return "not run"
        if r.get("error"):
            return "error"
        if r.get("capped"):
            return capped or cap
        v = fn(r)
        return "—" if v is None else v

    def verdict(n, ok_fn):
        r = by.get(("geogate", n))
        if r is None:
            return "not measured"
        if r.get("error"):
            return "**not met** (error)"
        if r.get("capped"):
            return "**not met**"
        ok = ok_fn(r)
        return "—" if ok is None else ("**met**" if ok else "**not met**")

    for n in args.clients:
        if n in TARGET_GROWTH_KB:
            goal = TARGET_GROWTH_KB[n]
            w("| RSS growth, %d non-reading clients | ≤ %s | %s | %s | %s | %s |" % (
                n, fmt_kb(goal),
                *[cell(k, n, lambda r: fmt_dkb(growth(r))) for k in SERVER_ORDER],
                verdict(n, lambda r: growth(r) <= goal and r["steady"])))
            w("| RSS growth, %d non-reading clients, at the highest RSS read (every 50 ms) "
              "| ≤ %s | "
              "%s | %s | %s | %s |" % (
                  n, fmt_kb(goal),
                  *[cell(k, n, lambda r: fmt_dkb(peak_growth(r))) for k in SERVER_ORDER],
                  verdict(n, lambda r: peak_growth(r) <= goal)))
    for n in args.clients:
        w("| p99 latency with / without %d non-reading clients | ≤ %.1f× | %s | %s | %s | %s |"
          % (n, TARGET_P99_RATIO,
             *[cell(k, n, lambda r: "—" if p99_ratio(r) is None else "%.2f×" % p99_ratio(r),
                    "not measured (stopped at the cap)") for k in SERVER_ORDER],
             verdict(n, lambda r: None if p99_ratio(r) is None else
                     p99_ratio(r) <= TARGET_P99_RATIO and not r["with"]["errors"]
                     and not r["with"]["timeouts"])))
    for n in args.clients:
        w("| RSS %.0f s after %d clients closed, against before | within %s | %s | %s | %s | %s |"
          % (args.after_close_seconds, n, fmt_kb(TARGET_AFTER_CLOSE_KB),
             *[cell(k, n, lambda r: fmt_dkb(after_diff(r)), "not measured (stopped at the cap)")
               for k in SERVER_ORDER],
             verdict(n, lambda r: abs(after_diff(r)) <= TARGET_AFTER_CLOSE_KB)))
    cb = {c["server"]: c for c in churn}

    def churn_cell(kind):
        c = cb.get(kind)
        if c is None:
            return "not run"
        if c.get("error"):
            return "error"
        return "%d → %d" % (c["fds0"], c["fds2"])
    g = cb.get("geogate")
    w("| fds before / 2 s after send-and-close clients | equal | %s | %s | %s | %s |" % (
        *[churn_cell(k) for k in SERVER_ORDER],
        "not measured" if g is None else "**not met** (error)" if g.get("error") else
        "**met**" if g["fds2"] == g["fds0"] else "**not met**"))
    w("")
    notes = [r for r in results if r.get("with") and r["with"]["other_cores"] > 0.3]
    if notes:
        w("Latency windows disturbed by other work on the machine (other procs > 0.3 cores): "
          "%s." % ", ".join("%s N=%d" % (r["server"], r["n"]) for r in notes))
        w("")
    return "\n".join(o)


# ------------------------------------------------------------------------------------------

def prepare_geogate(args, tmp):
    """Copy bin/geogate into the run's directory (waiting up to 2 minutes if it is being
    rebuilt), so every geogate of the run is the same build."""
    deadline = time.time() + 120
    while not os.access(args.geogate, os.X_OK):
        if time.time() > deadline:
            raise BenchError("%s does not exist (run `make`)" % args.geogate)
        log("%s missing (being rebuilt?), waiting" % args.geogate)
        time.sleep(5)
    time.sleep(1)  # a link that just finished
    dst = os.path.join(tmp, "geogate")
    shutil.copy2(args.geogate, dst)
    with open(dst, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    mtime = datetime.datetime.fromtimestamp(os.stat(dst).st_mtime, datetime.timezone.utc)
    args.geogate_copy = dst
    return "%s, built %s, sha256 %s" % (os.path.relpath(args.geogate, ROOT)
                                        if args.geogate.startswith(ROOT) else args.geogate,
                                        mtime.strftime("%Y-%m-%d %H:%M UTC"), digest)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="markdown file whose client-bench section to (re)write "
                    "(default: the report goes to stdout)")
    ap.add_argument("--clients", default="10,100,1000",
                    help="comma-separated numbers of non-reading clients (10,100,1000); "
                    "empty to run only the send-and-close part")
    ap.add_argument("--servers", default="geogate,nutcracker,memcached",
                    help="comma-separated subset of geogate,nutcracker,memcached")
    ap.add_argument("--threads", type=int, default=2, help="geogate's `threads:` (2)")
    ap.add_argument("--geogate", default=os.path.join(ROOT, "bin", "geogate"))
    ap.add_argument("--pipeline", type=int, default=200, help="`get big` per client (200)")
    ap.add_argument("--value-kib", type=int, default=512, help="size of `big` in KiB (512)")
    ap.add_argument("--cap-mib", type=int, default=3072,
                    help="stop a run when the server's RSS passes this (3072)")
    ap.add_argument("--min-available-mib", type=int, default=4096,
                    help="stop a run when the machine's MemAvailable falls below this (4096)")
    ap.add_argument("--nutcracker-timeout", type=int, default=0,
                    help="nutcracker's `timeout:` in ms; 0 (default) writes none, nutcracker's "
                    "own default; the integration tests use 2000")
    ap.add_argument("--mss", type=int, default=1448,
                    help="TCP_MAXSEG of the non-reading clients' sockets, 0 for loopback's "
                    "own (1448: see the report)")
    ap.add_argument("--latency-seconds", type=float, default=5.0)
    ap.add_argument("--latency-rate", type=int, default=2000,
                    help="latency client's round trips per second, 0 = back to back (2000)")
    ap.add_argument("--after-close-seconds", type=float, default=30.0)
    ap.add_argument("--churn-seconds", type=float, default=10.0, help="0 to skip")
    ap.add_argument("--churn-threads", type=int, default=4)
    args = ap.parse_args()
    try:
        args.clients = [int(x) for x in args.clients.split(",") if x.strip()]
    except ValueError:
        ap.error("--clients: comma-separated integers")
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    bad = [s for s in servers if s not in SERVER_ORDER]
    if bad or not servers:
        ap.error("--servers: choose from %s" % ",".join(SERVER_ORDER))
    servers = [s for s in SERVER_ORDER if s in servers]
    args.geogate = os.path.abspath(args.geogate)

    def on_signal(sig, frame):
        raise KeyboardInterrupt("signal %d" % sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # also when started in the background
    per_run = 2 * args.latency_seconds + STEADY_MAX_S + args.after_close_seconds + 60
    budget = int(len(servers) * (len(args.clients) * per_run + args.churn_seconds + 40) + 180)

    def on_alarm(sig, frame):
        raise KeyboardInterrupt("the whole benchmark exceeded its %d s budget" % budget)

    signal.signal(signal.SIGALRM, on_alarm)

    raise_nofile()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < max(args.clients + [0]) + 200:
        log("RLIMIT_NOFILE is %d: not enough for %d clients" % (soft, max(args.clients)))
        return 1
    info = machine_info(args)
    t_start = time.time()
    big = bytes((i * 7 + 13) % 26 + 97 for i in range(args.value_kib * 1024))
    tmp = tempfile.mkdtemp(prefix="geogate-client-bench-")
    registry = []
    results, churn = [], []
    binary_note = None
    failed = False
    signal.alarm(budget)
    try:
        if "geogate" in servers:
            binary_note = prepare_geogate(args, tmp)
            log("geogate: %s" % binary_note)
        log("servers %s, clients %s, cap %d MiB, logs in %s" % (
            ",".join(servers), ",".join(map(str, args.clients)), args.cap_mib, tmp))
        progress_header()
        for n in args.clients:
            for kind in servers:
                r = run_clients(kind, n, args, tmp, registry, big)
                results.append(r)
                failed |= bool(r.get("error"))
                progress_row(r, args)
        if args.churn_seconds > 0:
            for kind in servers:
                c = run_churn(kind, args, tmp, registry)
                churn.append(c)
                failed |= bool(c.get("error"))
                churn_row(c)
    except KeyboardInterrupt as e:
        log("interrupted (%s); stopping everything" % (e or "Ctrl-C"))
        return 130
    except BenchError as e:
        log("run_client_bench: %s%s" % (e, "; logs kept in %s" % tmp if registry else ""))
        if not registry:
            shutil.rmtree(tmp, ignore_errors=True)
        return 1
    finally:
        signal.alarm(0)
        for c in reversed(registry):
            try:
                c.stop(kill=True)
            except Exception as e:  # keep stopping the others
                log("stopping %s: %s" % (c.name, e))
    elapsed = time.time() - t_start
    report = render(args, info, results, churn, elapsed, binary_note)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        write_marked_section(args.out, SECTION, report)
        log("wrote the %s section of %s (%.0f s)" % (SECTION, args.out, elapsed))
    else:
        out()
        out(report)
    if failed:
        log("some runs failed; logs kept in %s" % tmp)
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
