"""Backfill: a site pulls every live item of a peer site over the WAN (issue 5).

Real memcached, real gateways, real mTLS, the WAN emulator between the sites:

- a new, empty site joins a peer holding 100,000 keys while writes go on at both; after
  `geogatectl backfill` and quiesce, 0 keys missing and 0 divergent;
- the backfill's link is cut in the middle: it resumes from its last batch (no restart
  from zero) and still ends with 0 divergent keys; the rate limit holds;
- a link cut longer than the peer's spool can hold, then healed: both sites say records
  were lost, the receiving site backfills by itself, 0 divergent keys;
- with replication.auto_backfill: false the loss is reported and nothing is pulled;
- that catch-up cut short by a restart of the receiving gateway (SIGTERM, SIGKILL) or of
  the sending one: it starts again by itself, from its last cursor (not from the start),
  and ends with 0 divergent keys;
- refusals: unknown site, own site, a job already running, bad rate.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from multisite import Lab  # noqa: E402

CTL = os.path.join(harness.BIN, "geogatectl")
SLOW = 3 if harness.SANITIZED else 1


def load(lab, site, keys, value_of, chunk=500):
    """Write keys through the site's gateway (pipelined, replies awaited)."""
    c = lab.client(site, timeout=30)
    for i in range(0, len(keys), chunk):
        part = keys[i:i + chunk]
        failed = c.set_many({k: value_of(k) for k in part}, expire=0)
        if failed:
            raise AssertionError("%d sets failed at %s, e.g. %r" % (len(failed), site, failed[:3]))


class Writers:
    """Background writers at several sites: new keys, overwrites of existing keys, deletes."""

    def __init__(self, lab, sites, existing, rate=300):
        self.lab = lab
        self.sites = sites
        self.existing = existing
        self.rate = rate
        self.stop_ev = threading.Event()
        self.keys = set()
        self.errors = []
        self.threads = [threading.Thread(target=self._run, args=(s,), daemon=True) for s in sites]

    def _run(self, site):
        c = self.lab.client(site, timeout=10)
        rng = random.Random(site)
        i = 0
        while not self.stop_ev.is_set():
            t0 = time.monotonic()
            try:
                k = "live:%s:%d" % (site, i)
                c.set(k, ("%s-%d" % (site, i)).encode(), expire=0)
                self.keys.add(k)
                if self.existing:
                    e = rng.choice(self.existing)
                    if i % 5 == 0:
                        c.delete(e)
                    else:
                        c.set(e, ("over-%s-%d" % (site, i)).encode(), expire=0)
            except Exception as ex:  # counted; the test decides
                self.errors.append("%s: %r" % (site, ex))
            i += 1
            left = 2.0 / self.rate - (time.monotonic() - t0)
            if left > 0:
                time.sleep(left)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=30)

    def __exit__(self, *exc):
        self.stop()


def ctl(lab, site, *args, timeout=300):
    port = lab.sites[site].admin_port
    return subprocess.run([CTL, "--admin", "127.0.0.1:%d" % port] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)


def backfill_state(lab, site):
    code, body = lab.admin(site, "GET", "/backfill")
    assert code == 200, (code, body)
    return json.loads(body)


def wait_backfill(lab, site, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = backfill_state(lab, site)
        if st["state"] not in ("running", "none"):
            return st
        time.sleep(0.25)
    raise AssertionError("backfill at %s still %s after %ds" % (site, st["state"], timeout))


def forget_backlog(lab, site):
    """Restart site with an empty spool: as if the peer had never been configured, nothing
    is queued for it, so only a backfill can bring it what the site holds."""
    lab.stop_site(site)
    d = lab.sites[site].spool_dir
    shutil.rmtree(d)
    os.makedirs(d)
    lab.start_site(site)


class NewSite(unittest.TestCase):
    N = 100000

    def test_new_site_joins_while_writes_continue(self):
        with Lab(["us-east", "eu-west"], nodes=2, admin=True, wanem=True, mem_mb=256) as lab:
            lab.stop_site("eu-west")
            keys = ["bf:%07d" % i for i in range(self.N)]
            t0 = time.monotonic()
            load(lab, "us-east", keys, lambda k: ("v-" + k).encode() * 3)
            print("\n    loaded %d keys at us-east in %.1fs" % (self.N, time.monotonic() - t0))
            forget_backlog(lab, "us-east")
            lab.start_site("eu-west")
            lab.wait_links_up()
            self.assertEqual(lab.dump("eu-west", keys[:1000]), {},
                             "the new site must start empty (nothing spooled for it)")
            with Writers(lab, ["us-east", "eu-west"], keys) as w:
                time.sleep(0.5)
                t0 = time.monotonic()
                r = ctl(lab, "eu-west", "backfill", "--from", "us-east", "--rate", "40000",
                        "--interval", "250", timeout=240 * SLOW)
                took = time.monotonic() - t0
                time.sleep(0.5)
            print("    geogatectl backfill: exit %d in %.1fs\n%s" % (
                r.returncode, took, "\n".join("      " + l for l in r.stdout.strip().splitlines()[-4:])))
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("done in", r.stdout)
            progress = [l for l in r.stdout.splitlines() if "% of" in l and "items/s" in l]
            self.assertGreater(len(progress), 0, r.stdout)  # percent, rate (and ETA) shown
            self.assertEqual(w.errors, [])
            st = backfill_state(lab, "eu-west")
            self.assertEqual(st["state"], "done")
            self.assertGreaterEqual(st["items"], self.N * 0.9)
            self.assertGreater(st["peer_items"], 0)
            lab.wait_drained(timeout=120)
            allkeys = keys + sorted(w.keys)
            res = lab.compare(allkeys)
            us = lab.dump("us-east", allkeys)
            eu = lab.dump("eu-west", allkeys)
            missing = [k for k in us if k not in eu]
            print("    %d keys compared: %d present at both, %d absent at both (deleted), "
                  "%d missing at eu-west, %d divergent, %d expiry-divergent; %d live writes"
                  % (len(allkeys), res["present"], res["absent"], len(missing),
                     len(res["divergent"]), len(res["expiry_divergent"]), len(w.keys)))
            self.assertEqual(missing, [])
            self.assertEqual(res["divergent"], [], res["samples"])
            self.assertEqual(res["expiry_divergent"], [], res["samples"])


class Resume(unittest.TestCase):
    N = 30000

    def test_cut_link_resumes_from_last_batch_and_rate_holds(self):
        with Lab(["us-east", "eu-west"], nodes=2, admin=True, wanem=True) as lab:
            lab.stop_site("eu-west")
            keys = ["rs:%06d" % i for i in range(self.N)]
            load(lab, "us-east", keys, lambda k: k.encode())
            forget_backlog(lab, "us-east")
            lab.start_site("eu-west")
            lab.wait_links_up()
            rate = 10000
            code, body = lab.admin("eu-west", "POST", "/backfill?from=us-east&rate=%d" % rate)
            self.assertEqual(code, 200, body)
            # Busy: a second one is refused while this one runs.
            code2, body2 = lab.admin("eu-west", "POST", "/backfill?from=us-east")
            self.assertEqual(code2, 409, body2)
            self.assertIn("already running", body2)
            time.sleep(1.2)
            before = backfill_state(lab, "eu-west")["items"]
            lab.link_state("eu-west", "us-east", "cut")
            time.sleep(1.5)
            lab.link_state("eu-west", "us-east", "up")
            st = wait_backfill(lab, "eu-west", 120 * SLOW)
            print("\n    items before the cut %d; after: %s" % (before, {
                k: st[k] for k in ("state", "items", "resumes", "elapsed_ms", "items_per_s",
                                   "applied", "rejected_older")}))
            self.assertEqual(st["state"], "done", st)
            self.assertGreaterEqual(st["resumes"], 1, st)
            self.assertGreater(before, 0)
            self.assertLess(before, self.N)
            # Resumed, not restarted: a restart would send the first `before` items again.
            self.assertLess(st["items"], self.N + min(before, 2000) // 2 + 300, st)
            self.assertGreaterEqual(st["items"], self.N)
            # The rate limit: N items at `rate`/s take at least N/rate seconds.
            self.assertGreaterEqual(st["elapsed_ms"], 1000 * self.N / rate * 0.9, st)
            lab.wait_drained(timeout=60)
            self.assertEqual(lab.divergent(keys), [])
            log = lab.log("us-east")
            self.assertIn("(resumed)", log)


class AutoCatchUp(unittest.TestCase):

    def run_cut(self, auto):
        extra = None if auto else {"eu-west": "replication:\n  auto_backfill: false"}
        with Lab(["us-east", "eu-west"], nodes=2, admin=True, wanem=True,
                 spool_max_bytes=1 << 20, extra_yaml=extra) as lab:
            lab.wait_links_up()
            lab.isolate("eu-west", "cut")
            keys = ["cu:%06d" % i for i in range(30000)]
            load(lab, "us-east", keys, lambda k: ("x" * 100 + k).encode())
            time.sleep(1.5)  # the spool trims on its tick
            us = lab.site_status("us-east")
            dropped = [p for p in us["peers"] if p["site"] == "eu-west"][0]["dropped"]
            self.assertGreater(dropped, 0, "the spool was expected to overflow")
            lab.heal("eu-west")
            lab.wait_links_up()
            if not auto:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    eu = lab.site_status("eu-west")
                    lost = [p for p in eu["peers"] if p["site"] == "us-east"][0]["lost_from_peer"]
                    if lost > 0:
                        break
                    time.sleep(0.25)
                self.assertEqual(lost, dropped)
                time.sleep(1)
                self.assertEqual(backfill_state(lab, "eu-west")["state"], "none")
                self.assertIn("auto_backfill is off", lab.log("eu-west"))
                lab.wait_drained(timeout=60)
                self.assertGreater(len(lab.divergent(keys)), 0,
                                   "without a backfill the lost records stay missing")
                return
            st = wait_backfill(lab, "eu-west", 120 * SLOW)
            print("\n    us-east spool dropped %d records for eu-west; eu-west backfill: %s" % (
                dropped, {k: st[k] for k in ("state", "automatic", "why", "items", "applied")}))
            self.assertEqual(st["state"], "done", st)
            self.assertTrue(st["automatic"])
            eu = lab.site_status("eu-west")
            self.assertEqual([p for p in eu["peers"] if p["site"] == "us-east"][0]["lost_from_peer"],
                             dropped)
            code, metrics = lab.admin("eu-west", "GET", "/metrics")
            self.assertIn('geogate_peer_lost_records_total{peer="us-east"} %d' % dropped, metrics)
            self.assertIn("knows our spool lost", lab.log("us-east"))
            lab.wait_drained(timeout=60)
            self.assertEqual(lab.divergent(keys), [])

    def test_spool_overflow_then_heal_backfills_by_itself(self):
        self.run_cut(auto=True)

    def test_auto_backfill_off_reports_and_waits(self):
        self.run_cut(auto=False)


class CatchUpRestart(unittest.TestCase):
    """The automatic catch-up in progress, then a restart of one gateway: it goes on by
    itself from where it was, not from the start.  Slow enough (RATE) to be cut short."""
    N = 20000
    RATE = 2500

    def run_restart(self, site, kill):
        extra = {"eu-west": "replication:\n  backfill_rate: %d" % self.RATE}
        with Lab(["us-east", "eu-west"], nodes=2, admin=True, wanem=True,
                 spool_max_bytes=1 << 20, extra_yaml=extra) as lab:
            lab.isolate("eu-west", "cut")
            keys = ["cr:%06d" % i for i in range(self.N)]
            load(lab, "us-east", keys, lambda k: ("x" * 100 + k).encode())
            time.sleep(1.5)  # the spool trims on its tick
            lab.heal("eu-west")
            deadline = time.monotonic() + 60 * SLOW
            st = {}
            while time.monotonic() < deadline:
                st = backfill_state(lab, "eu-west")
                if st["state"] == "running" and st["items"] >= self.N // 4:
                    break
                time.sleep(0.1)
            self.assertEqual(st.get("state"), "running", st)
            self.assertTrue(st["automatic"], st)
            before = st["items"]
            self.assertLess(before, self.N * 3 // 4, "the catch-up ran too fast to be cut short")
            if kill:
                lab.kill_site(site)
            else:
                self.assertEqual(lab.stop_site(site), 0)
            lab.start_site(site)
            lab.wait_links_up(30)
            st = wait_backfill(lab, "eu-west", 120 * SLOW)
            print("\n    %s %s with %d of %d items brought; then: %s" % (
                site, "killed" if kill else "stopped", before, self.N, {
                    k: st[k] for k in ("state", "items", "restarts", "items_before_restart",
                                       "resumes", "applied", "elapsed_ms")}))
            self.assertEqual(st["state"], "done", st)
            self.assertTrue(st["automatic"], st)
            self.assertGreaterEqual(st["items"], self.N, st)
            with open(lab.sites["us-east"].logs[-1]) as f:
                sender_log = f.read()  # the sender's current process
            if site == "eu-west":
                # A new process, started again by itself from the state it left on disk:
                # it counts on from the items it had, and asked the peer for the rest only.
                self.assertEqual(st["restarts"], 1, st)
                self.assertGreater(st["items_before_restart"], 0, st)
                self.assertLess(st["items"], self.N + st["items_before_restart"] // 2, st)
                self.assertIn("resuming from its last cursor", lab.log("eu-west"))
            else:
                # The same job: it waited for the peer and went on from its cursor.
                self.assertEqual(st["restarts"], 0, st)
                self.assertGreaterEqual(st["resumes"], 1, st)
                self.assertLess(st["items"], self.N + before // 2, st)
            self.assertIn("(resumed)", sender_log)
            lab.wait_drained(timeout=60)
            self.assertEqual(lab.divergent(keys), [])

    def test_receiver_sigterm_resumes(self):
        self.run_restart("eu-west", kill=False)

    def test_receiver_sigkill_resumes(self):
        self.run_restart("eu-west", kill=True)

    def test_sender_sigterm_resumes(self):
        self.run_restart("us-east", kill=False)

    def test_sender_sigkill_resumes(self):
        self.run_restart("us-east", kill=True)


class Refusals(unittest.TestCase):

    def test_refusals(self):
        with Lab(["us-east", "eu-west"], nodes=1, admin=True) as lab:
            r = ctl(lab, "eu-west", "backfill", "--from", "mars")
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("unknown site 'mars'", r.stderr)
            r = ctl(lab, "eu-west", "backfill", "--from", "eu-west")
            self.assertEqual(r.returncode, 1)
            self.assertIn("own site", r.stderr)
            r = ctl(lab, "eu-west", "backfill")
            self.assertEqual(r.returncode, 2)
            r = ctl(lab, "eu-west", "backfill", "--from", "us-east", "--rate", "fast")
            self.assertEqual(r.returncode, 2)
            code, body = lab.admin("eu-west", "POST", "/backfill?from=us-east&rate=-5")
            self.assertEqual(code, 400, body)
            code, body = lab.admin("eu-west", "POST", "/backfill?from=us-east&speed=5")
            self.assertEqual(code, 400, body)
            code, body = lab.admin("eu-west", "POST", "/backfill/cancel")
            self.assertEqual(code, 409, body)
            self.assertEqual(backfill_state(lab, "eu-west")["state"], "none")
            # an empty peer: done at once, 0 items
            r = ctl(lab, "eu-west", "backfill", "--from", "us-east", "--interval", "100")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("done in", r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
