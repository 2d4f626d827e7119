#!/usr/bin/python3
"""geogate three-site lab: us-east, eu-west and ap-south on one machine.

    deploy/lab/run up [--seconds N]     start the lab, print its addresses, run until
                                        Ctrl-C / SIGTERM (or N seconds; also $DEMO_SECONDS)
    deploy/lab/run demo                 start it, write a key at us-east, read it back at
                                        eu-west and ap-south, print both, stop
    deploy/lab/run status               (while `up` runs, from another shell) sites, peers,
                                        replication backlog
    deploy/lab/run stop-nodes SITE      stop both memcached nodes of SITE (a region's cache
                                        tier fails); start-nodes SITE brings them back empty
    deploy/lab/run isolate SITE         black-hole SITE's WAN links (a partition); heal SITE
    deploy/lab/run delay A B MS         one-way delay of the link between sites A and B

Each site is two memcached nodes and one geogate with a client port, an admin port
(/health /status /metrics, geogatectl) and a WAN port.  Sites reach each other only through
the WAN emulator (bin/geogate-wanem): site A's peer address for site B is the emulator link
"A--B", which relays to B's WAN port with a one-way delay of 15-30 ms (and 2 ms jitter)
each way.  The WAN runs TLS 1.3 with certificates from deploy/lab-ca.sh.

Ports: fixed defaults (below) when free, else free ones chosen by the kernel.  Everything
lives in lab-run/ at the top of the repository (--dir to move it): configs, certificates,
spools, logs, and lab.json (addresses, pids, the control port of the running lab).  A new
`up` wipes the previous run's state (the certificates are kept).  Every wait is bounded;
every process the lab starts is stopped when it exits, and dies with it if it is killed.
Loopback only.
"""
import argparse
import ctypes
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("GEOGATE_BIN", os.path.join(ROOT, "bin"))
GEOGATE = os.path.join(BIN, "geogate")
GEOGATECTL = os.path.join(BIN, "geogatectl")
LAB_CA = os.path.join(ROOT, "deploy", "lab-ca.sh")
sys.path.insert(0, os.path.join(ROOT, "tests", "tools", "wanem"))
import wanem  # noqa: E402  (tests/tools/wanem/wanem.py: binary lookup, control client)

HOST = "127.0.0.1"
SITES = ["us-east", "eu-west", "ap-south"]
# Fixed default ports per site (DESIGN.md's example numbering); the memcached nodes of
# site i are 212i1 and 212i2.
DEFAULT_PORTS = {
    "us-east": {"listen": 11311, "admin": 9311, "wan": 7311, "memcached": [21211, 21212]},
    "eu-west": {"listen": 11312, "admin": 9312, "wan": 7312, "memcached": [21221, 21222]},
    "ap-south": {"listen": 11313, "admin": 9313, "wan": 7313, "memcached": [21231, 21232]},
}
WANEM_CONTROL_PORT = 7399
WANEM_LINK_PORT_BASE = 7321  # links in SITES order: us-east--eu-west 7321, ...
# One-way delay (ms) of the emulated WAN between two sites, each direction; the peers'
# failover priorities follow it (nearest first).
DELAY_MS = {
    frozenset(("us-east", "eu-west")): 15,
    frozenset(("eu-west", "ap-south")): 20,
    frozenset(("us-east", "ap-south")): 30,
}
JITTER_MS = 2

START_TIMEOUT = 15.0   # one process to listen
LINKS_TIMEOUT = 30.0   # every replication link up
ADMIN_TIMEOUT = 3.0    # admin listener to answer (it is optional while being built)
STOP_TIMEOUT = 12.0    # a gateway drains within the systemd unit's TimeoutStopSec=10
REPLICATE_TIMEOUT = 15.0


class LabError(Exception):
    pass


# ---- small helpers --------------------------------------------------------------------

def port_free(port):
    # SO_REUSEADDR as every server here binds: a port with only TIME_WAIT connections
    # left from the previous run is free, one with a listener is not.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
            return True
        except OSError:
            return False


class Ports:
    """Fixed defaults when free (and not handed out already), else kernel-chosen ports."""

    def __init__(self, fixed=True):
        self.fixed = fixed
        self.taken = set()
        self.moved = []  # (what, wanted, got)

    def get(self, wanted, what):
        if self.fixed and wanted not in self.taken and port_free(wanted):
            port = wanted
        else:
            for _ in range(100):
                with socket.socket() as s:
                    s.bind((HOST, 0))
                    port = s.getsockname()[1]
                if port not in self.taken:
                    break
            if self.fixed:
                self.moved.append((what, wanted, port))
        self.taken.add(port)
        return port


_libc = None


def _die_with_parent():
    """In the child before exec: own process group (Ctrl-C reaches only the lab, which then
    stops everything in order), and SIGTERM when the lab dies, even by SIGKILL."""
    os.setpgid(0, 0)
    if _libc is not None:
        _libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:
    _libc = None


class Proc:
    """A child process with its output in a log file; stop() is TERM, then KILL."""

    def __init__(self, argv, name, log_path, stdout=None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                  stdout=stdout if stdout is not None else self._log,
                                  stderr=self._log, preexec_fn=_die_with_parent)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def terminate(self):
        """SIGTERM without waiting (stop() then waits): lets several stop at once."""
        if self.p.poll() is None:
            self.p.terminate()

    def stop(self, timeout=5.0):
        if self.p.poll() is None:
            try:
                self.p.terminate()
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)
        if self.p.stdout is not None:
            self.p.stdout.close()
        self._log.close()
        return self.p.returncode

    def tail(self, lines=15):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def wait_port(port, proc, what, timeout=START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise LabError("%s exited (code %s) before listening on %d; its log %s:\n%s"
                           % (what, proc.p.returncode, port, proc.log_path, proc.tail()))
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise LabError("%s is not listening on %d after %.0f s; its log %s:\n%s"
                   % (what, port, timeout, proc.log_path, proc.tail()))


def mc_request(port, data, until, timeout=3.0):
    """Send data to a memcached-protocol port; read until the reply ends with one of until."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while not any(out.endswith(u) for u in until):
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


def mc_set(port, key, value):
    reply = mc_request(port, b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value),
                       (b"\r\n",))
    if reply != b"STORED\r\n":
        raise LabError("set %s at port %d answered %r" % (key.decode(), port, reply))


def mc_get(port, key):
    """The value, or None on a miss."""
    reply = mc_request(port, b"get %s\r\n" % key, (b"END\r\n", b"ERROR\r\n"))
    if not reply.startswith(b"VALUE "):
        return None
    header, _, rest = reply.partition(b"\r\n")
    n = int(header.split()[3])
    return rest[:n]


def mc_stats(port, sub="peers"):
    reply = mc_request(port, ("stats %s\r\n" % sub).encode(), (b"END\r\n", b"ERROR\r\n"))
    out = {}
    for line in reply.decode("utf-8", "replace").splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "STAT":
            out[parts[1]] = parts[2]
    return out


def http_get(port, path, timeout=2.0):
    """(status, body) or None when nothing answers."""
    try:
        with urllib.request.urlopen("http://%s:%d%s" % (HOST, port, path), timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None


def q(s):
    return json.dumps(s)  # a JSON string is a YAML string


# ---- the lab ----------------------------------------------------------------------------

class Site:
    def __init__(self, name, index):
        self.name = name
        self.index = index
        self.dir = None
        self.listen = self.admin = self.wan = None
        self.mc_ports = []
        self.memcached = []   # Proc per node, None while stopped
        self.gateway = None
        self.config = None
        self.peers = []       # (peer site, priority, wanem link)


class Lab:
    def __init__(self, run_dir, fixed_ports=True, log=print):
        self.dir = os.path.abspath(run_dir)
        self.ports = Ports(fixed_ports)
        self.sites = {n: Site(n, i) for i, n in enumerate(SITES)}
        self.wanem = None
        self.wanem_ctl = None
        self.wanem_ports = {}
        self.wanem_control = None
        self.control_port = None
        self.admin_ok = {}
        self.log = log
        self.started = False

    # -- set-up --

    def prepare(self):
        for path in (GEOGATE, wanem.find_binary()):
            if not os.access(path, os.X_OK):
                raise LabError("%s is not built: run `make` first" % path)
        if shutil.which("memcached") is None:
            raise LabError("memcached is not installed (Debian: apt-get install memcached)")
        running = read_state(self.dir)
        if running and control_alive(running):
            raise LabError("a lab is already running in %s (pid %s); stop it first"
                           % (self.dir, running.get("pid")))
        os.makedirs(self.dir, exist_ok=True)
        marker = os.path.join(self.dir, ".geogate-lab")
        if os.listdir(self.dir) and not os.path.exists(marker):
            raise LabError("%s is not empty and is not a lab directory: not wiping it "
                           "(choose another --dir)" % self.dir)
        for entry in os.listdir(self.dir):  # the previous run's state, but keep the certs
            if entry == ".geogate-lab":
                continue
            if entry != "certs":
                path = os.path.join(self.dir, entry)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
        with open(marker, "w") as f:
            f.write("state of deploy/lab/lab.py; wiped by the next `lab.py up`\n")
        self.certs = os.path.join(self.dir, "certs")
        r = subprocess.run(["sh", LAB_CA, self.certs] + SITES, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        if r.returncode != 0:
            raise LabError("deploy/lab-ca.sh failed:\n%s" % r.stdout.decode("utf-8", "replace"))
        for s in self.sites.values():
            d = DEFAULT_PORTS[s.name]
            s.dir = os.path.join(self.dir, s.name)
            os.makedirs(os.path.join(s.dir, "spool"))
            s.listen = self.ports.get(d["listen"], "%s clients" % s.name)
            s.admin = self.ports.get(d["admin"], "%s admin" % s.name)
            s.wan = self.ports.get(d["wan"], "%s wan" % s.name)
            s.mc_ports = [self.ports.get(p, "%s memcached" % s.name) for p in d["memcached"]]
            s.memcached = [None] * len(s.mc_ports)
        self.wanem_control = self.ports.get(WANEM_CONTROL_PORT, "WAN emulator control")
        n = 0
        self.links = {}  # link name -> (from site, to site)
        for a in SITES:
            for b in SITES:
                if a != b:
                    name = link_name(a, b)
                    self.links[name] = (a, b)
                    self.wanem_ports[name] = self.ports.get(WANEM_LINK_PORT_BASE + n,
                                                            "WAN link %s" % name)
                    n += 1
        for s in self.sites.values():
            others = sorted((p for p in SITES if p != s.name),
                            key=lambda p: (DELAY_MS[frozenset((s.name, p))], SITES.index(p)))
            s.peers = [(p, prio, link_name(s.name, p)) for prio, p in enumerate(others, 1)]
            self.write_config(s)

    def write_config(self, s):
        lines = [
            "# geogate lab: site %s (written by deploy/lab/lab.py; every key: docs/CONFIG.md)"
            % s.name,
            "site: %s" % s.name,
            "gateway_id: 1",
            "listen: %s:%d" % (HOST, s.listen),
            "admin: %s:%d" % (HOST, s.admin),
            "threads: 2",
            "log_level: info",
            "pool:",
            "  distribution: ketama",
            "  hash: md5",
            "  servers:",
        ]
        lines += ["    - %s:%d:1" % (HOST, p) for p in s.mc_ports]
        lines += [
            "  timeout: 250",
            "  failure_limit: 3",
            "  retry_timeout: 1000",
            "wan:",
            "  listen: %s:%d" % (HOST, s.wan),
            "  tls: { ca: %s, cert: %s, key: %s }" % (
                q(os.path.join(self.certs, "ca.pem")),
                q(os.path.join(self.certs, s.name + ".pem")),
                q(os.path.join(self.certs, s.name + ".key"))),
            "  spool: { dir: %s, max_bytes: 268435456, fsync: everysec }"
            % q(os.path.join(s.dir, "spool")),
            "  peers:   # through the WAN emulator; nearest first",
        ]
        for peer, prio, link in s.peers:
            lines.append("    - { site: %s, addresses: [%s:%d], priority: %d }   # %d ms one way"
                         % (peer, HOST, self.wanem_ports[link], prio,
                            DELAY_MS[frozenset((s.name, peer))]))
        lines += [
            "failover:",
            "  local_healthy_fraction: 0.5",
            "  hold_down: 5000",
            "  warmup: { max_time: 60000, hit_ratio: 0.9 }",
            "replication:",
            "  rules:",
            '    - { prefix: "tmp:", mode: none }',
            '    - { prefix: "", mode: copy }',
        ]
        s.config = os.path.join(s.dir, "geogate.yml")
        with open(s.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        r = subprocess.run([GEOGATE, "--config", s.config, "--check"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        if r.returncode != 0:
            raise LabError("generated config does not pass --check:\n%s"
                           % r.stdout.decode("utf-8", "replace"))

    def start(self):
        self.started = True
        for s in self.sites.values():
            for i in range(len(s.mc_ports)):
                self.start_node(s, i)
        self.start_wanem()
        for s in self.sites.values():  # all at once: each needs the others to link up
            log = os.path.join(s.dir, "geogate.log")
            s.gateway = Proc([GEOGATE, "--config", s.config], "geogate %s" % s.name, log)
        for s in self.sites.values():
            wait_port(s.listen, s.gateway, s.gateway.name)
        self.wait_links_up()
        for s in self.sites.values():
            self.admin_ok[s.name] = self.wait_admin(s)
        self.write_state()

    def start_node(self, s, i):
        port = s.mc_ports[i]
        argv = ["memcached", "-l", HOST, "-p", str(port), "-U", "0", "-m", "64", "-t", "1",
                "-c", "4096", "-I", "2m"]
        if os.geteuid() == 0:
            argv += ["-u", "root"]
        p = Proc(argv, "memcached %s:%d" % (s.name, port),
                 os.path.join(s.dir, "memcached-%d.log" % port))
        s.memcached[i] = p
        wait_port(port, p, p.name)

    def start_wanem(self):
        argv = [wanem.find_binary(), "--control", str(self.wanem_control), "--quiet"]
        for name, (a, b) in self.links.items():
            argv += ["--link", "%s=%d:%s:%d" % (name, self.wanem_ports[name], HOST,
                                                 self.sites[b].wan)]
        self.wanem = Proc(argv, "geogate-wanem", os.path.join(self.dir, "wanem.log"),
                          stdout=subprocess.PIPE)
        # "ready control=PORT NAME=PORT ..." comes once every port is bound.
        got = {}
        t = threading.Thread(target=lambda: got.setdefault("line", self.wanem.p.stdout.readline()),
                             daemon=True)
        t.start()
        t.join(START_TIMEOUT)
        line = got.get("line", b"").decode("utf-8", "replace")
        if not line.startswith("ready "):
            raise LabError("the WAN emulator did not start (said %r); its log %s:\n%s"
                           % (line, self.wanem.log_path, self.wanem.tail()))
        self.wanem_ctl = wanem.Wanem(self.wanem_control)
        for name, (a, b) in self.links.items():
            self.wanem_ctl.set(name, dir="both", delay=DELAY_MS[frozenset((a, b))],
                               jitter=JITTER_MS)

    def wait_links_up(self, timeout=LINKS_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = {}
        while True:
            down = []
            for s in self.sites.values():
                if not s.gateway.alive():
                    raise LabError("%s exited (code %s); its log %s:\n%s"
                                   % (s.gateway.name, s.gateway.p.returncode,
                                      s.gateway.log_path, s.gateway.tail()))
                try:
                    st = last[s.name] = mc_stats(s.listen)
                except OSError:
                    down.append(s.name)
                    continue
                for peer, _, _ in s.peers:
                    if st.get("peer:%s:state" % peer) != "up":
                        down.append("%s->%s" % (s.name, peer))
            if not down:
                return
            if time.monotonic() >= deadline:
                raise LabError("replication links not up after %.0f s: %s (logs in %s)"
                               % (timeout, ", ".join(down), self.dir))
            time.sleep(0.1)

    def wait_admin(self, s, timeout=ADMIN_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            if http_get(s.admin, "/health", timeout=1.0) is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    # -- what the operator can do while it runs --

    def stop_nodes(self, name):
        s = self.sites[name]
        stopped = []
        for p in s.memcached:
            if p is not None:
                p.terminate()
        for i, p in enumerate(s.memcached):
            if p is not None:
                p.stop()
                s.memcached[i] = None
                stopped.append("%s:%d" % (HOST, s.mc_ports[i]))
        self.write_state()
        if not stopped:
            return "%s: its memcached nodes were already stopped" % name
        return "%s: stopped memcached %s" % (name, ", ".join(stopped))

    def start_nodes(self, name):
        s = self.sites[name]
        started = []
        for i, p in enumerate(s.memcached):
            if p is None or not p.alive():
                if p is not None:
                    p.stop()
                self.start_node(s, i)
                started.append("%s:%d" % (HOST, s.mc_ports[i]))
        self.write_state()
        if not started:
            return "%s: its memcached nodes are running" % name
        return "%s: started memcached %s (empty)" % (name, ", ".join(started))

    def link_state(self, name, state):
        done = []
        for link, (a, b) in self.links.items():
            if name in (a, b):
                self.wanem_ctl.state(link, state)
                done.append(link)
        return "%s: WAN links %s: %s" % (name, state, ", ".join(sorted(done)))

    def set_delay(self, a, b, ms):
        if a == b or a not in self.sites or b not in self.sites:
            raise LabError("delay wants two different sites of %s" % ", ".join(SITES))
        for link in (link_name(a, b), link_name(b, a)):
            self.wanem_ctl.set(link, dir="both", delay=ms)
        return "%s <-> %s: %s ms one way" % (a, b, ms)

    def status(self):
        out = []
        for s in self.sites.values():
            nodes = " ".join("%d:%s" % (port, "up" if p is not None and p.alive() else "STOPPED")
                             for port, p in zip(s.mc_ports, s.memcached))
            gw = "running" if s.gateway is not None and s.gateway.alive() else "EXITED"
            out.append("%s  gateway %s  memcached %s" % (s.name, gw, nodes))
            health = http_get(s.admin, "/health", timeout=1.0)
            if health is not None:
                out.append("    /health: %d %s" % (health[0], health[1].strip()[:100]))
                st = http_get(s.admin, "/status", timeout=1.0)
                if st is not None and st[0] == 200:
                    try:
                        doc = json.loads(st[1])
                        mode = doc.get("mode", "?")
                        if doc.get("peer"):
                            mode += " via %s" % doc["peer"]
                        if doc.get("forced"):
                            mode += " (forced)"
                        out.append("    /status: mode %s, switches %s"
                                   % (mode, doc.get("switches", "?")))
                    except ValueError:
                        pass
            try:
                st = mc_stats(s.listen)
            except OSError as e:
                out.append("    stats peers: %s" % e)
                continue
            for peer, prio, link in s.peers:
                p = "peer:%s:" % peer
                out.append("    -> %-8s %-5s unacked %s records (%s bytes, oldest %s ms), "
                           "lag p99 %s ms, dropped %s   [wan link %s: %s]"
                           % (peer, st.get(p + "state", "?"), st.get(p + "spool_records", "?"),
                              st.get(p + "spool_bytes", "?"),
                              st.get(p + "oldest_unacked_age_ms", "?"),
                              st.get(p + "lag_p99_ms", "?"), st.get(p + "dropped", "?"),
                              link, self.wanem_ctl.stats(link).get("state", "?")))
        return "\n".join(out)

    # -- reporting --

    def write_state(self):
        state = {
            "pid": os.getpid(),
            "dir": self.dir,
            "control_port": self.control_port,
            "wanem": {"control": self.wanem_control, "links": self.wanem_ports,
                      "pid": self.wanem.pid if self.wanem else None},
            "sites": {},
        }
        for s in self.sites.values():
            state["sites"][s.name] = {
                "listen": "%s:%d" % (HOST, s.listen),
                "admin": "%s:%d" % (HOST, s.admin),
                "wan": "%s:%d" % (HOST, s.wan),
                "config": s.config,
                "log": os.path.join(s.dir, "geogate.log"),
                "spool": os.path.join(s.dir, "spool"),
                "gateway_pid": s.gateway.pid if s.gateway else None,
                "memcached": [{"address": "%s:%d" % (HOST, port),
                               "pid": p.pid if p is not None else None}
                              for port, p in zip(s.mc_ports, s.memcached)],
                "peers": [{"site": peer, "priority": prio,
                           "address": "%s:%d" % (HOST, self.wanem_ports[link]),
                           "one_way_delay_ms": DELAY_MS[frozenset((s.name, peer))]}
                          for peer, prio, link in s.peers],
            }
        tmp = os.path.join(self.dir, "lab.json.tmp")
        with open(tmp, "w") as f:
            json.dump(state, f, indent=2)
            f.write("\n")
        os.replace(tmp, os.path.join(self.dir, "lab.json"))

    def describe(self):
        first = self.sites[SITES[0]]
        rel = os.path.relpath(self.dir)
        rel = rel if not rel.startswith("..") else self.dir
        out = ["", "geogate lab is up: 3 sites on %s, state in %s/" % (HOST, rel), ""]
        out.append("  %-9s %-17s %-17s %-17s %s" % ("site", "clients", "admin", "wan",
                                                    "memcached nodes"))
        for s in self.sites.values():
            out.append("  %-9s %-17s %-17s %-17s %s" % (
                s.name, "%s:%d" % (HOST, s.listen), "%s:%d" % (HOST, s.admin),
                "%s:%d" % (HOST, s.wan), " ".join("%s:%d" % (HOST, p) for p in s.mc_ports)))
        out.append("")
        out.append("  WAN emulator (one-way delay each way, +-%d ms jitter; control %s:%d):"
                   % (JITTER_MS, HOST, self.wanem_control))
        for pair in (("us-east", "eu-west"), ("eu-west", "ap-south"), ("us-east", "ap-south")):
            out.append("    %-8s <-> %-8s %2d ms" % (pair[0], pair[1], DELAY_MS[frozenset(pair)]))
        for s in self.sites.values():
            out.append("  %s reads fail over to: %s" % (
                s.name, ", ".join("%s (priority %d)" % (p, prio) for p, prio, _ in s.peers)))
        if self.ports.moved:
            out.append("")
            out.append("  (ports in use, moved: %s)" % ", ".join(
                "%s %d -> %d" % m for m in self.ports.moved))
        missing = [n for n, ok in self.admin_ok.items() if not ok]
        if missing:
            out.append("")
            out.append("  note: the admin listener does not answer yet at %s (this geogate build"
                       " has no admin HTTP);" % ", ".join(missing))
            out.append("        /health, /status, /metrics and geogatectl need it.")
        ctl = os.path.relpath(GEOGATECTL)
        ctl = ctl if not ctl.startswith("..") else GEOGATECTL
        out += [
            "",
            "Try it:",
            "  printf 'set k 0 0 2\\r\\nhi\\r\\n' | nc -q1 %s %d     # write at %s"
            % (HOST, first.listen, first.name),
            "  printf 'get k\\r\\n' | nc -q1 %s %d                # read at %s"
            % (HOST, self.sites[SITES[1]].listen, SITES[1]),
            "  curl -s http://%s:%d/status; curl -s http://%s:%d/metrics"
            % (HOST, first.admin, HOST, first.admin),
            "  printf 'stats peers\\r\\n' | nc -q1 %s %d         # replication, per peer"
            % (HOST, first.listen),
            "",
            "Rehearse a DR drill (docs/RUNBOOK.md):",
            "  %s --admin %s:%d drill --report %s"
            % (ctl, HOST, first.admin, os.path.join(rel, "drill-%s.json" % first.name)),
            "  %s --admin %s:%d status" % (ctl, HOST, first.admin),
        ]
        if not os.access(GEOGATECTL, os.X_OK):
            out.append("  (%s is not built yet)" % ctl)
        run = os.path.relpath(os.path.join(HERE, "run"))
        run = run if not run.startswith("..") else os.path.join(HERE, "run")
        dir_arg = "" if self.dir == os.path.join(ROOT, "lab-run") else " --dir %s" % self.dir
        out += [
            "",
            "Break it, from another shell:",
            "  %s%s stop-nodes %s    # the region's cache tier fails; start-nodes brings it back empty"
            % (run, dir_arg, first.name),
            "  %s%s isolate %s       # partition it from the others; heal ends it" % (
                run, dir_arg, first.name),
            "  %s%s status                # sites, peers, replication backlog" % (run, dir_arg),
        ]
        return "\n".join(out)

    # -- tear-down --

    def stop(self):
        """Gateways first (they drain and flush their spools), then the WAN, then memcached;
        each group is sent SIGTERM at once, then waited for."""
        for s in self.sites.values():
            if s.gateway is not None:
                s.gateway.terminate()
        for s in self.sites.values():
            if s.gateway is not None:
                rc = s.gateway.stop(timeout=STOP_TIMEOUT)
                if rc not in (0, None):
                    self.log("%s exited with %s (log %s)" % (s.gateway.name, rc,
                                                             s.gateway.log_path))
                s.gateway = None
        if self.wanem_ctl is not None:
            try:
                self.wanem_ctl.close()
            except OSError:
                pass
            self.wanem_ctl = None
        if self.wanem is not None:
            self.wanem.stop()
            self.wanem = None
        for s in self.sites.values():
            for p in s.memcached:
                if p is not None:
                    p.terminate()
        for s in self.sites.values():
            for i, p in enumerate(s.memcached):
                if p is not None:
                    p.stop()
                    s.memcached[i] = None
        try:
            os.unlink(os.path.join(self.dir, "lab.json"))
        except OSError:
            pass


def link_name(a, b):
    """The emulator link carrying the connections site a opens to site b."""
    return "%s--%s" % (a, b)


# ---- control: `run status|stop-nodes|...` talk to the running `up` ---------------------

def read_state(run_dir):
    try:
        with open(os.path.join(run_dir, "lab.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def control_alive(state):
    port = state.get("control_port")
    if not port:
        return False
    try:
        socket.create_connection((HOST, port), timeout=1.0).close()
        return True
    except OSError:
        return False


class Control:
    """A loopback line server; each request is handed to the main thread (which owns every
    child process) and its answer sent back."""

    def __init__(self):
        self.requests = queue.Queue()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(30)
                try:
                    line = conn.makefile("rb").readline().decode("utf-8", "replace").strip()
                    if not line:  # a liveness probe (control_alive) or an empty request
                        continue
                    done = threading.Event()
                    box = {}
                    self.requests.put((line.split(), box, done))
                    if not done.wait(60):
                        box["reply"] = "ERR the lab did not answer in 60 s"
                    conn.sendall(box.get("reply", "ERR no reply").encode() + b"\n")
                except OSError:
                    pass

    def close(self):
        self.sock.close()


def handle(lab, words):
    try:
        if words == ["status"]:
            return "OK\n" + lab.status()
        if len(words) == 2 and words[1] in lab.sites:
            cmd, site = words
            if cmd == "stop-nodes":
                return "OK " + lab.stop_nodes(site)
            if cmd == "start-nodes":
                return "OK " + lab.start_nodes(site)
            if cmd == "isolate":
                return "OK " + lab.link_state(site, "blackhole")
            if cmd == "heal":
                return "OK " + lab.link_state(site, "up")
        if len(words) == 4 and words[0] == "delay":
            return "OK " + lab.set_delay(words[1], words[2], float(words[3]))
        return "ERR unknown request %r (sites: %s)" % (" ".join(words), ", ".join(SITES))
    except (LabError, wanem.WanemError, ValueError, OSError) as e:
        return "ERR %s" % e


def client(run_dir, words):
    state = read_state(run_dir)
    if not state or not control_alive(state):
        sys.exit("no lab is running in %s (start one with deploy/lab/run up)" % run_dir)
    with socket.create_connection((HOST, state["control_port"]), timeout=90) as s:
        s.sendall((" ".join(words) + "\n").encode())
        reply = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    text = reply.decode("utf-8", "replace").rstrip("\n")
    if text.startswith("OK"):
        print(text[3:] if len(text) > 3 else "ok")
        return 0
    print(text[4:] if text.startswith("ERR ") else text, file=sys.stderr)
    return 1


# ---- commands -------------------------------------------------------------------------

class Stop(Exception):
    pass


def on_signal(signum, frame):
    raise Stop(signal.Signals(signum).name)


def bring_up(lab):
    print("starting the geogate lab in %s ..." % lab.dir, flush=True)
    lab.prepare()
    lab.start()


def cmd_up(args):
    seconds = args.seconds
    if seconds is None and os.environ.get("DEMO_SECONDS"):
        seconds = float(os.environ["DEMO_SECONDS"])
    lab = Lab(args.dir, fixed_ports=not args.free_ports)
    control = None
    try:
        bring_up(lab)
        control = Control()
        lab.control_port = control.port
        lab.write_state()
        print(lab.describe())
        print()
        if seconds:
            print("running for %g s (--seconds)" % seconds, flush=True)
        else:
            print("Ctrl-C stops the lab.", flush=True)
        deadline = time.monotonic() + seconds if seconds else None
        reported = set()
        while deadline is None or time.monotonic() < deadline:
            timeout = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            try:
                words, box, done = control.requests.get(timeout=timeout)
                box["reply"] = handle(lab, words)
                done.set()
                print("[lab] %s: %s" % (" ".join(words), box["reply"].splitlines()[0]), flush=True)
            except queue.Empty:
                pass
            for s in lab.sites.values():
                procs = [s.gateway] + [p for p in s.memcached if p is not None]
                for p in procs:
                    if p is not None and not p.alive() and p.pid not in reported:
                        reported.add(p.pid)
                        print("[lab] %s exited unexpectedly (code %s); log %s"
                              % (p.name, p.p.returncode, p.log_path), flush=True)
        return 0
    except LabError as e:
        print("lab: %s" % e, file=sys.stderr)
        return 1
    except (Stop, KeyboardInterrupt):
        return 0
    finally:
        # No second signal may interrupt the tear-down.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if control is not None:
            control.close()
        if lab.started:
            lab.stop()
            print("lab stopped (logs and spools kept in %s)" % lab.dir, flush=True)


def cmd_demo(args):
    lab = Lab(args.dir, fixed_ports=not args.free_ports)
    try:
        bring_up(lab)
        print(lab.describe())
        src, dsts = lab.sites[SITES[0]], [lab.sites[n] for n in SITES[1:]]
        key = b"lab:demo:%d" % int(time.time())
        value = ("hello from %s, written %s" % (src.name, time.strftime("%H:%M:%S"))).encode()
        print()
        print("demo: set %s = %r at %s (127.0.0.1:%d)"
              % (key.decode(), value.decode(), src.name, src.listen), flush=True)
        t0 = time.monotonic()
        mc_set(src.listen, key, value)
        got = {}
        deadline = t0 + REPLICATE_TIMEOUT
        while len(got) < len(dsts) and time.monotonic() < deadline:
            for d in dsts:
                if d.name not in got:
                    v = mc_get(d.listen, key)
                    if v == value:
                        got[d.name] = (v, (time.monotonic() - t0) * 1000)
            time.sleep(0.005)
        ok = True
        for d in dsts:
            if d.name in got:
                v, ms = got[d.name]
                print("demo: get %s at %-8s (127.0.0.1:%d) -> %r   (replicated in %.0f ms)"
                      % (key.decode(), d.name, d.listen, v.decode(), ms))
            else:
                ok = False
                print("demo: get %s at %-8s (127.0.0.1:%d) -> %r   (NOT replicated within %.0f s)"
                      % (key.decode(), d.name, d.listen, mc_get(d.listen, key), REPLICATE_TIMEOUT))
        print("demo: %s" % ("ok: one write at %s, read back at %s" % (
            src.name, " and ".join(d.name for d in dsts)) if ok else "FAILED"), flush=True)
        return 0 if ok else 1
    except LabError as e:
        print("lab: %s" % e, file=sys.stderr)
        return 1
    except (Stop, KeyboardInterrupt):
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if lab.started:
            lab.stop()
            print("lab stopped (logs kept in %s)" % lab.dir, flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="deploy/lab/run", description="A three-site geogate lab on one machine.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Sites: %s.  See docs/RUNBOOK.md." % ", ".join(SITES))
    ap.add_argument("--dir", default=os.path.join(ROOT, "lab-run"),
                    help="where the lab keeps its state (default: lab-run/ in the repository)")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True
    up = sub.add_parser("up", help="start the lab and keep it running")
    up.add_argument("--seconds", type=float, default=None,
                    help="stop after this long (default: $DEMO_SECONDS, else until Ctrl-C)")
    up.add_argument("--free-ports", action="store_true",
                    help="do not try the fixed default ports; take free ones")
    demo = sub.add_parser("demo", help="start the lab, replicate one write, stop")
    demo.add_argument("--free-ports", action="store_true",
                      help="do not try the fixed default ports; take free ones")
    sub.add_parser("status", help="sites, peers and replication backlog of the running lab")
    for name, what in (("stop-nodes", "stop both memcached nodes of SITE"),
                       ("start-nodes", "start SITE's memcached nodes again (empty)"),
                       ("isolate", "black-hole every WAN link of SITE"),
                       ("heal", "bring SITE's WAN links back")):
        p = sub.add_parser(name, help=what)
        p.add_argument("site", choices=SITES)
    p = sub.add_parser("delay", help="set the one-way delay between two sites")
    p.add_argument("a", choices=SITES)
    p.add_argument("b", choices=SITES)
    p.add_argument("ms", type=float)
    args = ap.parse_args(argv)
    args.dir = os.path.abspath(args.dir)

    if args.cmd in ("up", "demo"):
        # SIGINT explicitly too: a shell starts background jobs with SIGINT ignored, and
        # Python then raises no KeyboardInterrupt.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, on_signal)
        return cmd_up(args) if args.cmd == "up" else cmd_demo(args)
    if args.cmd == "status":
        return client(args.dir, ["status"])
    if args.cmd == "delay":
        return client(args.dir, ["delay", args.a, args.b, "%g" % args.ms])
    return client(args.dir, [args.cmd, args.site])


if __name__ == "__main__":
    sys.exit(main())
