#!/usr/bin/python3
"""Site failover benchmark (issue 4, point 8): time from local pool loss to reads served by the
peer, client errors during the switch, and the hit ratio over the first minute after failback
with warm-up on (default config) and off (failover.warmup.max_time: 0), side by side.

    /usr/bin/python3 tests/bench/run_failover_bench.py [--quick] [--before-bin DIR] [--out docs/BENCHMARKS.md]

Each scenario is a fresh two-site lab (tests/integration/multisite.Lab: us-east and eu-west,
two memcached nodes each, one replicating geogate per site, lab certificates, loopback):

  1. 20,000 keys are set at us-east (exptime 1 h) and replicated to eu-west;
  2. a read load runs at us-east: 4 client threads, 500 single-key `gets` per second each,
     keys uniform over the 20,000; on a miss the client sets the key again (cache-aside:
     what an application does after reading its database) -- those sets are counted as
     "database loads";
  3. every us-east memcached node is killed (SIGKILL); reads switch to eu-west;
  4. the nodes are started again EMPTY on the same ports; after pool.retry_timeout and
     failover.hold_down the site fails back; the load runs on for a minute (30 s with
     --quick) after failback.

Where each answer came from is told by its cas token (a value read from a peer carries its
version clock, > 2^40; a local one memcached's small cas), so the local hit ratio is measured
at the client.  A third, shorter scenario freezes the nodes (SIGSTOP) instead of killing them:
then the gateway only learns of the loss through pool.timeout.

A fourth scenario puts a WAN emulator link (15 ms each way, as `make demo`'s) between the
sites, fails us-east over to eu-west, and reads with 1, 4 and 32 concurrent clients: each
read should cost one link round trip, so the report gives the median read latency divided by
the link's RTT (measured by echoing through an emulator link with the same settings).

The markdown report goes between `<!-- failover-bench:start -->` and
`<!-- failover-bench:end -->` of --out (appended at the end if missing); nothing outside the
markers is touched.  Every child is stopped on exit; every wait is bounded.
"""
import argparse
import calendar
import datetime
import os
import platform
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchdoc import write_marked_section  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SITES = ["us-east", "eu-west"]
NKEYS = 20000
THREADS = 4
RATE = 500            # gets per second per client thread
HOLD_DOWN_MS = 5000   # the default
RETRY_MS = 2000       # the default pool.retry_timeout


def log(msg):
    print("[failover-bench] " + msg, file=sys.stderr, flush=True)


def setup_imports(bin_dir):
    if bin_dir:
        os.environ["GEOGATE_BIN"] = os.path.abspath(bin_dir)
    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    global Lab, MCConn, ReadLoad, load_keys
    from multisite import Lab, MCConn  # noqa: F401
    from test_failover import ReadLoad, load_keys  # noqa: F401


def value_of(k):
    return b"value-of-" + k + b"-" + b"x" * 60


def log_lines(lab, name, text):
    """(unix time, line) of the site's gateway log lines containing text."""
    out = []
    for line in lab.log(name).splitlines():
        if text not in line:
            continue
        try:
            sec, ms = line.split(" ", 1)[0].rstrip("Z").split(".")
            out.append((calendar.timegm(time.strptime(sec, "%Y-%m-%dT%H:%M:%S")) + int(ms) / 1000.0,
                        line))
        except ValueError:
            pass
    return out


def wait_log(lab, name, text, after, timeout):
    deadline = time.monotonic() + timeout
    while True:
        for t, line in log_lines(lab, name, text):
            if t >= after - 0.005:
                return t, line
        if time.monotonic() >= deadline:
            return None, None
        time.sleep(0.05)


def lab_for(warmup):
    fo = ["failover:",
          "  local_healthy_fraction: 0.5",
          "  hold_down: %d" % HOLD_DOWN_MS,
          "  warmup: { max_time: %d, hit_ratio: 0.9 }" % (600000 if warmup else 0)]
    return Lab(SITES, nodes=2, pool_timeout=250,
               pool_extra={"failure_limit": 3, "retry_timeout": RETRY_MS},
               extra_yaml="\n".join(fo) + "\n", wait_up=20.0)


def prepare(lab, keys):
    t = time.time()
    load_keys(lab, "us-east", keys, value_of)
    drain = lab.wait_drained(120)
    log("loaded %d keys in %.1f s, replicated in %.1f s" % (len(keys), time.time() - t, drain))


def switch_stats(rl, lab, t_loss, t_lost):
    """What the switch looked like from the clients and in the log."""
    fo_t, _ = wait_log(lab, "us-east", "-> failed_over", t_loss, 10)
    downs = [t for t, _ in log_lines(lab, "us-east", "marked down") if t >= t_loss - 0.01]
    first_peer = rl.first_ok_after(t_lost, peer=True)
    errs = rl.errors(t_loss)
    # the longest time a client waited for any answer, across the switch
    stall = max((r.t1 - r.t0 for r in rl.recs if r.t1 >= t_loss and r.t0 < t_loss + 3.0), default=0)
    return {
        "to_peer_ms": (first_peer - t_loss) * 1000 if first_peer else None,
        "to_switch_ms": (fo_t - t_loss) * 1000 if fo_t else None,
        "threshold_to_switch_ms": (fo_t - downs[1]) * 1000 if fo_t and len(downs) >= 2 else None,
        "errors": len(errs),
        "errors_1s": sum(1 for e in errs if e.t0 < t_loss + 1.0),
        "errors_later": sum(1 for e in errs if e.t0 >= t_loss + 1.0),
        "error_kinds": kinds(errs),
        "last_error_ms": (max(e.t1 for e in errs) - t_loss) * 1000 if errs else None,
        "stall_ms": stall * 1000,
        "switched_at": fo_t,
    }


def kinds(recs):
    k = {}
    for r in recs:
        e = r.err
        if e.startswith("SERVER_ERROR node"):
            e = "SERVER_ERROR node ... " + e.split(" ", 3)[-1]
        k[e] = k.get(e, 0) + 1
    return ", ".join("%d × %s" % (n, e) for e, n in sorted(k.items(), key=lambda x: -x[1]))


def run_failback(warmup, before_s, failed_s, window_s):
    name = "warm-up on" if warmup else "warm-up off"
    log("scenario: %s" % name)
    keys = [b"fb:%06d" % i for i in range(NKEYS)]
    with lab_for(warmup) as lab:
        prepare(lab, keys)
        rl = ReadLoad(lab.sites["us-east"].port, keys, threads=THREADS, seed=17, rate=RATE,
                      refill=set(keys), value_of=value_of)
        rl.start()
        try:
            t_start = time.time()
            time.sleep(before_s)
            t_loss = time.time()
            for i in range(2):
                lab.kill_node("us-east", i)
            t_lost = time.time()
            time.sleep(failed_s)
            t_restart = time.time()
            for i in range(2):
                lab.start_node("us-east", i)
            t_back, _ = wait_log(lab, "us-east", "-> warmup", t_restart, 20)
            if t_back is None:
                raise RuntimeError("%s: no failback within 20 s of restarting the nodes\n%s"
                                   % (name, lab.log_tail("us-east", 30)))
            refills0 = rl_refills(rl)
            time.sleep(max(0.0, t_back + window_s - time.time()) + 0.2)
            refills1 = rl_refills(rl)
            t_end = t_back + window_s
        finally:
            rl.stop()
        sw = switch_stats(rl, lab, t_loss, t_lost)
        wu_end, wu_line = wait_log(lab, "us-east", "warmup -> local", t_back, 0)
        before = rl.totals(rl.window(t_start + 1.0, t_loss))
        failed = rl.totals(rl.window(t_loss + 1.0, t_restart))
        after = rl.totals(rl.window(t_back, t_end))
        first10 = rl.totals(rl.window(t_back, t_back + 10.0))
        buckets = []
        step = 5.0
        t = t_back
        while t < t_end - 0.01:
            buckets.append(rl.totals(rl.window(t, min(t + step, t_end))))
            t += step
        res = {
            "name": name, "switch": sw, "before": before, "failed": failed, "after": after,
            "first10": first10, "buckets": buckets, "step": step,
            "failback_ms": (t_back - t_restart) * 1000,
            "warmup_end_s": (wu_end - t_back) if wu_end else None,
            "warmup_end_why": wu_line.split(": ")[-1] if wu_line else None,
            "refills_window": refills1 - refills0,
            "errors_after_failback": len(rl.errors(t_back, t_end + 1)),
            "errors_after_failback_detail": "; ".join(
                "+%.2f s %s" % (e.t1 - t_back, e.err) for e in rl.errors(t_back, t_end + 1)[:6]),
            "downs_after_failback": [line.split(" ", 3)[-1] for t, line in
                                     log_lines(lab, "us-east", "marked down") if t >= t_back],
            "recover_s": recover_time(rl, t_back, t_end, before["hit_ratio"]),
        }
        log("%s: switch %s ms, %d errors (%s); hit ratio before %.3f, failed over %.3f, first "
            "10 s after failback %.3f (local %.3f), whole window %.3f; %d database loads" % (
                name, fmt(sw["to_peer_ms"]), sw["errors"], sw["error_kinds"], before["hit_ratio"],
                failed["hit_ratio"] or 0, first10["hit_ratio"] or 0, first10["local_ratio"] or 0,
                after["hit_ratio"] or 0, res["refills_window"]))
        return res


def rl_refills(rl):
    with rl.lock:
        return rl.refills


def recover_time(rl, t0, t1, target):
    """Seconds after t0 from which every 1-s window's hit ratio stays >= 0.9 x target."""
    secs = []
    t = t0
    while t < t1 - 0.5:
        secs.append(rl.totals(rl.window(t, t + 1.0))["hit_ratio"])
        t += 1.0
    last_bad = -1
    for i, r in enumerate(secs):
        if r is None or r < 0.9 * target:
            last_bad = i
    return last_bad + 1 if last_bad + 1 < len(secs) else None


def run_hang(before_s, hung_s):
    """Nodes frozen (SIGSTOP): the gateway learns of the loss only through pool.timeout."""
    log("scenario: nodes hang (SIGSTOP)")
    keys = [b"hg:%06d" % i for i in range(5000)]
    with lab_for(True) as lab:
        prepare(lab, keys)
        rl = ReadLoad(lab.sites["us-east"].port, keys, threads=THREADS, seed=23, rate=RATE,
                      timeout=5.0)
        rl.start()
        nodes = lab.sites["us-east"].memcached
        try:
            time.sleep(before_s)
            t_loss = time.time()
            for m in nodes:
                m.signal(signal.SIGSTOP)
            t_lost = time.time()
            time.sleep(hung_s)
        finally:
            for m in nodes:
                m.signal(signal.SIGCONT)
            rl.stop()
        sw = switch_stats(rl, lab, t_loss, t_lost)
        log("hang: switch %s ms, %d errors (%s), longest wait %.0f ms" % (
            fmt(sw["to_peer_ms"]), sw["errors"], sw["error_kinds"], sw["stall_ms"]))
        return {"name": "nodes hang (SIGSTOP)", "switch": sw}


# ------------------------------------------------------------------------------------------
# Failed-over reads over a WAN: latency against the link's round trip (issue 15, point 2)

PEER_CLIENTS = (1, 4, 32)
PEER_DELAY_MS = 15    # one-way, each direction: make demo's us-east <-> eu-west
PEER_JITTER_MS = 2
PEER_KEYS = 2000
PEER_SECONDS = 6


class _Echo:
    """A loopback TCP echo server (one thread per connection) to ping a link with."""

    def __init__(self):
        import socket
        import threading
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _serve(c):
        with c:
            while True:
                try:
                    d = c.recv(65536)
                except OSError:
                    return
                if not d:
                    return
                c.sendall(d)

    def close(self):
        self.lsock.close()


def link_rtt_ms(delay_ms, jitter_ms, n=300):
    """Median round trip of a 100-byte message echoed through a geogate-wanem link with the
    same delay and jitter as the sites' link: what one round trip over that link costs."""
    import socket
    import statistics
    from wanem import start_wanem
    echo = _Echo()
    try:
        with start_wanem({"ping": ("127.0.0.1", echo.port)}) as w:
            w.ctl.set("ping", dir="both", delay=delay_ms, jitter=jitter_ms)
            with socket.create_connection(("127.0.0.1", w.ports["ping"]), timeout=5) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                rtts = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    s.sendall(b"p" * 100)
                    got = 0
                    while got < 100:
                        d = s.recv(100 - got)
                        if not d:
                            raise RuntimeError("echo through the link closed")
                        got += len(d)
                    rtts.append((time.perf_counter() - t0) * 1000)
                    time.sleep(0.002)
        return statistics.median(rtts)
    finally:
        echo.close()


def bench_tool(*argv, timeout=60):
    import json
    tool = os.path.join(os.environ.get("GEOGATE_BIN") or os.path.join(ROOT, "bin"), "geogate-bench")
    r = subprocess.run([tool] + [str(a) for a in argv] + ["--json"], capture_output=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("geogate-bench %s: %s" % (" ".join(map(str, argv)),
                                                     r.stderr.decode("utf-8", "replace")))
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def run_peer_latency(geogate=None, label="this tree"):
    """us-east forced over to eu-west through a WAN emulator link of PEER_DELAY_MS each way;
    N clients (one connection each) read one key at a time as fast as answers come."""
    import harness
    saved = harness.GEOGATE
    if geogate:
        harness.GEOGATE = geogate
    log("scenario: failed-over reads over the WAN (%s)" % label)
    try:
        with Lab(SITES, nodes=2, wanem=True, admin=True, wait_up=20.0) as lab:
            for a, b_ in ((SITES[0], SITES[1]), (SITES[1], SITES[0])):
                lab.set_link(a, b_, delay=PEER_DELAY_MS, jitter=PEER_JITTER_MS)
            port = lab.sites["us-east"].port
            bench_tool("--port", port, "--keys", PEER_KEYS, "--key-prefix", "wan:",
                       "--warmup-keys", "--requests", 1, "--ratio", "0:1", "--connections", 4)
            lab.wait_drained(60)
            code, body = lab.admin("us-east", "POST", "/failover?to=eu-west")
            if code != 200:
                raise RuntimeError("failover refused: %d %s" % (code, body))
            deadline = time.monotonic() + 10
            while (lab.site_status("us-east") or {}).get("mode") != "failed_over":
                if time.monotonic() > deadline:
                    raise RuntimeError("us-east did not fail over")
                time.sleep(0.05)
            rows = []
            for n in PEER_CLIENTS:
                bench_tool("--port", port, "--keys", PEER_KEYS, "--key-prefix", "wan:",
                           "--ratio", "0:1", "--connections", n, "--duration", 1)  # connect, settle
                r = bench_tool("--port", port, "--keys", PEER_KEYS, "--key-prefix", "wan:",
                               "--ratio", "0:1", "--connections", n, "--duration", PEER_SECONDS)
                lat = r["latency_us"]
                rows.append({"clients": n, "reads": r["gets"], "hits": r["hits"],
                             "errors": r["errors"], "p50_ms": lat["p50"] / 1000.0,
                             "p90_ms": lat["p90"] / 1000.0, "p99_ms": lat["p99"] / 1000.0,
                             "mean_ms": lat["mean"] / 1000.0})
                log("%s: %d clients: median %.1f ms, p90 %.1f ms, %d reads, %d hits, %d errors"
                    % (label, n, rows[-1]["p50_ms"], rows[-1]["p90_ms"], r["gets"], r["hits"],
                       r["errors"]))
            health_rtt = None
            for pr in (lab.site_status("us-east") or {}).get("peers", []):
                if pr.get("site") == "eu-west":
                    health_rtt = pr.get("rtt_ms")
    finally:
        harness.GEOGATE = saved
    return {"label": label, "rows": rows, "health_rtt_ms": health_rtt}


def render_peer_latency(runs, rtt_ms):
    out = []
    w = out.append
    w("### Failed-over reads over the WAN: peer read latency / link RTT (issue 15, point 2)")
    w("")
    w("A fresh two-site lab with a WAN emulator (geogate-wanem) between the sites, %d ms "
      "one-way each direction with ±%d ms jitter, as `make demo`'s us-east ↔ eu-west; %d keys "
      "set at us-east and replicated, then us-east is failed over to eu-west "
      "(`POST /failover?to=eu-west`) and N clients (geogate-bench, one connection each) read "
      "one key at a time from us-east, each sending its next `get` when the answer came, for "
      "%d s. *Link RTT* is the median round trip of a 100-byte message echoed through a "
      "geogate-wanem link with the same settings (%.1f ms): what one round trip over the link "
      "costs. Goal: ratio ≤ 1.1 at each concurrency (one WAN round trip per read)."
      % (PEER_DELAY_MS, PEER_JITTER_MS, PEER_KEYS, PEER_SECONDS, rtt_ms))
    w("")
    head = "| clients |"
    rule = "|---:|"
    for r in runs:
        head += " %s: median read | p90 | **peer read latency / link RTT** | reads (errors) |" % r["label"]
        rule += "---:|---:|---:|---:|"
    w(head)
    w(rule)
    for i, n in enumerate(PEER_CLIENTS):
        line = "| %d |" % n
        for r in runs:
            x = r["rows"][i]
            line += " %.1f ms | %.1f ms | **%.2f** | %d (%d) |" % (
                x["p50_ms"], x["p90_ms"], x["p50_ms"] / rtt_ms, x["reads"], x["errors"])
        w(line)
    w("")
    w("The gateway's own view of the link (its last Health/Check round trip to eu-west, "
      "`rtt_ms` in `/status`): %s." % ", ".join("%s %s ms" % (r["label"], r["health_rtt_ms"])
                                                 for r in runs))
    return "\n".join(out)


# ------------------------------------------------------------------------------------------
# Report

def fmt(x, spec="%.0f"):
    return "—" if x is None else spec % x


def pct(x):
    return "—" if x is None else "%.1f%%" % (100.0 * x)


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def machine_info(check_dirty=True):
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        mc = subprocess.run(["memcached", "-V"], capture_output=True, timeout=5).stdout.decode().strip()
    except (OSError, subprocess.TimeoutExpired):
        mc = "?"
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, timeout=5).stdout.decode().strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "gateway", "wan",
                                "ring", "tls", "Makefile"], capture_output=True, timeout=5).stdout
        if check_dirty and dirty.strip():
            commit += " plus uncommitted changes in gateway/, wan/, ring/, tls/ or Makefile"
    except (OSError, subprocess.TimeoutExpired):
        commit = "?"
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "memcached": mc, "commit": commit, "load": loadavg()}


def render(args, info, runs, hang, took, window_s, peer=None):
    on, off = runs
    out = []
    w = out.append
    w("## Site failover: switch time, errors, warm failback (issue 4, point 8)")
    w("")
    w("Made by:")
    w("")
    w("    /usr/bin/python3 tests/bench/run_failover_bench.py%s%s%s --out %s" % (
        " --quick" if args.quick else "", " --bin DIR" if args.bin else "",
        " --before-bin %s" % args.before_bin if args.before_bin else "", args.out or "FILE"))
    w("")
    w("| machine | |")
    w("|---|---|")
    w("| cores (nproc) | %s |" % info["nproc"])
    w("| CPU | %s |" % info["cpu"])
    w("| kernel | %s |" % info["kernel"])
    w("| date | %s |" % info["date"])
    w("| memcached | %s |" % info["memcached"])
    w("| geogate commit | %s |" % info["commit"])
    w("| binaries | %s |" % (("--bin %s%s" % (args.bin, ": " + args.bin_note if args.bin_note else ""))
                             if args.bin else "bin/ (`make`)"))
    w("| load average (1, 5, 15 min) before / after | %s / %s |" % (info["load"], loadavg()))
    w("| whole run took | %.0f s |" % took)
    w("")
    w("Each scenario is a fresh two-site lab on loopback (us-east and eu-west, two memcached "
      "nodes and one geogate each, replicating over mTLS gRPC, no WAN delay). %d keys "
      "are set at us-east (exptime 1 h) and replicated; then %d client threads read at "
      "us-east, %d single-key `gets` per second each (%d/s), keys uniform over the %d; on a "
      "miss the client sets the key again (cache-aside: a *database load*). Both us-east "
      "memcached nodes are killed (SIGKILL) and %s s later started again **empty** on the same "
      "ports. us-east's failover config is the default (`local_healthy_fraction: 0.5`, "
      "`hold_down: 5000`, `warmup: {max_time: 600000, hit_ratio: 0.9}`) with warm-up on, and "
      "`warmup.max_time: 0` with warm-up off; pool `timeout: 250`, `failure_limit: 3`, "
      "`retry_timeout: 2000`. Where an answer came from is told by its cas token (a value read "
      "from a peer carries its version clock as the token), so *local* hit ratio is measured "
      "at the client." % (NKEYS, THREADS, RATE, THREADS * RATE, NKEYS, fmt(args.failed_s)))
    w("")
    w("### Local pool loss → reads served by the peer")
    w("")
    w("| loss | kill → first read served by eu-west | kill → `failed_over` logged | "
      "threshold crossed → `failed_over` | client errors (first 1 s / later) | "
      "last error after the loss | longest client wait | errors |")
    w("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in [on, off] + ([hang] if hang else []):
        s = r["switch"]
        label = r["name"] if r is hang else "nodes killed (run: %s)" % r["name"]
        last = s["last_error_ms"]
        w("| %s | %s ms | %s ms | %s ms | %d (%d / %d) | %s | %.0f ms | %s |" % (
            label, fmt(s["to_peer_ms"]), fmt(s["to_switch_ms"]), fmt(s["threshold_to_switch_ms"]),
            s["errors"], s["errors_1s"], s["errors_later"],
            "—" if last is None else "%s ms" % fmt(last),
            s["stall_ms"], s["error_kinds"] or "none"))
    w("")
    w("*threshold crossed*: the log line marking the second of two nodes down (healthy "
      "fraction 0 < 0.5); the failover tick runs every 100 ms. A node is marked down after "
      "`failure_limit` (3) failed requests: with killed nodes those fail at once (connection "
      "refused / reset); with frozen nodes each waits `pool.timeout` (250 ms). A read whose "
      "node fails under it is asked again at eu-west rather than failed, so those requests "
      "cost the client time (*longest client wait*), not errors.")
    w("")
    w("### Hit ratio around the failure and after failback")
    w("")
    w("| | warm-up on (default) | warm-up off (`max_time: 0`) |")
    w("|---|---:|---:|")
    w("| hit ratio before the failure | %s | %s |" % (pct(on["before"]["hit_ratio"]), pct(off["before"]["hit_ratio"])))
    w("| hit ratio while failed over (from eu-west) | %s | %s |" % (pct(on["failed"]["hit_ratio"]), pct(off["failed"]["hit_ratio"])))
    w("| nodes restarted → failback (`-> warmup` logged) | %.1f s | %.1f s |" % (on["failback_ms"] / 1000, off["failback_ms"] / 1000))
    w("| **hit ratio, first 10 s after failback** | **%s** | **%s** |" % (pct(on["first10"]["hit_ratio"]), pct(off["first10"]["hit_ratio"])))
    w("| local hit ratio, first 10 s after failback | %s | %s |" % (pct(on["first10"]["local_ratio"]), pct(off["first10"]["local_ratio"])))
    w("| **hit ratio, first %d s after failback** | **%s** | **%s** |" % (window_s, pct(on["after"]["hit_ratio"]), pct(off["after"]["hit_ratio"])))
    w("| local hit ratio, first %d s after failback | %s | %s |" % (window_s, pct(on["after"]["local_ratio"]), pct(off["after"]["local_ratio"])))
    w("| answers from eu-west in that time | %d | %d |" % (on["after"]["peer"], off["after"]["peer"]))
    w("| database loads (client sets after a miss) in that time | %d | %d |" % (on["refills_window"], off["refills_window"]))
    w("| every 1-s hit ratio ≥ 90%% of before from | %s | %s |" % (
        "%d s after failback" % on["recover_s"] if on["recover_s"] is not None else "not within the window",
        "%d s after failback" % off["recover_s"] if off["recover_s"] is not None else "not within the window"))
    w("| warm-up ended | %s | %s |" % (
        "%.1f s after failback (%s)" % (on["warmup_end_s"], on["warmup_end_why"]) if on["warmup_end_s"] is not None else "not within the window",
        "%.1f s after failback (%s)" % (off["warmup_end_s"], off["warmup_end_why"]) if off["warmup_end_s"] is not None else "not within the window"))
    w("| client errors after failback | %d | %d |" % (on["errors_after_failback"], off["errors_after_failback"]))
    for r in (on, off):
        if r["errors_after_failback"]:
            w("")
            w("Client errors after failback, %s: %s (seconds after failback); nodes marked down "
              "meanwhile: %s." % (r["name"], r["errors_after_failback_detail"],
                                  "; ".join(r["downs_after_failback"]) or "none"))
    w("")
    w("Hit ratio seen by the clients (local in brackets) per %.0f s after failback:" % on["step"])
    w("")
    w("| seconds after failback | warm-up on | warm-up off |")
    w("|---|---:|---:|")
    for i, (a, b_) in enumerate(zip(on["buckets"], off["buckets"])):
        w("| %d–%d | %s (%s) | %s (%s) |" % (i * on["step"], (i + 1) * on["step"], pct(a["hit_ratio"]),
                                          pct(a["local_ratio"]), pct(b_["hit_ratio"]), pct(b_["local_ratio"])))
    w("")
    w("With warm-up on, a local miss is read from eu-west, answered, and added locally with its "
      "original expiry and version, so clients keep their hit ratio while the local pool "
      "fills, and the database sees no loads until warm-up ends; it ends when one second's "
      "*local* hit ratio reaches `warmup.hit_ratio` (0.9): the keys not yet filled then miss "
      "and are loaded by the clients. With warm-up off the recovered pool is cold: every first "
      "read of a key misses and the client loads it.")
    if peer is not None:
        w("")
        w(render_peer_latency(*peer))
        if args.before_bin:
            w("")
            w("*before*: `--before-bin %s` (%s), the gateway built from the commit before the "
              "fix, run by this same script in the same run; the emulator is this tree's for both."
              % (args.before_bin, args.before_note or "an older build"))
    return "\n".join(out)


def write_section(path, text):
    """Replace this script's marked section of path (benchdoc.write_marked_section)."""
    write_marked_section(path, "failover-bench", text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="markdown file whose failover-bench section to (re)write")
    ap.add_argument("--quick", action="store_true", help="30 s after failback instead of 60")
    ap.add_argument("--bin", help="directory of geogate and geogate-wanem (default: "
                    "$GEOGATE_BIN or bin/)")
    ap.add_argument("--bin-note", help="what the --bin binaries are, for the report")
    ap.add_argument("--no-hang", action="store_true", help="skip the SIGSTOP scenario")
    ap.add_argument("--before-bin", help="directory of an older geogate: the WAN read latency "
                    "scenario also runs with it, as a 'before' column")
    ap.add_argument("--before-note", help="what the --before-bin build is, for the report")
    ap.add_argument("--peer-latency-only", action="store_true",
                    help="run only the WAN read latency scenario and print its table")
    args = ap.parse_args()
    setup_imports(args.bin)
    window_s = 30 if args.quick else 60
    args.failed_s = 5.0 if args.quick else 8.0
    before_s = 5.0 if args.quick else 10.0
    info = machine_info(check_dirty=not args.bin)
    t0 = time.time()

    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.alarm(900)
    signal.signal(signal.SIGALRM, on_signal)
    try:
        rtt = link_rtt_ms(PEER_DELAY_MS, PEER_JITTER_MS)
        log("link RTT (echo through a %d ms ± %d ms emulator link): %.2f ms"
            % (PEER_DELAY_MS, PEER_JITTER_MS, rtt))
        peer_runs = []
        if args.before_bin:
            peer_runs.append(run_peer_latency(os.path.join(args.before_bin, "geogate"), "before"))
        peer_runs.append(run_peer_latency(None, "after" if args.before_bin else "this tree"))
        if args.peer_latency_only:
            print(render_peer_latency(peer_runs, rtt))
            return 0
        runs = [run_failback(True, before_s, args.failed_s, window_s),
                run_failback(False, before_s, args.failed_s, window_s)]
        hang = None if args.no_hang else run_hang(5.0 if args.quick else 8.0, 5.0)
    finally:
        signal.alarm(0)
    report = render(args, info, runs, hang, time.time() - t0, window_s, (peer_runs, rtt))
    print(report)
    if args.out:
        write_section(args.out, report)
        log("wrote the failover-bench section of %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
