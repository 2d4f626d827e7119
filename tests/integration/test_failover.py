"""Site failover for reads (issue 4, points 2, 3 and 4): real memcached, two replicating
geogate sites (us-east, eu-west, two memcached nodes each), a read load at us-east.

  whole site    (point 4) every local memcached node of us-east is killed under a read load:
                reads switch to eu-west with no errors after the first second; the nodes
                come back EMPTY on the same ports; after hold_down reads fail back in
                warm-up and the site's hit ratio over the first 10 s after failback is at
                least 90% of what it was before the failure; filled items keep their
                original absolute expiry
  per key       (point 2) one node of two is killed and the site stays LOCAL: that node's
                keys are read from eu-west with no errors once it is marked down, the other
                node's keys are still read locally; a write to a key of the dead node is
                applied at the peer and read back; when the node returns, its keys come
                back warm
  operator      (point 3) POST /failover?to=eu-west and POST /failback on the admin
                listener (skipped while the gateway serves no admin listener); multi-key
                gets, gets (cas tokens) and noreply sets keep working across the switch;
                the same client checks across an automatic switch (every node killed)

Where a value was served from is told by its cas token: a value read from a peer carries
its version clock (HLC: unix ms << 16, > 2^40) as the token, a local one memcached's
own small cas (see gateway/failover/remote.c).

Mode changes are read from GET /status when the admin listener answers, otherwise from
the gateway's "site mode X -> Y" log lines.  Every test prints what it measured.
"""
import calendar
import os
import random
import socket
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from multisite import Lab, MCConn  # noqa: E402

# Time bounds stretch on a slow (sanitized) build and on a machine other jobs load: a
# timed assertion must not fail on someone else's load.  On a quiet machine SLOW is 1.
SLOW = (2.0 if os.environ.get("GEOGATE_SANITIZED") == "1" else 1.0) * max(
    1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
HLC_MIN = 1 << 40        # a cas token at or above this came from a peer (its HLC)
HOLD_DOWN_MS = 2000
SITES = ["us-east", "eu-west"]
EXPIRY_S = 3600          # every loaded key expires in an hour: fills must keep that expiry


def say(fmt, *args):
    print("    " + (fmt % args if args else fmt), file=sys.stderr, flush=True)


def b(s):
    return s if isinstance(s, bytes) else s.encode()


def failover_yaml(hold_down=HOLD_DOWN_MS, fraction=0.5, max_time=None, hit_ratio=None):
    lines = ["failover:", "  local_healthy_fraction: %s" % fraction, "  hold_down: %d" % hold_down]
    if max_time is not None or hit_ratio is not None:
        lines.append("  warmup:")
        if max_time is not None:
            lines.append("    max_time: %d" % max_time)
        if hit_ratio is not None:
            lines.append("    hit_ratio: %s" % hit_ratio)
    return "\n".join(lines) + "\n"


# ---- a read load that says, per request, where the answer came from ------------------

class Rec:
    __slots__ = ("t0", "t1", "lookups", "hits", "local", "peer", "err")

    def __init__(self, t0, t1, lookups, hits, local, peer, err):
        self.t0, self.t1, self.lookups, self.hits = t0, t1, lookups, hits
        self.local, self.peer, self.err = local, peer, err


class ReadLoad:
    """Threads doing `gets` (one key per request, or `multi` keys) at the gateway, each on
    its own connection.  Every request is recorded with its start/end time (unix seconds),
    hits, where the hits came from (local / peer, by cas token) and the error if any
    (SERVER_ERROR text, timeout, closed, refused).  After an error the thread reconnects.

    refill: keys (a set) that "exist in the database": a miss on one of them is followed by
    a set of its value (cache-aside), as an application would do.  rate: requests per
    second per thread (None: as fast as it goes)."""

    def __init__(self, port, keys, threads=4, seed=1, timeout=2.0, multi=1, refill=None,
                 value_of=None, rate=None, expiry=EXPIRY_S):
        self.port = port
        self.keys = [b(k) for k in keys]
        self.timeout = timeout
        self.multi = multi
        self.refill = refill
        self.value_of = value_of
        self.rate = rate
        self.expiry = expiry
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.recs = []
        self.refills = 0
        self.refill_errors = 0
        self.threads = [threading.Thread(target=self._run, args=(seed * 100 + i,), daemon=True)
                        for i in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(30)
        if any(t.is_alive() for t in self.threads):
            raise AssertionError("reader threads did not stop")
        self.recs.sort(key=lambda r: r.t1)

    def _connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s, s.makefile("rb")

    def _gets(self, f, s, keys):
        s.sendall(b"gets " + b" ".join(keys) + b"\r\n")
        hits = local = peer = 0
        found = set()
        while True:
            line = f.readline()
            if not line:
                raise ConnectionError("closed")
            if line == b"END\r\n":
                return hits, local, peer, found
            if not line.startswith(b"VALUE "):
                raise _ServerError(line.decode("utf-8", "replace").strip())
            w = line.split()
            n = int(w[3])
            data = f.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("short value")
            hits += 1
            found.add(w[1])
            if len(w) >= 5 and int(w[4]) >= HLC_MIN:
                peer += 1
            else:
                local += 1

    def _set(self, f, s, key):
        v = self.value_of(key)
        s.sendall(b"set %s 0 %d %d\r\n%s\r\n" % (key, self.expiry, len(v), v))
        line = f.readline()
        if line != b"STORED\r\n":
            raise _ServerError(line.decode("utf-8", "replace").strip() or "closed")

    def _run(self, seed):
        rng = random.Random(seed)
        recs = []
        s = f = None
        next_t = time.monotonic()
        while not self.stop_ev.is_set():
            if self.rate:
                next_t += 1.0 / self.rate
                d = next_t - time.monotonic()
                if d > 0:
                    time.sleep(d)
                elif d < -1.0:
                    next_t = time.monotonic()
            keys = [rng.choice(self.keys) for _ in range(self.multi)]
            t0 = time.time()
            err = None
            hits = local = peer = 0
            try:
                if s is None:
                    s, f = self._connect()
                hits, local, peer, found = self._gets(f, s, keys)
            except _ServerError as e:
                err = str(e)[:120]
            except socket.timeout:
                err = "timeout"
            except ConnectionRefusedError:
                err = "refused"
            except (ConnectionError, OSError) as e:
                err = "closed: %s" % type(e).__name__
            t1 = time.time()
            recs.append(Rec(t0, t1, len(keys), hits, local, peer, err))
            if err is not None:
                if err.startswith(("timeout", "closed", "refused")):
                    try:
                        if s is not None:
                            s.close()
                    except OSError:
                        pass
                    s = f = None
                    time.sleep(0.02)
                continue
            if self.refill is not None:
                for k in keys:
                    if k not in found and k in self.refill:
                        try:
                            self._set(f, s, k)
                            with self.lock:
                                self.refills += 1
                        except (_ServerError, OSError):
                            with self.lock:
                                self.refill_errors += 1
                            try:
                                s.close()
                            except OSError:
                                pass
                            s = f = None
                            break
        if s is not None:
            s.close()
        with self.lock:
            self.recs.extend(recs)

    # ---- analysis (after stop) ----

    def window(self, t0, t1):
        return [r for r in self.recs if t0 <= r.t1 < t1]

    @staticmethod
    def totals(recs):
        lookups = sum(r.lookups for r in recs if r.err is None)
        hits = sum(r.hits for r in recs if r.err is None)
        local = sum(r.local for r in recs if r.err is None)
        peer = sum(r.peer for r in recs if r.err is None)
        errors = sum(1 for r in recs if r.err is not None)
        return {"requests": len(recs), "lookups": lookups, "hits": hits, "local": local,
                "peer": peer, "errors": errors,
                "hit_ratio": hits / lookups if lookups else None,
                "local_ratio": local / lookups if lookups else None}

    def per_second(self, t0, t1):
        out = []
        t = t0
        while t < t1:
            tot = self.totals(self.window(t, min(t + 1.0, t1)))
            tot["t"] = t - t0
            out.append(tot)
            t += 1.0
        return out

    def errors(self, t0=0, t1=1e20):
        return [r for r in self.recs if r.err is not None and t0 <= r.t1 < t1]

    def first_ok_after(self, t, peer=False):
        for r in self.recs:
            if r.t0 >= t and r.err is None and (not peer or r.peer > 0):
                return r.t1
        return None


class _ServerError(Exception):
    pass


def fmt_ratio(x):
    return "  -  " if x is None else "%5.3f" % x


def print_seconds(title, rows, t_marks=None):
    say("%s", title)
    say("   s   reqs  errs   hit  local   peer")
    for r in rows:
        say("%4.0f %6d %5d %s  %s  %5d", r["t"], r["requests"], r["errors"], fmt_ratio(r["hit_ratio"]),
            fmt_ratio(r["local_ratio"]), r["peer"])


# ---- mode tracking ------------------------------------------------------------------

def mode_now(lab, name):
    """The site's mode: from GET /status when the admin listener answers, else the last
    "site mode" log line (local before any)."""
    st = lab.site_status(name) if lab.sites[name].admin_port else None
    if st is not None and "mode" in st:
        return st["mode"]
    ch = lab.mode_changes(name)
    return ch[-1]["to"] if ch else "local"


def wait_change(lab, name, to, after, timeout):
    """The first "site mode ... -> to" log line at or after unix time `after` (waits)."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        for c in lab.mode_changes(name):
            if c["to"] == to and c["t"] >= after - 0.005:
                return c
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def log_times(lab, name, text):
    """Unix times of the site's gateway log lines that contain text (oldest first)."""
    out = []
    for line in lab.log(name).splitlines():
        if text not in line:
            continue
        try:
            sec, ms = line.split(" ", 1)[0].rstrip("Z").split(".")
            out.append(calendar.timegm(time.strptime(sec, "%Y-%m-%dT%H:%M:%S")) + int(ms) / 1000.0)
        except ValueError:
            pass
    return out


def timeline(lab, name, t0, texts=("marked down", "back up", "site mode")):
    """The site's gateway log lines about nodes and modes, as '+S.SSS message' from t0."""
    out = []
    for line in lab.log(name).splitlines():
        if not any(t in line for t in texts):
            continue
        try:
            stamp, rest = line.split(" ", 1)
            sec, ms = stamp.rstrip("Z").split(".")
            t = calendar.timegm(time.strptime(sec, "%Y-%m-%dT%H:%M:%S")) + int(ms) / 1000.0
        except ValueError:
            continue
        if t >= t0 - 0.5:
            out.append("%+8.3f %s" % (t - t0, rest.split(" ", 2)[-1]))
    return out


def load_keys(lab, site, keys, value_of, expiry=EXPIRY_S):
    """Set every key at the site (pipelined, replies checked), exptime `expiry` seconds."""
    with MCConn(lab.sites[site].port, timeout=30) as c:
        for i in range(0, len(keys), 200):
            part = keys[i:i + 200]
            c.sock.sendall(b"".join(b"set %s 0 %d %d\r\n%s\r\n" % (k, expiry, len(value_of(k)),
                                                                  value_of(k)) for k in part))
            for k in part:
                line = c.f.readline()
                if line != b"STORED\r\n":
                    raise AssertionError("set %r at %s: %r" % (k, site, line))


def value_of(k):
    return b"value-of-" + k + b"-" + b"x" * 40


class FailoverTest(unittest.TestCase):
    lab = None

    def run_lab(self, **kw):
        kw.setdefault("nodes", 2)
        kw.setdefault("admin", True)
        kw.setdefault("pool_timeout", 250)
        kw.setdefault("pool_extra", {"failure_limit": 3, "retry_timeout": 2000})
        self.lab = Lab(SITES, **kw)
        self.addCleanup(self._cleanup)
        return self.lab

    def _cleanup(self):
        lab, self.lab = self.lab, None
        if lab is not None:
            lab.stop()

    def logs(self, lines=40):
        out = ""
        for n in self.lab.names:
            out += "\n==== %s gateway log (tail)\n%s" % (n, self.lab.log_tail(n, lines))
        return out

    def check(self, cond, msg):
        if not cond:
            self.fail(msg + self.logs())

    # ------------------------------------------------------------------------------
    # point 4: whole-site failover under a read load, warm failback

    def test_whole_site_failover_and_warm_failback(self):
        lab = self.run_lab(extra_yaml=failover_yaml())
        present = [b"k:%05d" % i for i in range(2000)]
        absent = [b"nx:%05d" % i for i in range(100)]     # ~5% of lookups miss everywhere
        load_keys(lab, "us-east", present, value_of)
        t_loaded = time.time()
        drain = lab.wait_drained(60)
        there = lab.dump("eu-west", present)
        self.assertEqual(len(there), len(present), "not every key replicated to eu-west")
        say("loaded %d keys at us-east, replicated to eu-west in %.1fs; admin listener: %s",
            len(present), drain, "yes" if lab.has_admin("us-east") else "no (log lines used)")

        rl = ReadLoad(lab.sites["us-east"].port, present + absent, threads=4, seed=7).start()
        try:
            t_start = time.time()
            time.sleep(5.0)
            t_kill = time.time()
            for i in range(len(lab.sites["us-east"].memcached)):
                lab.kill_node("us-east", i)
            t_killed = time.time()
            fo = wait_change(lab, "us-east", "failed_over", t_kill, 10)
            time.sleep(6.0)
            t_restart = time.time()
            for i in range(len(lab.sites["us-east"].memcached)):
                lab.start_node("us-east", i)
            wu = wait_change(lab, "us-east", "warmup", t_restart, 15)
            t_back = wu["t"] if wu else None
            # 10 s after failback, and until warm-up ends (or 10 s more)
            end = wait_change(lab, "us-east", "local", (t_back or time.time()) + 0.001, 20)
            time.sleep(1.0)
            t_end = time.time()
        finally:
            rl.stop()

        before = rl.totals(rl.window(t_start + 1.0, t_kill))
        ok_after = rl.first_ok_after(t_killed)
        ok_peer = rl.first_ok_after(t_killed, peer=True)
        errs = rl.errors(t_kill)
        switch_errs = [e for e in errs if e.t0 < t_kill + 1.0 * SLOW]
        late_errs = [e for e in errs if e.t0 >= t_kill + 1.0 * SLOW]
        say("hit ratio before the failure: %s over %d lookups (%d local, %d from the peer); "
            "errors before: %d", fmt_ratio(before["hit_ratio"]), before["lookups"],
            before["local"], before["peer"], len(rl.errors(0, t_kill)))
        say("kill -> 'failed_over' log line: %s; kill -> first successful read: %s; kill -> "
            "first read served by the peer: %s",
            "%.0f ms" % ((fo["t"] - t_kill) * 1000) if fo else "never",
            "%.0f ms" % ((ok_after - t_kill) * 1000) if ok_after else "never",
            "%.0f ms" % ((ok_peer - t_kill) * 1000) if ok_peer else "never")
        say("errors after the kill: %d in the first second (%s), %d later (%s)", len(switch_errs),
            _kinds(switch_errs), len(late_errs), _kinds(late_errs))
        after_kill = [e for e in errs if e.t0 >= t_killed]
        say("of those, %d were requests sent after the kill had completed (not in flight at "
            "the failure: the failure_limit requests per node that mark it down), the last "
            "answered %.0f ms after the kill", len(after_kill),
            (max(e.t1 for e in errs) - t_kill) * 1000 if errs else 0)
        downs = [t for t in log_times(lab, "us-east", "marked down") if t >= t_kill - 0.01]
        if fo and len(downs) >= 2:
            say("nodes marked down at +%s ms; the threshold (healthy fraction < 0.5) was crossed "
                "at +%.0f ms, the switch logged %.0f ms after that",
                "/".join("%.0f" % ((t - t_kill) * 1000) for t in downs[:2]),
                (downs[1] - t_kill) * 1000, (fo["t"] - downs[1]) * 1000)
        during = rl.totals(rl.window((fo["t"] if fo else t_kill) + 0.5, t_restart))
        say("failed over: hit ratio %s over %d lookups, %d local / %d from the peer",
            fmt_ratio(during["hit_ratio"]), during["lookups"], during["local"], during["peer"])
        if t_back:
            say("nodes restarted empty -> 'warmup' (failback) after %.0f ms (hold_down %d ms, "
                "retry_timeout 2000 ms)", (t_back - t_restart) * 1000, HOLD_DOWN_MS)
        after = rl.totals(rl.window(t_back, t_back + 10.0)) if t_back else None
        if after:
            say("first 10 s after failback: hit ratio %s (%.0f%% of before), local hit ratio %s, "
                "%d answers from the peer", fmt_ratio(after["hit_ratio"]),
                100.0 * after["hit_ratio"] / before["hit_ratio"], fmt_ratio(after["local_ratio"]),
                after["peer"])
        if end:
            say("warm-up ended %.1f s after failback: %s", end["t"] - t_back, end["why"])
        say("mode changes: %s", "; ".join("+%.3fs %s->%s %s (%s)" % (c["t"] - t_kill, c["from"], c["to"],
                                                                   c["peer"], c["why"])
                                        for c in lab.mode_changes("us-east")))
        print_seconds("per second (0 = load start; kill at %.1f s, restart at %.1f s, failback at %s s)"
                      % (t_kill - t_start, t_restart - t_start,
                         "%.1f" % (t_back - t_start) if t_back else "-"),
                      rl.per_second(t_start, t_end))
        st = lab.site_status("us-east")
        if st is not None:
            say("/status after: mode %s, warmup %s", st.get("mode"), st.get("warmup"))

        self.check(before["hit_ratio"] is not None and before["hit_ratio"] > 0.9,
                   "hit ratio before the failure is %s" % before["hit_ratio"])
        self.check(not rl.errors(0, t_kill), "errors before the failure: %s" % _kinds(rl.errors(0, t_kill)))
        self.check(fo is not None, "no 'site mode local -> failed_over' within 10 s of killing "
                   "every local node")
        self.check(fo["peer"] == "eu-west", "failed over to %r" % fo["peer"])
        self.check(fo["t"] - t_kill < 1.5 * SLOW, "the switch took %.0f ms from the kill"
                   % ((fo["t"] - t_kill) * 1000))
        if len(downs) >= 2:
            self.check(fo["t"] - downs[1] <= 1.0 * SLOW, "the switch was logged %.0f ms after "
                       "the threshold was crossed (more than 1 s)" % ((fo["t"] - downs[1]) * 1000))
        self.check(ok_peer is not None and ok_peer - t_kill < 1.5 * SLOW,
                   "first read served by the peer %s after the kill" %
                   ("%.0f ms" % ((ok_peer - t_kill) * 1000) if ok_peer else "never"))
        # Even reads in flight at the kill are answered: a read whose node fails under it
        # is asked again at the serving peer (reads_retried).
        self.check(not errs, "%d read errors after the kill: %s; first at +%.3fs"
                   % (len(errs), _kinds(errs), (errs[0].t1 - t_kill) if errs else 0))
        st = lab.site_status("us-east")
        retried = st["failover_reads"]["retried_at_peer"] if st else None
        say("reads retried at the peer after their node failed under them: %s", retried)
        self.check(during["lookups"] > 0 and during["hit_ratio"] >= before["hit_ratio"] - 0.03,
                   "hit ratio while failed over %s, before %s" % (during["hit_ratio"], before["hit_ratio"]))
        self.check(t_back is not None, "no failback ('-> warmup') within 15 s of restarting the nodes")
        self.check(t_back - t_restart >= HOLD_DOWN_MS / 1000.0 - 0.15,
                   "failback %.0f ms after the restart: before hold_down %d ms"
                   % ((t_back - t_restart) * 1000, HOLD_DOWN_MS))
        self.check(after["lookups"] > 0 and after["hit_ratio"] >= 0.9 * before["hit_ratio"],
                   "hit ratio in the first 10 s after failback %s < 90%% of %s"
                   % (after["hit_ratio"], before["hit_ratio"]))
        # Filled items: original absolute expiry and version.  A key not read during warm-up
        # is not filled (warm-up ended at its hit ratio): reported, not an error.
        raw_us = lab.raw_dump("us-east", present)
        raw_eu = lab.raw_dump("eu-west", present)
        differ = [k for k, it in raw_us.items() if k not in raw_eu or any(
            it[f] != raw_eu[k][f] for f in ("value", "flags", "expiry", "hlc", "site_id",
                                            "gateway_id", "tombstone"))]
        unfilled = [k for k in present if k not in raw_us]
        say("after warm-up: %d of %d keys back in us-east's memcached (%d never read during "
            "warm-up, not filled); %d differ from eu-west's item (value, flags, absolute expiry "
            "or version)", len(raw_us), len(present), len(unfilled), len(differ))
        self.check(not differ, "filled items differ from the peer's: %r" % [
            (k, _brief_raw(raw_us[k]), _brief_raw(raw_eu.get(k))) for k in differ[:3]])
        self.check(len(raw_us) >= 0.9 * len(present), "only %d of %d keys filled" % (
            len(raw_us), len(present)))
        # ... and memcached's own TTL of a filled item is the original one, not a fresh hour
        sample = [k for k in present if k in raw_us][:300]
        ttl_us, ttl_eu = node_ttls(lab, "us-east", sample), node_ttls(lab, "eu-west", sample)
        off = [(k, ttl_us.get(k), ttl_eu.get(k)) for k in sample
               if ttl_us.get(k) is None or ttl_eu.get(k) is None or abs(ttl_us[k] - ttl_eu[k]) > 2]
        say("memcached TTLs of %d filled items: us-east %s s, eu-west %s s (loaded %.0f s ago "
            "with exptime %d); %d differ by more than 2 s", len(sample), _span(ttl_us.values()),
            _span(ttl_eu.values()), time.time() - t_loaded, EXPIRY_S, len(off))
        self.check(not off, "filled items' memcached TTL differs from the peer's: %r" % off[:5])

    def test_warmup_fill_never_over_newer_local(self):
        """Point 4: a warm-up fill is added "never over a newer local value": a key read in
        warm-up (local miss, read from the peer over a 300 ms WAN) and written locally while
        that read is in flight keeps the local write once the fill lands."""
        lab = self.run_lab(wanem=True, extra_yaml=failover_yaml(hold_down=1000))
        keys = [b"nw:%04d" % i for i in range(200)]
        load_keys(lab, "us-east", keys, value_of)
        lab.wait_drained(60)
        t_kill = time.time()
        for i in range(2):
            lab.kill_node("us-east", i)
        for m in lab.sites["us-east"].memcached:   # a request per node: they are marked down
            _poke_until_ok(lab.sites["us-east"].port,
                           next(k for k in keys if lab.node_of("us-east", k) == m.port), 5)
        self.check(wait_change(lab, "us-east", "failed_over", t_kill, 10) is not None,
                   "no failover after killing every node")
        t_restart = time.time()
        for i in range(2):
            lab.start_node("us-east", i)
        self.check(wait_change(lab, "us-east", "warmup", t_restart, 15) is not None,
                   "no failback within 15 s")
        lab.set_link("us-east", "eu-west", delay=150)   # each way: a Read takes >= 300 ms
        test_keys = keys[:20]
        replies = []
        port = lab.sites["us-east"].port
        with MCConn(port) as reader, MCConn(port) as writer:
            for k in test_keys:
                t0 = time.time()
                reader.sock.sendall(b"get %s\r\n" % k)       # local miss: read from eu-west
                time.sleep(0.05)
                new = b"newer-local-" + k
                writer.sock.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(new), new))
                stored = writer.f.readline().strip()
                line = reader.f.readline()
                got = None
                if line.startswith(b"VALUE"):
                    got = reader.f.read(int(line.split()[3]) + 2)[:-2]
                    reader.f.readline()
                replies.append((k, stored, got, time.time() - t0))
        time.sleep(1.5)   # fills land
        lab.set_link("us-east", "eu-west", delay=0)
        raw = lab.raw_dump("us-east", test_keys)
        through = lab.dump("us-east", test_keys)
        lost = [k for k in test_keys if through.get(k, (None,))[0] != b"newer-local-" + k]
        say("warm-up reads of %d keys over a 300 ms round trip, each key written locally 50 ms "
            "into its read: sets %s; reads answered %s in %.0f ms on average",
            len(replies), sorted(set(r[1] for r in replies)),
            "the peer's (older) value" if all(r[2] == value_of(r[0]) for r in replies) else
            "%r" % sorted(set(r[2] for r in replies))[:3],
            1000 * sum(r[3] for r in replies) / len(replies))
        say("after the fills: %d of %d keys hold the newer local write (raw: %d present)",
            len(test_keys) - len(lost), len(test_keys), len(raw))
        self.check(all(r[1] == b"STORED" for r in replies), "local sets failed: %r" % replies[:3])
        self.check(not lost, "warm-up fill overwrote a newer local value for %d keys: %r" % (
            len(lost), [(k, through.get(k), _brief_raw(raw.get(k))) for k in lost[:3]]))

    def test_hold_down_no_flapping(self):
        """Nodes that come back and die again within hold_down do not bring reads back: the
        site stays failed over, and fails back only hold_down after the pool is steadily
        healthy."""
        lab = self.run_lab(extra_yaml=failover_yaml(hold_down=3000))
        present = [b"fl:%05d" % i for i in range(1000)]
        load_keys(lab, "us-east", present, value_of)
        lab.wait_drained(60)
        nodes = range(len(lab.sites["us-east"].memcached))
        rl = ReadLoad(lab.sites["us-east"].port, present, threads=3, seed=5).start()
        try:
            time.sleep(1.0)
            t_kill = time.time()
            for i in nodes:
                lab.kill_node("us-east", i)
            fo = wait_change(lab, "us-east", "failed_over", t_kill, 10)
            self.check(fo is not None, "no failover after killing every node")
            t_flap = time.time()
            for i in nodes:
                lab.start_node("us-east", i)
            # back up after retry_timeout (2 s); kill them again 1.5 s into hold_down (3 s)
            up = None
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline and up is None:
                st = lab.stats("us-east", "nodes")
                if all(st.get("node:127.0.0.1:%d:state" % lab.sites["us-east"].memcached[i].port) == "up"
                       for i in nodes):
                    up = time.time()
                time.sleep(0.05)
            self.check(up is not None, "restarted nodes not up within 6 s")
            time.sleep(1.5)
            t_kill2 = time.time()
            for i in nodes:
                lab.kill_node("us-east", i)
            time.sleep(4.0)   # longer than hold_down after the first restart
            early = [c for c in lab.mode_changes("us-east") if c["t"] > fo["t"]]
            t_restart = time.time()
            for i in nodes:
                lab.start_node("us-east", i)
            wu = wait_change(lab, "us-east", "warmup", t_restart, 15)
            time.sleep(1.0)
        finally:
            rl.stop()
        errs = [e for e in rl.errors(t_kill) if e.t0 >= t_kill + 1.0 * SLOW]
        say("nodes up again %.1f s after the restart, killed again %.1f s later (hold_down 3 s): "
            "mode changes meanwhile: %s", up - t_flap, t_kill2 - up,
            [(c["from"], c["to"], c["why"]) for c in early] or "none")
        say("restarted for good: failback after %s; read errors after the first second: %d (%s)",
            "%.0f ms" % ((wu["t"] - t_restart) * 1000) if wu else "never", len(errs), _kinds(errs))
        say("timeline (s after the first kill): restart %.2f, nodes seen up (stats nodes) %.2f, "
            "killed again %.2f, final restart %.2f", t_flap - t_kill, up - t_kill,
            t_kill2 - t_kill, t_restart - t_kill)
        for line in timeline(lab, "us-east", t_kill):
            say("  %s", line)
        self.check(not early, "mode changed while the pool flapped within hold_down: %s" % early)
        self.check(wu is not None and wu["t"] - t_restart >= 3.0 - 0.15,
                   "failback %s after the final restart (hold_down 3 s)" %
                   ("%.0f ms" % ((wu["t"] - t_restart) * 1000) if wu else "never"))
        # errors only right after each kill
        late = [e for e in errs if not (t_kill2 <= e.t0 < t_kill2 + 1.0 * SLOW)]
        self.check(not late, "read errors outside the first second after a kill: %s" % _kinds(late))

    # ------------------------------------------------------------------------------
    # point 2: per-key fallback, the site stays LOCAL

    def _one_node_down(self, lab, present):
        """Kill us-east's node 0 under a read load; returns (load, t_kill, dead port)."""
        dead = lab.sites["us-east"].memcached[0].port
        rl = ReadLoad(lab.sites["us-east"].port, present, threads=3, seed=11).start()
        time.sleep(2.0)
        t_kill = time.time()
        lab.kill_node("us-east", 0)
        return rl, t_kill, dead

    def test_per_key_fallback(self):
        lab = self.run_lab(extra_yaml=failover_yaml(fraction=0.5))
        present = [b"pk:%05d" % i for i in range(2000)]
        load_keys(lab, "us-east", present, value_of)
        lab.wait_drained(60)
        dead = lab.sites["us-east"].memcached[0].port
        on_dead = [k for k in present if lab.node_of("us-east", k) == dead]
        on_live = [k for k in present if lab.node_of("us-east", k) != dead]
        say("%d keys on the node to be killed (port %d), %d on the other", len(on_dead), dead,
            len(on_live))
        rl, t_kill, _ = self._one_node_down(lab, present)
        try:
            # marked down: per-worker failure counting; wait until reads of its keys work
            deadline = time.monotonic() + 5 * SLOW
            t_down = None
            while time.monotonic() < deadline:
                st = lab.stats("us-east", "nodes")
                if st.get("node:127.0.0.1:%d:state" % dead) not in (None, "up"):
                    t_down = time.time()
                    break
                time.sleep(0.05)
            time.sleep(8.0)       # covers several retry_timeout (2 s) probes of the dead node
            t_end = time.time()
        finally:
            rl.stop()
        mode = mode_now(lab, "us-east")
        changes = lab.mode_changes("us-east")
        errs = rl.errors(t_kill)
        late = [e for e in errs if e.t0 >= t_kill + 1.0 * SLOW]
        win = rl.window(t_kill + 1.0, t_end)
        say("kill -> node marked down (stats nodes): %s", "%.0f ms" % ((t_down - t_kill) * 1000)
            if t_down else "not seen")
        say("errors after the kill: %d in the first second (%s), %d later (%s)",
            len(errs) - len(late), _kinds([e for e in errs if e.t0 < t_kill + 1.0]), len(late), _kinds(late))
        if late:
            say("late error times after the kill (s): %s", " ".join("%.2f" % (e.t1 - t_kill) for e in late[:20]))
        tot = rl.totals(win)
        say("after the first second: %d lookups, hit ratio %s, %d local, %d from the peer; mode %s; "
            "mode changes %s", tot["lookups"], fmt_ratio(tot["hit_ratio"]), tot["local"], tot["peer"],
            mode, [(c["from"], c["to"]) for c in changes])
        print_seconds("per second from the kill", rl.per_second(t_kill, t_end))
        # Which keys came from where: check directly, key by key.
        local_src, peer_src, missing = _sources(lab.sites["us-east"].port, present)
        wrong_dead = [k for k in on_dead if k not in peer_src]
        wrong_live = [k for k in on_live if k not in local_src]
        say("read key by key: dead node's keys %d/%d from the peer; live node's keys %d/%d local; "
            "%d missing", len(on_dead) - len(wrong_dead), len(on_dead),
            len(on_live) - len(wrong_live), len(on_live), len(missing))
        self.check(mode == "local" and not changes, "site left LOCAL with one node of two down "
                   "(local_healthy_fraction 0.5): %s" % changes)
        self.check(t_down is not None, "the killed node was not marked down within 5 s")
        self.check(not errs, "%d read errors after the kill (a read whose node fails under it "
                   "is asked again at the peer): %s" % (len(errs), _kinds(errs)))
        self.check(not wrong_dead and not wrong_live and not missing,
                   "wrong source: %d dead-node keys not from the peer (%r), %d live-node keys not "
                   "local (%r), missing %r" % (len(wrong_dead), wrong_dead[:3], len(wrong_live),
                                               wrong_live[:3], missing[:3]))

    def test_per_key_fallback_writes_go_to_the_peer(self):
        """Issue 4 point 2: a write to a key whose local node is down is applied at the peer
        synchronously, so the client reads its own write back."""
        lab = self.run_lab(extra_yaml=failover_yaml(fraction=0.5))
        present = [b"wk:%05d" % i for i in range(400)]
        load_keys(lab, "us-east", present, value_of)
        lab.wait_drained(60)
        dead = lab.sites["us-east"].memcached[0].port
        on_dead = [k for k in present if lab.node_of("us-east", k) == dead][:20]
        lab.kill_node("us-east", 0)
        _mark_down(lab, "us-east", dead, present)
        results = []
        with MCConn(lab.sites["us-east"].port) as c:
            for k in on_dead:
                v = b"new-" + k
                c.sock.sendall(b"set %s 5 0 %d\r\n%s\r\n" % (k, len(v), v))
                reply = c.f.readline().strip()
                got = c.gets([k]).get(k)
                results.append((k, reply, got[1] if got else None))
        ok = [r for r in results if r[1] == b"STORED" and r[2] == b"new-" + r[0]]
        say("sets to %d keys of the dead node: %d stored and read back; replies %s",
            len(results), len(ok), sorted(set(r[1] for r in results)))
        at_peer = lab.dump("eu-west", on_dead)
        say("eu-west holds the new value for %d of them",
            sum(1 for k in on_dead if at_peer.get(k, (None,))[0] == b"new-" + k))
        self.check(len(ok) == len(results),
                   "a write to a key of a down node is not applied at the peer: %r"
                   % (results[:3],))

    def test_node_return_warms_its_keys(self):
        """Issue 4 point 2: when the node returns (empty), warm-up brings its keys back: its
        keys are still hits for the client."""
        lab = self.run_lab(extra_yaml=failover_yaml(fraction=0.5))
        present = [b"rk:%05d" % i for i in range(1000)]
        load_keys(lab, "us-east", present, value_of)
        lab.wait_drained(60)
        dead = lab.sites["us-east"].memcached[0].port
        on_dead = [k for k in present if lab.node_of("us-east", k) == dead]
        lab.kill_node("us-east", 0)
        _mark_down(lab, "us-east", dead, present)
        local_src, peer_src, missing = _sources(lab.sites["us-east"].port, on_dead)
        say("node down: %d/%d of its keys served from the peer", len(peer_src), len(on_dead))
        t_restart = time.time()
        lab.start_node("us-east", 0)
        deadline = time.monotonic() + 10 * SLOW
        while time.monotonic() < deadline:
            st = lab.stats("us-east", "nodes")
            if st.get("node:127.0.0.1:%d:state" % dead) == "up":
                break
            time.sleep(0.05)
        t_up = time.time()
        local_src, peer_src, missing = _sources(lab.sites["us-east"].port, on_dead)
        say("node back (up %.1f s after the restart, empty): %d of its %d keys hit (%d local, "
            "%d from the peer), %d miss; mode %s", t_up - t_restart, len(local_src) + len(peer_src),
            len(on_dead), len(local_src), len(peer_src), len(missing), mode_now(lab, "us-east"))
        time.sleep(0.5)
        local2, peer2, missing2 = _sources(lab.sites["us-east"].port, on_dead)
        say("read again: %d local, %d from the peer, %d miss", len(local2), len(peer2), len(missing2))
        self.check(not missing, "%d of %d keys of the returned node are misses (not warmed from the "
                   "peer): %r" % (len(missing), len(on_dead), missing[:3]))

    def test_warmup_answers_locally_when_the_peer_cannot(self):
        """A returned node's keys are being warmed from the peer when the peer becomes
        unreachable (its links black-holed): reads go on being answered from the local
        pool (hits, and misses as misses), never with an error, until the peer is back.
        The chaos soak found multi-key gets failing whole with `SERVER_ERROR peer site
        unavailable` for the first seconds, local hits included."""
        lab = self.run_lab(wanem=True, extra_yaml=failover_yaml(fraction=0.5))
        keys = [b"wk:%05d" % i for i in range(600)]
        load_keys(lab, "us-east", keys, value_of)
        lab.wait_drained(60)
        dead = lab.sites["us-east"].memcached[0].port
        lab.kill_node("us-east", 0)
        _mark_down(lab, "us-east", dead, keys)
        lab.start_node("us-east", 0)
        deadline = time.monotonic() + 10 * SLOW
        while lab.stats("us-east", "nodes").get("node:127.0.0.1:%d:state" % dead) != "up":
            self.check(time.monotonic() < deadline, "the node never came back up")
            time.sleep(0.05)
        on_dead = [k for k in keys if lab.node_of("us-east", k) == dead]
        on_live = [k for k in keys if k not in set(on_dead)]
        with MCConn(lab.sites["us-east"].port) as c:
            got = c.gets(on_dead[:20])
        self.check(len(got) == 20, "warm-up did not fill from the peer: %d of 20" % len(got))
        lab.isolate("eu-west", "blackhole")
        errors, answered, t0 = [], 0, time.monotonic()
        for i in range(8):  # the first ones while the peer is still believed to serve
            ask = on_dead[20 + 10 * i:30 + 10 * i] + on_live[10 * i:10 + 10 * i]
            try:
                with MCConn(lab.sites["us-east"].port, timeout=10) as c:
                    got = c.gets(ask)
                answered += 1
                lost = [k for k in on_live[10 * i:10 + 10 * i] if k not in got]
                self.check(not lost, "keys of the live node missed: %r" % lost[:3])
            except ConnectionError as e:
                errors.append(str(e)[:100])
        lab.heal("eu-west")
        say("peer black-holed during warm-up: %d of 8 multi-gets answered in %.1f s, errors %r",
            answered, time.monotonic() - t0, errors[:2])
        self.check(not errors, "%d reads failed while the peer was unreachable: %r" % (
            len(errors), errors[:3]))

    # ------------------------------------------------------------------------------
    # point 3: multi-key gets, gets/cas tokens, noreply across the switch

    def _protocol_checks(self, lab, keys, tag):
        """multi-key get / gets with cas tokens / noreply set then get, on one connection.
        Returns a list of problems (empty: all good), a summary line and (source of the
        cas token, cas reply, stale cas reply)."""
        try:
            return self._protocol_checks1(lab, keys, tag)
        except (ConnectionError, OSError) as e:
            return ["%s: %s" % (tag, e)], "%s: failed: %s" % (tag, e), (None, None, None)

    def _protocol_checks1(self, lab, keys, tag):
        problems = []
        port = lab.sites["us-east"].port
        with MCConn(port) as c:
            # multi-key gets, 50 keys at once, plus 5 that do not exist
            ask = keys[:50] + [b"nope:%d" % i for i in range(5)]
            got = c.gets(ask)
            if set(got) != set(keys[:50]):
                problems.append("%s: multi-key gets returned %d of 50 keys (extra %r)" % (
                    tag, len(set(got) & set(keys[:50])), sorted(set(got) - set(keys[:50]))[:3]))
            bad = [k for k, (fl, data, cas) in got.items() if data != value_of(k) or fl != 0]
            if bad:
                problems.append("%s: wrong value/flags for %r" % (tag, bad[:3]))
            nocas = [k for k, (fl, data, cas) in got.items() if not cas]
            if nocas:
                problems.append("%s: no cas token for %r" % (tag, nocas[:3]))
            # multi-key get (no cas): the same keys, one reply block in key order
            c.sock.sendall(b"get " + b" ".join(ask) + b"\r\n")
            order = []
            while True:
                line = c.f.readline()
                if line == b"END\r\n" or not line:
                    break
                w = line.split()
                if w[0] != b"VALUE" or len(w) != 4:
                    problems.append("%s: get reply line %r" % (tag, line[:80]))
                    break
                c.f.read(int(w[3]) + 2)
                order.append(w[1])
            if order != [k for k in ask if k in got]:
                problems.append("%s: get returned %d keys, not in the asked order" % (tag, len(order)))
            # noreply set, then a get on the same connection
            nk = b"noreply:%s:%d" % (tag.encode(), int(time.time() * 1000))
            c.sock.sendall(b"set %s 3 0 5 noreply\r\nhello\r\n" % nk)
            c.sock.sendall(b"get %s\r\n" % nk)
            line = c.f.readline()
            seen = None
            if line.startswith(b"VALUE"):
                seen = c.f.read(int(line.split()[3]) + 2)[:-2]
                c.f.readline()
            elif line != b"END\r\n":
                problems.append("%s: noreply set then get answered %r" % (tag, line[:80]))
            if seen != b"hello":
                problems.append("%s: noreply set then get on the same connection: %r (not the "
                                "write)" % (tag, seen))
            # a set that was answered STORED, then a get on the same connection
            sk = b"stored:%s:%d" % (tag.encode(), int(time.time() * 1000))
            c.sock.sendall(b"set %s 0 0 5\r\nworld\r\n" % sk)
            stored = c.f.readline().strip()
            mine = c.gets([sk]).get(sk)
            if stored != b"STORED" or mine is None or mine[1] != b"world":
                problems.append("%s: set answered %r, then get on the same connection: %r (not "
                                "the write)" % (tag, stored, mine[1] if mine else None))
            # noreply sets of other keys, read back after a moment
            later = [b"noreply2:%s:%d" % (tag.encode(), i) for i in range(20)]
            c.sock.sendall(b"".join(b"set %s 0 0 2 noreply\r\nok\r\n" % k for k in later))
            c.sock.sendall(b"version\r\n")
            line = c.f.readline()
            if not line.startswith(b"VERSION"):
                problems.append("%s: after noreply sets, version answered %r" % (tag, line[:80]))
        time.sleep(1.0)
        with MCConn(port) as c:
            back = c.gets(later)
            if len(back) != len(later):
                problems.append("%s: %d of %d noreply sets readable 1 s later" % (tag, len(back), len(later)))
            # cas with a token from gets: memcached meaning (STORED with a fresh token,
            # EXISTS with a stale one) -- report what happens
            k = keys[-1]          # not among the 50 above: its value changes here
            tok = c.gets([k])[k][2]
            c.sock.sendall(b"cas %s 0 0 3 %d\r\nnew\r\n" % (k, tok))
            cas_reply = c.f.readline().strip()
            c.sock.sendall(b"cas %s 0 0 3 %d\r\nold\r\n" % (k, tok))
            stale_reply = c.f.readline().strip()
        src = "peer" if tok >= HLC_MIN else "local"
        summary = "%s: gets %d keys, token of %s from the %s (%d); cas with it -> %s, again -> %s" % (
            tag, len(got), k, src, tok, cas_reply.decode(), stale_reply.decode())
        return problems, summary, (src, cas_reply, stale_reply)

    def test_operator_failover_failback(self):
        lab = self.run_lab(extra_yaml=failover_yaml())
        if not lab.has_admin("us-east"):
            self.skipTest("the gateway serves no admin listener yet (gateway/admin/admin.c not wired "
                          "in): POST /failover and /failback cannot be tested")
        keys = [b"op:%04d" % i for i in range(200)]
        load_keys(lab, "us-east", keys, value_of)
        lab.wait_drained(60)
        problems, s0, _ = self._protocol_checks(lab, keys, "local")
        say("%s", s0)
        rl = ReadLoad(lab.sites["us-east"].port, keys, threads=2, seed=3).start()
        try:
            time.sleep(1.0)
            bad = lab.admin("us-east", "POST", "/failover?to=nowhere")
            t_fo = time.time()
            code, body = lab.admin("us-east", "POST", "/failover?to=eu-west")
            say("POST /failover?to=nowhere -> %d %s; POST /failover?to=eu-west -> %d %s",
                bad[0], bad[1].strip()[:100], code, body.strip()[:100])
            self.check(400 <= bad[0] < 500, "unknown site answered %d" % bad[0])
            self.check(code == 200, "POST /failover?to=eu-west answered %d %s" % (code, body))
            st = lab.site_status("us-east")
            self.check(st and st.get("mode") == "failed_over" and st.get("peer") == "eu-west",
                       "/status after failover: %s" % st)
            time.sleep(1.0)
            p1, s1, src1 = self._protocol_checks(lab, keys, "failed_over")
            say("%s", s1)
            problems += p1
            t_fb = time.time()
            code, body = lab.admin("us-east", "POST", "/failback")
            say("POST /failback -> %d %s", code, body.strip()[:100])
            self.check(code == 200, "POST /failback answered %d %s" % (code, body))
            again = lab.admin("us-east", "POST", "/failback")
            say("POST /failback again -> %d %s", again[0], again[1].strip()[:100])
            time.sleep(1.0)
            p2, s2, _ = self._protocol_checks(lab, keys, "after_failback")
            say("%s", s2)
            problems += p2
            time.sleep(1.0)
        finally:
            rl.stop()
        errs = rl.errors()
        say("reader: %d requests, %d errors (%s); from the peer while failed over: %d",
            len(rl.recs), len(errs), _kinds(errs), rl.totals(rl.window(t_fo + 0.2, t_fb))["peer"])
        for p in problems:
            say("  problem: %s", p)
        if src1[0] != "peer":
            problems.append("gets while failed over did not come from the peer")
        if src1[1] != b"STORED":
            problems.append("failed_over: a cas with the token a gets had just returned (the "
                            "peer's version clock) answered %r, not STORED: docs/FAILOVER.md says "
                            "such a token is honoured while the key is served by that peer; a "
                            "gets/cas client never succeeds while failed over" % src1[1])
        if errs:
            problems.append("read errors across an operator switch: %s" % _kinds(errs))
        self.check(not problems, "protocol across an operator switch:\n  " + "\n  ".join(problems))

    def test_protocol_across_automatic_switch(self):
        """The same multi-key gets / gets / noreply checks while the site is failed over
        because every local node died (no admin listener needed)."""
        lab = self.run_lab(extra_yaml=failover_yaml())
        keys = [b"ap:%04d" % i for i in range(200)]
        load_keys(lab, "us-east", keys, value_of)
        lab.wait_drained(60)
        problems, s0, _ = self._protocol_checks(lab, keys, "local")
        say("%s", s0)
        t_kill = time.time()
        for i in range(len(lab.sites["us-east"].memcached)):
            lab.kill_node("us-east", i)
        # No client traffic for 1.5 s: does the gateway notice the dead pool by itself?
        idle = wait_change(lab, "us-east", "failed_over", t_kill, 1.5)
        say("every node killed, no client traffic: %s", "failed over after %.0f ms" % (
            (idle["t"] - t_kill) * 1000) if idle else "still LOCAL after 1.5 s (node failures "
            "are only counted on client requests)")
        t_poke = time.time()
        failed = []
        for m in lab.sites["us-east"].memcached:     # one key of each node
            k = next(k for k in keys if lab.node_of("us-east", k) == m.port)
            failed += _poke_until_ok(lab.sites["us-east"].port, k, 5)
        fo = wait_change(lab, "us-east", "failed_over", t_kill, 10)
        say("first client requests after that (one key of each node): %d failed before reads "
            "succeeded (%s)",
            len(failed), ", ".join(sorted(set(failed))))
        self.check(fo is not None, "no failover after killing every node")
        if not idle:
            say("failover %.0f ms after the first request following the kill",
                (fo["t"] - t_poke) * 1000)
        reads, s1, src1 = self._protocol_checks(lab, keys, "failed_over")
        say("%s", s1)
        for p in reads:
            say("  problem: %s", p)
        # reads (multi-key gets, cas tokens) must work; writes are reported separately
        read_problems = [p for p in reads if "noreply" not in p]
        write_problems = [p for p in reads if "noreply" in p]
        self.check(not problems, "before the switch: %s" % problems)
        self.check(not read_problems, "reads while failed over:\n  " + "\n  ".join(read_problems))
        self.check(not write_problems, "noreply sets while failed over (every local node down; "
                   "issue 4 point 2 says writes go to the peer):\n  " + "\n  ".join(write_problems))


def node_ttls(lab, site, keys):
    """{key: remaining TTL in s (-1: never expires)} read from the site's memcached nodes with
    the meta command `mg KEY t`, bypassing the gateway."""
    out = {}
    by_port = {}
    for k in keys:
        by_port.setdefault(lab.node_of(site, k), []).append(k)
    for port, ks in by_port.items():
        with MCConn(port, timeout=10) as c:
            for k in ks:
                c.sock.sendall(b"mg %s t\r\n" % k)
                line = c.f.readline().split()
                if line and line[0] == b"HD":
                    for tok in line[1:]:
                        if tok.startswith(b"t"):
                            out[k] = int(tok[1:])
    return out


def _span(vals):
    vals = list(vals)
    return "%d..%d" % (min(vals), max(vals)) if vals else "-"


def _brief_raw(it):
    if it is None:
        return None
    return {"value": it["value"][:40], "hlc": it["hlc"], "site": it["site_id"], "exp": it["expiry"]}


def _kinds(recs):
    kinds = {}
    for r in recs:
        kinds[r.err] = kinds.get(r.err, 0) + 1
    return ", ".join("%d x %s" % (n, k) for k, n in sorted(kinds.items(), key=lambda x: -x[1])) or "none"


def _sources(port, keys):
    """Read each key with gets: (local keys, peer keys, missing keys)."""
    local, peer, missing = [], [], []
    with MCConn(port) as c:
        for k in keys:
            got = c.gets([k]).get(k)
            if got is None:
                missing.append(k)
            elif got[2] >= HLC_MIN:
                peer.append(k)
            else:
                local.append(k)
    return local, peer, missing


def _mark_down(lab, site, port, keys):
    """Read keys of every node on fresh connections (so every worker thread counts the
    failures) until the node is marked down on every worker: reads of its keys then succeed."""
    on = [k for k in keys if lab.node_of(site, k) == port][:5]
    deadline = time.monotonic() + 10 * SLOW
    while time.monotonic() < deadline:
        ok = 0
        for _ in range(6):
            try:
                with MCConn(lab.sites[site].port, timeout=3) as c:
                    c.gets(on)
                    ok += 1
            except (ConnectionError, OSError):
                pass
        if ok == 6:
            return
        time.sleep(0.05)
    raise AssertionError("%s node %d never marked down" % (site, port))


def _poke_until_ok(port, key, timeout):
    """gets key until it succeeds; returns the errors seen before."""
    errors = []
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        try:
            with MCConn(port, timeout=3) as c:
                c.gets([key])
                return errors
        except (ConnectionError, OSError) as e:
            errors.append(str(e)[:80])
    return errors


if __name__ == "__main__":
    unittest.main()
