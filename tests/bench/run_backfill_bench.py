#!/usr/bin/python3
"""Backfill benchmark (issue 5, point 5): items per second over one WAN link, and the peer's
own clients' p99 latency while it serves a backfill, with the rate limit and without, side by
side in one run.

    /usr/bin/python3 tests/bench/run_backfill_bench.py [--keys N] [--out docs/BENCHMARKS.md]

One two-site lab (tests/integration/multisite.Lab: us-east and eu-west, two memcached nodes
each, one replicating geogate per site, lab certificates, the WAN emulator between them with
--delay ms each way):

  1. N keys (default 100,000; 100-byte values) are set at us-east while eu-west is stopped;
     us-east then restarts with an empty spool, so nothing is queued for eu-west;
  2. a probe client at us-east reads random keys (single-key gets, --probe-rate per second)
     the whole time and records each latency;
  3. eu-west runs `POST /backfill?from=us-east&rate=R` for each R in --rates (0 = no
     limit); between runs eu-west's memcached nodes are flushed, so every run moves N items;
  4. reported per run: items/s (items / the job's elapsed time), and the probe's p50/p99
     during the run next to the probe's numbers over the seconds right before it (no
     backfill running); the runs of every rate are interleaved over --rounds rounds.

The markdown report goes between `<!-- backfill-bench:start -->` and
`<!-- backfill-bench:end -->` of --out.  Every child is stopped on exit; every wait is bounded.
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "tests", "bench"))

from benchdoc import write_marked_section  # noqa: E402
from run_failover_bench import machine_info  # noqa: E402


def log(msg):
    print("[backfill-bench] " + msg, file=sys.stderr, flush=True)


class Probe(threading.Thread):
    """Single-key gets at a fixed rate on one connection; (t, latency s, ok) per request."""

    def __init__(self, port, keys, rate):
        super().__init__(daemon=True)
        self.port, self.keys, self.rate = port, keys, rate
        self.samples = []
        self.stop_ev = threading.Event()
        self.hold = threading.Event()  # set: send nothing until cleared

    def run(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rng = random.Random(7)
        period = 1.0 / self.rate
        nxt = time.monotonic()
        buf = b""
        while not self.stop_ev.is_set():
            if self.hold.is_set():
                time.sleep(0.005)
                nxt = time.monotonic()
                continue
            k = rng.choice(self.keys).encode()
            t0 = time.monotonic()
            ok = True
            try:
                s.sendall(b"get " + k + b"\r\n")
                while not buf.endswith(b"END\r\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        raise OSError("closed")
                    buf += chunk
            except OSError:
                ok = False
                s.close()
                s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            buf = b""
            self.samples.append((t0, time.monotonic() - t0, ok))
            nxt += period
            left = nxt - time.monotonic()
            if left > 0:
                time.sleep(left)
            else:
                nxt = time.monotonic()
        s.close()

    def window(self, t0, t1):
        lat = sorted(l for t, l, ok in self.samples if t0 <= t < t1 and ok)
        errs = sum(1 for t, l, ok in self.samples if t0 <= t < t1 and not ok)
        if not lat:
            return {"n": 0, "errors": errs}
        q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000.0  # noqa: E731
        return {"n": len(lat), "errors": errs, "p50": q(0.5), "p99": q(0.99), "max": lat[-1] * 1000.0}


def flush_site(lab, name):
    for m in lab.sites[name].memcached:
        with socket.create_connection(("127.0.0.1", m.port), timeout=5) as s:
            s.sendall(b"flush_all\r\n")
            if s.recv(100) != b"OK\r\n":
                raise RuntimeError("flush_all failed")


def run(args):
    from multisite import Lab
    keys = ["bb:%07d" % i for i in range(args.keys)]
    results = []
    with Lab(["us-east", "eu-west"], nodes=2, admin=True, wanem=True, mem_mb=512) as lab:
        if args.delay:
            for a, b in (("us-east", "eu-west"), ("eu-west", "us-east")):
                lab.set_link(a, b, delay=args.delay)
        lab.stop_site("eu-west")
        c = lab.client("us-east", timeout=30)
        t0 = time.monotonic()
        for i in range(0, len(keys), 1000):
            c.set_many({k: b"v" * 100 for k in keys[i:i + 1000]}, expire=0)
        log("loaded %d keys in %.1fs" % (len(keys), time.monotonic() - t0))
        lab.stop_site("us-east")
        shutil.rmtree(lab.sites["us-east"].spool_dir)
        os.makedirs(lab.sites["us-east"].spool_dir)
        lab.start_site("us-east")
        lab.start_site("eu-west")
        lab.wait_links_up()
        probe = Probe(lab.sites["us-east"].port, keys, args.probe_rate)
        probe.start()
        time.sleep(1.0)
        for rnd in range(args.rounds):
            for rate in args.rates:
                flush_site(lab, "eu-west")
                b0 = time.monotonic()
                time.sleep(args.idle)  # this run's own baseline, right before it
                baseline = probe.window(b0, time.monotonic())
                code, body = lab.admin("eu-west", "POST", "/backfill?from=us-east&rate=%d" % rate)
                if code != 200:
                    raise RuntimeError("backfill refused: %d %s" % (code, body))
                t0 = time.monotonic()
                deadline = t0 + args.timeout
                while True:
                    st = json.loads(lab.admin("eu-west", "GET", "/backfill")[1])
                    if st["state"] != "running":
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError("backfill did not end within %ds" % args.timeout)
                    time.sleep(0.2)
                during = probe.window(t0, time.monotonic())
                if st["state"] != "done":
                    raise RuntimeError("backfill %s: %s" % (st["state"], st.get("error")))
                res = {"round": rnd, "rate": rate, "items": st["items"],
                       "elapsed_ms": st["elapsed_ms"],
                       "items_per_s": st["items"] * 1000.0 / max(1, st["elapsed_ms"]),
                       "applied": st["applied"], "probe": during, "baseline": baseline}
                log("round %d, rate %s: %s" % (rnd + 1, rate or "unlimited", res))
                results.append(res)
        probe.stop_ev.set()
        probe.join(timeout=10)
    return results


def render(args, info, results, took):
    def med(xs):
        xs = sorted(x for x in xs if x is not None)
        return xs[len(xs) // 2] if xs else None

    def ms(x):
        return "%.2f" % x if x is not None else "-"
    out = []
    out.append("## Backfill (issue 5)\n")
    out.append("Command: `/usr/bin/python3 tests/bench/run_backfill_bench.py --keys %d --delay %d "
               "--rates %s --rounds %d --out docs/BENCHMARKS.md` (part of `make bench`), %s, "
               "commit %s, %s cores (%s), load average at the end %s; took %.0f s.\n"
               % (args.keys, args.delay, ",".join(str(r) for r in args.rates), args.rounds,
                  info["date"], info["commit"], info["nproc"], info["cpu"], info["load"], took))
    out.append("Two sites on loopback through the WAN emulator (%d ms each way), two memcached "
               "nodes each; eu-west pulls %d keys (100-byte values) from us-east while a probe "
               "client reads random keys at us-east, %d gets/s, one at a time.  eu-west's gateway "
               "and memcached apply what arrives on the same 2 cores, work a real deployment does "
               "in another region, so the probe's latency shows the whole machine's load.  Each "
               "backfill run has its own baseline: the probe over the %.0f s right before it, with "
               "no backfill running; runs of all rates are interleaved, %d rounds, medians shown.\n"
               % (args.delay, args.keys, args.probe_rate, args.idle, args.rounds))
    out.append("| backfill rate limit | items/s | time | probe p50 ms, no backfill | during | "
               "probe p99 ms, no backfill | during | p99 during / before (per round) | probe errors |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for rate in args.rates:
        runs = [r for r in results if r["rate"] == rate]
        ratios = [r["probe"]["p99"] / r["baseline"]["p99"] for r in runs
                  if r["probe"].get("p99") and r["baseline"].get("p99")]
        out.append("| %s | %.0f | %.1f s | %s | %s | %s | %s | **%.2fx** (%s) | %d |" % (
            "%d items/s" % rate if rate else "none",
            med([r["items_per_s"] for r in runs]), med([r["elapsed_ms"] for r in runs]) / 1000.0,
            ms(med([r["baseline"].get("p50") for r in runs])),
            ms(med([r["probe"].get("p50") for r in runs])),
            ms(med([r["baseline"].get("p99") for r in runs])),
            ms(med([r["probe"].get("p99") for r in runs])),
            med(ratios) or 0, ", ".join("%.2f" % x for x in ratios),
            sum(r["probe"]["errors"] for r in runs)))
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="markdown file whose backfill-bench section to (re)write")
    ap.add_argument("--keys", type=int, default=100000)
    ap.add_argument("--delay", type=int, default=10, help="WAN delay each way, ms")
    ap.add_argument("--rates", default="0,20000,5000", help="comma-separated rate limits (0 = none)")
    ap.add_argument("--probe-rate", type=int, default=500)
    ap.add_argument("--idle", type=float, default=3.0,
                    help="seconds of probe with no backfill before each run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=int, default=300)
    args = ap.parse_args()
    args.rates = [int(x) for x in args.rates.split(",")]
    info = machine_info()

    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(900)
    t0 = time.time()
    try:
        results = run(args)
    finally:
        signal.alarm(0)
    report = render(args, info, results, time.time() - t0)
    print(report)
    if args.out:
        write_marked_section(args.out, "backfill-bench", report)
        log("wrote the backfill-bench section of %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
