#!/usr/bin/python3
"""Restore benchmark (issue 15, point 3): items per second of `geogatectl restore` on a
single-site gateway (no `wan:`) and, beside it, on a site with a peer; and what a client of
the same gateway sees meanwhile.

    /usr/bin/python3 tests/bench/run_restore_bench.py [--keys N] [--rounds R]
        [--before-bin DIR] [--no-peer] [--out docs/BENCHMARKS.md]

Variants, each with two memcached nodes (`-t 1`) and one geogate (2 threads) with an admin
listener on loopback:

  single-site            a gateway without `wan:` built from this tree (bin/)
  single-site, before    the same with the binaries in --before-bin (optional), so a change
                         is measured side by side with what it replaces, in one run
  with a peer            us-east of a two-site lab (tests/integration/multisite.Lab), the
                         case docs/SNAPSHOTS.md measured first (--no-peer leaves it out)

For each variant: N keys with 100-byte values are written through the gateway, one snapshot
is taken (`geogatectl snapshot`), then per round: the nodes are flushed and the snapshot is
restored ("into flushed nodes"), then restored again over the same items (all
`rejected_older`).  A probe client reads random keys through the same gateway, one `get` at a
time at --probe-rate per second, while its variant is measured (--all-probes: the whole
time); each restore is compared with the probe over
the --idle seconds right before it (no restore running).  Rounds of every variant are
interleaved.  Items/s is the number of records over geogatectl's wall time (upload and
apply).  The markdown report goes between `<!-- restore-bench:start -->` and
`<!-- restore-bench:end -->` of --out.  Every child is stopped on exit; every wait is bounded.
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "tests", "bench"))

import harness  # noqa: E402
from benchdoc import write_marked_section  # noqa: E402
from run_backfill_bench import Probe  # noqa: E402
from run_failover_bench import machine_info  # noqa: E402

AFTER_BIN = os.path.join(ROOT, "bin")


def log(msg):
    print("[restore-bench] " + msg, file=sys.stderr, flush=True)


def load(port, keys):
    """Write keys (100-byte values) through the gateway at port, pipelined."""
    val = b"v" * 100
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        for i in range(0, len(keys), 1000):
            s.sendall(b"".join(b"set %s 0 0 100 noreply\r\n%s\r\n" % (k.encode(), val)
                               for k in keys[i:i + 1000]))
        s.sendall(b"version\r\n")
        f = s.makefile("rb")
        if not f.readline().startswith(b"VERSION"):
            raise RuntimeError("loading keys failed")


def flush_nodes(mcs):
    for m in mcs:
        with socket.create_connection(("127.0.0.1", m.port), timeout=5) as s:
            s.sendall(b"flush_all\r\n")
            if s.recv(100) != b"OK\r\n":
                raise RuntimeError("flush_all failed")


def ctl(bindir, admin_port, *args, timeout=300):
    argv = [os.path.join(bindir, "geogatectl"), "--admin", "127.0.0.1:%d" % admin_port]
    r = subprocess.run(argv + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout)
    out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
    if r.returncode != 0:
        raise RuntimeError("geogatectl %s: exit %d: %s" % (args[0], r.returncode, out))
    return out


class PlainVariant:
    """Two memcached nodes and a gateway without `wan:` from bindir."""

    def __init__(self, name, bindir, tmp):
        self.name, self.bindir = name, bindir
        self.dir = tempfile.mkdtemp(prefix="restore-", dir=tmp)
        self.mc = [harness.start_memcached(mem_mb=256) for _ in range(2)]
        self.admin_port = harness.free_port()
        cfg, self.port = harness.write_gateway_config(
            self.dir, ["127.0.0.1:%d:1" % m.port for m in self.mc],
            extra="admin: 127.0.0.1:%d\n" % self.admin_port)
        harness.GEOGATE = os.path.join(bindir, "geogate")
        self.gw = harness.start_gateway(self.dir, cfg, self.port)
        harness.wait_port(self.admin_port, proc=self.gw.p)

    def memcached(self):
        return self.mc

    def stop(self):
        self.gw.stop()
        for m in self.mc:
            m.stop()


class PeerVariant:
    """us-east of a two-site lab (replicating, a peer at eu-west)."""

    def __init__(self, name, bindir, tmp):
        from multisite import Lab
        self.name, self.bindir = name, bindir
        harness.GEOGATE = os.path.join(bindir, "geogate")
        self.lab = Lab(["us-east", "eu-west"], nodes=2, admin=True, mem_mb=256)
        self.port = self.lab.sites["us-east"].port
        self.admin_port = self.lab.sites["us-east"].admin_port

    def memcached(self):
        return self.lab.sites["us-east"].memcached

    def stop(self):
        self.lab.stop()


def run(args, tmp):
    keys = ["rs:%07d" % i for i in range(args.keys)]
    variants = []
    try:
        variants.append(PlainVariant("single-site", AFTER_BIN, tmp))
        if args.before_bin:
            variants.append(PlainVariant("single-site, before", args.before_bin, tmp))
        if args.peer:
            variants.append(PeerVariant("with a peer", AFTER_BIN, tmp))
        for v in variants:
            t0 = time.monotonic()
            load(v.port, keys)
            if isinstance(v, PeerVariant):
                v.lab.wait_drained(120)
            v.snap = os.path.join(tmp, "%d.snap" % id(v))
            t1 = time.monotonic()
            out = ctl(v.bindir, v.admin_port, "snapshot", "--out", v.snap)
            v.snap_s = time.monotonic() - t1
            log("%s: loaded %d keys in %.1f s; %s" % (v.name, len(keys), t1 - t0, out.strip()))
            v.probe = Probe(v.port, keys, args.probe_rate)
            v.probe.start()
        time.sleep(1.0)
        results = []
        for rnd in range(args.rounds):
            for v in variants:
                if not args.all_probes:
                    # Only this variant's client reads: the other gateways' probes wait, so
                    # each is measured with its own client on the machine, not three.
                    for o in variants:
                        if o is not v:
                            o.probe.hold.set()
                    v.probe.hold.clear()
                for case in ("quiet", "flushed", "rejected"):
                    if case != "rejected":
                        flush_nodes(v.memcached())
                    if case == "quiet":
                        v.probe.hold.set()  # no client: the restore runs unpaced
                    b0 = time.monotonic()
                    time.sleep(args.idle)
                    t0 = time.monotonic()
                    baseline = v.probe.window(b0, t0)
                    out = ctl(v.bindir, v.admin_port, "restore", "--in", v.snap)
                    t1 = time.monotonic()
                    v.probe.hold.clear()
                    during = v.probe.window(t0, t1)
                    m = re.search(r"(\d+) applied, (\d+) skipped as expired, (\d+) older", out)
                    res = {"variant": v.name, "case": case, "round": rnd, "secs": t1 - t0,
                           "items_per_s": len(keys) / (t1 - t0),
                           "applied": int(m.group(1)) if m else None,
                           "older": int(m.group(3)) if m else None,
                           "probe": during, "baseline": baseline, "t": (b0, t0, t1)}
                    log("round %d, %s, %s: %.3f s, %.0f items/s, applied %s, older %s; probe "
                        "p99 %.2f ms during, %.2f ms before" % (
                            rnd + 1, v.name, case, res["secs"], res["items_per_s"],
                            res["applied"], res["older"], during.get("p99", 0),
                            baseline.get("p99", 0)))
                    results.append(res)
        for v in variants:
            v.probe.stop_ev.set()
            v.probe.join(timeout=10)
        return variants, results
    finally:
        for v in variants:
            if hasattr(v, "probe"):
                v.probe.stop_ev.set()
            v.stop()


def pooled(probe, windows):
    """The probe's numbers over several windows together."""
    lat = sorted(l for t, l, ok in probe.samples if ok and any(a <= t < b for a, b in windows))
    if not lat:
        return {"n": 0}
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000.0  # noqa: E731
    return {"n": len(lat), "p50": q(0.5), "p99": q(0.99)}


def render(args, info, variants, results, took):
    def med(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if xs else 0
    out = ["### Restore: single-site and with a peer (issue 15, point 3)\n"]
    cmd = "/usr/bin/python3 tests/bench/run_restore_bench.py --keys %d --rounds %d --probe-rate %d" \
        % (args.keys, args.rounds, args.probe_rate)
    if args.before_bin:
        cmd += " --before-bin BEFORE/bin"
    if not args.peer:
        cmd += " --no-peer"
    if args.all_probes:
        cmd += " --all-probes"
    out.append("Command: `%s --out docs/BENCHMARKS.md`%s, %s, commit %s, %s cores (%s), load "
               "average at the end %s; took %.0f s.\n"
               % (cmd, " (BEFORE: a build of the commit before the fix)" if args.before_bin else "",
                  info["date"], info["commit"], info["nproc"], info["cpu"], info["load"], took))
    out.append("Two memcached nodes (`-t 1`) and one gateway (2 threads) per variant, on loopback; "
               "%d keys with 100-byte values, one snapshot, then per round: flush the nodes and "
               "restore it with the probe (below) held, so no client reads (the restore runs "
               "unpaced); flush and restore it with the probe reading (paced: "
               "gateway/transfer/ingest.c); restore it again over the same items (every record "
               "`rejected_older`). Items/s over geogatectl's wall time (upload and apply), median "
               "of %d rounds (all rounds in brackets). A probe client reads random keys through "
               "the same gateway, one `get` at a time, %d/s; p99 during the restores of all "
               "rounds pooled, against the %.0f s right before each restore (no restore "
               "running); per round: each restore's p99 against its own idle seconds. %s Every process shares the same 2 cores.\n"
               % (args.keys, args.rounds, args.probe_rate, args.idle,
                  "Every variant's probe reads the whole time (--all-probes)." if args.all_probes
                  else "Only the probe of the variant being measured reads; the other variants' "
                  "gateways and nodes sit idle meanwhile."))
    out.append("| gateway | restore | items/s | probe p50 ms, idle / during | "
               "probe p99 ms, idle / during | p99 during / idle | per round (median) | "
               "snapshot items/s |")
    out.append("|---|---|---:|---:|---:|---:|---|---:|")
    for v in variants:
        for case, label in (("quiet", "into flushed nodes, no client reading"),
                            ("flushed", "into flushed nodes, probe reading"),
                            ("rejected", "over the same items (all `rejected_older`), probe "
                             "reading")):
            runs = [r for r in results if r["variant"] == v.name and r["case"] == case]
            if case == "quiet":
                out.append("| %s | %s | **%.0f** (%s) | | | | | %s |" % (
                    v.name, label, med([r["items_per_s"] for r in runs]),
                    ", ".join("%.0f" % r["items_per_s"] for r in runs),
                    "%.0f" % (args.keys / v.snap_s)))
                continue
            idle = pooled(v.probe, [(r["t"][0], r["t"][1]) for r in runs])
            during = pooled(v.probe, [(r["t"][1], r["t"][2]) for r in runs])
            ratio = during["p99"] / idle["p99"] if idle.get("p99") and during.get("p99") else 0
            per = [r["probe"]["p99"] / r["baseline"]["p99"] for r in runs
                   if r["probe"].get("p99") and r["baseline"].get("p99")]
            out.append("| %s | %s | **%.0f** (%s) | %.2f / %.2f | %.2f / %.2f | %.2fx (n=%d) | "
                       "%s (**%.2fx**) | %s |" % (
                v.name, label, med([r["items_per_s"] for r in runs]),
                ", ".join("%.0f" % r["items_per_s"] for r in runs),
                idle.get("p50", 0), during.get("p50", 0), idle.get("p99", 0),
                during.get("p99", 0), ratio, during["n"],
                ", ".join("%.2f" % x for x in per), med(per) if per else 0, ""))
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="markdown file whose restore-bench section to (re)write")
    ap.add_argument("--keys", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--probe-rate", type=int, default=2000)
    ap.add_argument("--idle", type=float, default=2.0,
                    help="seconds of probe with no restore before each restore")
    ap.add_argument("--before-bin", help="a bin/ directory to measure side by side (single-site)")
    ap.add_argument("--all-probes", action="store_true",
                    help="every variant's probe reads the whole time (default: only the one "
                    "being measured)")
    ap.add_argument("--no-peer", dest="peer", action="store_false",
                    help="leave out the site with a peer")
    args = ap.parse_args()
    info = machine_info()

    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(1800)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="geogate-restore-bench-") as tmp:
        try:
            variants, results = run(args, tmp)
        finally:
            signal.alarm(0)
        report = render(args, info, variants, results, time.time() - t0)
    print(report)
    if args.out:
        write_marked_section(args.out, "restore-bench", report)
        log("wrote the restore-bench section of %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
