"""Clock skew between sites (issue 13, point 2): one site's gateway runs an hour ahead under
Debian's faketime, then again on the right time.

  skew_bounded  three sites; ap-south's gateway an hour ahead.  Its clock offset is reported
                by the others (/status, /metrics, `stats peers`) within 10 s; its writes are
                refused (FAILED_PRECONDITION, counted) and wait in its spool; no other site's
                hybrid clock runs more than replication.max_clock_skew past its own wall
                clock, and no other site stores a version from the future.  Restarted on the
                right time, it re-stamps what it wrote while skewed and every site converges
                to 0 divergent keys; a write made after that, anywhere, sticks.
  stepped_back  the same clock put right while the gateway runs (as an NTP step would): its
                hybrid clock restarts from the corrected time, it re-stamps, all converge.
  small_skew    ap-south 4 s ahead, cut off; it writes, is killed, its nodes restart empty,
                it restarts on the right time and writes some of the keys again at once.
                By the time its link heals, what it wrote while skewed is within the bound,
                yet stamped above its restarted clock: the writes made after the restart
                must win everywhere, and the ones its node lost must be put back.

Bounded (well under 2 minutes), one lab, stopped on exit.  GEOGATE_KEEP_LAB=1 keeps its files.
"""
import glob
import os
import re
import shutil
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from multisite import Lab  # noqa: E402

SITES = ["us-east", "eu-west", "ap-south"]
SKEWED = "ap-south"
SANE = ["us-east", "eu-west"]
HOUR_MS = 3600 * 1000
MAX_SKEW_MS = 1000  # the default of replication.max_clock_skew
SLOW = 2.0 if os.environ.get("GEOGATE_SANITIZED") == "1" else 1.0
# Debian's faketime, as `faketime -m -f +1h` sets it up: its multi-threaded library preloaded
# and an offset in FAKETIME, so the clock runs on, an hour ahead.  Preloaded here rather than
# through the faketime command, which forks the program and does not pass SIGTERM on: the
# gateway must be stopped (and drained) like any other.
LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))), None)
FAKE_HOUR = {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": "+1h"} if LIBFAKETIME else None


def say(fmt, *args):
    print("    " + (fmt % args if args else fmt), file=sys.stderr, flush=True)


def now_ms():
    return int(time.time() * 1000)


def eventually(fn, timeout, interval=0.1):
    deadline = time.monotonic() + timeout * SLOW
    while True:
        v = fn()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


@unittest.skipIf(FAKE_HOUR is None, "needs Debian's faketime (apt-get install faketime)")
class ClockSkewTest(unittest.TestCase):

    def start_lab(self, skew_env, wanem=False):
        if os.environ.get("GEOGATE_SANITIZED") == "1":
            # libfaketime is preloaded ahead of the sanitizer's runtime: tell ASan that is fine
            skew_env = dict(skew_env, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") +
                            ":verify_asan_link_order=0")
        self.lab = Lab(SITES, nodes=2, admin=True, start=False, wanem=wanem)
        self.addCleanup(self.lab.stop)
        for n in SITES:
            if n == SKEWED:
                self.skew_started = time.monotonic()
                self.lab.start_site(n, env=skew_env)
            else:
                self.lab.start_site(n)
        self.lab.wait_links_up(15 * SLOW)
        return self.lab

    def status(self, site):
        st = self.lab.site_status(site)
        self.assertIsNotNone(st, "no /status from %s" % site)
        return st

    def peer(self, site, peer):
        return [p for p in self.status(site)["peers"] if p["site"] == peer][0]

    def check_clock_bounded(self, site, when):
        """The site's hybrid clock never ran more than max_clock_skew past its wall clock."""
        c = self.status(site)["clock"]
        self.assertEqual(c["max_skew_ms"], MAX_SKEW_MS)
        self.assertLessEqual(c["hlc_max_lead_ms"], MAX_SKEW_MS, "%s %s: %s" % (site, when, c))
        self.assertLessEqual(c["hlc_lead_ms"], MAX_SKEW_MS, "%s %s: %s" % (site, when, c))
        self.assertLess(abs(c["wall_ms"] - now_ms()), 5000, "%s runs on the real clock" % site)
        st = self.lab.stats(site)
        self.assertLessEqual(st["clock:hlc_max_lead_ms"], MAX_SKEW_MS)
        return c

    def check_no_future_versions(self, site, keys, when):
        """No item the site holds carries a version from the future (beyond the bound)."""
        limit = now_ms() + MAX_SKEW_MS
        raw = self.lab.raw_dump(site, keys)
        future = [(k, it["hlc"] >> 16) for k, it in raw.items()
                  if it["versioned"] and (it["hlc"] >> 16) > limit]
        self.assertEqual(future, [], "%s %s holds versions ahead of its clock" % (site, when))
        return len(raw)

    def write_everywhere(self):
        """Writes at every site while one is skewed, plus keys written at the skewed site and
        then (later in real time) at a sane one.  Returns (keys per site, both, every)."""
        lab = self.lab
        keys = {}
        for s in SITES:
            c = lab.client(s)
            keys[s] = ["skew:%s:%d" % (s, i) for i in range(150)]
            for k in keys[s]:
                c.set(k, ("%s@%s" % (k, s)).encode())
        both = ["skew:both:%d" % i for i in range(50)]
        cb, ca = lab.client(SKEWED), lab.client(SANE[0])
        for k in both:
            cb.set(k, b"from-" + SKEWED.encode())
        for k in both:
            ca.set(k, b"from-" + SANE[0].encode())
        return keys, both, [k for s in SITES for k in keys[s]] + both

    def wait_refused(self, keys):
        """The skewed site's batches are refused and its writes wait in its spool."""
        lab = self.lab
        refused = lambda: all(self.peer(s, SKEWED)["clock_refused_batches"] > 0 for s in SANE)
        self.assertTrue(eventually(refused, 10), "the skewed site's batches were not refused")
        for s in SANE:
            self.assertEqual(lab.dump(s, keys[SKEWED]), {}, "%s applied writes from the future" % s)
        bst = lab.stats(SKEWED)
        for s in SANE:
            self.assertGreater(bst["peer:%s:spool_records" % s], 0)
        return bst

    def check_converged(self, keys, both, every, when):
        lab = self.lab
        t1 = time.monotonic()
        took = lab.wait_drained(60 * SLOW)
        cmp = lab.compare(every)
        say("%s: drained in %.1f s; %d keys: %d divergent, %d present everywhere", when, took,
            len(every), len(cmp["divergent"]), cmp["present"])
        self.assertEqual(cmp["divergent"], [], "divergent %s: %s" % (when, cmp["samples"]))
        self.assertEqual(cmp["version_divergent"], [])
        self.assertEqual(cmp["present"], len(every))
        bst = lab.stats(SKEWED)
        self.assertGreaterEqual(bst["clock:restamped"], len(keys[SKEWED]))
        say("%s re-stamped %d writes (%d replaced since)", SKEWED, bst["clock:restamped"],
            bst["clock:restamp_superseded"])
        # what the skewed site wrote is everywhere, with its value
        d = lab.dump(SANE[1], keys[SKEWED])
        self.assertEqual(len(d), len(keys[SKEWED]))
        self.assertTrue(all(v.startswith(b"skew:%s:" % SKEWED.encode()) for v, _ in d.values()))
        # a key written at both: the skewed site's write, re-stamped when its clock was fixed,
        # is the newest (docs/REPLICATION.md, "Clock skew")
        d = lab.dump(SANE[1], both)
        self.assertEqual({v for v, _ in d.values()}, {b"from-" + SKEWED.encode()})
        for s in SITES:
            self.check_no_future_versions(s, every, when)
        for s in SANE:
            self.check_clock_bounded(s, when)
        # a write after the fix sticks, also on keys written while skewed
        c = lab.client(SANE[0])
        after = keys[SKEWED][:20] + both[:20]
        for k in after:
            c.set(k, b"after-fix")
        lab.wait_drained(30 * SLOW)
        for s in SITES:
            d = lab.dump(s, after)
            self.assertEqual({v for v, _ in d.values()}, {b"after-fix"}, s)
        self.assertEqual(lab.divergent(every), [])
        return time.monotonic() - t1

    def test_skew_bounded_then_converges(self):
        lab = self.start_lab(FAKE_HOUR)
        t0 = time.monotonic()

        # -- the skewed gateway really runs an hour ahead (faketime reaches clock_gettime)
        c = self.status(SKEWED)["clock"]
        ahead = c["wall_ms"] - now_ms()
        say("%s's wall clock: %+.1f s", SKEWED, ahead / 1000.0)
        self.assertGreater(ahead, HOUR_MS - 60000, "faketime did not move the gateway's clock")

        # -- reported within 10 s, by both other sites, idle links included
        def offsets():
            out = {}
            for s in SANE:
                p = self.peer(s, SKEWED)
                if p["clock_offset_ms"] is None or abs(p["clock_offset_ms"] - HOUR_MS) > 5000:
                    return None
                out[s] = p["clock_offset_ms"]
            return out
        got = eventually(offsets, 10)
        reported = time.monotonic() - self.skew_started
        self.assertTrue(got, "skew not reported within 10 s: %s" %
                        [self.peer(s, SKEWED) for s in SANE])
        self.assertLess(reported, 10.0)
        say("skew reported %.1f s after the skewed gateway started: %s", reported,
            ", ".join("%s sees %s at %+.3f s" % (s, SKEWED, v / 1000.0) for s, v in got.items()))
        back = self.peer(SKEWED, SANE[0])["clock_offset_ms"]
        self.assertIsNotNone(back)
        self.assertLess(abs(back + HOUR_MS), 5000, "the skewed site sees the others behind")
        code, text = lab.admin(SANE[0], "GET", "/metrics")
        self.assertEqual(code, 200)
        m = re.search(r'^geogate_peer_clock_offset_seconds\{peer="%s"\} (\S+)$' % SKEWED, text,
                      re.M)
        self.assertIsNotNone(m, "no geogate_peer_clock_offset_seconds for %s" % SKEWED)
        self.assertAlmostEqual(float(m.group(1)), 3600.0, delta=5.0)
        self.assertIn("geogate_max_clock_skew_seconds 1\n", text)
        st = lab.stats(SANE[0])
        self.assertLess(abs(st["peer:%s:clock_offset_ms" % SKEWED] - HOUR_MS), 5000)

        # -- writes everywhere while it is skewed
        keys, both, every = self.write_everywhere()

        # the sane sites replicate to each other and to the skewed one (its clock is ahead:
        # their versions are in its past)
        def sane_replicated():
            return all(len(lab.dump(s, keys[SANE[0]] + keys[SANE[1]])) == 300 for s in SITES)
        self.assertTrue(eventually(sane_replicated, 10), "sane sites' writes did not spread")

        # the skewed site's batches are refused and stay in its spool
        self.wait_refused(keys)
        time.sleep(3.0)  # a few refusal rounds
        bst = self.wait_refused(keys)
        say("while skewed: refused batches %s; %s's spool holds %s records",
            {s: self.peer(s, SKEWED)["clock_refused_batches"] for s in SANE}, SKEWED,
            {s: bst["peer:%s:spool_records" % s] for s in SANE})
        refusal = [l for l in lab.log(SANE[0]).splitlines() if "batch refused" in l]
        self.assertTrue(refusal, "no refusal logged")
        self.assertIn("clock skew: versions", refusal[0])
        self.assertLessEqual(len(refusal), 3, "refusals are logged once per interval")
        self.assertIn("refuses our writes", lab.log(SKEWED))
        for s in SANE:
            c = self.check_clock_bounded(s, "while skewed")
            n = self.check_no_future_versions(s, every, "while skewed")
            say("%s while skewed: hlc lead max %d ms; %d items, none from the future", s,
                c["hlc_max_lead_ms"], n)

        # -- the skewed gateway on the right time again
        self.assertEqual(lab.stop_site(SKEWED), 0)
        lab.start_site(SKEWED)
        self.check_converged(keys, both, every, "after the restart")
        say("whole test: %.1f s", time.monotonic() - t0)

    def test_clock_stepped_back_while_running(self):
        """The skewed clock is put right while the gateway runs: libfaketime reads the offset
        from a file (monotonic time left alone, as an NTP step leaves it)."""
        t0 = time.monotonic()
        d = tempfile.mkdtemp(prefix="geogate-faketime-")
        self.addCleanup(shutil.rmtree, d, True)
        spec = os.path.join(d, "offset")
        with open(spec, "w") as f:
            f.write("+1h\n")
        env = {"LD_PRELOAD": LIBFAKETIME, "FAKETIME_TIMESTAMP_FILE": spec,
               "FAKETIME_CACHE_DURATION": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        lab = self.start_lab(env)
        self.assertGreater(self.status(SKEWED)["clock"]["wall_ms"] - now_ms(), HOUR_MS - 60000)
        keys, both, every = self.write_everywhere()
        self.wait_refused(keys)
        for s in SANE:
            self.check_clock_bounded(s, "while skewed")

        with open(spec, "w") as f:
            f.write("+0\n")
        right = eventually(lambda: abs(self.status(SKEWED)["clock"]["wall_ms"] - now_ms()) < 5000,
                           10)
        self.assertTrue(right, "the skewed gateway's clock was not put right")
        self.check_converged(keys, both, every, "after the step")
        c = self.status(SKEWED)["clock"]
        self.assertGreaterEqual(c["resets"], 1, c)
        self.assertLessEqual(c["hlc_lead_ms"], MAX_SKEW_MS, c)
        self.assertIn("clock stepped back", lab.log(SKEWED))
        say("hybrid clock restarted %d time(s); whole test: %.1f s", c["resets"],
            time.monotonic() - t0)

    def test_restart_soon_after_a_small_skew(self):
        """Found by the chaos soak: a write stamped by a clock 2 s ahead, shipped after the
        gateway restarted on the right time (within the bound by then), beat the write made
        to the same key after the restart, at every site."""
        lab = self.start_lab({"LD_PRELOAD": LIBFAKETIME, "FAKETIME": "+4s"}, wanem=True)
        ahead = self.status(SKEWED)["clock"]["wall_ms"] - now_ms()
        self.assertGreater(ahead, 3000, "faketime did not move the gateway's clock")
        lab.isolate(SKEWED, "cut")
        t0 = time.monotonic()
        again = ["small:again:%d" % i for i in range(150)]
        lost = ["small:lost:%d" % i for i in range(100)]
        c = lab.client(SKEWED)
        for k in again + lost:
            c.set(k, b"skewed")
        c.close()
        lab.kill_site(SKEWED)
        for i in range(lab.nodes):  # its nodes lose everything it wrote
            lab.kill_node(SKEWED, i)
            lab.start_node(SKEWED, i)
        lab.start_site(SKEWED)
        c = lab.client(SKEWED)
        for k in again:
            c.set(k, b"after-restart")
        c.close()
        rewritten = time.monotonic() - t0
        say("written 4 s ahead, killed, restarted on the right time, %d keys written again "
            "%.1f s after the first writes", len(again), rewritten)
        # the rewrites are stamped below the skewed versions only while less than 4 s passed
        self.assertLess(rewritten, 3.0, "the restart took too long to show anything")
        # heal once every skewed version is within the bound: before the fix, they shipped
        # as they were and beat the rewrites
        time.sleep(max(0.0, 3.5 - (time.monotonic() - t0)))
        lab.heal(SKEWED)
        lab.wait_links_up(15 * SLOW)
        lab.wait_drained(60 * SLOW)
        for s in SITES:
            d = lab.dump(s, again)
            if len(d) != len(again):
                miss = [k for k in again if k not in d][:3]
                say("missing at %s: %s; raw: %s", s, miss,
                    {x: lab.raw_dump(x, miss) for x in SITES})
            self.assertEqual({v for v, _ in d.values()}, {b"after-restart"}, s)
            self.assertEqual(len(d), len(again), s)
            d = lab.dump(s, lost)
            self.assertEqual(len(d), len(lost), "%s: writes its node lost were not put back" % s)
            self.assertEqual({v for v, _ in d.values()}, {b"skewed"}, s)
        self.assertEqual(lab.divergent(again + lost), [])
        bst = lab.stats(SKEWED)
        say("%s re-stamped %d writes (%d replaced since)", SKEWED, bst["clock:restamped"],
            bst["clock:restamp_superseded"])
        self.assertGreaterEqual(bst["clock:restamp_superseded"], len(again))
        for s in SANE:
            self.check_clock_bounded(s, "after the heal")


if __name__ == "__main__":
    unittest.main(verbosity=2)
