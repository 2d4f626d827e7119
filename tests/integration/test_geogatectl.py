"""bin/geogatectl (issue 4, point 6) against live gateways.

  SingleSite   one gateway with `admin:`: status (readable and --json), drain, the refusals
               with the gateway's message and exit code 1 (failover to an unknown site, no
               peer sites, failback when not failed over), an admin port nothing listens on
               (exit 3, "connection refused"), usage errors (exit 2), and a drill refused for
               a site without peers
  TwoSites     the multisite Lab (us-east, eu-west; admin listeners; WAN emulator with 50 ms
               each way): status shows the peer; /metrics of a replicating gateway passes
               promtool with the per-peer families; failover --to / failback round trip and
               their refusals; a drill refused while failed over; and `drill` itself, with a
               background writer so the backlog at the moment of failure is real: the report
               (text and JSON) has the switch time, no read errors after the switch, the
               failback and warm-up back to local, the hit ratio per second, and a non-empty
               backlog for eu-west
"""
import json
import os
import re
import subprocess
import tempfile
import threading
import time
import unittest

import harness
from multisite import Lab

GEOGATECTL = os.path.join(harness.BIN, "geogatectl")
PROMTOOL = "promtool"


def ctl(admin_port, *args, timeout=60):
    """(exit code, stdout, stderr) of geogatectl --admin 127.0.0.1:PORT args..."""
    argv = [GEOGATECTL]
    if admin_port is not None:
        argv += ["--admin", "127.0.0.1:%d" % admin_port]
    r = subprocess.run(argv + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def wait_for(cond, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))


class SingleSite(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="geogate-ctl-")
        self.mc = [harness.start_memcached() for _ in range(2)]
        self.admin = harness.free_port()
        cfg, port = harness.write_gateway_config(
            self.tmp.name, ["127.0.0.1:%d:1" % m.port for m in self.mc],
            extra="admin: 127.0.0.1:%d\n" % self.admin)
        self.gw = harness.start_gateway(self.tmp.name, cfg, port)
        harness.wait_port(self.admin, proc=self.gw.p)

    def tearDown(self):
        for p in [self.gw] + self.mc:
            try:
                p.stop()
            except Exception:
                pass
        self.tmp.cleanup()

    def test_status(self):
        rc, out, err = ctl(self.admin, "status")
        self.assertEqual(rc, 0, err)
        self.assertIn("site      test-site", out)
        self.assertIn("health    ok", out)
        self.assertIn("mode      local", out)
        self.assertIn("2/2 nodes up", out)
        self.assertIn("peers     none", out)
        rc, out, err = ctl(self.admin, "status", "--json")
        self.assertEqual(rc, 0, err)
        st = json.loads(out)
        self.assertEqual(st["site"], "test-site")
        self.assertEqual(st["listen"], "127.0.0.1:%d" % self.gw.port)

    def test_drain(self):
        rc, out, err = ctl(self.admin, "drain")
        self.assertEqual(rc, 0, err)
        self.assertIn("draining", out)
        rc, out, err = ctl(self.admin, "status")
        self.assertEqual(rc, 0, err)
        self.assertIn("health    503 draining", out)
        self.assertTrue(self.gw.alive())

    def test_refusals_carry_the_gateways_message(self):
        rc, out, err = ctl(self.admin, "failover", "--to", "nowhere")
        self.assertEqual(rc, 1)
        self.assertEqual(out, "")
        self.assertIn("failover refused (404): unknown site 'nowhere'", err)
        rc, _, err = ctl(self.admin, "failover")
        self.assertEqual(rc, 1)
        self.assertIn("(409): this gateway has no peer sites", err)
        rc, _, err = ctl(self.admin, "failback")
        self.assertEqual(rc, 1)
        self.assertIn("failback refused (409): not failed over", err)
        rc, _, err = ctl(self.admin, "drill", "--keys", "10")
        self.assertEqual(rc, 1)
        self.assertIn("no peer sites", err)

    def test_unreachable_and_usage(self):
        dead = harness.free_port()
        for cmd in (["status"], ["drain"], ["failback"]):
            rc, _, err = ctl(dead, *cmd)
            self.assertEqual(rc, 3, cmd)
            self.assertIn("connection refused by 127.0.0.1:%d" % dead, err)
        # the memcached port is not the admin port: a clear error, not a hang
        rc, _, err = ctl(self.gw.port, "--timeout", "1000", "status")
        self.assertEqual(rc, 3)
        self.assertIn("127.0.0.1:%d" % self.gw.port, err)
        self.assertEqual(ctl(None, "status")[0], 2)
        self.assertEqual(ctl(self.admin, "bogus")[0], 2)
        self.assertEqual(ctl(self.admin, "failover", "--to")[0], 2)
        self.assertEqual(ctl(self.admin, "drain", "now")[0], 2)
        self.assertEqual(ctl(self.admin, "drill", "--keys", "0")[0], 2)
        rc, out, _ = ctl(self.admin, "drill", "--help")
        self.assertEqual(rc, 0)
        self.assertIn("--duration", out)
        self.assertEqual(subprocess.run([GEOGATECTL, "--admin", "nocolon", "status"],
                                        capture_output=True).returncode, 2)


class TwoSites(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = Lab(["us-east", "eu-west"], nodes=2, wanem=True, admin=True,
                      pool_timeout=2000)
        try:
            for n in cls.lab.names:
                cls.lab.set_link(n, [m for m in cls.lab.names if m != n][0], delay=50)
            cls.admin = cls.lab.sites["us-east"].admin_port
            wait_for(lambda: all(p["serving"] for p in cls.lab.site_status("us-east")["peers"]),
                     20, "us-east to see eu-west serving")
        except BaseException:
            cls.lab.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.lab.stop()

    def mode(self):
        return self.lab.site_status("us-east")["mode"]

    def read_until_local(self, timeout=30):
        """Warm-up ends on the local hit ratio of one-second windows with enough reads in
        them: read (keys that exist) until the mode is local."""
        c = self.lab.client("us-east")
        for i in range(100):
            c.set("warm:%d" % i, b"w")

        def local():
            for i in range(100):
                c.get("warm:%d" % i)
            return self.mode() == "local"
        wait_for(local, timeout, "us-east back to local", interval=0.0)

    def back_to_local(self):
        if self.mode() == "failed_over":
            ctl(self.admin, "failback")
        self.read_until_local()

    def test_status_and_metrics_with_a_peer(self):
        rc, out, err = ctl(self.admin, "status")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"eu-west\s+link up, serving")
        self.assertIn("unacked", out)
        code, text = self.lab.admin("us-east", "GET", "/metrics")
        self.assertEqual(code, 200)
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout.decode() + "\n" + text)
        for fam in ("geogate_peer_link_up", "geogate_peer_serving", "geogate_spool_records",
                    "geogate_spool_bytes", "geogate_spool_oldest_unacked_age_seconds",
                    "geogate_replication_lag_seconds", "geogate_site_read_peer",
                    "geogate_spool_max_bytes", "geogate_peer_rtt_seconds"):
            self.assertIn("# TYPE %s " % fam, text)
        self.assertIn('geogate_peer_link_up{peer="eu-west"} 1', text)
        self.assertIn('geogate_replication_lag_seconds{peer="eu-west",quantile="0.99"}', text)

    def test_failover_and_failback(self):
        try:
            rc, _, err = ctl(self.admin, "failover", "--to", "mars")
            self.assertEqual(rc, 1)
            self.assertIn("(404): unknown site 'mars': not a configured peer (peers: eu-west)", err)
            rc, _, err = ctl(self.admin, "failover", "--to", "us-east")
            self.assertEqual(rc, 1)
            self.assertIn("(400)", err)
            rc, out, err = ctl(self.admin, "failover", "--to", "eu-west")
            self.assertEqual(rc, 0, err)
            self.assertIn("eu-west", out)
            st = self.lab.site_status("us-east")
            self.assertEqual((st["mode"], st["peer"], st["forced"]), ("failed_over", "eu-west", True))
            code, health = self.lab.admin("us-east", "GET", "/health")
            self.assertEqual((code, health), (200, "ok"))
            rc, out, err = ctl(self.admin, "status")
            self.assertIn("mode      failed_over via eu-west (forced)", out)
            # a drill starts from local only
            rc, _, err = ctl(self.admin, "drill", "--keys", "10")
            self.assertEqual(rc, 1)
            self.assertIn("fail back first", err)
            rc, out, err = ctl(self.admin, "failback")
            self.assertEqual(rc, 0, err)
            self.assertIn("warm", out)
            self.assertEqual(self.mode(), "warmup")
            self.read_until_local()
            rc, _, err = ctl(self.admin, "failback")
            self.assertEqual(rc, 1)
            self.assertIn("(409): not failed over", err)
        finally:
            self.back_to_local()

    def test_drill(self):
        stop = threading.Event()
        written = [0]

        def writer():
            c = self.lab.client("us-east")
            i = 0
            while not stop.is_set():
                try:
                    c.set("bg:%d" % (i % 2000), b"x" * 100)
                    written[0] += 1
                except Exception:
                    pass
                i += 1
                time.sleep(0.002)

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        report = os.path.join(self.lab.dir, "drill.json")
        try:
            rc, out, err = ctl(self.admin, "drill", "--keys", "400", "--rate", "400",
                               "--baseline", "2", "--hold", "3", "--duration", "30",
                               "--sync-timeout", "3", "--report", report, timeout=120)
        finally:
            stop.set()
            t.join(10)
            self.back_to_local()
        print("\n" + out)
        self.assertEqual(rc, 0, "drill failed:\n%s\n%s\n%s" % (out, err, self.lab.log_tail("us-east")))
        self.assertIn("== geogate drill report: site us-east", out)
        self.assertIn("result           OK", out)
        self.assertIn("time to switch", out)
        self.assertRegex(out, r"backlog at failure")
        with open(report) as f:
            rep = json.load(f)
        self.assertEqual(rep["result"], "ok")
        self.assertEqual(rep["site"], "us-east")
        self.assertEqual(rep["keys_written"], 400)
        self.assertEqual(rep["failover"]["http_status"], 200)
        self.assertEqual(rep["failover"]["peer"], "eu-west")
        self.assertLess(rep["failover"]["time_to_failed_over_ms"], 1000)
        self.assertIsNotNone(rep["failover"]["time_to_peer_reads_ms"])
        self.assertEqual(rep["reads"]["errors_after_switch"], 0)
        self.assertGreater(rep["reads"]["total"], 1000)
        self.assertTrue(rep["failback"]["reached_local"])
        self.assertEqual(rep["failback"]["http_status"], 200)
        # the background writer keeps records in flight over a 100 ms round trip: the
        # backlog at the moment of failure is what a real failure would have put at risk
        self.assertGreater(written[0], 100)
        peers = {p["peer"]: p for p in rep["backlog_at_failure"]}
        self.assertIn("eu-west", peers)
        self.assertGreater(peers["eu-west"]["spool_records"], 0, rep["backlog_at_failure"])
        self.assertGreater(peers["eu-west"]["spool_bytes"], 0)
        self.assertEqual(rep["backlog_total"]["spool_records"], peers["eu-west"]["spool_records"])
        modes = [r["mode"] for r in rep["timeline"]]
        self.assertIn("failed_over", modes)
        self.assertEqual(modes[-1], "local")
        self.assertTrue(all(r["errors"] == 0 for r in rep["timeline"] if r["t_s"] >= 1))
        self.assertGreaterEqual(rep["hit_ratio"]["failed_over"], 0.95)
        self.assertGreaterEqual(rep["hit_ratio"]["first_10s_after_failback"], 0.95)
        # the drill left the site as it found it
        self.assertEqual(self.mode(), "local")


if __name__ == "__main__":
    unittest.main()
