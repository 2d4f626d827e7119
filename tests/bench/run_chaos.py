#!/usr/bin/python3
"""Chaos soak (issue 13, point 4): three replicating sites under a checker load while a
schedule of faults runs, then the figures that matter, each against its goal.

    /usr/bin/python3 tests/bench/run_chaos.py [--duration 600] [--seed 1]
        [--out docs/BENCHMARKS.md] [--geogate-bin DIR] [--no-clock-fault] [--keep]

The lab (tests/integration/multisite.Lab): sites us, eu and ap, two memcached nodes and one
geogate each (`fsync: always`, admin listener, `wan.spool.max_bytes` 8 MiB), a WAN emulator
relay on every ordered pair of sites (10-40 ms each way, 5 ms jitter); ap's spool directory
is a 16 MiB tmpfs of its own.

The checker load, for --duration seconds:

  * writer threads (--writers), each paced to --rate operations per second.  Each thread
    owns its keys (own:T:I): it sets them to unique values (a tag plus filler derived from
    it, random client flags, 16 B to 60 kB) or deletes them, each operation at a random
    site, and records every operation with its outcome: acknowledged (STORED, DELETED,
    NOT_FOUND: a delete always writes a tombstone) or not (a SERVER_ERROR, a timeout, a
    connection error: its effect is unknown).  One key is written again only 3 s after its
    previous operation ended: two writes of one key closer together than the clocks'
    disagreement (the clock fault sets one site 2 s ahead) are ordered by their versions,
    not by when they happened (docs/REPLICATION.md, Versions), so "the last acknowledged
    write" would not be well defined.  A fifth of the operations go to a small shared key
    space (sh:I) that every thread writes at every site at once: conflicts, for the
    divergence figure only.
  * a reader thread: multi-key gets of random keys at random sites; every value read must
    be one some writer sent, byte for byte, with its flags.
  * slow clients: connections that ask twice for four 256 KiB values (2 MiB) and read
    4 KiB every 50 ms, closing (some with a reset) after 2-8 s, mid-reply or not;
  * closing clients: connections that send a command and close at once, reset a half-sent
    command, half-close and read, or connect and close.

The fault schedule (each fault logged with its time; `schedule()` below):

  * memcached node killed (SIGKILL) and started again EMPTY on the same port;
  * WAN links cut (connections reset, new ones refused) and healed; a site black-holed;
  * links squeezed by the emulator's bandwidth cap (8-16 kB/s);
  * a gateway killed with SIGKILL and restarted (its spool is on disk: nothing is lost);
  * ap's spool disk full for 30 s: a ballast file fills the tmpfs (topped up as the
    gateway frees segments), then is deleted; the gateway resumes by itself, the writes
    it could not spool are announced to the peers, which catch up (auto_backfill);
  * one site's clock 2 s ahead for a minute: its gateway restarted (SIGTERM) with
    Debian's libfaketime preloaded (LD_PRELOAD, FAKETIME="+2s", FAKETIME_NO_CACHE=1; the
    monotonic clock left alone), then restarted normally; /status's time_ms shows the
    skew.  The library is preloaded directly rather than through /usr/bin/faketime, which
    forks and waits, so that the gateway stays the lab's child (its pid, its exit status).
    --no-clock-fault leaves it out;
  * bursts of slow and closing clients on top of the steady ones.

A 60 s run gets each kind once, compressed; longer runs repeat rounds of ~200 s with the
full durations.  Then the faults stop, everything is healed, the load stops, the spools
drain and catch-up backfills finish, and the figures are computed:

  * acknowledged writes lost: for every owned key, the last acknowledged operation (or one
    sent after it, whose effect is unknown) must be what every site holds, read through
    its gateway.  A memcached node restarted empty loses what it held, by design: a (key,
    site) pair whose last acknowledged write was sent before the key's node at that site
    was back up may hold any value ever written to the key, or nothing; such pairs are
    counted, not hidden;
  * divergent keys: multisite.Lab.compare over every owned and shared key; a difference
    that an empty node restart explains (the winning version was written before the node
    at the differing site was back) is counted apart;
  * gateway RSS (VmRSS) at the start, the peak (sampled every 0.5 s) and the end, per site;
  * open fds per gateway at the start and the end (after the same warm-up requests); a
    restarted gateway's count right after its own start is shown too;
  * crashes: any gateway exit the schedule did not cause, and any non-zero exit at a clean
    stop (SIGTERM);
  * sanitizer reports (ASan, LSan, UBSan) in the gateway logs (--geogate-bin build/san/bin);
  * reads that returned a value no writer sent; reads after the drain that failed;
  * a self-test of the checker: ten values written behind the gateways after the figures
    above must all show up as lost and divergent.

The table is printed; with --out it goes between `<!-- chaos-bench:start -->` and
`<!-- chaos-bench:end -->` of that file.  Exit status 1 when a goal is not met.
Needs root for the tmpfs (mount); without it the spool-full fault is left out, and said.
Every child process and mount is undone on exit; every wait is bounded.
"""
import argparse
import collections
import glob
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "tests", "bench"))

SITES = ["us", "eu", "ap"]
TMPFS_SITE = "ap"
TMPFS_SIZE = "16m"
SPOOL_MAX_BYTES = 8 << 20
KEY_GAP_S = 3.0          # one key is written again only this long after its last operation
SKEW_S = 2.0             # the clock fault
SANITIZER_RE = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error")


def log(msg):
    print("[chaos] " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Values: a tag that names the write, then filler derived from it, so a value read back
# tells which write it came from and whether it arrived whole.

def make_value(tag, size):
    head = tag.encode() + b"|"
    seed = hashlib.sha256(tag.encode()).hexdigest().encode()
    n = max(0, size - len(head))
    return head + (seed * (n // len(seed) + 1))[:n]


def parse_tag(value):
    i = value.find(b"|")
    if i <= 0:
        return None
    tag = value[:i].decode("ascii", "replace")
    return tag if make_value(tag, len(value)) == value else None


class FlagSerde:
    """pymemcache serde that keeps bytes as they are and hands back (value, flags)."""

    def serialize(self, key, value):
        return value, 0

    def deserialize(self, key, value, flags):
        return value, flags


# ---------------------------------------------------------------------------------------
# The record of every write a checker thread sent.

class Write:
    __slots__ = ("tag", "key", "kind", "flags", "size", "site", "t_send", "t_done", "acked",
                 "reply")

    def __init__(self, tag, key, kind, flags, size, site, t_send):
        self.tag, self.key, self.kind, self.flags, self.size = tag, key, kind, flags, size
        self.site, self.t_send = site, t_send
        self.t_done = None
        self.acked = None     # True: acknowledged; False: unknown effect
        self.reply = None

    def result(self):
        """What a site holds after this write, as Lab.dump shows it."""
        return None if self.kind == "delete" else (make_value(self.tag, self.size), self.flags)


class Registry:
    def __init__(self):
        self.by_tag = {}                                  # tag -> Write (sets only)
        self.by_key = collections.defaultdict(list)       # key -> [Write] in send order
        self.lock = threading.Lock()

    def add(self, w):
        with self.lock:
            if w.kind == "set":
                self.by_tag[w.tag] = w
            self.by_key[w.key].append(w)


# ---------------------------------------------------------------------------------------
# Checker load

class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = collections.Counter()
        self.samples = collections.defaultdict(list)

    def add(self, name, n=1, sample=None):
        with self.lock:
            self.c[name] += n
            if sample is not None and len(self.samples[name]) < 5:
                self.samples[name].append(sample)


def mc_client(port, timeout=6.0):
    from pymemcache.client.base import Client
    return Client(("127.0.0.1", port), connect_timeout=2.0, timeout=timeout, no_delay=True,
                  default_noreply=False, serde=FlagSerde())


class Writer(threading.Thread):
    def __init__(self, chaos, tno, seed):
        super().__init__(daemon=True, name="writer-%d" % tno)
        self.chaos, self.tno = chaos, tno
        self.rng = random.Random(seed)
        self.keys = ["own:%d:%04d" % (tno, i) for i in range(chaos.args.keys_per_writer)]
        self.rng.shuffle(self.keys)
        self.ready = collections.deque((0.0, k) for k in self.keys)
        self.clients = {}
        self.seq = 0

    def client(self, site):
        c = self.clients.get(site)
        if c is None:
            c = self.clients[site] = mc_client(self.chaos.lab.sites[site].port)
        return c

    def drop_client(self, site):
        c = self.clients.pop(site, None)
        if c is not None:
            try:
                c.close()
            except Exception:
                pass

    def value_size(self):
        r = self.rng.random()
        if r < 0.80:
            return self.rng.randint(16, 400)
        if r < 0.98:
            return self.rng.randint(400, 4000)
        return self.rng.randint(20000, 60000)

    def one(self, key, owned):
        from pymemcache.exceptions import MemcacheServerError, MemcacheUnexpectedCloseError
        ch = self.chaos
        site = self.rng.choice(SITES)
        self.seq += 1
        kind = "delete" if self.rng.random() < (0.15 if owned else 0.3) else "set"
        tag = "%s%d.%d" % ("t" if owned else "s", self.tno, self.seq)
        flags = self.rng.randint(0, 0xFFFFFFFF)
        size = self.value_size()
        w = Write(tag, key, kind, flags, size, site, time.time())
        ch.registry.add(w)  # before sending: a reader may see the value at once
        try:
            c = self.client(site)
            if kind == "set":
                ok = c.set(key, make_value(tag, size), flags=flags)
                w.reply = "STORED" if ok else "NOT_STORED"
                w.acked = bool(ok)
            else:
                ok = c.delete(key)
                w.reply = "DELETED" if ok else "NOT_FOUND"
                w.acked = True
        except MemcacheUnexpectedCloseError:
            w.acked, w.reply = False, "connection closed"
            self.drop_client(site)
        except MemcacheServerError as e:
            w.acked, w.reply = False, "SERVER_ERROR " + e.args[0].decode("utf-8", "replace")[:60] \
                if e.args and isinstance(e.args[0], bytes) else repr(e)[:60]
        except Exception as e:  # timeouts, resets, refused: the effect is unknown
            w.acked, w.reply = False, type(e).__name__
            self.drop_client(site)
        w.t_done = time.time()
        ch.counters.add("%s %s" % ("owned" if owned else "shared", "acked" if w.acked else "not acked"))
        if not w.acked:
            ch.counters.add("write error: %s" % w.reply.split(" (")[0][:60], sample=(site, key, w.reply))
            if w.reply in ("ConnectionRefusedError",):
                time.sleep(0.05)

    def run(self):
        ch = self.chaos
        period = 1.0 / ch.args.rate
        nxt = time.monotonic()
        shared = ch.shared_keys
        while not ch.load_stop.is_set():
            now = time.monotonic()
            if self.rng.random() < 0.2:
                self.one(self.rng.choice(shared), owned=False)
            elif self.ready and self.ready[0][0] <= now:
                _, key = self.ready.popleft()
                self.one(key, owned=True)
                self.ready.append((time.monotonic() + KEY_GAP_S, key))
            else:
                ch.counters.add("owned key not ready (3 s gap)")
            nxt += period
            left = nxt - time.monotonic()
            if left > 0:
                ch.load_stop.wait(left)
            else:
                nxt = time.monotonic()
        for site in list(self.clients):
            self.drop_client(site)


class Reader(threading.Thread):
    def __init__(self, chaos, seed):
        super().__init__(daemon=True, name="reader")
        self.chaos = chaos
        self.rng = random.Random(seed)

    def run(self):
        ch = self.chaos
        clients = {}
        keys = ch.owned_keys + ch.shared_keys
        period = 1.0 / ch.args.read_rate
        nxt = time.monotonic()
        while not ch.load_stop.is_set():
            site = self.rng.choice(SITES)
            batch = self.rng.sample(keys, 8)
            try:
                c = clients.get(site) or clients.setdefault(site, mc_client(ch.lab.sites[site].port))
                got = c.get_many(batch)
                ch.counters.add("reads", len(batch))
                ch.counters.add("read hits", len(got))
                for k, (value, flags) in got.items():
                    self.check(k, value, flags, site)
            except Exception as e:
                ch.counters.add("read error: %s" % type(e).__name__[:40], sample=(site, str(e)[:80]))
                c = clients.pop(site, None)
                if c is not None:
                    try:
                        c.close()
                    except Exception:
                        pass
            nxt += period
            left = nxt - time.monotonic()
            if left > 0:
                ch.load_stop.wait(left)
            else:
                nxt = time.monotonic()
        for c in clients.values():
            try:
                c.close()
            except Exception:
                pass

    def check(self, key, value, flags, site):
        ch = self.chaos
        key = key.decode() if isinstance(key, bytes) else key
        tag = parse_tag(value)
        w = ch.registry.by_tag.get(tag) if tag else None
        if w is None or w.key != key or w.flags != flags:
            ch.counters.add("corrupt reads", sample=(site, key, value[:60], flags))


class SlowClients(threading.Thread):
    """Connections that ask for large values and read them slowly; each closes after a
    random 2-8 s (half of them with a reset), mid-reply or not, and is replaced."""

    def __init__(self, chaos, seed):
        super().__init__(daemon=True, name="slow-clients")
        self.chaos = chaos
        self.rng = random.Random(seed)
        self.extra_until = 0.0

    def run(self):
        ch = self.chaos
        conns = []  # [sock, close_at, next_read]
        req = b"get " + b" ".join(k.encode() for k in ch.big_keys) + b"\r\n"
        while not ch.load_stop.is_set():
            now = time.monotonic()
            want = ch.args.slow_clients + (ch.args.slow_clients * 4 if now < self.extra_until else 0)
            while len(conns) < want:
                site = self.rng.choice(SITES)
                try:
                    s = socket.create_connection(("127.0.0.1", ch.lab.sites[site].port), timeout=2)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
                    s.sendall(req * 2)
                    s.setblocking(False)
                    conns.append([s, now + self.rng.uniform(2, 8), now])
                    ch.counters.add("slow clients")
                except OSError:
                    ch.counters.add("slow client connect errors")
                    break
            for c in list(conns):
                s, close_at, next_read = c
                if now >= close_at:
                    try:
                        if self.rng.random() < 0.5:
                            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        s.close()
                    except OSError:
                        pass
                    conns.remove(c)
                    continue
                if now >= next_read:
                    try:
                        data = s.recv(4096)
                        if data == b"":
                            s.close()
                            conns.remove(c)
                            ch.counters.add("slow clients closed by the gateway")
                            continue
                        ch.counters.add("slow client bytes", len(data))
                    except BlockingIOError:
                        pass
                    except OSError:
                        s.close()
                        conns.remove(c)
                        continue
                    c[2] = now + 0.05
            ch.load_stop.wait(0.01)
        for s, _, _ in conns:
            try:
                s.close()
            except OSError:
                pass


class ClosingClients(threading.Thread):
    """Clients that send and close at once, reset a half-sent command, half-close and read
    the reply, or connect and close."""

    def __init__(self, chaos, seed):
        super().__init__(daemon=True, name="closing-clients")
        self.chaos = chaos
        self.rng = random.Random(seed)
        self.burst = 0

    def run(self):
        ch = self.chaos
        n = 0
        while not ch.load_stop.is_set():
            n += 1
            site = self.rng.choice(SITES)
            mode = self.rng.choice(["send-close", "reset-mid-command", "half-close", "connect-close"])
            try:
                s = socket.create_connection(("127.0.0.1", ch.lab.sites[site].port), timeout=2)
                try:
                    if mode == "send-close":
                        s.sendall(b"set cl:%d 0 0 5 noreply\r\nhello\r\nget %s\r\n" % (
                            n % 500, ch.big_keys[0].encode()))
                    elif mode == "reset-mid-command":
                        s.sendall(b"set cl:%d 0 0 100\r\nabc" % (n % 500))
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    elif mode == "half-close":
                        s.sendall(b"get cl:%d\r\n" % (n % 500))
                        s.shutdown(socket.SHUT_WR)
                        s.settimeout(2)
                        while s.recv(65536):
                            pass
                finally:
                    s.close()
                ch.counters.add("closing clients")
            except OSError:
                ch.counters.add("closing client errors")
            if self.burst > 0:
                self.burst -= 1
            else:
                ch.load_stop.wait(1.0 / ch.args.closing_rate)


# ---------------------------------------------------------------------------------------
# Watching the gateways: RSS, fds, exits the schedule did not cause.

def proc_rss(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def proc_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def tcp_sockets():
    """inode -> (local port, remote port, state) for every IPv4/IPv6 TCP socket."""
    out = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    p = line.split()
                    lport = int(p[1].rsplit(":", 1)[1], 16)
                    rport = int(p[2].rsplit(":", 1)[1], 16)
                    out[p[9]] = (lport, rport, p[3])
        except OSError:
            pass
    return out


def fd_breakdown(lab, site, pid):
    """The gateway's fds by kind: listeners, memcached, WAN in/out, clients, files, ..."""
    s = lab.sites[site]
    mc_ports = {m.port for m in s.memcached}
    wanem_ports = set(lab.wanem.ports.values()) if lab.wanem else set()
    socks = tcp_sockets()
    kinds = collections.Counter()
    try:
        names = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return {}
    for fd in names:
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            t = socks.get(target[8:-1])
            if t is None:
                kinds["socket (other)"] += 1
            elif t[2] == "0A":
                kinds["listen"] += 1
            elif t[1] in mc_ports:
                kinds["memcached"] += 1
            elif t[1] in wanem_ports:
                kinds["wan out"] += 1
            elif t[0] == s.wan_port:
                kinds["wan in"] += 1
            elif t[0] == s.port:
                kinds["client"] += 1
            elif t[0] == s.admin_port:
                kinds["admin client"] += 1
            else:
                kinds["tcp other"] += 1
        elif target.startswith("/"):
            kinds["spool" if "/spool" in target else "file"] += 1
        else:
            kinds[target.split(":")[0] + ":" + target.split(":")[1].split("]")[0].strip("[")
                  if ":" in target else target] += 1
    return dict(kinds)


class GatewayLife:
    """One gateway process: when and how it started and ended."""

    def __init__(self, site, pid, t, env_note):
        self.site, self.pid, self.t_start, self.env_note = site, pid, t, env_note
        self.fds_after_start = None
        self.fds_after_start_kinds = None
        self.rss_peak = 0
        self.t_end = None
        self.exit = None          # returncode
        self.end_reason = None    # "SIGKILL (schedule)", "SIGTERM (schedule)", "crash", ...


class Watch(threading.Thread):
    def __init__(self, chaos):
        super().__init__(daemon=True, name="watch")
        self.chaos = chaos
        self.stop_ev = threading.Event()
        self.rss = {n: {"start": None, "peak": 0, "end": None, "peak_t": None} for n in SITES}

    def run(self):
        ch = self.chaos
        while not self.stop_ev.wait(0.5):
            for n in SITES:
                lock = ch.gw_locks[n]
                if not lock.acquire(blocking=False):
                    continue
                try:
                    g = ch.lab.sites[n].gateway
                    if g is None:
                        continue
                    if not g.alive():
                        ch.gateway_crashed(n)
                        continue
                    r = proc_rss(g.pid)
                    if r is not None:
                        life = ch.lives[n][-1]
                        life.rss_peak = max(life.rss_peak, r)
                        if r > self.rss[n]["peak"]:
                            self.rss[n]["peak"] = r
                            self.rss[n]["peak_t"] = ch.t()
                finally:
                    lock.release()


# ---------------------------------------------------------------------------------------
# The fault schedule

class Fault:
    def __init__(self, at, kind, dur, **kw):
        self.at, self.kind, self.dur, self.kw = at, kind, dur, kw
        self.t_begin = self.t_end = None
        self.notes = []
        self.error = None

    def describe(self):
        k = self.kw
        if self.kind == "node":
            return "memcached %s#%d killed, started empty %.0f s later" % (k["site"], k["node"], self.dur)
        if self.kind == "cut":
            return "WAN links %s<->%s cut for %.0f s" % (k["a"], k["b"], self.dur)
        if self.kind == "blackhole":
            return "%s black-holed (every WAN link) for %.0f s" % (k["site"], self.dur)
        if self.kind == "squeeze":
            return "WAN links %s<->%s capped at %d kB/s for %.0f s" % (k["a"], k["b"], k["rate"] // 1000, self.dur)
        if self.kind == "gwkill":
            return "gateway %s SIGKILL, restarted %.0f s later" % (k["site"], self.dur)
        if self.kind == "spoolfull":
            return "%s spool disk full for %.0f s" % (k["site"], self.dur)
        if self.kind == "clock":
            return "%s clock +%.0f s for %.0f s (restart under libfaketime, then normal)" % (
                k["site"], SKEW_S, self.dur)
        if self.kind == "clients":
            return "client storm for %.0f s: %d send-and-close connections, %dx slow readers" % (
                self.dur, k["closing"], 5)
        return self.kind


def schedule(duration, rng, clock=True, spool=True):
    """The faults of a run, sorted by start time (seconds from the load's start)."""
    pairs = [(a, b) for i, a in enumerate(SITES) for b in SITES[i + 1:]]
    out = []
    if duration <= 150:
        s = duration / 60.0
        out += [
            Fault(4 * s, "gwkill", 2, site="us"),
            Fault(6 * s, "squeeze", 8 * s, a="us", b="eu", rate=16000),
            Fault(8 * s, "node", 3, site="eu", node=0),
            Fault(14 * s, "cut", 4 * s, a="eu", b="ap"),
            Fault(26 * s, "blackhole", 5 * s, site="ap"),
            Fault(40 * s, "node", 3, site="ap", node=1),
            Fault(43 * s, "squeeze", 6 * s, a="ap", b="us", rate=8000),
            Fault(46 * s, "clients", 6 * s, closing=300),
        ]
        if spool:
            out.append(Fault(12 * s, "spoolfull", max(10.0, 30 * duration / 600.0), site=TMPFS_SITE))
        if clock:
            out.append(Fault(30 * s, "clock", 12 * s, site="eu"))
        return sorted(out, key=lambda f: f.at)
    rounds = max(1, int(duration // 200))
    length = (duration - 20) / rounds
    clock_round = 1 if rounds > 1 else 0
    for r in range(rounds):
        base = r * length
        sc = length / 200.0
        others = [n for n in SITES if n != TMPFS_SITE]
        out += [
            Fault(base + 5 * sc, "gwkill", 3, site=rng.choice(SITES)),
            Fault(base + 15 * sc, "squeeze", 20, a=rng.choice(pairs)[0], b=None, rate=16000),
            Fault(base + 25 * sc, "node", 5, site=rng.choice(SITES), node=rng.randint(0, 1)),
            Fault(base + 50 * sc, "cut", 10, a=None, b=None),
            Fault(base + 80 * sc, "blackhole", 15, site=rng.choice(SITES)),
            Fault(base + 110 * sc, "node", 5, site=rng.choice(SITES), node=rng.randint(0, 1)),
            Fault(base + 120 * sc, "clients", 10, closing=500),
            Fault(base + 135 * sc, "cut", 5, a=None, b=None),
            Fault(base + 150 * sc, "gwkill", 3, site=rng.choice(SITES)),
            Fault(base + 160 * sc, "squeeze", 15, a=None, b=None, rate=8000),
        ]
        # the clock fault in one round, the full spool disk in the others (both in a lone one)
        if clock and r == clock_round:
            out.append(Fault(base + 40 * sc, "clock", 60, site=rng.choice(others)))
        if spool and (not clock or r != clock_round or rounds == 1):
            out.append(Fault(base + 40 * sc, "spoolfull", 30, site=TMPFS_SITE))
    for f in out:  # pick the pairs left open above
        if f.kind in ("cut", "squeeze") and f.kw.get("b") is None:
            a, b = rng.choice(pairs) if f.kw.get("a") is None else (
                f.kw["a"], rng.choice([n for n in SITES if n != f.kw["a"]]))
            f.kw["a"], f.kw["b"] = a, b
    return sorted(out, key=lambda f: f.at)


def faketime_lib():
    for p in sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")) + \
            sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")):
        return p
    return None


# ---------------------------------------------------------------------------------------

class Chaos:
    def __init__(self, args):
        self.args = args
        self.lab = None
        self.registry = Registry()
        self.counters = Counters()
        self.load_stop = threading.Event()
        self.faults_stop = threading.Event()
        self.gw_locks = {n: threading.RLock() for n in SITES}
        self.lives = {n: [] for n in SITES}
        self.site_env = {n: None for n in SITES}
        self.crashes = []
        self.restarts = []       # node restarts: dict(site, node, port, t_kill, t_start, t_up)
        self.events = []         # (t, text)
        self.t0 = None
        self.wall0 = None
        self.mounted = None
        self.ballast = None
        self.clock_seen = []     # measured skews (ms)
        self.spool_fault_seen = []
        self.check_read_errors = []
        self.owned_keys = []
        self.shared_keys = ["sh:%03d" % i for i in range(args.shared_keys)]
        self.big_keys = ["big:%d" % i for i in range(4)]

    def t(self):
        return time.monotonic() - self.t0 if self.t0 is not None else 0.0

    def event(self, fmt, *a):
        text = fmt % a if a else fmt
        self.events.append((self.t(), text))
        log("%6.1fs %s" % (self.t(), text))

    # ---- gateways ----

    def start_gateway(self, site, env_note="normal"):
        env = self.site_env[site]
        g = self.lab.start_site(site, timeout=30 if self.args.sanitized else 15, env=env)
        life = GatewayLife(site, g.pid, self.t(), env_note)
        self.lives[site].append(life)
        return life

    def note_fds_after_start(self, site, life, settle=3.0):
        """The fd count of a freshly started gateway once its links are up (bounded)."""
        try:
            self.lab.wait_links_up(settle * 3, sites=[site])
        except AssertionError:
            pass
        self.warm(site)
        time.sleep(0.5)
        life.fds_after_start = proc_fds(life.pid)
        life.fds_after_start_kinds = fd_breakdown(self.lab, site, life.pid)

    def gateway_crashed(self, site):
        """Called with the site's lock held when its gateway exited on its own."""
        s = self.lab.sites[site]
        g = s.gateway
        rc = g.p.returncode
        g.stop()
        s.gateway = None
        life = self.lives[site][-1]
        life.t_end, life.exit, life.end_reason = self.t(), rc, "crash"
        tail = self.lab.log_tail(site, 30)
        self.crashes.append({"site": site, "t": self.t(), "rc": rc, "pid": life.pid, "log": tail})
        self.event("CRASH: gateway %s (pid %d) exited with %s; restarting it", site, life.pid, rc)
        try:  # the run goes on: later faults and the figures need the site
            self.start_gateway(site, env_note="after a crash")
        except Exception as e:
            self.event("could not restart %s after the crash: %s", site, e)

    def kill_gateway(self, site):
        with self.gw_locks[site]:
            life = self.lives[site][-1]
            self.lab.kill_site(site)
            life.t_end, life.exit, life.end_reason = self.t(), -9, "SIGKILL (schedule)"

    def stop_gateway(self, site, reason):
        with self.gw_locks[site]:
            life = self.lives[site][-1]
            if self.lab.sites[site].gateway is None:
                return None
            rc = self.lab.stop_site(site, timeout=15 if self.args.sanitized else 10)
            life.t_end, life.exit, life.end_reason = self.t(), rc, reason
            if rc != 0:
                self.crashes.append({"site": site, "t": self.t(), "rc": rc, "pid": life.pid,
                                     "log": self.lab.log_tail(site, 30),
                                     "why": "non-zero exit on SIGTERM"})
                self.event("BAD EXIT: gateway %s exited with %s on SIGTERM", site, rc)
            return rc

    def warm(self, site):
        """A few requests over fresh connections at the site, so that every worker has its
        memcached connections (they open on demand): the state fd counts compare."""
        for i in range(4):
            try:
                c = mc_client(self.lab.sites[site].port, timeout=5)
                for j in range(16):
                    c.get("warm:%d:%d" % (i, j))
                c.close()
            except Exception:
                pass

    # ---- faults ----

    def run_fault(self, f):
        if self.faults_stop.wait(max(0.0, f.at - self.t())):
            f.notes.append("skipped: the faults had stopped")
            return
        f.t_begin = self.t()
        self.event("fault: %s", f.describe())
        try:
            getattr(self, "fault_" + f.kind)(f)
        except Exception as e:
            f.error = "%s: %s" % (type(e).__name__, e)
            self.event("fault %s failed: %s", f.kind, f.error)
        f.t_end = self.t()
        self.event("fault over: %s%s", f.describe(), " (%s)" % "; ".join(f.notes) if f.notes else "")

    def hold(self, seconds):
        """Sleep for the fault's duration, or less when the faults stop."""
        self.faults_stop.wait(seconds)

    def fault_node(self, f):
        site, i = f.kw["site"], f.kw["node"]
        port = self.lab.sites[site].memcached[i].port
        t_kill = time.time()
        self.lab.kill_node(site, i)
        self.hold(f.dur)
        self.lab.start_node(site, i)
        t_start = time.time()
        rec = {"site": site, "node": i, "port": port, "t_kill": t_kill, "t_start": t_start,
               "t_up": None}
        self.restarts.append(rec)
        label = "node:127.0.0.1:%d:state" % port
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if self.lab.stats(site, "nodes").get(label) == "up":
                    rec["t_up"] = time.time()
                    break
            except OSError:
                pass
            time.sleep(0.1)
        if rec["t_up"] is None:
            rec["t_up"] = time.time()
            f.notes.append("the gateway did not report the node up within 20 s")
        else:
            f.notes.append("node up at the gateway %.1f s after its start" % (rec["t_up"] - t_start))

    def fault_cut(self, f):
        a, b = f.kw["a"], f.kw["b"]
        for x, y in ((a, b), (b, a)):
            self.lab.link_state(x, y, "cut")
        self.hold(f.dur)
        for x, y in ((a, b), (b, a)):
            self.lab.link_state(x, y, "up")

    def fault_blackhole(self, f):
        self.lab.isolate(f.kw["site"], "blackhole")
        self.hold(f.dur)
        self.lab.heal(f.kw["site"])

    def fault_squeeze(self, f):
        a, b = f.kw["a"], f.kw["b"]
        for x, y in ((a, b), (b, a)):
            self.lab.set_link(x, y, rate=f.kw["rate"], burst=max(4096, f.kw["rate"] // 4))
        self.hold(f.dur)
        for x, y in ((a, b), (b, a)):
            self.lab.set_link(x, y, rate=0)

    def fault_gwkill(self, f):
        site = f.kw["site"]
        with self.gw_locks[site]:
            self.kill_gateway(site)
            self.hold(f.dur)
            life = self.start_gateway(site, env_note="after SIGKILL")
        self.note_fds_after_start(site, life)

    def fault_clock(self, f):
        site = f.kw["site"]
        lib = faketime_lib()
        if lib is None:
            f.notes.append("no libfaketime: skipped")
            return
        env = dict(os.environ)
        env.update({"LD_PRELOAD": lib, "FAKETIME": "+%ds" % int(SKEW_S), "FAKETIME_NO_CACHE": "1",
                    "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
        if self.args.sanitized:  # libfaketime comes before the ASan runtime
            env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0").lstrip(":")
        with self.gw_locks[site]:
            self.stop_gateway(site, "SIGTERM (schedule: clock fault)")
            self.site_env[site] = env
            life = self.start_gateway(site, env_note="clock +%ds (libfaketime)" % int(SKEW_S))
        # Is it really ahead?  /status carries the gateway's CLOCK_REALTIME.
        skews = []
        for _ in range(5):
            try:
                t_before = time.time()
                st = json.loads(self.lab.admin(site, "GET", "/status")[1])
                t_after = time.time()
                skews.append(st["time_ms"] - (t_before + t_after) * 500.0)
                break
            except (OSError, ValueError, KeyError):
                time.sleep(0.3)
        if skews:
            self.clock_seen.append(skews[0])
            f.notes.append("gateway clock measured %+.0f ms" % skews[0])
        else:
            f.notes.append("could not read the gateway's clock")
        self.note_fds_after_start(site, life)
        self.hold(max(0.0, f.dur - (self.t() - f.t_begin)))
        with self.gw_locks[site]:
            self.stop_gateway(site, "SIGTERM (schedule: clock back)")
            self.site_env[site] = None
            life = self.start_gateway(site, env_note="after the clock fault")
        self.note_fds_after_start(site, life)

    def fault_spoolfull(self, f):
        site = f.kw["site"]
        path = os.path.join(self.lab.sites[site].spool_dir, "ballast")
        self.ballast = path
        fault_seen = False
        unspooled0 = self.safe_stats(site).get("spool:unspooled", 0)
        end = time.monotonic() + f.dur
        with open(path, "wb") as fh:
            size = 0
            while not self.faults_stop.is_set() and time.monotonic() < end:
                st = os.statvfs(self.lab.sites[site].spool_dir)
                free = st.f_bavail * st.f_frsize
                if free > 0:  # top up what the gateway freed (acked segments are deleted)
                    try:
                        os.posix_fallocate(fh.fileno(), size, free)
                        size += free
                    except OSError:
                        try:
                            fh.seek(size)
                            fh.write(b"\0" * free)
                            fh.flush()
                        except OSError:
                            pass
                        size = os.fstat(fh.fileno()).st_size
                if not fault_seen and self.safe_stats(site).get("spool:fault") == "yes":
                    fault_seen = True
                    f.notes.append("gateway reported the spool fault %.1f s in" % (
                        f.dur - (end - time.monotonic())))
                self.faults_stop.wait(0.25)
        os.unlink(path)
        self.ballast = None
        t_freed = time.monotonic()
        resumed = False
        while time.monotonic() - t_freed < 20:
            st = self.safe_stats(site)
            if st.get("spool:fault") == "no":
                resumed = True
                break
            time.sleep(0.2)
        unspooled = self.safe_stats(site).get("spool:unspooled", 0) - unspooled0
        self.spool_fault_seen.append({"seen": fault_seen, "unspooled": unspooled,
                                      "resumed_after": time.monotonic() - t_freed if resumed else None})
        f.notes.append("%d writes not spooled; %s" % (
            unspooled, "spooling again %.1f s after the ballast went" % (time.monotonic() - t_freed)
            if resumed else "NOT resumed 20 s after the ballast went"))
        if not fault_seen:
            f.notes.append("the gateway never reported a spool fault")

    def fault_clients(self, f):
        self.slow.extra_until = time.monotonic() + f.dur
        self.closing.burst = f.kw["closing"]
        self.hold(f.dur)

    def read_through(self, fn, what, tries=5):
        """fn() (reads through the gateways), again after an error: a read that fails after
        the drain is reported (check_read_errors), not hidden, and fails the run only when
        it keeps failing."""
        for i in range(tries):
            try:
                return fn()
            except (ConnectionError, OSError) as e:
                self.check_read_errors.append("%s: %s" % (what, str(e)[:120]))
                self.event("read after the drain failed (%s): %s", what, e)
                if i == tries - 1:
                    raise
                time.sleep(1.0)

    def safe_stats(self, site, sub="peers"):
        try:
            return self.lab.stats(site, sub)
        except OSError:
            return {}

    # ---- the end ----

    def heal_everything(self):
        lab = self.lab
        for a in SITES:
            for b in SITES:
                if a != b:
                    lab.link_state(a, b, "up")
                    lab.set_link(a, b, rate=0)
        for n in SITES:
            for i, m in enumerate(lab.sites[n].memcached):
                if not m.alive():
                    lab.start_node(n, i)
            with self.gw_locks[n]:
                if lab.sites[n].gateway is None:
                    self.start_gateway(n, env_note="at the heal")
        if self.ballast and os.path.exists(self.ballast):
            os.unlink(self.ballast)

    def backfills_running(self):
        running = []
        for n in SITES:
            try:
                code, body = self.lab.admin(n, "GET", "/backfill", timeout=5)
                if code == 200 and json.loads(body).get("state") == "running":
                    running.append(n)
            except (OSError, ValueError):
                running.append(n + " (no answer)")
        return running

    def wait_settled(self, timeout):
        """Spools drained, no catch-up backfill running, no spool fault, twice in a row."""
        from multisite import DrainTimeout
        t0 = time.monotonic()
        deadline = t0 + timeout
        quiet = 0
        last = ""
        while time.monotonic() < deadline:
            try:
                self.lab.wait_drained(max(1.0, deadline - time.monotonic()))
            except DrainTimeout as e:
                last = str(e)
                break
            busy = self.backfills_running()
            faults = [n for n in SITES if self.safe_stats(n).get("spool:fault") == "yes"]
            if not busy and not faults:
                quiet += 1
                if quiet >= 2:
                    return time.monotonic() - t0, None
            else:
                quiet = 0
                last = "backfills running at %s; spool faults at %s" % (busy, faults)
            time.sleep(1.0)
        return time.monotonic() - t0, last or "timeout"


# ---------------------------------------------------------------------------------------
# Figures

def check_acked(ch, views):
    """(lost, exempt, details): (key, site) pairs whose last acknowledged write is neither
    there nor superseded by a later write of the same key."""
    lab = ch.lab
    lost, exempt_pairs, exempt_ok, details = [], 0, 0, []
    acked_writes = 0
    for key in ch.owned_keys:
        hist = ch.registry.by_key.get(key, [])
        if not hist:
            continue
        last = None
        for i, w in enumerate(hist):
            if w.acked:
                last = i
        acked_writes += sum(1 for w in hist if w.acked)
        if last is None:
            ok_results = [None] + [w.result() for w in hist]
        else:
            ok_results = [w.result() for w in hist[last:]]
        for site in SITES:
            got = views[site].get(key.encode())
            if got in ok_results:
                continue
            exempt = False
            if last is not None:
                port = lab.node_of(site, key)
                for r in ch.restarts:
                    if r["site"] == site and r["port"] == port and hist[last].t_send < r["t_up"] + 0.3:
                        exempt = True
            if exempt:
                exempt_pairs += 1
                if got is None or got in [w.result() for w in hist]:
                    exempt_ok += 1
                    continue
            lost.append((key, site))
            if len(details) < 10:
                lw = hist[last] if last is not None else None
                details.append({
                    "key": key, "site": site,
                    "holds": describe_result(got),
                    "last_acked": describe_write(ch, lw) if lw else None,
                    "history": [describe_write(ch, w) for w in hist[-6:]],
                })
    return {"lost": lost, "exempt": exempt_pairs, "exempt_ok": exempt_ok, "details": details,
            "acked_writes": acked_writes}


def describe_result(r):
    if r is None:
        return "absent"
    tag = parse_tag(r[0])
    return "value %s (%d B, flags %d)" % (tag or repr(r[0][:20]), len(r[0]), r[1])


def describe_write(ch, w):
    return "%s %s at %s, sent %.2fs, %s (%s)" % (
        w.kind, w.tag, w.site, w.t_send - ch.wall0, "acked" if w.acked else "NOT acked", w.reply)


def version_of(it):
    return (it["hlc"], it["site_id"], it["gateway_id"]) if it else (0, 0, 0)


def classify_divergent(ch, keys):
    """Split divergent keys into those an empty node restart explains and the rest."""
    lab = ch.lab
    if not keys:
        return [], [], []
    raws = {n: lab.raw_dump(n, keys) for n in SITES}
    views = {n: lab.dump(n, keys) for n in SITES}
    explained, real, samples = [], [], []
    skew = SKEW_S + 0.5 if ch.clock_seen else 0.3
    for k in keys:
        items = {n: raws[n].get(k) for n in SITES}
        win_site = max(SITES, key=lambda n: version_of(items[n]))
        win = items[win_site]
        want = views[win_site].get(k)
        if win is not None and not win["tombstone"]:
            tag = parse_tag(win["value"])
            w = ch.registry.by_tag.get(tag) if tag else None
            t_written = w.t_send if w else (win["hlc"] >> 16) / 1000.0
        else:
            t_written = ((win["hlc"] >> 16) / 1000.0 - skew) if win else 0
        ok = True
        for n in SITES:
            if views[n].get(k) == want:
                continue
            port = lab.node_of(n, k.decode())
            if not any(r["site"] == n and r["port"] == port and t_written < r["t_up"] + 0.3
                       for r in ch.restarts):
                ok = False
        (explained if ok else real).append(k)
        if not ok and len(samples) < 8:
            samples.append({"key": k.decode(), "winner_at": win_site, "sites": {
                n: {"view": describe_result(views[n].get(k)),
                    "raw": None if items[n] is None else {
                        "hlc_ms": items[n]["hlc"] >> 16, "hlc_lc": items[n]["hlc"] & 0xFFFF,
                        "site_id": items[n]["site_id"], "gw": items[n]["gateway_id"],
                        "tombstone": items[n]["tombstone"],
                        "tag": parse_tag(items[n]["value"])}} for n in SITES}})
    return explained, real, samples


def self_test(ch, keys, views):
    """Does the checker see damage?  Five owned keys that hold a value everywhere get a
    value no writer sent, written straight into memcached at eu and at ap (behind the
    gateways); both figures must name all ten.  (It runs after the real figures.)"""
    lab = ch.lab
    held = [k for k in ch.owned_keys if all(views[n].get(k.encode()) is not None for n in SITES)]
    planted = {(k, "eu") for k in held[:5]} | {(k, "ap") for k in held[5:10]}
    for k, site in planted:
        lab.raw_set(site, k, b"planted-by-the-self-test")
    views2 = {n: ch.read_through(lambda n=n: lab.dump(n, keys), "self-test dump %s" % n) for n in SITES}
    lost = set(check_acked(ch, views2)["lost"])
    div = set(k.decode() for k in ch.read_through(lambda: lab.divergent(keys), "self-test compare"))
    return {"planted": len(planted), "lost_seen": len(planted & lost),
            "divergent_seen": len({k for k, _ in planted} & div),
            "ok": planted <= lost and {k for k, _ in planted} <= div and len(planted) == 10}


def sanitizer_reports(ch):
    hits = []
    for n in SITES:
        for path in ch.lab.sites[n].logs:
            try:
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            for m in SANITIZER_RE.finditer(text):
                line_start = text.rfind("\n", 0, m.start()) + 1
                line_end = text.find("\n", m.end())
                hits.append((n, os.path.basename(path), text[line_start:line_end if line_end > 0 else None][:200]))
    return hits


def mib(b):
    return "%.1f MiB" % (b / 1048576.0) if b is not None else "—"


# ---------------------------------------------------------------------------------------

def run(args):
    """Build the lab, run the load and the faults, compute the figures.  Returns a dict
    with 'goals' (list of dicts: name, goal, measured, ok) and everything reported."""
    if args.geogate_bin:
        os.environ["GEOGATE_BIN"] = os.path.abspath(args.geogate_bin)
    import harness
    from multisite import Lab, MCConn
    harness.GEOGATE = os.path.join(os.environ.get("GEOGATE_BIN", os.path.join(ROOT, "bin")), "geogate")
    if args.sanitized:
        os.environ.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        os.environ.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    import test_spool_faults as tsf

    ch = Chaos(args)
    can_mount = tsf.can_mount()
    clock = not args.no_clock_fault and faketime_lib() is not None
    faults = schedule(args.duration, random.Random(args.seed), clock=clock, spool=can_mount)
    if args.print_schedule:
        for f in faults:
            print("%6.0f s  %s" % (f.at, f.describe()))
        return None
    result = {"args": vars(args), "faults": faults, "notes": [], "t_start": time.time()}
    if not can_mount:
        result["notes"].append("not root: no tmpfs, so no spool-full fault")
    if not clock:
        result["notes"].append("clock fault left out (%s)" % (
            "--no-clock-fault" if args.no_clock_fault else "no libfaketime"))
    for w in range(args.writers):
        ch.owned_keys += ["own:%d:%04d" % (w, i) for i in range(args.keys_per_writer)]

    t_run = time.monotonic()
    lab = Lab(SITES, nodes=2, wanem=True, fsync="always", admin=True, start=False,
              spool_max_bytes=SPOOL_MAX_BYTES, wanem_seed=args.seed, threads=2,
              log_level=args.log_level)
    ch.lab = lab
    try:
        if can_mount:
            tsf.mount_tmpfs(lab.sites[TMPFS_SITE].spool_dir, TMPFS_SIZE)
            ch.mounted = lab.sites[TMPFS_SITE].spool_dir
        ch.t0 = time.monotonic()
        for n in SITES:
            ch.start_gateway(n, env_note="first start")
        lab.wait_links_up(30 if args.sanitized else 15)
        lrng = random.Random(args.seed + 1)
        for a in SITES:
            for b in SITES:
                if a != b:
                    lab.set_link(a, b, delay=lrng.randint(10, 40), jitter=5)
        big = mc_client(lab.sites["us"].port, timeout=10)
        for i, k in enumerate(ch.big_keys):
            big.set(k, make_value("big%d" % i, 256 * 1024), flags=0)
        big.close()
        lab.wait_drained(30)
        for n in SITES:
            ch.warm(n)
        time.sleep(1.0)
        start_fds, start_kinds, start_rss = {}, {}, {}
        for n in SITES:
            life = ch.lives[n][-1]
            start_fds[n] = life.fds_after_start = proc_fds(life.pid)
            start_kinds[n] = life.fds_after_start_kinds = fd_breakdown(lab, n, life.pid)
            start_rss[n] = proc_rss(life.pid)
        watch = Watch(ch)
        for n in SITES:
            watch.rss[n]["start"] = start_rss[n]
        log("lab up in %.1fs; fds at start %s; RSS %s" % (
            time.monotonic() - t_run, start_fds, {n: mib(v) for n, v in start_rss.items()}))

        # ---- load and faults ----
        ch.t0 = time.monotonic()
        ch.wall0 = time.time()
        threads = [Writer(ch, w, args.seed * 100 + w) for w in range(args.writers)]
        threads += [Reader(ch, args.seed * 100 + 50)]
        ch.slow = SlowClients(ch, args.seed * 100 + 60)
        ch.closing = ClosingClients(ch, args.seed * 100 + 70)
        threads += [ch.slow, ch.closing]
        watch.start()
        for t in threads:
            t.start()
        fthreads = [threading.Thread(target=ch.run_fault, args=(f,), daemon=True) for f in faults]
        for t in fthreads:
            t.start()
        ch.load_stop.wait(args.duration)
        ch.event("faults stop; healing everything")
        ch.faults_stop.set()
        for t in fthreads:
            t.join(60)
        ch.heal_everything()
        ch.load_stop.set()
        for t in threads:
            t.join(30)
        t_load_end = ch.t()
        ch.event("load stopped")

        # ---- drain ----
        settle_s, settle_err = ch.wait_settled(120 if args.sanitized else 90)
        ch.event("settled in %.1fs%s", settle_s, "" if not settle_err else ": " + settle_err)
        result["settle_s"], result["settle_err"] = settle_s, settle_err

        # ---- figures ----
        keys = ch.owned_keys + ch.shared_keys
        views = {n: ch.read_through(lambda n=n: lab.dump(n, keys), "dump %s" % n) for n in SITES}
        acked = check_acked(ch, views)
        cmp_ = ch.read_through(lambda: lab.compare(keys), "compare")
        explained, real, div_samples = classify_divergent(ch, cmp_["divergent"])
        result.update({"acked": acked, "compare": cmp_, "div_explained": explained,
                       "div_real": real, "div_samples": div_samples})
        ch.event("checked: %d lost, %d divergent (+%d explained)", len(acked["lost"]), len(real),
                 len(explained))
        result["self_test"] = self_test(ch, keys, views)
        watch.stop_ev.set()
        watch.join(5)
        for n in SITES:
            ch.warm(n)
        end_fds, end_kinds, end_rss = {}, {}, {}
        for n in SITES:
            life = ch.lives[n][-1]
            want = start_fds[n]  # same config, warmed the same way: the same fds
            deadline = time.monotonic() + 15
            while True:
                end_fds[n] = proc_fds(life.pid)
                if end_fds[n] == want or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            end_kinds[n] = fd_breakdown(lab, n, life.pid)
            end_rss[n] = proc_rss(life.pid)
            watch.rss[n]["end"] = end_rss[n]
            watch.rss[n]["peak"] = max(watch.rss[n]["peak"], end_rss[n] or 0)
        result.update({"start_fds": start_fds, "start_kinds": start_kinds, "end_fds": end_fds,
                       "end_kinds": end_kinds, "rss": watch.rss})
        # per-site memcached evictions (an eviction would be a loss the cache may make)
        evictions = 0
        for n in SITES:
            for m in lab.sites[n].memcached:
                try:
                    with MCConn(m.port) as c:
                        evictions += int(c.stats().get("evictions", 0))
                except OSError:
                    pass
        result["evictions"] = evictions
        ch.event("fds at the end %s (start %s)", end_fds, start_fds)
        stats_end = {n: ch.safe_stats(n) for n in SITES}
        result["stats_end"] = stats_end
        # ---- clean stop: every gateway must exit 0 on SIGTERM ----
        for n in SITES:
            ch.stop_gateway(n, "SIGTERM (end of run)")
        result["sanitizer"] = sanitizer_reports(ch)
        result["wanem_sanitizer"] = []
        try:
            with open(os.path.join(lab.dir, "wanem.log"), "rb") as f:
                wtext = f.read().decode("utf-8", "replace")
            result["wanem_sanitizer"] = SANITIZER_RE.findall(wtext)
        except OSError:
            pass
    finally:
        ch.load_stop.set()
        ch.faults_stop.set()
        try:
            for n in SITES:  # nothing may hold files on the tmpfs when it is unmounted
                with ch.gw_locks[n]:
                    g = lab.sites[n].gateway
                    if g is not None:
                        g.stop(timeout=10)
                        lab.sites[n].gateway = None
            if ch.mounted:
                if lab.keep:
                    shutil.copytree(ch.mounted, ch.mounted + ".kept", dirs_exist_ok=True)
                tsf.umount(ch.mounted)
        finally:
            lab.stop()
    result["took_s"] = time.monotonic() - t_run
    result["load_s"] = t_load_end
    result["chaos"] = ch
    result["goals"] = goals(ch, result)
    return result


def goals(ch, r):
    args = ch.args
    out = []

    def g(name, goal, measured, ok):
        out.append({"name": name, "goal": goal, "measured": measured, "ok": bool(ok)})

    a = r["acked"]
    g("acknowledged writes lost", "0",
      "%d (of %d acknowledged writes to %d keys, checked at 3 sites; %d key-site pairs "
      "exempt: their node restarted empty after the write, %d of them still fine)" % (
          len(a["lost"]), a["acked_writes"], len(ch.owned_keys), a["exempt"], a["exempt_ok"]),
      not a["lost"])
    c = r["compare"]
    g("divergent keys after the drain", "0",
      "%d (of %d keys; %d more explained by an empty memcached restart; %d present "
      "everywhere, %d absent everywhere)" % (len(r["div_real"]), c["keys"], len(r["div_explained"]),
                                             c["present"], c["absent"]),
      not r["div_real"] and not r["settle_err"])
    bound = args.rss_bound_mib << 20
    peak = max(v["peak"] or 0 for v in r["rss"].values())
    g("gateway RSS bounded", "peak ≤ %d MiB" % args.rss_bound_mib,
      ", ".join("%s %s / %s / %s" % (n, mib(v["start"]), mib(v["peak"]), mib(v["end"]))
                for n, v in r["rss"].items()) + " (start / peak / end)",
      peak <= bound)
    fd_ok = all(r["end_fds"][n] == r["start_fds"][n] for n in SITES)
    g("open fds back to the start", "equal per gateway",
      ", ".join("%s %s → %s" % (n, r["start_fds"][n], r["end_fds"][n]) for n in SITES), fd_ok)
    g("gateway crashes", "0",
      "%d (%d gateway processes ran; exits: %s)" % (
          len(ch.crashes), sum(len(v) for v in ch.lives.values()),
          ", ".join("%s %s" % (k, v) for k, v in sorted(collections.Counter(
              "%s" % l.end_reason for ls in ch.lives.values() for l in ls if l.end_reason).items()))),
      not ch.crashes)
    g("sanitizer reports in the gateway logs", "0" if args.sanitized else "0 (not a sanitized build)",
      "%d" % len(r["sanitizer"]), not r["sanitizer"])
    st = r["self_test"]
    g("the checker sees planted damage", "10 of 10",
      "%d of %d key-site pairs seen as lost, %d of %d keys as divergent (values written behind "
      "the gateways after the figures above)" % (st["lost_seen"], st["planted"],
                                                 st["divergent_seen"], st["planted"]), st["ok"])
    g("reads through the gateways after the drain that failed", "0",
      "%d%s" % (len(ch.check_read_errors), " (%s)" % "; ".join(ch.check_read_errors[:2])
                if ch.check_read_errors else ""), not ch.check_read_errors)
    corrupt = ch.counters.c.get("corrupt reads", 0)
    g("reads of a value no writer sent", "0", "%d of %d keys read" % (corrupt, ch.counters.c.get("reads", 0)),
      corrupt == 0)
    return out


# ---------------------------------------------------------------------------------------
# Report

def render(r, args, cmdline):
    ch = r["chaos"]
    out = []
    w = out.append
    from run_failover_bench import machine_info, loadavg
    info = machine_info()
    w("## Chaos soak: three sites under faults (issue 13, point 4)")
    w("")
    w("Made by `make bench`, which runs:")
    w("")
    w("    " + cmdline)
    w("")
    w("| machine | |")
    w("|---|---|")
    w("| cores (nproc) | %s |" % info["nproc"])
    w("| CPU | %s |" % info["cpu"])
    w("| kernel | %s |" % info["kernel"])
    w("| date | %s |" % info["date"])
    w("| memcached | %s |" % info["memcached"])
    w("| geogate commit | %s |" % info["commit"])
    w("| geogate binary | %s |" % (args.geogate_bin or "bin/ (`make`)"))
    w("| load average (1, 5, 15 min) at the end | %s |" % loadavg())
    w("| whole run took | %.0f s (load %.0f s, then %.0f s to drain) |" % (
        r["took_s"], r["load_s"], r["settle_s"]))
    w("")
    w("Three sites (us, eu, ap) on loopback, each two memcached nodes (64 MiB) and one geogate "
      "(`threads: 2`, `fsync: always`, `wan.spool.max_bytes` 8 MiB), a WAN emulator relay on "
      "every ordered pair of sites (10-40 ms each way, 5 ms jitter); ap's spool is a 16 MiB "
      "tmpfs. The checker load: %d writer threads paced at %d operations/s each, each owning "
      "%d keys that it sets (unique values of 16 B to 60 kB, random flags) or deletes at a "
      "random site, never writing one key again within 3 s (closer writes are ordered by the "
      "clocks, which the clock fault sets 2 s apart); a fifth of the operations go to %d "
      "keys every thread writes at every site (conflicts); a reader doing %d multi-gets of 8 "
      "keys per second at random sites, each value checked against what was written; %d slow "
      "readers (2 MiB asked, 4 KiB read every 50 ms, closed after 2-8 s, half with a reset); "
      "%d/s clients that send and close, reset mid-command, half-close, or connect and close. "
      "The faults (times from the load's start):" % (
          args.writers, args.rate, args.keys_per_writer, args.shared_keys, args.read_rate,
          args.slow_clients, args.closing_rate))
    w("")
    w("| at | fault | what was seen |")
    w("|---:|---|---|")
    for f in r["faults"]:
        w("| %s | %s | %s |" % ("%.0f–%.0f s" % (f.t_begin, f.t_end) if f.t_begin is not None else "—",
                                f.describe(), "; ".join(f.notes + ([f.error] if f.error else [])) or ""))
    w("")
    cc = ch.counters.c
    w("Load: %d writes acknowledged, %d not (%s); %d keys read, %d hits, read errors: %s; %d "
      "slow clients; %d closing clients. Afterwards the faults stopped, every link was "
      "healed, and the spools drained and the catch-up backfills finished in %.1f s." % (
          cc["owned acked"] + cc["shared acked"], cc["owned not acked"] + cc["shared not acked"],
          ", ".join("%s %d" % (k[len("write error: "):], v) for k, v in sorted(cc.items())
                    if k.startswith("write error: ")) or "none",
          cc["reads"], cc["read hits"],
          ", ".join("%s %d" % (k[len("read error: "):], v) for k, v in sorted(cc.items())
                    if k.startswith("read error: ")) or "none",
          cc["slow clients"], cc["closing clients"], r["settle_s"]))
    if r["evictions"]:
        w("")
        w("memcached evicted %d items during the run: an eviction is a loss the cache may make, "
          "so the lost-writes figure may count it." % r["evictions"])
    w("")
    w("How the figures are read: *acknowledged writes lost* takes, for every key a writer "
      "owns, its last acknowledged operation; every site must hold its result (read through "
      "the gateway), or the result of an operation sent after it whose effect is unknown "
      "(an error or a timeout). A memcached node started empty loses what it held, by "
      "design: a key-site pair whose last acknowledged write was sent before that site's "
      "node for the key was back up may hold any value written to the key or none, and is "
      "counted as exempt. *Divergent keys* compares every owned and shared key across the "
      "sites (multisite.Lab.compare); a key whose winning version was written before the "
      "node of a site that lacks it was back up is counted apart, as explained by the empty "
      "restart. *RSS* is VmRSS sampled every 0.5 s; *fds* are counted at the start and at "
      "the end after the same warm-up requests, per site (a restarted gateway runs the "
      "same config). *Crashes* are gateway exits the schedule did not cause and non-zero "
      "exits on SIGTERM. Writes at ap while its spool disk is full are answered `SERVER_ERROR "
      "replication log not durable` (`fsync: always` cannot make them durable); they are "
      "in ap's memcached, and the peers get them through the automatic catch-up.")
    w("")
    w("| figure | goal | measured | |")
    w("|---|---|---|---|")
    for g in r["goals"]:
        w("| %s | %s | %s | **%s** |" % (g["name"], g["goal"], g["measured"], "met" if g["ok"] else "not met"))
    w("")
    for n in SITES:
        lives = ch.lives[n]
        if len(lives) > 1:
            w("* %s: %d gateway processes: %s." % (n, len(lives), "; ".join(
                "pid %d (%s) %s%s" % (l.pid, l.env_note, "fds after its start %s" % l.fds_after_start
                                      if l.fds_after_start is not None else "",
                                      ", ended %s" % l.end_reason if l.end_reason else "")
                for l in lives)))
    for n in SITES:
        if r["end_fds"][n] != r["start_fds"][n]:
            w("* %s fds by kind at the start: %s; at the end: %s." % (
                n, json.dumps(r["start_kinds"][n], sort_keys=True),
                json.dumps(r["end_kinds"][n], sort_keys=True)))
    for note in r["notes"]:
        w("* " + note)
    if r["acked"]["details"]:
        w("* lost writes, e.g.: " + json.dumps(r["acked"]["details"][:3]))
    if r["div_samples"]:
        w("* divergent keys, e.g.: " + json.dumps(r["div_samples"][:3]))
    for c in ch.crashes:
        w("* crash: %s at %.1f s, exit %s" % (c["site"], c["t"], c["rc"]))
    for s in r["sanitizer"][:5]:
        w("* sanitizer: %s %s: `%s`" % s)
    return "\n".join(out) + "\n"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=600, help="seconds of load and faults")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", help="markdown file whose chaos-bench section to (re)write")
    ap.add_argument("--geogate-bin", help="directory of the geogate binaries (e.g. build/san/bin)")
    ap.add_argument("--sanitized", action="store_true", default=os.environ.get("GEOGATE_SANITIZED") == "1",
                    help="the binaries are ASan/UBSan builds (default: $GEOGATE_SANITIZED=1)")
    ap.add_argument("--no-clock-fault", action="store_true", help="leave out the clock fault")
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--rate", type=int, default=40, help="operations per second per writer")
    ap.add_argument("--keys-per-writer", type=int, default=400)
    ap.add_argument("--shared-keys", type=int, default=200)
    ap.add_argument("--read-rate", type=int, default=40, help="multi-gets per second")
    ap.add_argument("--slow-clients", type=int, default=3)
    ap.add_argument("--closing-rate", type=int, default=20, help="closing clients per second")
    ap.add_argument("--rss-bound-mib", type=int, default=None,
                    help="the RSS goal (default 128 MiB, 1024 MiB for a sanitized build)")
    ap.add_argument("--log-level", default="info", help="the gateways' log_level")
    ap.add_argument("--print-schedule", action="store_true", help="print the faults and exit")
    ap.add_argument("--keep", action="store_true", help="keep the lab's files (GEOGATE_KEEP_LAB=1)")
    args = ap.parse_args(argv)
    if args.rss_bound_mib is None:
        args.rss_bound_mib = 1024 if args.sanitized else 128
    if args.keep:
        os.environ["GEOGATE_KEEP_LAB"] = "1"
    return args


def main(argv=None):
    args = parse_args(argv)
    # --keep and --log-level change what is kept and logged, not what is measured
    shown, skip = [], False
    for a in (argv if argv is not None else sys.argv[1:]):
        if skip:
            skip = False
        elif a == "--keep" or a.startswith("--log-level="):
            pass
        elif a == "--log-level":
            skip = True
        else:
            shown.append(a)
    cmdline = "/usr/bin/python3 tests/bench/run_chaos.py " + " ".join(shown)

    def on_term(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_term)
    r = run(args)
    if r is None:
        return 0
    text = render(r, args, cmdline.strip())
    print(text)
    if args.out:
        from benchdoc import write_marked_section
        write_marked_section(args.out, "chaos-bench", text)
        log("wrote the chaos-bench section of %s" % args.out)
    bad = [g for g in r["goals"] if not g["ok"]]
    for g in bad:
        log("NOT MET: %s: %s (goal %s)" % (g["name"], g["measured"], g["goal"]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
