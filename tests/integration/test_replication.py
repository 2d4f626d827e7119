"""Geo-replication end to end (issue 3, points 3, 4 and 5): real memcached, real geogate
gateways replicating over mTLS gRPC, and the WAN emulator between the sites.

  basic        what ships (set/delete/incr/append/touch, rules none and invalidate)
  convergence  three sites, conflicting sets/deletes/incrs on a shared 10,000-key space,
               random delay and jitter, delays changed and links cut mid-run:
               0 divergent keys after the drain
  partition    one site black-holed for 30 s under load, healed: 0 divergent keys
  durability   fsync always, peer down, kill -9 mid-load, restart both: every write the
               client saw acknowledged reaches the peer
  restart      unacked records survive a clean restart and ship afterwards

Every test prints what it measured.  Each test builds its own lab (multisite.Lab) and stops
it, so a failure leaves nothing running.  GEOGATE_KEEP_LAB=1 keeps the lab's files
(configs, spools, logs) in a temp dir for a post-mortem.
"""
import os
import random
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from multisite import Lab  # noqa: E402
from pymemcache.exceptions import (MemcacheClientError, MemcacheServerError,  # noqa: E402
                                   MemcacheUnexpectedCloseError)

SITES3 = ["us-east", "eu-west", "ap-south"]
SLOW = 2.0 if os.environ.get("GEOGATE_SANITIZED") == "1" else 1.0
CONVERGENCE_LOAD_S = float(os.environ.get("GEOGATE_CONVERGENCE_SECONDS", "20"))
PARTITION_S = 30.0  # issue 3, point 5b: "a 30 s WAN partition under load"


def say(fmt, *args):
    print("    " + (fmt % args if args else fmt), file=sys.stderr, flush=True)


def eventually(fn, timeout=5.0, interval=0.05):
    """Poll fn until it returns something true; return its last result."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        v = fn()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def b(s):
    return s if isinstance(s, bytes) else s.encode()


class Load:
    """Writer threads per site doing conflicting sets, deletes, incrs (and some appends and
    touches) on one key space shared by every site.  Half of the operations go to a hot
    subset so that the same key is written at several sites within one WAN delay."""

    def __init__(self, lab, sites, keys, threads_per_site=3, seed=1, hot=500):
        self.lab = lab
        self.keys = keys
        self.hot = keys[:hot]
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.ops = {s: 0 for s in sites}
        self.errors = {}          # (site, kind) -> count
        self.error_samples = []
        self.threads = []
        for si, s in enumerate(sites):
            for t in range(threads_per_site):
                th = threading.Thread(target=self._run, args=(s, t, seed * 1000 + si * 100 + t),
                                      daemon=True)
                self.threads.append(th)

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(30)
        alive = [t for t in self.threads if t.is_alive()]
        if alive:
            raise AssertionError("%d writer threads did not stop" % len(alive))

    def _err(self, site, kind, e):
        with self.lock:
            self.errors[(site, kind)] = self.errors.get((site, kind), 0) + 1
            if len(self.error_samples) < 10:
                self.error_samples.append((site, kind, repr(e)[:200]))

    def _run(self, site, tno, seed):
        rng = random.Random(seed)
        c = self.lab.client(site)
        tag = "%s.%d" % (site, tno)
        n = 0
        while not self.stop_ev.is_set():
            key = rng.choice(self.hot) if rng.random() < 0.5 else rng.choice(self.keys)
            r = rng.random()
            try:
                if r < 0.42:
                    if rng.random() < 0.5:
                        value = str(rng.randint(0, 100000)).encode()
                    else:
                        value = ("%s-%d" % (tag, n)).encode()
                    expire = 3600 if rng.random() < 0.2 else 0
                    c.set(key, value, expire=expire, flags=rng.randint(0, 15))
                elif r < 0.57:
                    c.delete(key)
                elif r < 0.85:
                    try:
                        c.incr(key, rng.randint(1, 100))
                    except MemcacheClientError:
                        pass  # "cannot increment or decrement non-numeric value": fine
                elif r < 0.93:
                    c.append(key, b"+" + tag.encode())
                else:
                    c.touch(key, rng.choice([1800, 3600, 7200]))
            except (MemcacheServerError, MemcacheUnexpectedCloseError, OSError) as e:
                self._err(site, type(e).__name__, e)
                if isinstance(e, (MemcacheUnexpectedCloseError, OSError)):
                    time.sleep(0.05)
            n += 1
        with self.lock:
            self.ops[site] += n
        c.close()


def preload(lab, sites, keys):
    """Every site sets every key at about the same time (the first conflicts), numeric values
    so that incrs have something to work on."""
    errs = []

    def one(site, seed):
        rng = random.Random(seed)
        c = lab.client(site, timeout=30)
        for i in range(0, len(keys), 500):
            part = {k: str(rng.randint(0, 1000)).encode() for k in keys[i:i + 500]}
            failed = c.set_many(part, flags=rng.randint(0, 3))
            if failed:
                errs.append((site, len(failed)))
        c.close()

    ts = [threading.Thread(target=one, args=(s, i), daemon=True) for i, s in enumerate(sites)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return errs


def report_compare(name, res, drain_s):
    say("%s: %d keys compared at %d sites: %d divergent (value/flags), %d with different "
        "expiry, %d with different versions; %d present everywhere, %d absent everywhere; "
        "drained in %.1fs", name, res["keys"], res["sites"], len(res["divergent"]), len(res["expiry_divergent"]),
        len(res["version_divergent"]), res["present"], res["absent"], drain_s)
    for k, views, raws in res["samples"]:
        say("  divergent %r: through gateways %r; raw %r", k, views, raws)


def spooled_total(lab):
    """Records spooled at all sites (local writes plus "winner travels back" records)."""
    return sum(lab.stats(n)["spool:last_seq"] for n in lab.names)


def peer_totals(lab):
    """One line per site: shipped/acked/reconnects per peer, applied/rejected inbound."""
    out = []
    for n in lab.names:
        st = lab.stats(n)
        peers = " ".join("%s:shipped=%s,reconn=%s,lag_p99=%sms" % (
            p, st.get("peer:%s:shipped" % p), st.get("peer:%s:reconnects" % p),
            st.get("peer:%s:lag_p99_ms" % p)) for p in lab.names if p != n)
        out.append("%s last_seq=%s applied=%s rejected_older=%s dropped=%s %s" % (
            n, st.get("spool:last_seq"), st.get("inbound:applied"),
            st.get("inbound:rejected_older"), st.get("spool:dropped"), peers))
    return out


class LabTest(unittest.TestCase):
    lab = None

    def run_lab(self, *a, **kw):
        self.lab = Lab(*a, **kw)
        self.addCleanup(self._cleanup)
        return self.lab

    def _cleanup(self):
        lab, self.lab = self.lab, None
        if lab is not None:
            lab.stop()

    def fail_with_logs(self, msg):
        lab = self.lab
        logs = ""
        if lab is not None:
            for n in lab.names:
                logs += "\n==== %s gateway log (tail)\n%s" % (n, lab.log_tail(n, 30))
        self.fail(msg + logs)


class BasicTest(LabTest):
    """Issue 3, point 3: what ships, and the per-prefix rules."""

    def test_writes_ship_and_rules_hold(self):
        lab = self.run_lab(SITES3, nodes=2, wanem=False,
                           rules=[("tmp:", "none"), ("inv:", "invalidate"), ("", "copy")])
        ue, ew, ap = SITES3
        c = {s: lab.client(s) for s in SITES3}

        def seen(key, want, sites=SITES3, timeout=5.0):
            got = eventually(lambda: all(lab.dump(s, [key]).get(b(key)) == want for s in sites), timeout)
            if not got:
                self.fail_with_logs("%s: want %r at %s, got %r" % (
                    key, want, sites, {s: lab.dump(s, [key]).get(b(key)) for s in sites}))

        t0 = time.monotonic()
        # set with flags
        self.assertTrue(c[ue].set("b:set", b"one", flags=3))
        seen("b:set", (b"one", 3))
        # append at another site, seen everywhere (the origin included)
        self.assertTrue(c[ew].append("b:set", b"+two"))
        seen("b:set", (b"one+two", 3))
        # prepend
        self.assertTrue(c[ap].prepend("b:set", b"zero+"))
        seen("b:set", (b"zero+one+two", 3))
        # incr / decr
        self.assertTrue(c[ue].set("b:num", b"10", flags=1))
        seen("b:num", (b"10", 1))
        self.assertEqual(c[ap].incr("b:num", 5), 15)
        seen("b:num", (b"15", 1))
        self.assertEqual(c[ew].decr("b:num", 3), 12)
        seen("b:num", (b"12", 1))
        # add and cas
        self.assertTrue(c[ew].add("b:add", b"added", flags=9))
        seen("b:add", (b"added", 9))
        val, cas = c[ap].gets("b:add")
        self.assertEqual(val, b"added")
        self.assertTrue(c[ap].cas("b:add", b"cassed", cas, flags=9))
        seen("b:add", (b"cassed", 9))
        # touch: the new absolute expiry travels (read from the item header in memcached)
        before = int(time.time())
        self.assertTrue(c[ue].touch("b:set", 3600))
        after = int(time.time())

        def expiries():
            return {s: (lab.raw_dump(s, ["b:set"]).get(b"b:set") or {}).get("expiry") for s in SITES3}
        e = eventually(lambda: (lambda x: x if len(set(x.values())) == 1 else None)(expiries()), 5)
        if not e:
            self.fail_with_logs("touch did not ship: expiries %r" % expiries())
        exp = e[ue]
        # time(2), which the gateway reads, is the kernel's coarse clock: for up to a tick past
        # a second boundary it still says the second before the one time.time() says
        self.assertTrue(before - 1 + 3600 <= exp <= after + 3600 + 1, (before, exp, after))
        # delete: gone everywhere, as a tombstone in memcached
        self.assertTrue(c[ap].delete("b:set"))
        seen("b:set", None)
        for s in SITES3:
            raw = lab.raw_dump(s, ["b:set"]).get(b"b:set")
            self.assertTrue(raw is not None and raw["tombstone"], (s, raw))
        say("basic ops: set/append/prepend/incr/decr/add/cas/touch/delete seen at all 3 sites "
            "in %.2fs", time.monotonic() - t0)

        # rule none: "tmp:" keys never leave the site
        self.assertTrue(c[ew].set("tmp:x", b"eu-own"))
        lab.wait_drained(20)
        seq_before = lab.stats(ue)["spool:last_seq"]
        self.assertTrue(c[ue].set("tmp:x", b"us-only"))
        self.assertTrue(c[ue].set("tmp:y", b"us-only"))
        self.assertTrue(c[ue].delete("tmp:x"))
        self.assertTrue(c[ue].set("tmp:x", b"us-again"))
        self.assertTrue(c[ue].set("b:marker", b"after-tmp"))  # a copy key written after them
        seen("b:marker", (b"after-tmp", 0))
        lab.wait_drained(20)
        self.assertEqual(lab.stats(ue)["spool:last_seq"], seq_before + 1,
                         "only b:marker may be spooled, not the tmp: writes")
        self.assertEqual(lab.dump(ue, ["tmp:x", "tmp:y"]),
                         {b"tmp:x": (b"us-again", 0), b"tmp:y": (b"us-only", 0)})
        self.assertEqual(lab.dump(ew, ["tmp:x", "tmp:y"]), {b"tmp:x": (b"eu-own", 0)})
        self.assertEqual(lab.dump(ap, ["tmp:x", "tmp:y"]), {})

        # rule invalidate: peers get a tombstone, never the value
        for s in (ew, ap):
            lab.raw_set(s, "inv:k", b"stale")  # version 0, as written before geogate
            self.assertEqual(lab.dump(s, ["inv:k"]), {b"inv:k": (b"stale", 0)})
        self.assertTrue(c[ue].set("inv:k", b"fresh", flags=4))
        seen("inv:k", None, sites=[ew, ap])
        self.assertEqual(lab.dump(ue, ["inv:k"]), {b"inv:k": (b"fresh", 4)})
        for s in (ew, ap):
            raw = lab.raw_dump(s, ["inv:k"]).get(b"inv:k")
            self.assertTrue(raw is not None and raw["tombstone"] and raw["value"] == b"",
                            "want a tombstone at %s, got %r" % (s, raw))
        # an invalidate key written at a peer does not bring the value to the origin either
        self.assertTrue(c[ew].set("inv:k", b"from-eu"))
        seen("inv:k", None, sites=[ue, ap])
        self.assertEqual(lab.dump(ew, ["inv:k"]), {b"inv:k": (b"from-eu", 0)})
        say("rules: tmp: (none) stayed local (spool last_seq +1 for 5 writes incl. 1 copy key); "
            "inv: (invalidate) shipped tombstones")


class ConvergenceTest(LabTest):
    """Issue 3, point 4.  The relay never reorders bytes within one connection, so reordering
    comes from the paths: every ordered pair of sites has its own delay and jitter, changed
    during the run, and a site hears of a key both from its writer and from "winner travels
    back" records of the third site.  Cuts and a short black hole force reconnects, which
    replay unacked batches (duplicates the receiver must treat as harmless)."""

    def test_three_sites_conflicting_writes_converge(self):
        t_start = time.monotonic()
        lab = self.run_lab(SITES3, nodes=2, wanem=True, wanem_seed=42)
        rng = random.Random(7)
        delays = {}
        for a in SITES3:
            for z in SITES3:
                if a != z:
                    d = rng.randint(5, 40)
                    delays[(a, z)] = d
                    lab.set_link(a, z, delay=d, jitter=10)
        say("link delays (ms, jitter 10): %s",
            ", ".join("%s>%s=%d" % (a, z, d) for (a, z), d in sorted(delays.items())))
        keys = ["c:%05d" % i for i in range(10000)]
        rng.shuffle(keys)  # the hot subset is spread over the key space
        t0 = time.monotonic()
        errs = preload(lab, SITES3, keys)
        self.assertEqual(errs, [], "preload failed for some keys")
        say("preload: every site set all %d keys in %.1fs", len(keys), time.monotonic() - t0)

        load = Load(lab, SITES3, keys, threads_per_site=3, seed=3)
        t_load = time.monotonic()
        load.start()
        events = []
        try:
            # Change delays mid-run; cut links to force reconnects and replays.
            step = CONVERGENCE_LOAD_S / 10.0
            for i in range(10):
                time.sleep(step)
                if i in (2, 6):
                    a, z = ("us-east", "eu-west") if i == 2 else ("ap-south", "us-east")
                    lab.link_state(a, z, "cut")
                    events.append("cut %s>%s" % (a, z))
                    time.sleep(1.0)
                    lab.link_state(a, z, "up")
                elif i == 4:
                    lab.isolate("eu-west", "blackhole")
                    events.append("blackhole eu-west 2s")
                    time.sleep(2.0)
                    lab.heal("eu-west")
                else:
                    for (a, z) in delays:
                        lab.set_link(a, z, delay=rng.randint(5, 40), jitter=rng.choice([0, 5, 10]))
                    events.append("new delays")
        finally:
            load.stop()
        load_s = time.monotonic() - t_load
        total_ops = sum(load.ops.values())
        say("load: %.1fs, %d ops (%s), %.0f ops/s; errors %r; events: %s", load_s, total_ops,
            ", ".join("%s=%d" % kv for kv in load.ops.items()), total_ops / load_s,
            load.errors, "; ".join(events))
        for e in load.error_samples[:5]:
            say("  error sample: %r", e)

        for (a, z) in delays:  # same WAN, just no more chaos
            lab.set_link(a, z, delay=delays[(a, z)], jitter=10)
        try:
            drain_s = lab.wait_drained(60 * SLOW)
        except AssertionError as e:
            self.fail_with_logs("spools did not drain: %s" % e)
        for line in peer_totals(lab):
            say("  %s", line)
        spooled = spooled_total(lab)
        say("  records spooled at all sites: %d for %d client operations (%.2f per operation; "
            "the rest of the records are newer items sent back after a rejection)",
            spooled, total_ops, spooled / max(total_ops, 1))
        res = lab.compare(keys)
        report_compare("convergence", res, drain_s)
        say("convergence test total %.1fs", time.monotonic() - t_start)
        self.assertGreater(total_ops, 10000, "the load generator barely ran")
        if res["divergent"] or res["expiry_divergent"]:
            self.fail_with_logs("%d divergent keys (value/flags), %d with different expiry; e.g. %r" % (
                len(res["divergent"]), len(res["expiry_divergent"]), res["samples"][:3]))
        self.assertEqual(len(res["divergent"]), 0)
        self.assertGreater(res["present"], 1000)
        self.assertGreater(res["absent"], 100)

        # The checker itself sees a difference: one key changed behind the gateway at one
        # site, one key that is absent everywhere put back at one site.
        views = lab.dump("us-east", keys)
        present = next(k for k in keys if b(k) in views)
        absent = next(k for k in keys if b(k) not in views)
        lab.raw_set("eu-west", present, b"planted")
        lab.raw_set("ap-south", absent, b"planted")
        self.assertEqual(sorted(lab.compare(keys)["divergent"]), sorted([b(present), b(absent)]))


class PartitionTest(LabTest):
    """Issue 3, point 5b: a 30 s WAN partition under load, then heal: 0 divergent keys."""

    def test_partition_30s_then_heal(self):
        t_start = time.monotonic()
        lab = self.run_lab(SITES3, nodes=1, wanem=True, wanem_seed=5)
        for a in SITES3:
            for z in SITES3:
                if a != z:
                    lab.set_link(a, z, delay=15, jitter=5)
        keys = ["p:%05d" % i for i in range(10000)]
        errs = preload(lab, SITES3, keys)
        self.assertEqual(errs, [])
        cut_off = "ap-south"
        load = Load(lab, SITES3, keys, threads_per_site=2, seed=11)
        load.start()
        peak = {}
        down_seen = set()
        try:
            time.sleep(3)
            lab.isolate(cut_off, "blackhole")
            t_iso = time.monotonic()
            # The required 30 s (issue 3, 5b); meanwhile watch the spools grow and links fall.
            while time.monotonic() - t_iso < PARTITION_S:
                time.sleep(1.0)
                for n in SITES3:
                    st = lab.stats(n)
                    for p in SITES3:
                        if p != n and (n == cut_off or p == cut_off):
                            peak[(n, p)] = max(peak.get((n, p), 0), st.get("peer:%s:spool_records" % p, 0))
                            if st.get("peer:%s:state" % p) == "down":
                                down_seen.add((n, p))
            lab.heal(cut_off)
            t_heal = time.monotonic()
            time.sleep(3)
        finally:
            load.stop()
        total_ops = sum(load.ops.values())
        say("partition: %s black-holed for %.1fs under load; %d ops total (%s); errors %r",
            cut_off, t_heal - t_iso, total_ops,
            ", ".join("%s=%d" % kv for kv in load.ops.items()), load.errors)
        say("  peak unacked spool records during the partition: %s",
            ", ".join("%s>%s=%d" % (n, p, v) for (n, p), v in sorted(peak.items())))
        say("  links seen down: %s", sorted(down_seen))
        try:
            drain_s = lab.wait_drained(90 * SLOW)
        except AssertionError as e:
            self.fail_with_logs("spools did not drain after the heal: %s" % e)
        say("  drained %.1fs after the heal (%.1fs after the load stopped)",
            time.monotonic() - t_heal, drain_s)
        for line in peer_totals(lab):
            say("  %s", line)
        spooled = spooled_total(lab)
        say("  records spooled at all sites: %d for %d client operations (%.2f per operation)",
            spooled, total_ops, spooled / max(total_ops, 1))
        res = lab.compare(keys)
        report_compare("partition", res, drain_s)
        say("partition test total %.1fs", time.monotonic() - t_start)
        # The partition really happened: the isolated site kept taking writes and spooled them.
        self.assertGreater(peak.get((cut_off, "us-east"), 0), 100, peak)
        self.assertGreater(peak.get(("us-east", cut_off), 0), 100, peak)
        self.assertEqual([k for k in load.errors if k[0] == cut_off], [],
                         "writes at the isolated site must keep being accepted: %r" % load.errors)
        if res["divergent"] or res["expiry_divergent"]:
            self.fail_with_logs("%d divergent keys (value/flags), %d with different expiry; e.g. %r" % (
                len(res["divergent"]), len(res["expiry_divergent"]), res["samples"][:3]))


class DurabilityTest(LabTest):
    """Issue 3, point 5a: fsync always; the peer is down; kill -9 the gateway during a write
    load; restart both: every write the client saw acknowledged reaches the peer."""

    def test_kill_9_loses_no_acknowledged_write(self):
        t_start = time.monotonic()
        a, z = "us-east", "eu-west"
        lab = self.run_lab([a, z], nodes=2, wanem=False, fsync="always")
        self.assertEqual(lab.stop_site(z), 0)
        eventually(lambda: lab.stats(a).get("peer:%s:state" % z) == "down", 10)

        writers = 4
        acked = [[] for _ in range(writers)]
        failed = [0] * writers
        stop = threading.Event()

        def writer(w):
            c = lab.client(a, timeout=5)
            i = 0
            while not stop.is_set():
                key = "d:%d:%06d" % (w, i)
                try:
                    if c.set(key, b"v-" + key.encode()):
                        acked[w].append(key)
                    else:
                        failed[w] += 1
                except Exception:
                    failed[w] += 1
                    # after the kill: nothing listens; keep trying briefly, then stop
                    if not lab.running(a):
                        break
                i += 1
            c.close()

        ts = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(writers)]
        for t in ts:
            t.start()
        time.sleep(3.0)
        st = lab.stats(a)
        n_before_kill = sum(len(x) for x in acked)
        say("durability: before the kill %d writes acked, spool:fsyncs=%d (group commit), "
            "unacked for %s=%d", n_before_kill, st["spool:fsyncs"], z, st["peer:%s:spool_records" % z])
        self.assertGreater(st["spool:fsyncs"], 0, "fsync: always but no fsync counted")
        lab.kill_site(a)  # SIGKILL with writes in flight
        t_kill = time.monotonic()
        for t in ts:
            t.join(20)
        stop.set()
        all_acked = [k for x in acked for k in x]
        say("durability: %d writes acknowledged by %s (fsync always, %s down), %d failed "
            "(in flight at the kill or refused after); ~%d acked at the kill signal",
            len(all_acked), a, z, sum(failed), n_before_kill)
        self.assertGreater(len(all_acked), 200, "too few writes to mean anything")

        lab.start_site(a)
        st = lab.stats(a)
        say("  after restart: %s spool records=%s last_seq=%s unacked for %s=%s",
            a, st["spool:records"], st["spool:last_seq"], z, st["peer:%s:spool_records" % z])
        for line in lab.log(a).splitlines():
            if "spool" in line and ("cut" in line or "torn" in line or "corrupt" in line):
                say("  %s log: %s", a, line.strip())
        # Nothing reached the peer's cache tier while it was down.
        self.assertEqual(lab.raw_dump(z, all_acked[:500]), {})
        lab.start_site(z)
        try:
            drain_s = lab.wait_drained(60 * SLOW)
        except AssertionError as e:
            self.fail_with_logs("did not drain: %s" % e)
        arrived = lab.dump(z, all_acked)
        missing = [k for k in all_acked if arrived.get(k.encode()) != (b"v-" + k.encode(), 0)]
        say("  acknowledged %d, arrived at %s %d, missing %d; drained in %.1fs; total %.1fs",
            len(all_acked), z, len(all_acked) - len(missing), len(missing), drain_s,
            time.monotonic() - t_start)
        if missing:
            self.fail_with_logs("%d of %d acknowledged writes never reached %s, e.g. %r" % (
                len(missing), len(all_acked), z, missing[:10]))
        self.assertLess(t_kill, time.monotonic())


class RestartReplayTest(LabTest):
    """Unacked records survive a clean stop and are shipped after the restart."""

    def test_clean_restart_keeps_unacked_records(self):
        a, z = "us-east", "eu-west"
        lab = self.run_lab([a, z], nodes=1, wanem=False, fsync="everysec")
        self.assertEqual(lab.stop_site(z), 0)
        eventually(lambda: lab.stats(a).get("peer:%s:state" % z) == "down", 10)
        c = lab.client(a)
        keys = ["r:%05d" % i for i in range(2000)]
        for i in range(0, len(keys), 200):
            self.assertEqual(c.set_many({k: k.encode() * 2 for k in keys[i:i + 200]}, flags=6), [])
        c.close()
        st = lab.stats(a)
        self.assertEqual(st["peer:%s:spool_records" % z], len(keys), st)
        rc = lab.stop_site(a)
        self.assertEqual(rc, 0, "clean stop of %s: exit %s\n%s" % (a, rc, lab.log_tail(a)))
        self.assertEqual(lab.raw_dump(z, keys), {})

        lab.start_site(a)
        st = lab.stats(a)
        say("restart: %d records unacked for %s before the stop, %s after the restart "
            "(last_seq %s)", len(keys), z, st["peer:%s:spool_records" % z], st["spool:last_seq"])
        self.assertEqual(st["peer:%s:spool_records" % z], len(keys), st)
        t0 = time.monotonic()
        lab.start_site(z)
        try:
            drain_s = lab.wait_drained(30 * SLOW)
        except AssertionError as e:
            self.fail_with_logs("did not drain: %s" % e)
        got = lab.dump(z, keys)
        missing = [k for k in keys if got.get(k.encode()) != (k.encode() * 2, 6)]
        st = lab.stats(a)
        say("  %d of %d keys at %s %.1fs after it came up (drained %.1fs); acked_seq %s",
            len(keys) - len(missing), len(keys), z, time.monotonic() - t0, drain_s,
            st["peer:%s:acked_seq" % z])
        self.assertEqual(missing, [])
        self.assertGreaterEqual(st["peer:%s:acked_seq" % z], len(keys))


if __name__ == "__main__":
    unittest.main(verbosity=2)
