"""Client and launcher for geogate-wanem, the tests' WAN emulator (tests/tools/wanem/wanem.c).

    from wanem import start_wanem
    with start_wanem({"a-to-b": ("127.0.0.1", 11311)}) as em:
        port = em.ports["a-to-b"]          # connect here instead of 11311
        em.ctl.set("a-to-b", delay=25, jitter=5, rate=1_000_000)
        em.ctl.state("a-to-b", "blackhole")
        print(em.ctl.stats("a-to-b")["fwd_queued"])

Only loopback: the emulator listens on 127.0.0.1 and refuses non-loopback targets.  It does
not start or stop anything but its own process.
"""
import os
import socket
import subprocess
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))


class WanemError(Exception):
    """The emulator answered ERR, or could not be started."""


def find_binary():
    """$GEOGATE_WANEM, else geogate-wanem in $GEOGATE_BIN or bin/, else build/wanem."""
    env = os.environ.get("GEOGATE_WANEM")
    if env:
        return env
    candidates = []
    if os.environ.get("GEOGATE_BIN"):
        candidates.append(os.path.join(os.environ["GEOGATE_BIN"], "geogate-wanem"))
    candidates += [os.path.join(ROOT, "bin", "geogate-wanem"), os.path.join(ROOT, "build", "wanem")]
    for c in candidates:
        if os.access(c, os.X_OK):
            return c
    raise WanemError("geogate-wanem not built (looked in: %s)" % ", ".join(candidates))


def _parse_value(v):
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


class Wanem:
    """A connection to the control port; one request line, one reply line."""

    def __init__(self, control_port, host="127.0.0.1", timeout=5.0):
        self._sock = socket.create_connection((host, control_port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._file = self._sock.makefile("rb")
        self._lock = threading.Lock()

    def close(self):
        try:
            self._file.close()
        finally:
            self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def command(self, line):
        """Send one line; return the text after "OK" or raise WanemError with the reason."""
        with self._lock:
            self._sock.sendall(line.encode() + b"\n")
            reply = self._file.readline().decode().rstrip("\r\n")
        if reply == "OK" or reply.startswith("OK "):
            return reply[3:]
        if reply.startswith("ERR"):
            raise WanemError("%s -> %s" % (line, reply[4:]))
        raise WanemError("%s -> unexpected reply %r" % (line, reply))

    def set(self, link, dir="both", delay=None, jitter=None, rate=None, burst=None, queue=None):
        """delay/jitter in ms (float ok), rate in bytes/s (0 = no cap), burst/queue in bytes."""
        args = ["set", link, "dir=" + dir]
        for key, value in (("delay", delay), ("jitter", jitter), ("rate", rate),
                           ("burst", burst), ("queue", queue)):
            if value is not None:
                args.append("%s=%s" % (key, value))
        if len(args) == 3:
            raise ValueError("set needs at least one of delay, jitter, rate, burst, queue")
        self.command(" ".join(args))

    def state(self, link, state, dir=None):
        """state: 'up', 'blackhole' or 'cut'; dir ('fwd', 'rev') only for up/blackhole."""
        self.command("state %s %s%s" % (link, state, " dir=" + dir if dir else ""))

    def stats(self, link):
        """A dict: conns, conns_total, conns_reset, state, and per direction (fwd_, rev_):
        bytes_in, bytes (delivered), queued, delay, jitter, rate, burst, queue_cap, state."""
        out = {}
        for kv in self.command("stats " + link).split():
            k, _, v = kv.partition("=")
            out[k] = _parse_value(v)
        return out

    def list(self):
        return self.command("list").split()


class WanemProcess:
    """A running geogate-wanem; .ports maps link name to its 127.0.0.1 listen port."""

    def __init__(self, links, control_port=0, queue_cap=None, seed=None, binary=None,
                 log_path=None, quiet=True, timeout=10.0):
        # stderr goes to log_path, or else to ours: --quiet silences the state-change log
        # but never a crash or a sanitizer report.
        argv = [binary or find_binary(), "--control", str(control_port)]
        if quiet:
            argv.append("--quiet")
        for name, target in links.items():
            host, port = target[0], target[1]
            listen = target[2] if len(target) > 2 else 0
            if ":" in host:
                host = "[%s]" % host
            argv += ["--link", "%s=%d:%s:%d" % (name, listen, host, port)]
        if queue_cap is not None:
            argv += ["--queue-cap", str(queue_cap)]
        if seed is not None:
            argv += ["--seed", str(seed)]
        self._log = open(log_path, "ab") if log_path else None
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._log)
        self.ports = {}
        self.control_port = None
        self.ctl = None
        try:
            self._wait_ready(timeout)
            self.ctl = Wanem(self.control_port)
        except Exception:
            self.stop()
            raise

    def _wait_ready(self, timeout):
        # The ready line comes after every port is bound: no free-port race.
        result = {}

        def reader():
            result["line"] = self.proc.stdout.readline().decode()

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        t.join(timeout)
        line = result.get("line", "")
        if not line.startswith("ready "):
            raise WanemError("geogate-wanem did not start (exit %s, said %r)"
                             % (self.proc.poll(), line))
        for kv in line.split()[1:]:
            k, _, v = kv.partition("=")
            if k == "control":
                self.control_port = int(v)
            else:
                self.ports[k] = int(v)

    def stop(self, timeout=5.0):
        """TERM (then KILL); returns the exit status: 0 after a clean shutdown."""
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_wanem(links, **kwargs):
    """links: {name: (target_host, target_port[, listen_port])}; listen ports default to
    free ones chosen by the kernel.  Returns a WanemProcess (also a context manager)."""
    return WanemProcess(links, **kwargs)


def wait_for(predicate, timeout=5.0, interval=0.01):
    """Poll predicate until it returns something true; return it, or None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)
