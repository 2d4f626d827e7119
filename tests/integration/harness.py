"""Shared helpers for geogate's integration tests.

Every test starts what it needs (real memcached, real nutcracker, the real
geogate binary) on free loopback ports, bounds every wait, and stops everything
it started when it ends.  Nothing here talks to an address other than 127.0.0.1.
"""
import os
import random
import signal
import socket
import subprocess
import tempfile
import time

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


class Proc:
    """A child process that is always stopped (TERM, then KILL) on stop()."""

    def __init__(self, argv, name, stderr_path=None, env=None):
        self.name = name
        self.argv = argv
        self.stderr_path = stderr_path
        self._err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._err,
                                  stderr=self._err, env=env)

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
        if self.alive():
            self.p.terminate()
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)
        if self._err not in (None, subprocess.DEVNULL):
            self._err.close()
            self._err = None
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
