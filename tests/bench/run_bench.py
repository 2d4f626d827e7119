#!/usr/bin/python3
"""make bench: memcached direct, nutcracker and geogate side by side, results to docs/BENCHMARKS.md.

Starts two memcached nodes, nutcracker (twemproxy) and bin/geogate over those same two nodes,
all on free loopback ports, and drives each with bin/geogate-bench:

  * throughput and latency at 50 connections, no pipelining, 1:4 set:get, 100-byte values
    (plus a pipelined row), targets interleaved round by round, median of the rounds;
  * the proxy process's CPU seconds per 100k requests, from utime+stime in /proc/PID/stat;
  * RSS per idle client connection (5,000 connections that each made one request);
  * RSS of geogate sampled over a long run (the soak);
  * a meta-protocol row: the main configuration again with `geogate-bench --meta` (ms for
    sets, `mg <key> v f` for gets) against geogate and against memcached directly, with
    its ratios to nutcracker's text row and to memcached's meta row (nutcracker has no
    meta protocol).

The report goes between `<!-- proxy-bench:start -->` and `<!-- proxy-bench:end -->` of --out
(under the title if missing); other benchmarks' sections in the same file are left alone.

It does not judge correctness (the integration tests do) but reports every protocol error the
load generator saw.  Every child is stopped on exit, error or signal; every wait is bounded.
"""
import argparse
import datetime
import json
import os
import platform
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchdoc import write_marked_section  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLK_TCK = os.sysconf("SC_CLK_TCK")
WANT_NOFILE = 65536

# The targets (issue 2, point 8).
TARGET_THROUGHPUT = 1.2  # geogate ops/s >= 1.2 x nutcracker
TARGET_CPU = 0.7  # geogate CPU per request <= 0.7 x nutcracker
TARGET_KB_PER_CONN = 4.0
# A run during which other processes used more than this many cores was disturbed; the
# CPU and throughput targets are judged on at least QUIET_ROUNDS undisturbed rounds.
QUIET_CORES = 0.15
QUIET_ROUNDS = 3


class BenchError(Exception):
    pass


META = "meta"  # the runs of the --meta row, beside the configs' text runs
META_TARGETS = ("memcached", "geogate")  # nutcracker 0.5 has no meta protocol


# ------------------------------------------------------------------------------------------
# Processes

def raise_nofile(limit=WANT_NOFILE):
    """Raise RLIMIT_NOFILE to `limit` (root may raise the hard limit too); keep what works."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in ((max(limit, hard), max(limit, hard)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, want)
            return
        except (ValueError, OSError):
            continue


def free_port(taken):
    """A TCP port on 127.0.0.1 nothing listens on, not yet handed out in this run."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port
    raise BenchError("no free port")


class Child:
    """A server we started; stop() always ends it (TERM, then KILL), by its own pid."""

    def __init__(self, name, argv, logdir):
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(logdir, name + ".log")
        self._log = open(self.log_path, "wb")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                  stderr=subprocess.STDOUT, preexec_fn=raise_nofile)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def wait_port(self, port, timeout=10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.alive():
                raise BenchError("%s exited with status %s before listening on port %d"
                                 % (self.name, self.p.returncode, port))
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise BenchError("%s not listening on port %d after %.0f s" % (self.name, port, timeout))

    def log_tail(self, lines=8):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read()[-4000:].decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self):
        if self.alive():
            self.p.terminate()
            try:
                self.p.wait(timeout=6)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)
        self._log.close()


def proc_cpu_seconds(pid):
    """utime + stime of a whole process (all its threads), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError("no VmRSS for pid %d" % pid)


def one_request(port):
    """One get over a fresh connection, so lazily created state exists before a baseline."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"get bench:probe\r\n")
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.decode("latin-1").strip()


# ------------------------------------------------------------------------------------------
# The load generator

class Bench:
    def __init__(self, path, common):
        self.path = path
        self.common = common  # arguments every load run shares

    def argv(self, port, extra):
        return [self.path, "--port", str(port)] + self.common + extra + ["--json"]

    def run(self, port, extra, timeout):
        argv = self.argv(port, extra)
        try:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=timeout, preexec_fn=raise_nofile)
        except subprocess.TimeoutExpired:
            raise BenchError("geogate-bench did not finish within %.0f s" % timeout)
        out = r.stdout.decode().strip().splitlines()
        if r.returncode != 0 or not out:
            raise BenchError("geogate-bench exited %d: %s" % (r.returncode,
                                                              r.stderr.decode().strip()[-500:]))
        return json.loads(out[-1])

    def start(self, port, extra):
        """A long-running generator (idle mode or soak); the caller stops it."""
        return subprocess.Popen(self.argv(port, extra), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=raise_nofile)


def read_line(p, timeout):
    """First line of a child's stdout within timeout, or None."""
    deadline = time.time() + timeout
    buf = b""
    fd = p.stdout.fileno()
    while time.time() < deadline and b"\n" not in buf:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.time()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\n", 1)[0].decode() if b"\n" in buf else None


def stop_popen(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


# ------------------------------------------------------------------------------------------
# The targets

class Target:
    """One thing the load generator talks to, and the process whose CPU and RSS we read."""

    def __init__(self, name, label, port):
        self.name = name
        self.label = label
        self.port = port
        self.child = None  # the proxy process; None for direct memcached
        self.error = None  # why this target has no (more) results
        self.runs = {}  # config name -> list of result dicts

    @property
    def ok(self):
        return self.error is None

    def check_alive(self):
        if self.child is not None and not self.child.alive():
            self.error = "%s exited with status %s during the benchmark; last log lines:\n%s" % (
                self.name, self.child.p.returncode, self.child.log_tail())
        return self.ok


def start_servers(tmp, taken, children, binary, threads=2):
    mc_ports = [free_port(taken), free_port(taken)]
    nodes = []
    for i, port in enumerate(mc_ports):
        c = Child("memcached%d" % (i + 1),
                  ["memcached", "-u", "root", "-l", "127.0.0.1", "-p", str(port), "-U", "0",
                   "-t", "1"], tmp)
        children.append(c)
        nodes.append(c)
    for c, port in zip(nodes, mc_ports):
        c.wait_port(port)

    direct = Target("memcached", "memcached (direct, one node)", mc_ports[0])
    direct.server = nodes[0]

    nc = Target("nutcracker", "nutcracker 0.5 (twemproxy)", free_port(taken))
    nc_conf = os.path.join(tmp, "nutcracker.yml")
    with open(nc_conf, "w") as f:
        f.write("bench:\n"
                "  listen: 127.0.0.1:%d\n"
                "  hash: md5\n"
                "  distribution: ketama\n"
                "  timeout: 250\n"
                "  preconnect: true\n"
                "  auto_eject_hosts: false\n"
                "  servers:\n"
                "    - 127.0.0.1:%d:1\n"
                "    - 127.0.0.1:%d:1\n" % (nc.port, mc_ports[0], mc_ports[1]))
    nc.config_text = open(nc_conf).read()
    nc.child = Child("nutcracker", ["nutcracker", "-c", nc_conf, "-s", str(free_port(taken)),
                                    "-a", "127.0.0.1", "-p", os.path.join(tmp, "nc.pid"),
                                    "-o", os.path.join(tmp, "nutcracker-own.log")], tmp)
    children.append(nc.child)
    nc.child.wait_port(nc.port)

    gg = Target("geogate", "geogate (threads: %d)" % threads, free_port(taken))
    gg_conf = os.path.join(tmp, "geogate.yml")
    with open(gg_conf, "w") as f:
        f.write("site: bench\n"
                "listen: 127.0.0.1:%d\n"
                "threads: %d\n"
                "pool:\n"
                "  distribution: ketama\n"
                "  hash: md5\n"
                "  servers:\n"
                "    - 127.0.0.1:%d:1\n"
                "    - 127.0.0.1:%d:1\n" % (gg.port, threads, mc_ports[0], mc_ports[1]))
    gg.config_text = open(gg_conf).read()
    if not os.access(binary, os.X_OK):
        gg.error = "%s does not exist (run `make`)" % os.path.relpath(binary, ROOT)
    else:
        try:
            gg.child = Child("geogate", [binary, "--config", gg_conf], tmp)
            children.append(gg.child)
            gg.child.wait_port(gg.port)
            reply = one_request(gg.port)
            if reply != "END":
                raise BenchError("`get bench:probe` answered %r instead of END" % reply)
        except (BenchError, OSError) as e:
            tail = gg.child.log_tail() if gg.child else ""
            gg.error = "geogate failed to start: %s%s" % (
                e, ("; last log lines:\n" + tail) if tail else "")
    return nodes, [direct, nc, gg]


# ------------------------------------------------------------------------------------------
# Measurements

def machine_busy_seconds():
    """CPU seconds every core of the machine spent busy so far (/proc/stat, all processes)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK


def measure_run(bench, target, nodes, children, extra, timeout):
    """One load run against target; adds the CPU the proxy and the memcached nodes used, and
    how many cores' worth of CPU went to processes that are not part of this benchmark."""
    procs = [target.child] if target.child else []
    ours = [c for c in children if c.alive()]
    cpu0 = [proc_cpu_seconds(p.pid) for p in procs]
    node0 = [proc_cpu_seconds(n.pid) for n in nodes]
    ours0 = sum(proc_cpu_seconds(c.pid) for c in ours)
    gen0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, t0 = machine_busy_seconds(), time.time()
    res = bench.run(target.port, extra, timeout)
    busy1, t1 = machine_busy_seconds(), time.time()
    gen1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours1 = sum(proc_cpu_seconds(c.pid) for c in ours)
    cpu1 = [proc_cpu_seconds(p.pid) for p in procs]
    node1 = [proc_cpu_seconds(n.pid) for n in nodes]
    per100k = 1e5 / res["requests"] if res["requests"] else float("nan")
    gen = (gen1.ru_utime + gen1.ru_stime) - (gen0.ru_utime + gen0.ru_stime)
    res["proxy_cpu_s"] = sum(cpu1) - sum(cpu0) if procs else None
    res["proxy_cpu_per_100k"] = res["proxy_cpu_s"] * per100k if procs else None
    res["memcached_cpu_per_100k"] = (sum(node1) - sum(node0)) * per100k
    res["generator_cpu_per_100k"] = gen * per100k
    res["other_cores"] = max(0.0, (busy1 - busy0) - (ours1 - ours0) - gen) / max(1e-3, t1 - t0)
    return res


def measure_idle(bench, target, conns, log):
    """RSS of the proxy before, with `conns` idle connections that each made one request,
    and after they closed."""
    pid = target.child.pid
    one_request(target.port)
    time.sleep(0.5)
    before = proc_rss_kb(pid)
    p = bench.start(target.port, ["--idle-conns", str(conns), "--duration", "120"])
    try:
        line = read_line(p, 90)
        if line is None:
            raise BenchError("idle connections not open within 90 s")
        info = json.loads(line)
        time.sleep(1.0)
        during = proc_rss_kb(pid)
    finally:
        stop_popen(p)
    time.sleep(1.0)
    after = proc_rss_kb(pid)
    opened = max(1, info["opened"])
    res = {"before": before, "during": during, "after": after, "opened": info["opened"],
           "errors": info["errors"], "kb_per_conn": (during - before) / opened}
    log("  %s: RSS %d kB -> %d kB with %d idle connections (%d errors): %.2f kB/conn"
        % (target.name, before, during, info["opened"], info["errors"], res["kb_per_conn"]))
    return res


def measure_soak(bench, target, seconds, log):
    """Sample the proxy's RSS while the main load runs for `seconds`."""
    pid = target.child.pid
    interval = max(1.0, min(10.0, seconds / 60.0))
    samples = []
    t0 = time.time()
    p = bench.start(target.port, ["--duration", str(seconds)])
    try:
        next_at = t0
        while p.poll() is None and time.time() - t0 < seconds + 60:
            now = time.time()
            if now >= next_at:
                if not target.child.alive():
                    break
                samples.append((now - t0, proc_rss_kb(pid)))
                next_at += interval
            time.sleep(min(0.5, max(0.0, next_at - time.time())))
        p.wait(timeout=max(1, seconds + 60 - (time.time() - t0)))
        out = p.stdout.read().decode().strip().splitlines()
        res = json.loads(out[-1]) if p.returncode == 0 and out else None
    finally:
        stop_popen(p)
    after = None
    if target.child.alive():
        time.sleep(1.0)
        after = proc_rss_kb(pid)
    return {"samples": samples, "after": after, "result": res, "seconds": seconds,
            "alive": target.child.alive()}


# ------------------------------------------------------------------------------------------
# Report

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summary(runs):
    if not runs:
        return None
    return {
        "ops": med([r["ops_per_sec"] for r in runs]),
        "p50": med([r["latency_us"]["p50"] for r in runs]),
        "p99": med([r["latency_us"]["p99"] for r in runs]),
        "p999": med([r["latency_us"]["p999"] for r in runs]),
        "cpu": med([r["proxy_cpu_per_100k"] for r in runs]),
        "mc_cpu": med([r["memcached_cpu_per_100k"] for r in runs]),
        "errors": sum(r["errors"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "hit_pct": 100.0 * sum(r["hits"] for r in runs) / max(1, sum(r["gets"] for r in runs)),
        "rounds": [(r["ops_per_sec"], r["proxy_cpu_per_100k"]) for r in runs],
        "gen_cpu": med([r["generator_cpu_per_100k"] for r in runs]),
        "other": [r["other_cores"] for r in runs],
        "error_kinds": {k: sum(r["error_kinds"][k] for r in runs)
                        for k in runs[0]["error_kinds"]},
    }


def quiet_ratios(g_runs, n_runs):
    """geogate / nutcracker per round, over the rounds where neither run was disturbed
    (a disturbed run is slowed more than its neighbour, which skews the medians of the
    rows): (throughput ratio, CPU ratio, rounds), medians of the per-round ratios."""
    pairs = [(g, n) for g, n in zip(g_runs, n_runs)
             if g["other_cores"] <= QUIET_CORES and n["other_cores"] <= QUIET_CORES]
    if not pairs:
        return None
    return (med([g["ops_per_sec"] / n["ops_per_sec"] for g, n in pairs]),
            med([g["proxy_cpu_per_100k"] / n["proxy_cpu_per_100k"] for g, n in pairs]),
            len(pairs))


def fmt(v, spec="%.0f", none="—"):
    return none if v is None else spec % v


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def machine_info():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def version(argv):
        try:
            r = subprocess.run(argv, capture_output=True, timeout=5)
            return (r.stdout + r.stderr).decode().strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired, IndexError):
            return "?"

    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, timeout=5).stdout.decode().strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "gateway",
                                "ring", "Makefile"], capture_output=True, timeout=5).stdout
        if dirty.strip():
            commit += " plus uncommitted changes in gateway/ or ring/"
    except (OSError, subprocess.TimeoutExpired):
        commit = "?"
    return {
        "load": loadavg(),
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "cpu": model,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "memcached": version(["memcached", "-V"]),
        "nutcracker": version(["nutcracker", "-V"]),
        "commit": commit,
    }


def ratio(a, b):
    return a / b if a is not None and b else None


def verdict(ok):
    return "**met**" if ok else "**not met**"


def soak_growth(soak):
    """RSS growth from the end of warm-up (10% into the run, at least 10 s) to the end."""
    s = soak["samples"]
    if len(s) < 2:
        return None
    warm_t = max(10.0, soak["seconds"] * 0.1)
    warm = next((x for x in s if x[0] >= warm_t), s[len(s) // 2])
    end = s[-1]
    allowed = max(1024, 0.02 * warm[1])
    return {"warm": warm, "end": end, "max": max(r for _, r in s), "growth": end[1] - warm[1],
            "allowed": allowed}


def render(args, info, configs, targets, memory, soak, elapsed):
    by = {t.name: t for t in targets}
    gg, nc = by["geogate"], by["nutcracker"]
    out = []
    w = out.append
    w("## Proxies side by side: memcached, nutcracker, geogate (issue 2, point 8)")
    w("")
    w("")
    cmd = " ".join(["/usr/bin/python3", os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)]
                   + sys.argv[1:])
    is_make = sys.argv[1:] == ["--out", "docs/BENCHMARKS.md"]
    w("Made by%s:" % (" `make bench`, which runs" if is_make else ""))
    w("")
    w("    %s" % cmd)
    w("")
    w("which starts two memcached nodes (`memcached -u root -l 127.0.0.1 -p PORT -U 0 -t 1`), "
      "nutcracker and bin/geogate over those same two nodes (ketama, md5), all on loopback, and "
      "drives each with the project's load generator `bin/geogate-bench` "
      "(C + libevent, one process, one thread). The load generator, the servers and the "
      "proxies share the machine's cores, so absolute numbers are lower than on separate "
      "hosts; the ratios are what matter.")
    w("")
    w("Both proxies wait at most 250 ms for a memcached reply (geogate's default "
      "`pool.timeout`; nutcracker's `timeout: 250`), so a starved machine shows up as "
      "`SERVER_ERROR`s in both the same way.")
    w("")
    w("| machine | |")
    w("|---|---|")
    w("| cores (nproc) | %s |" % info["nproc"])
    w("| CPU | %s |" % (info["cpu"] or "?"))
    w("| kernel | %s |" % info["kernel"])
    w("| date | %s |" % info["date"])
    w("| memcached | %s |" % info["memcached"])
    w("| nutcracker | %s |" % info["nutcracker"])
    w("| geogate commit | %s |" % info["commit"])
    w("| load average (1, 5, 15 min) before / after | %s / %s |" % (info["load"], loadavg()))
    w("| whole run took | %.0f s |" % elapsed)
    w("")
    loads = [info["load"], loadavg()]
    if any(l != "?" and float(l.split()[0]) > 0.5 * (info["nproc"] or 1) for l in loads):
        w("Other work was running on this machine during the run (see the load average), so "
          "these numbers are noisier than a quiet machine's; the rounds below show how much.")
        w("")
    for t in (gg, nc):
        w("%s's config (ports are picked free for each run):" % t.name)
        w("")
        w("```yaml")
        w(getattr(t, "config_text", "").rstrip())
        w("```")
        w("")
    for t in targets:
        if t.error:
            w("> **%s did not run to the end:** %s" % (t.name, t.error.replace("\n", "\n> ")))
            w("")

    w("### Throughput, latency and CPU")
    w("")
    w("Each row is the median of %d interleaved rounds of %g s per target (the order of the "
      "targets rotates every round, because a shared 2-core machine is noisy). Every key of "
      "the %d-key space is set once before the first round, so gets hit. "
      "*Proxy CPU* is the proxy process's utime+stime from /proc/PID/stat over the run, "
      "all threads; *memcached CPU* is both nodes together (for the direct row, only the one "
      "node used). Latency is per request, from queueing it to its last reply byte, as the "
      "client sees it. *Other processes* is the CPU the whole machine spent during each run "
      "(/proc/stat) minus this benchmark's own processes, in cores out of %d: a round with a "
      "high value was disturbed." % (args.rounds, args.duration, args.keys,
                                      os.cpu_count() or 0))
    w("")
    for cname, cextra, cdesc in configs:
        w("#### %s" % cdesc)
        w("")
        w("    bin/geogate-bench --port PORT %s" % " ".join(
            bench_common(args) + cextra + ["--duration", "%g" % args.duration, "--json"]))
        w("")
        w("| target | ops/s | p50 µs | p99 µs | p99.9 µs | proxy CPU s / 100k req | "
          "memcached CPU s / 100k req | load generator CPU s / 100k req | get hits | errors | "
          "each round: ops/s (proxy CPU) | other processes, cores |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for t in targets:
            s = summary(t.runs.get(cname, []))
            if s is None:
                w("| %s | did not run | | | | | | | | | | |" % t.label)
                continue
            errs = "%d" % s["errors"]
            if s["errors"]:
                errs += " (%s)" % ", ".join("%s %d" % (k, v)
                                            for k, v in s["error_kinds"].items() if v)
            w("| %s | %s | %s | %s | %s | %s | %s | %s | %.1f%% | %s | %s | %s |" % (
                t.label, fmt(s["ops"]), fmt(s["p50"], "%.0f"), fmt(s["p99"], "%.0f"),
                fmt(s["p999"], "%.0f"), fmt(s["cpu"], "%.3f"), fmt(s["mc_cpu"], "%.3f"),
                fmt(s["gen_cpu"], "%.3f"), s["hit_pct"], errs,
                ", ".join("%.0f%s" % (ops, fmt(cpu, " (%.3f)", "")) for ops, cpu in s["rounds"]),
                ", ".join("%.2f" % x for x in s["other"])))
        sg, sn = summary(gg.runs.get(cname, [])), summary(nc.runs.get(cname, []))
        if sg and sn:
            w("")
            w("geogate / nutcracker, medians of the rows: throughput %s×, proxy CPU per "
              "request %s×, p99 latency %s×." % (fmt(ratio(sg["ops"], sn["ops"]), "%.2f"),
                                                  fmt(ratio(sg["cpu"], sn["cpu"]), "%.2f"),
                                                  fmt(ratio(sg["p99"], sn["p99"]), "%.2f")))
            q = quiet_ratios(gg.runs.get(cname, []), nc.runs.get(cname, []))
            if q:
                w("")
                w("geogate / nutcracker in the %d round(s) where neither run was disturbed "
                  "(other processes ≤ %.2f cores), median of the per-round ratios: "
                  "throughput **%.2f×**, proxy CPU per request **%.2f×**." % (
                      q[2], QUIET_CORES, q[0], q[1]))
        w("")

    render_meta(w, args, targets, configs)

    w("### Memory per idle client connection")
    w("")
    w("Fresh proxy processes (after one request, so lazily built state exists), then "
      "`bin/geogate-bench --idle-conns %d`: %d connections opened one after another, then "
      "one `get` sent on each in two parts (everything but the CRLF on every connection, "
      "half a second's pause, then the CRLFs), so every connection holds a partial request "
      "in the proxy at the same moment whatever the timing, as with many slow clients; then "
      "every reply read; then they all sit idle. RSS is VmRSS from "
      "/proc/PID/status." % (args.idle_conns, args.idle_conns))
    w("")
    w("| proxy | RSS before | RSS with idle connections | connections (errors) | "
      "kB per connection | RSS after they closed |")
    w("|---|---:|---:|---:|---:|---:|")
    for t in (nc, gg):
        m = memory.get(t.name)
        if m is None:
            w("| %s | not measured | | | | |" % t.label)
            continue
        w("| %s | %d kB | %d kB | %d (%d) | **%.2f** | %d kB |" % (
            t.label, m["before"], m["during"], m["opened"], m["errors"], m["kb_per_conn"],
            m["after"]))
    w("")

    w("### Soak: geogate's RSS over a long run")
    w("")
    growth = None
    if soak is None:
        w("Not run (%s)." % ("`--soak 0`" if args.soak == 0 else "geogate was not running"))
        w("")
    else:
        growth = soak_growth(soak)
        r = soak["result"]
        w("`bin/geogate-bench` with the first configuration above for %d s against geogate; "
          "RSS sampled every few seconds. Growth is counted from the end of warm-up (10%% "
          "into the run, at least 10 s) to the end; \"does not grow\" is taken as at most "
          "max(1 MiB, 2%%) over that span." % soak["seconds"])
        w("")
        if r:
            kinds = ", ".join("%s %d" % (k, v) for k, v in r["error_kinds"].items() if v)
            w("Load during the soak: %.0f ops/s, %d requests, %d errors%s, p99 %.0f µs." % (
                r["ops_per_sec"], r["requests"], r["errors"], " (%s)" % kinds if kinds else "",
                r["latency_us"]["p99"]))
        else:
            w("The load generator did not report a result (geogate %s)." % (
                "alive" if soak["alive"] else "died"))
        w("")
        w("| time into run | geogate RSS |")
        w("|---:|---:|")
        s = soak["samples"]
        step = max(1, len(s) // 12)
        shown = s[::step]
        if s and shown[-1] is not s[-1]:
            shown.append(s[-1])
        for t_, rss in shown:
            w("| %.0f s | %d kB |" % (t_, rss))
        w("")
        if growth:
            w("RSS after warm-up %d kB (at %.0f s), at the end of the load %d kB, highest "
              "%d kB: growth **%+d kB**; %s kB a second after the load stopped." % (
                  growth["warm"][1], growth["warm"][0], growth["end"][1], growth["max"],
                  growth["growth"], fmt(soak["after"], "%d")))
        w("")

    w("### Targets (issue 2, point 8)")
    w("")
    w("| target | goal | reached | |")
    w("|---|---|---|---|")
    main = configs[0][0]
    sg, sn = summary(gg.runs.get(main, [])), summary(nc.runs.get(main, []))
    if sg and sn:
        tr = ratio(sg["ops"], sn["ops"])
        cr = ratio(sg["cpu"], sn["cpu"])
        clean = sg["errors"] == 0
        q = quiet_ratios(gg.runs.get(main, []), nc.runs.get(main, []))
        judged = q is not None and q[2] >= QUIET_ROUNDS
        if judged:
            # judged on undisturbed rounds only, round against round
            tr, cr = q[0], q[1]
            how = "median of %d undisturbed rounds" % q[2]
        else:
            how = "medians of the rows; only %d undisturbed round(s), %d needed to judge" % (
                q[2] if q else 0, QUIET_ROUNDS)

        def judge(ok):
            return verdict(ok) if judged else "not judged (machine too busy; run again)"
        w("| throughput, 50 conns, no pipelining, 1:4, 100 B | ≥ %.1f× nutcracker | %.2f× "
          "(%s) | %s |" % (TARGET_THROUGHPUT, tr, how, judge(clean and tr >= TARGET_THROUGHPUT)))
        if cr is not None:
            w("| proxy CPU per request | ≤ %.1f× nutcracker | %.2f× (%s) "
              "| %s |" % (TARGET_CPU, cr, how, judge(clean and cr <= TARGET_CPU)))
        if not clean:
            w("| (no errors under load: a proxy that answers errors is not fast) | 0 | %d "
              "errors | **not met** |" % sg["errors"])
    else:
        w("| throughput | ≥ %.1f× nutcracker | not measured | — |" % TARGET_THROUGHPUT)
        w("| proxy CPU per request | ≤ %.1f× nutcracker | not measured | — |" % TARGET_CPU)
    mg, mn = memory.get("geogate"), memory.get("nutcracker")
    if mg:
        w("| RSS per idle connection | ≤ %.0f kB | %.2f kB (nutcracker %s kB) | %s |" % (
            TARGET_KB_PER_CONN, mg["kb_per_conn"],
            fmt(mn["kb_per_conn"] if mn else None, "%.2f"),
            verdict(mg["kb_per_conn"] <= TARGET_KB_PER_CONN and mg["errors"] == 0
                    and mg["opened"] == args.idle_conns)))
    else:
        w("| RSS per idle connection | ≤ %.0f kB | not measured | — |" % TARGET_KB_PER_CONN)
    if growth:
        w("| no RSS growth over the soak | ≤ max(1 MiB, 2%%) over %d s | %+d kB | %s |" % (
            soak["seconds"], growth["growth"],
            verdict(growth["growth"] <= growth["allowed"] and soak["alive"])))
        if soak["seconds"] < 600:
            w("| (soak length) | 10 minutes | %d s | shorter than asked: not evidence |"
              % soak["seconds"])
    else:
        w("| no RSS growth over 10 minutes | none | not measured | — |")
    w("")
    return "\n".join(out)




def render_meta(w, args, targets, configs):
    """The meta-protocol section: geogate and memcached direct driven with --meta, beside
    (not instead of) the text rows above."""
    by = {t.name: t for t in targets}
    gg, nc, mc = by["geogate"], by["nutcracker"], by["memcached"]
    main = configs[0][0]
    w("### Meta protocol: %d connections, no pipelining, 1:4 set:get, 100-byte values"
      % args.connections)
    w("")
    w("The main configuration again with `bin/geogate-bench --meta`: the same keys, mix, "
      "values and connections, as `ms <key> 100` + value for a set and `mg <key> v f` for "
      "a get (replies HD, VA + value, EN). nutcracker has no meta protocol, so geogate's "
      "meta row is compared with nutcracker's text row and with memcached's own meta row. "
      "Interleaved with the text runs, %d round(s) of %g s, median of the rounds." % (
          args.rounds, args.duration))
    w("")
    w("| target | protocol | ops/s | p50 µs | p99 µs | p99.9 µs | proxy CPU s / 100k req | "
      "get hits | errors | each round: ops/s (proxy CPU) |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    rows = [(mc, "meta", META), (gg, "meta", META), (nc, "text", main), (gg, "text", main)]
    for t, proto, cname in rows:
        s = summary(t.runs.get(cname, []))
        if s is None:
            why = getattr(t, "meta_error", None) if cname == META else None
            w("| %s | %s | did not run%s | | | | | | | |" % (
                t.label, proto, (": " + why.replace("|", "/").replace("\n", " ")[:300])
                if why else ""))
            continue
        errs = "%d" % s["errors"]
        if s["errors"]:
            errs += " (%s)" % ", ".join("%s %d" % (k, v) for k, v in s["error_kinds"].items() if v)
        w("| %s | %s | %s | %s | %s | %s | %s | %.1f%% | %s | %s |" % (
            t.label, proto, fmt(s["ops"]), fmt(s["p50"], "%.0f"), fmt(s["p99"], "%.0f"),
            fmt(s["p999"], "%.0f"), fmt(s["cpu"], "%.3f"), s["hit_pct"], errs,
            ", ".join("%.0f%s" % (ops, fmt(cpu, " (%.3f)", "")) for ops, cpu in s["rounds"])))
    sgm = summary(gg.runs.get(META, []))
    snt = summary(nc.runs.get(main, []))
    smm = summary(mc.runs.get(META, []))
    sgt = summary(gg.runs.get(main, []))
    w("")
    if sgm:
        w("geogate meta / nutcracker text: throughput %s×, proxy CPU per request %s×, p99 "
          "latency %s×. geogate meta / memcached direct meta: throughput %s×, p99 latency %s×. "
          "geogate meta / geogate text: throughput %s×, proxy CPU per request %s×." % (
              fmt(ratio(sgm["ops"], snt["ops"] if snt else None), "%.2f"),
              fmt(ratio(sgm["cpu"], snt["cpu"] if snt else None), "%.2f"),
              fmt(ratio(sgm["p99"], snt["p99"] if snt else None), "%.2f"),
              fmt(ratio(sgm["ops"], smm["ops"] if smm else None), "%.2f"),
              fmt(ratio(sgm["p99"], smm["p99"] if smm else None), "%.2f"),
              fmt(ratio(sgm["ops"], sgt["ops"] if sgt else None), "%.2f"),
              fmt(ratio(sgm["cpu"], sgt["cpu"] if sgt else None), "%.2f")))
        if sgm["errors"]:
            w("")
            w("geogate answered the meta load with %d errors: its meta numbers are not "
              "comparable until that is 0." % sgm["errors"])
    else:
        w("geogate's meta row did not run, so there are no meta ratios.")
    w("")


def write_section(path, text):
    """Replace this script's marked section of path (benchdoc.write_marked_section)."""
    write_marked_section(path, "proxy-bench", text)


def bench_common(args):
    return ["--connections", str(args.connections), "--ratio", "1:4", "--value-size", "100",
            "--keys", str(args.keys), "--timeout", "5"]


# ------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="write the markdown report here (default: stdout only)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 2 s per target, one round, 10 s soak unless --soak")
    ap.add_argument("--duration", type=float, help="seconds per run (10; quick 2)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (3; quick 1)")
    ap.add_argument("--soak", type=int, help="soak seconds, 0 to skip (600; quick 10)")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--pipeline", type=int, default=16, help="depth of the pipelined row")
    ap.add_argument("--keys", type=int, default=100000)
    ap.add_argument("--idle-conns", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2,
                    help="geogate's `threads:` (worker threads; nutcracker has one)")
    ap.add_argument("--geogate", default=os.path.join(ROOT, "bin", "geogate"),
                    help="the geogate binary (default bin/geogate)")
    args = ap.parse_args()
    if args.duration is None:
        args.duration = 2.0 if args.quick else 10.0
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.soak is None:
        args.soak = 10 if args.quick else 600

    bench_bin = os.path.join(ROOT, "bin", "geogate-bench")
    if not os.access(bench_bin, os.X_OK):
        print("run_bench: %s missing; run `make` first" % bench_bin, file=sys.stderr)
        return 1

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    # SIGTERM/SIGINT and a watchdog all end up in the finally below, which stops every child.
    def on_signal(sig, frame):
        raise KeyboardInterrupt("signal %d" % sig)

    signal.signal(signal.SIGTERM, on_signal)
    budget = int(args.rounds * (2 * 3 + len(META_TARGETS)) * (args.duration + 20) +
                 args.soak + 300)

    def on_alarm(sig, frame):
        raise BenchError("the whole benchmark exceeded its %d s budget" % budget)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(budget)

    raise_nofile()
    t_start = time.time()
    info = machine_info()
    if info["load"] != "?" and float(info["load"].split()[0]) > 0.5 * (os.cpu_count() or 1):
        log("warning: load average %s before starting: other work on this machine will "
            "skew the numbers" % info["load"])
    children = []
    taken = set()
    bench = Bench(bench_bin, bench_common(args))
    configs = [
        ("main", ["--pipeline", "1"], "%d connections, no pipelining, 1:4 set:get, 100-byte "
         "values (the issue's configuration)" % args.connections),
        ("pipelined", ["--pipeline", str(args.pipeline)], "%d connections, pipeline depth %d, "
         "1:4 set:get, 100-byte values" % (args.connections, args.pipeline)),
    ]
    memory = {}
    soak = None
    targets = []
    tmp = tempfile.mkdtemp(prefix="geogate-bench-")
    try:
        log("starting memcached x2, nutcracker, geogate (logs in %s)" % tmp)
        nodes, targets = start_servers(tmp, taken, children, args.geogate, args.threads)
        for t in targets:
            if t.error:
                log("  %s: %s" % (t.name, t.error))
        proxies = [t for t in targets if t.child is not None and t.ok]

        log("memory: %d idle connections per proxy" % args.idle_conns)
        for t in proxies:
            try:
                memory[t.name] = measure_idle(bench, t, args.idle_conns, log)
            except (BenchError, OSError, ValueError) as e:
                log("  %s: %s" % (t.name, e))
            t.check_alive()

        log("pre-populating %d keys through each target" % args.keys)
        for t in targets:
            if t.ok:
                try:
                    bench.run(t.port, ["--warmup-keys", "--requests", "1"], 120)
                except BenchError as e:
                    t.error = "pre-populating failed: %s" % e
                t.check_alive()

        for rnd in range(args.rounds):
            for cname, cextra, _ in configs:
                order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
                for t in order:
                    if not t.ok:
                        continue
                    extra = cextra + ["--duration", "%g" % args.duration]
                    try:
                        r = measure_run(bench, t, nodes, children, extra, args.duration + 60)
                    except (BenchError, OSError) as e:
                        if t.check_alive():
                            t.error = "load run failed: %s" % e
                        log("  %s: %s" % (t.name, t.error))
                        continue
                    t.runs.setdefault(cname, []).append(r)
                    log("round %d %-9s %-10s %8.0f ops/s  p99 %6.0f us  proxy cpu/100k %s  "
                        "errors %d" % (rnd + 1, cname, t.name, r["ops_per_sec"],
                                       r["latency_us"]["p99"],
                                       fmt(r["proxy_cpu_per_100k"], "%.3f"), r["errors"]))
                    t.check_alive()
            # the meta row; a failure here (geogate without meta support, say) is the meta
            # row's alone and leaves the target's text rows running
            order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
            for t in order:
                if not t.ok or t.name not in META_TARGETS or getattr(t, "meta_error", None):
                    continue
                extra = ["--pipeline", "1", "--meta", "--duration", "%g" % args.duration]
                try:
                    r = measure_run(bench, t, nodes, children, extra, args.duration + 60)
                except (BenchError, OSError) as e:
                    t.meta_error = "meta load run failed: %s" % e
                    log("  %s --meta: %s" % (t.name, t.meta_error))
                    t.check_alive()
                    continue
                t.runs.setdefault(META, []).append(r)
                log("round %d %-9s %-10s %8.0f ops/s  p99 %6.0f us  proxy cpu/100k %s  "
                    "errors %d" % (rnd + 1, META, t.name, r["ops_per_sec"],
                                   r["latency_us"]["p99"],
                                   fmt(r["proxy_cpu_per_100k"], "%.3f"), r["errors"]))
                t.check_alive()

        gg = next(t for t in targets if t.name == "geogate")
        if args.soak > 0 and gg.ok:
            log("soak: %d s against geogate" % args.soak)
            try:
                soak = measure_soak(bench, gg, args.soak, log)
            except (BenchError, OSError, ValueError) as e:
                log("  soak: %s" % e)
            gg.check_alive()
    except BenchError as e:
        log("run_bench: %s" % e)
        for c in children:
            if not c.alive():
                log("%s log:\n%s" % (c.name, c.log_tail()))
        return 1
    finally:
        signal.alarm(0)
        for c in reversed(children):
            try:
                c.stop()
            except Exception as e:  # keep stopping the others
                log("stopping %s: %s" % (c.name, e))

    report = render(args, info, configs, targets, memory, soak, time.time() - t_start)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        write_section(args.out, report)
        log("wrote the proxy-bench section of %s" % args.out)
    print(report)
    baseline_ok = all(t.ok for t in targets if t.name != "geogate")
    gg_ok = all(t.ok for t in targets if t.name == "geogate")
    if baseline_ok and gg_ok:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        log("logs kept in %s" % tmp)
    if not baseline_ok:
        return 1
    return 0 if gg_ok else 3


if __name__ == "__main__":
    sys.exit(main())
