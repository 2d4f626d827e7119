"""Disk faults under the replication spool: a full disk, a read-only remount, the spool
directory removed under a running gateway.

In every case the clients keep being served (STORED), each mutation that could not be
spooled is counted as dropped for the peer (`stats peers`, /status, /metrics) and
announced to it as lost, the log says so once per interval (not once per write), /status
shows replication degraded while it lasts, writing resumes by itself when the fault
clears, and the peer catches up by itself (auto_backfill): 0 divergent keys between the
sites at the end.

Real faults: a tmpfs mounted on the spool directory (`mount -t tmpfs -o size=4m`), remounted
read-only and back; `rm -rf` of the directory.  Needs root (mount); skipped otherwise.
Every mount is undone in cleanup.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from multisite import Lab  # noqa: E402

SLOW = (2.0 if harness.SANITIZED else 1.0) * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
VALUE = b"v" * 1000


def can_mount():
    return os.geteuid() == 0 and shutil.which("mount") is not None


def mount_tmpfs(path, size):
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "tmpfs", path],
                   check=True, stdin=subprocess.DEVNULL, timeout=30)


def umount(path):
    for _ in range(20):
        r = subprocess.run(["umount", path], stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=30)
        if r.returncode == 0 or b"not mounted" in r.stderr:
            return
        time.sleep(0.2)
    subprocess.run(["umount", "-l", path], stdin=subprocess.DEVNULL, capture_output=True,
                   timeout=30)


def wait_until(fn, timeout, interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def status(lab, name):
    return json.loads(lab.admin(name, "GET", "/status")[1])


def metric(lab, name, metric_name, peer=None):
    text = lab.admin(name, "GET", "/metrics")[1]
    label = '{peer="%s"}' % peer if peer else ""
    m = re.search(r"^%s%s (\S+)$" % (re.escape(metric_name), re.escape(label)), text, re.M)
    return float(m.group(1)) if m else None


def write_keys(lab, name, keys, value=VALUE):
    c = lab.client(name, timeout=10.0)
    for k in keys:
        assert c.set(k, value), "set %s at %s was not STORED" % (k, name)


def fault_lines(lab, name):
    return [l for l in lab.log(name).splitlines() if "spool:" in l and
            ("cannot write" in l or "failed" in l)]


@unittest.skipUnless(can_mount(), "needs root to mount a tmpfs")
class SpoolFaultTest(unittest.TestCase):
    def lab(self, size=None, auto_start=True):
        lab = Lab(["sa", "sb"], threads=1, admin=True, start=False)
        self.addCleanup(lab.stop)
        spool = lab.sites["sa"].spool_dir
        if size:
            mount_tmpfs(spool, size)
            self.addCleanup(umount, spool)
        if auto_start:
            for n in lab.names:
                lab.start_site(n)
            lab.wait_links_up(15 * SLOW)
        return lab

    def assert_converged(self, lab, keys, timeout):
        left = wait_until(lambda: not lab.divergent(keys), timeout, interval=1.0)
        bad = lab.divergent(keys)
        self.assertEqual(bad[:5], [], "%d of %d keys differ between the sites after %.0fs\n"
                         "sa: %s\nsb: %s" % (len(bad), len(keys), timeout,
                                             lab.log_tail("sa", 15), lab.log_tail("sb", 15)))
        return left

    def test_full_disk(self):
        """4 MiB spool filesystem, peer down, 12,000 writes of 1 kB: all STORED, the loss
        is counted, announced and backfilled once the peer is back; bounded logging."""
        lab = self.lab(size="4m")
        lab.stop_site("sb")
        keys = ["full:%05d" % i for i in range(12000)]
        write_keys(lab, "sa", keys)
        st = lab.stats("sa")
        self.assertEqual(st.get("spool:fault"), "yes", st)
        self.assertGreater(st["spool:unspooled"], 0)
        self.assertGreater(st["peer:sb:dropped"], 0)
        self.assertTrue(status(lab, "sa")["replication"]["degraded"])
        self.assertEqual(metric(lab, "sa", "geogate_replication_degraded"), 1.0)
        self.assertGreater(metric(lab, "sa", "geogate_spool_dropped_total", "sb"), 0)
        lines = fault_lines(lab, "sa")
        self.assertLessEqual(len(lines), 10, "the log says the fault per write:\n" +
                             "\n".join(lines[:20]))
        # the peer comes back: what was spooled ships, acks free the disk, writing resumes,
        # the loss is announced and the peer backfills
        lab.start_site("sb")
        self.assert_converged(lab, keys, 90 * SLOW)
        ok = wait_until(lambda: lab.stats("sa").get("spool:fault") == "no", 30 * SLOW)
        self.assertTrue(ok, lab.log_tail("sa", 20))
        self.assertFalse(status(lab, "sa")["replication"]["degraded"])
        self.assertGreater(metric(lab, "sb", "geogate_peer_lost_records_total", "sa"), 0)
        # and spooling works again: a new write reaches the peer through the spool
        write_keys(lab, "sa", ["full:after"], b"after")
        got = wait_until(lambda: lab.client("sb").get("full:after"), 15 * SLOW)
        self.assertEqual(got, b"after")

    def test_read_only(self):
        """The spool's filesystem turns read-only under a running gateway, as ext4 does
        after an error (errors=remount-ro; a tmpfs cannot be remounted read-only while the
        spool has its files open), and is mounted again writable: writes are served
        throughout, the fault is reported, writing resumes by itself, and the peer ends
        with every key."""
        if not (shutil.which("losetup") and shutil.which("mkfs.ext4")):
            self.skipTest("needs losetup and mkfs.ext4")
        lab = self.lab(auto_start=False)
        spool = lab.sites["sa"].spool_dir
        img = os.path.join(lab.dir, "spool.img")
        with open(img, "wb") as f:
            f.truncate(64 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", img], check=True, timeout=60,
                       stdin=subprocess.DEVNULL)
        loops = []

        def attach():
            dev = subprocess.run(["losetup", "-f", "--show", img], check=True, timeout=30,
                                 capture_output=True).stdout.decode().strip()
            loops.append(dev)
            return dev

        def cleanup():
            umount(spool)
            for dev in loops:
                subprocess.run(["losetup", "-d", dev], capture_output=True, timeout=30)
        self.addCleanup(cleanup)
        try:
            dev = attach()
        except subprocess.CalledProcessError:
            self.skipTest("no loop device")
        subprocess.run(["mount", "-o", "errors=remount-ro", dev, spool], check=True, timeout=30)
        trigger = "/sys/fs/ext4/%s/trigger_fs_error" % os.path.basename(dev)
        if not os.path.exists(trigger):
            self.skipTest("no %s" % trigger)
        for n in lab.names:
            lab.start_site(n)
        lab.wait_links_up(15 * SLOW)
        before = ["ro:before:%d" % i for i in range(200)]
        write_keys(lab, "sa", before)
        with open(trigger, "w") as f:
            f.write("1\n")  # the kernel turns the filesystem read-only
        during = ["ro:during:%d" % i for i in range(2000)]
        write_keys(lab, "sa", during)
        ok = wait_until(lambda: lab.stats("sa").get("spool:fault") == "yes", 10 * SLOW)
        self.assertTrue(ok, lab.log_tail("sa", 20))
        self.assertGreater(lab.stats("sa")["spool:unspooled"], 0)
        self.assertTrue(status(lab, "sa")["replication"]["degraded"])
        self.assertIn("Read-only", status(lab, "sa")["replication"]["spool_fault"])
        # the operator's repair: unmount (lazily: the gateway holds its files), check the
        # filesystem and mount it again, writable
        umount(spool)
        dev2 = attach()
        subprocess.run(["e2fsck", "-fy", dev2], capture_output=True, timeout=60)
        subprocess.run(["mount", dev2, spool], check=True, timeout=30)
        ok = wait_until(lambda: lab.stats("sa").get("spool:fault") == "no", 15 * SLOW)
        self.assertTrue(ok, lab.log_tail("sa", 20))
        after = ["ro:after:%d" % i for i in range(200)]
        write_keys(lab, "sa", after)
        self.assert_converged(lab, before + during + after, 60 * SLOW)
        self.assertLessEqual(len(fault_lines(lab, "sa")), 10)

    def test_directory_removed(self):
        """rm -rf of the spool directory under a running gateway: noticed within a few
        seconds, the directory is made again, what it held counts as lost, and the peer
        catches up."""
        lab = self.lab()
        spool = lab.sites["sa"].spool_dir
        keys = ["rm:%d" % i for i in range(500)]
        write_keys(lab, "sa", keys[:250])
        shutil.rmtree(spool)
        write_keys(lab, "sa", keys[250:])
        ok = wait_until(lambda: lab.stats("sa")["spool:faults"] > 0, 10 * SLOW)
        self.assertTrue(ok, "the removed directory was not noticed")
        ok = wait_until(lambda: os.path.isdir(spool) and
                        lab.stats("sa").get("spool:fault") == "no", 15 * SLOW)
        self.assertTrue(ok, lab.log_tail("sa", 20))
        more = ["rm:after:%d" % i for i in range(100)]
        write_keys(lab, "sa", more)
        self.assert_converged(lab, keys + more, 60 * SLOW)
        # what is spooled now is on disk, in the new directory
        self.assertTrue(any(f.startswith("spool-") for f in os.listdir(spool)), os.listdir(spool))


if __name__ == "__main__":
    unittest.main()
