"""Shared helpers for geogate's integration tests.

Every test starts what it needs (real memcached, real nutcracker, the real
geogate binary) on free loopback ports, bounds every wait, and stops everything
it started when it ends.  Nothing here talks to an address other than 127.0.0.1.

Sanitizer reports fail tests.  A process of ours (a binary under $GEOGATE_BIN) started
with a log file has that log read once it has exited: a LeakSanitizer report (written at
exit), an AddressSanitizer error or an UndefinedBehaviorSanitizer "runtime error" in it
fails the test during which the process ended, with the report's first lines.  Importing
this module is enough: it adds the check to every unittest test (a last cleanup), class
(a class cleanup, for tearDownClass) and module (a module cleanup), and anything found
after those makes the unittest process exit 1.  A process stopped with SIGKILL cannot
report leaks; that is not checked.
"""
import atexit
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("GEOGATE_BIN", os.path.join(ROOT, "bin"))
GEOGATE = os.path.join(BIN, "geogate")
SANITIZED = os.environ.get("GEOGATE_SANITIZED") == "1"


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


_handed_out = set()
_rng = random.Random()


def free_port():
    """A TCP port on 127.0.0.1 that nothing is bound to right now.

    Chosen below the kernel's ephemeral range: a port from bind(0) is one the
    kernel also hands to outgoing connections, so a gateway's own connection to
    memcached or a peer could take it between this call and the listen() of the
    process it was meant for (a start failing with "address already in use").
    Ports are not handed out twice by one test process.
    """
    lo, hi = _ephemeral_range()
    if lo > 12000:
        first, last = 10000, lo - 1
    else:  # no room below: fall back to above, then to the kernel's choice
        first, last = hi + 1, 65535
    for _ in range(200):
        port = _rng.randint(first, last) if last > first else 0
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = s.getsockname()[1]
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port in %d..%d" % (first, last))


def wait_port(port, timeout=10.0, proc=None):
    """Wait until something accepts on 127.0.0.1:port; raise on timeout or if proc died."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening on %d" % (proc.returncode, port))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("nothing listening on port %d after %.1fs" % (port, timeout))


# ---- sanitizer reports in the logs of our own processes ---------------------------------

# "==PID==ERROR: LeakSanitizer: detected memory leaks", "==PID==ERROR: AddressSanitizer: ...",
# "file.c:12:5: runtime error: ..." (UBSan); anchored at a line start so that a key or a
# client's junk quoted in a log line cannot look like one.
_SANITIZER_RE = re.compile(r"^(==\d+==ERROR: (?:LeakSanitizer|AddressSanitizer)\b"
                           r"|\S+:\d+:\d+: runtime error: )", re.M)
_SUMMARY_RE = re.compile(r"^SUMMARY: \w+Sanitizer: .*$", re.M)
REPORT_LINES = 40

_watched = []   # Procs of ours with a log, not checked yet
_reports = []   # reports found, not yet turned into a test failure


def sanitizer_report(text, name="", path=""):
    """The first REPORT_LINES lines of the first sanitizer report in text (plus its SUMMARY
    lines), or None when there is none."""
    m = _SANITIZER_RE.search(text)
    if m is None:
        return None
    lines = text[m.start():].splitlines()
    head = lines[:REPORT_LINES]
    if len(lines) > REPORT_LINES:
        head.append("    ... %d more lines" % (len(lines) - REPORT_LINES))
    summaries = [s for s in _SUMMARY_RE.findall(text) if s not in head]
    return "%s (%s):\n%s" % (name, path, "\n".join(head + summaries))


def check_log(name, path):
    """Read the log of a process that has exited; remember a sanitizer report in it."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return
    r = sanitizer_report(text, name, path)
    if r is not None:
        _reports.append(r)


def _check_exited():
    for p in list(_watched):
        if not p.alive():
            _watched.remove(p)
            check_log(p.name, p.stderr_path)


def assert_no_sanitizer_reports():
    """Raise AssertionError with every report found since the last call (processes that
    have exited meanwhile are checked first)."""
    _check_exited()
    if _reports:
        found = list(_reports)
        del _reports[:]
        raise AssertionError("sanitizer report in the log of a process that exited:\n\n" +
                             "\n\n".join(found))


def _install_checks():
    """Every test, test class and module of the process runs the check last."""
    run = unittest.TestCase.run
    classes = set()

    def run_checked(self, result=None):
        cls = type(self)
        if cls not in classes:
            classes.add(cls)
            cls.addClassCleanup(assert_no_sanitizer_reports)  # after tearDownClass
        self.addCleanup(assert_no_sanitizer_reports)  # first added: runs after the others
        return run(self, result)

    unittest.TestCase.run = run_checked
    unittest.addModuleCleanup(assert_no_sanitizer_reports)  # after tearDownModule

    def at_exit():
        # Registered at import, so it runs after every other exit handler (LIFO).
        try:
            assert_no_sanitizer_reports()
        except AssertionError as e:
            sys.stdout.flush()
            print("\nFAIL (after the tests ended): %s" % e, file=sys.stderr, flush=True)
            os._exit(1)

    atexit.register(at_exit)


_install_checks()


def _ours(argv):
    try:
        return os.path.dirname(os.path.realpath(argv[0])) == os.path.realpath(BIN)
    except (OSError, IndexError, TypeError):
        return False


class Proc:
    """A child process that is always stopped (TERM, then KILL) on stop().  With a log
    (stderr_path), a binary of ours has its log checked for sanitizer reports once it has
    exited (module comment)."""

    def __init__(self, argv, name, stderr_path=None, env=None):
        self.name = name
        self.argv = argv
        self.stderr_path = stderr_path
        _check_exited()  # before a log of the same name is truncated
        self._err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._err,
                                  stderr=self._err, env=env)
        if stderr_path and _ours(argv):
            _watched.append(self)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            self.p.send_signal(sig)

    def wait(self, timeout):
        return self.p.wait(timeout=timeout)

    def stop(self, timeout=5.0):
        if SANITIZED:
            timeout = max(timeout, 20.0)  # the drain, then LeakSanitizer's scan at exit
        if self.alive():
            self.p.terminate()
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                print("harness: %s did not exit within %.0fs of SIGTERM: killed (its leaks "
                      "are not checked)" % (self.name, timeout), file=sys.stderr)
                self.p.kill()
                self.p.wait(timeout=5)
        if self._err not in (None, subprocess.DEVNULL):
            self._err.close()
            self._err = None
        if self in _watched:
            _watched.remove(self)
            check_log(self.name, self.stderr_path)
        return self.p.returncode

    def kill(self):
        if self.alive():
            self.p.kill()
            self.p.wait(timeout=5)

    def log(self):
        if self.stderr_path and os.path.exists(self.stderr_path):
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        return ""


def start_memcached(port=None, mem_mb=64, extra=()):
    port = port or free_port()
    argv = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", str(mem_mb),
            "-t", "1", "-c", "8192"] + list(extra)
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    p = Proc(argv, "memcached:%d" % port)
    p.port = port
    wait_port(port, proc=p.p)
    return p


def start_nutcracker(workdir, servers, hash_name="md5", port=None, extra_pool=""):
    """servers: list of 'host:port:weight [name]' strings, as twemproxy writes them."""
    port = port or free_port()
    stats_port = free_port()
    conf = os.path.join(workdir, "nutcracker-%d.yml" % port)
    with open(conf, "w") as f:
        f.write("pool:\n  listen: 127.0.0.1:%d\n  hash: %s\n  distribution: ketama\n"
                "  auto_eject_hosts: false\n  timeout: 2000\n%s  servers:\n" % (port, hash_name, extra_pool))
        for s in servers:
            f.write("    - %s\n" % s)
    p = Proc(["nutcracker", "-c", conf, "-s", str(stats_port), "-a", "127.0.0.1",
              "-o", os.path.join(workdir, "nutcracker-%d.log" % port)], "nutcracker:%d" % port)
    p.port = port
    wait_port(port, proc=p.p)
    return p


def write_gateway_config(workdir, servers, port=None, threads=2, hash_name="md5", extra=""):
    """Write a single-site geogate config; returns (path, port).  servers as for nutcracker."""
    port = port or free_port()
    path = os.path.join(workdir, "geogate-%d.yml" % port)
    with open(path, "w") as f:
        f.write("site: test-site\nlisten: 127.0.0.1:%d\nthreads: %d\n" % (port, threads))
        f.write("pool:\n  distribution: ketama\n  hash: %s\n  servers:\n" % hash_name)
        for s in servers:
            f.write("    - %s\n" % s)
        f.write(extra)
    return path, port


def start_gateway(workdir, config_path, port, name="geogate"):
    err = os.path.join(workdir, "%s-%d.log" % (name, port))
    p = Proc([GEOGATE, "--config", config_path], "%s:%d" % (name, port), stderr_path=err)
    p.port = port
    try:
        wait_port(port, proc=p.p, timeout=15)
    except Exception:
        raise RuntimeError("geogate did not start:\n" + p.log())
    return p


class Site:
    """N memcached nodes plus one geogate in front of them, in a temp dir."""

    def __init__(self, nodes=2, threads=2, hash_name="md5", extra=""):
        self.tmp = tempfile.TemporaryDirectory(prefix="geogate-test-")
        self.dir = self.tmp.name
        self.memcached = [start_memcached() for _ in range(nodes)]
        self.servers = ["127.0.0.1:%d:1" % m.port for m in self.memcached]
        self.config, port = write_gateway_config(self.dir, self.servers, threads=threads,
                                                 hash_name=hash_name, extra=extra)
        self.gateway = start_gateway(self.dir, self.config, port)
        self.port = port

    def stop(self):
        for p in [self.gateway] + self.memcached:
            try:
                p.stop()
            except Exception:
                pass
        self.tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def raw(port, data, timeout=2.0, expect_close=False, settle=0.3):
    """Send bytes, read until the peer is quiet for `settle` s (or closes); return bytes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        s.settimeout(settle)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()
