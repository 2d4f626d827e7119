#!/usr/bin/python3
"""Where site A's gateway spends its work per request, replication on vs off, deterministically.

Builds the replication benchmark's lab (two sites, two memcached nodes each, direct link,
fsync everysec), restarts site a's gateway under a wrapper and sends it a fixed number of
requests with bin/geogate-bench (50 connections, no pipelining, 1:4 set:get, 100-byte
values), first to the replicating config ("on"), then to the same config without `wan:`
("off").  The wrapper is one of:

  --tool callgrind   valgrind --tool=callgrind: instructions per request, the same on a busy
                     machine; the counters are zeroed after the warm-up and dumped after the
                     measured requests (callgrind_control), so start-up is left out;
  --tool strace      strace -c -f attached for the measured requests: syscalls per request;
  --tool perf        perf trace -s attached likewise (far lighter than strace);
  --tool perfrec     perf record -e cpu-clock -g attached likewise (kernel time by function);
  --tool cpu         no wrapper: user+sys CPU of the process (/proc/PID/stat) per request.

Output files go to --outdir (callgrind.out.on / .off, strace.on / .off); a one-line summary
per mode goes to stdout.  Every child is stopped on exit.
"""
import argparse
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402
from multisite import Lab  # noqa: E402
from run_repl_bench import BENCH, plain_config, proc_cpu, wait_peer_drained  # noqa: E402


def bench(port, prefix, args, requests, warmup=False):
    argv = [BENCH, "--port", str(port), "--connections", "50", "--pipeline", "1",
            "--ratio", "1:4", "--value-size", "100", "--keys", str(args.keys),
            "--key-prefix", prefix, "--timeout", "30", "--requests", str(requests),
            "--seed", "1", "--json"]
    if warmup:
        argv.append("--warmup-keys")
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=1200)
    if r.returncode != 0:
        raise RuntimeError("geogate-bench: %s" % r.stderr.decode()[-500:])
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def gateway_pid(wrapper_pid):
    """The geogate process: the wrapper itself (valgrind execs the tool) or strace's child."""
    try:
        kids = open("/proc/%d/task/%d/children" % (wrapper_pid, wrapper_pid)).read().split()
    except OSError:
        kids = []
    return int(kids[0]) if kids else wrapper_pid


def run_mode(lab, mode, cfg, port, args):
    out = os.path.join(args.outdir, "%s.%s" % (args.tool, mode))
    if args.tool == "callgrind":
        wrap = ["valgrind", "--tool=callgrind", "--callgrind-out-file=%s.%%p" % out,
                "--collect-systime=nsec" if args.systime else "--collect-systime=no"]
    else:
        wrap = []
    p = harness.Proc(wrap + [harness.GEOGATE, "--config", cfg], "geogate:%s" % mode,
                     stderr_path=os.path.join(lab.dir, "prof-%s.log" % mode))
    try:
        harness.wait_port(port, timeout=120, proc=p.p)
        if mode == "on":
            deadline = time.monotonic() + 120
            while lab.stats("a").get("peer:b:state") != "up":
                if time.monotonic() > deadline:
                    raise RuntimeError("a->b not up")
                time.sleep(0.2)
        bench(port, mode + ":", args, 1, warmup=True)
        bench(port, mode + ":", args, args.warmup)
        if mode == "on":
            wait_peer_drained(lab, "a", "b", 300)
        if args.tool == "callgrind":
            subprocess.run(["callgrind_control", "-z", str(p.p.pid)], capture_output=True,
                           timeout=120, check=True)
        pid = gateway_pid(p.p.pid)
        tracer = None
        if args.tool in ("strace", "perf", "perfrec"):
            # attached for the measured requests only, every thread
            argv = {"strace": ["strace", "-c", "-f", "-p", str(pid), "-o", out],
                    "perf": ["perf", "trace", "-s", "-p", str(pid), "-o", out],
                    "perfrec": ["perf", "record", "-e", "cpu-clock", "-F", "4000", "-g",
                                "-p", str(pid), "-o", out]}[args.tool]
            tracer = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        st0 = dict(lab.stats("a"), **lab.stats("b")) if mode == "on" else {}
        c0 = proc_cpu(pid)
        t0 = time.monotonic()
        r = bench(port, mode + ":", args, args.requests)
        if mode == "on":
            wait_peer_drained(lab, "a", "b", 300)
        cpu = proc_cpu(pid) - c0
        st1 = dict(lab.stats("a"), **lab.stats("b")) if mode == "on" else {}
        secs = time.monotonic() - t0
        if tracer is not None:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(60)
        if args.tool == "callgrind":
            subprocess.run(["callgrind_control", "-d", "measured", str(p.p.pid)],
                           capture_output=True, timeout=120, check=True)
    finally:
        p.stop()
    line = "%s: %d requests, %.2f s, gateway CPU %.1f us/request" % (
        mode, r["requests"], secs, 1e6 * cpu / r["requests"])
    if mode == "on":
        line += ", %d mutations shipped in %d batches" % (
            st1["peer:b:shipped"] - st0["peer:b:shipped"],
            st1["inbound:batches"] - st0["inbound:batches"])
    if args.tool == "callgrind":
        dumps = sorted(glob.glob("%s.*.1" % out)) or sorted(glob.glob("%s.*" % out))
        ann = subprocess.run(["callgrind_annotate", dumps[-1]], capture_output=True,
                             text=True).stdout
        m = re.search(r"^([\d,]+) .*PROGRAM TOTALS", ann, re.M)
        if m:
            ir = int(m.group(1).replace(",", ""))
            line += ", %d instructions/request (%s)" % (ir // r["requests"], dumps[-1])
    print(line, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tool", choices=("callgrind", "strace", "perf", "perfrec", "cpu"), default="callgrind")
    ap.add_argument("--requests", type=int, default=50000)
    ap.add_argument("--warmup", type=int, default=5000)
    ap.add_argument("--keys", type=int, default=100000)
    ap.add_argument("--modes", default="on,off")
    ap.add_argument("--systime", action="store_true", help="callgrind: also collect syscall time")
    ap.add_argument("--outdir", default="/tmp/geogate-prof")
    args = ap.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    with Lab(["a", "b"], nodes=2, wanem=False, fsync="everysec", threads=2, mem_mb=256,
             log_level="warn") as lab:
        a = lab.sites["a"]
        lab.stop_site("a")
        for mode in args.modes.split(","):
            if mode == "on":
                run_mode(lab, mode, a.config, a.port, args)
            else:
                port = harness.free_port()
                run_mode(lab, mode, plain_config(lab, "a", port), port, args)


if __name__ == "__main__":
    main()
