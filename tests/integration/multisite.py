"""A multi-site geogate lab for the replication tests.

    from multisite import Lab
    with Lab(["us-east", "eu-west", "ap-south"], nodes=2, wanem=True) as lab:
        lab.client("us-east").set("k", b"v")
        lab.set_link("us-east", "eu-west", delay=20, jitter=5)   # one direction of the WAN
        lab.isolate("ap-south")                                  # black-hole its links
        lab.heal("ap-south")
        lab.wait_drained(60)
        print(lab.divergent(keys))                               # [] when converged

Each site is M memcached nodes plus one geogate whose config (with a `wan:` section, spool
dir and fsync policy) lives in the lab's temp dir; certificates come from deploy/lab-ca.sh.
With wanem=True a geogate-wanem relay sits on every ordered pair of sites: site A's peer
address for site B is the link "A--B", which relays to B's wan.listen.  A link carries the
TCP connections A opens to B, so its fwd direction carries A's batches and rev B's acks;
B's own batches to A travel on "B--A".

Optional, for the failover tests (defaults leave the configs exactly as before):
admin=True gives every site an admin listener (lab.admin(), lab.site_status());
pool_timeout / pool_extra={"failure_limit": 3, ...} set pool keys; extra_yaml="failover: ..."
(or {site: yaml}) appends top-level YAML to every (or one) site's config;
kill_node()/start_node() stop a site's memcached node and start it again EMPTY on the same
port; mode_changes() reads the gateway's "site mode X -> Y" log lines.

Loopback only, every wait bounded, and everything started here is stopped on exit (the
context manager), including after a failed test.
"""
import bisect
import calendar
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import harness

sys.path.insert(0, os.path.join(harness.ROOT, "tests", "tools", "wanem"))
from wanem import start_wanem  # noqa: E402

from pymemcache.client.base import Client  # noqa: E402

LAB_CA = os.path.join(harness.ROOT, "deploy", "lab-ca.sh")

# docs/REPLICATION.md, "Item header"
MARKER = 0x67670001
HEADER = struct.Struct("<2sBBIQIHHII")  # magic, format, bits, flags, hlc, site, gw, rsvd, exp, crc
HEADER_SIZE = 32


# ---- CRC32C (Castagnoli), to check item headers the way geogate does -----------------

def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def fnv1a_32(s):
    h = 0x811C9DC5
    for b in s.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def parse_item(mc_flags, data):
    """One item as memcached holds it -> dict: value, flags, expiry, hlc, site_id, gateway_id,
    tombstone, versioned.  Items without the marker or with a bad header are version 0, served
    unchanged (what the gateway does)."""
    if mc_flags == MARKER and len(data) >= HEADER_SIZE:
        magic, fmt, bits, cflags, hlc, site_id, gw, _rsvd, exp, crc = HEADER.unpack_from(data)
        if magic == b"GG" and fmt == 1 and crc == crc32c(data[:28]):
            return {"value": data[HEADER_SIZE:], "flags": cflags, "expiry": exp, "hlc": hlc,
                    "site_id": site_id, "gateway_id": gw, "tombstone": bool(bits & 1),
                    "versioned": True}
    return {"value": data, "flags": mc_flags, "expiry": None, "hlc": 0, "site_id": 0,
            "gateway_id": 0, "tombstone": False, "versioned": False}


# ---- ketama as twemproxy builds it (md5, equal weights), to find a key's node ------------

class Ketama:
    def __init__(self, ports):
        points = []
        for port in ports:
            name = "127.0.0.1:%d" % port
            for i in range(160 // 4):
                d = hashlib.md5(("%s-%d" % (name, i)).encode()).digest()
                for x in range(4):
                    points.append((struct.unpack_from("<I", d, x * 4)[0], port))
        points.sort()
        self.values = [v for v, _ in points]
        self.ports = [p for _, p in points]

    def node(self, key):
        key = key if isinstance(key, bytes) else key.encode()
        h = struct.unpack_from("<I", hashlib.md5(key).digest())[0]
        i = bisect.bisect_left(self.values, h)
        return self.ports[i % len(self.ports)]


# ---- a minimal ASCII client for dumps and stats ---------------------------------------

class MCConn:
    """One connection speaking the memcached ASCII protocol: multi-key gets and stats."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb")

    def close(self):
        try:
            self.f.close()
        finally:
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def gets(self, keys, chunk=100):
        """{key(bytes): (flags, data, cas)} for the keys that are present."""
        out = {}
        keys = [k if isinstance(k, bytes) else k.encode() for k in keys]
        for i in range(0, len(keys), chunk):
            part = keys[i:i + chunk]
            self.sock.sendall(b"gets " + b" ".join(part) + b"\r\n")
            while True:
                line = self.f.readline()
                if not line:
                    raise ConnectionError("connection closed during gets")
                if line == b"END\r\n":
                    break
                w = line.split()
                if not w or w[0] != b"VALUE" or len(w) < 5:
                    raise ConnectionError("unexpected reply to gets: %r" % line[:200])
                n = int(w[3])
                data = self.f.read(n + 2)
                if len(data) != n + 2 or data[-2:] != b"\r\n":
                    raise ConnectionError("short value for %r" % w[1])
                out[w[1]] = (int(w[2]), data[:-2], int(w[4]))
        return out

    def stats(self, sub=""):
        self.sock.sendall(("stats %s\r\n" % sub).strip().encode() + b"\r\n")
        out = {}
        while True:
            line = self.f.readline()
            if not line:
                raise ConnectionError("connection closed during stats")
            line = line.decode("utf-8", "replace").rstrip("\r\n")
            if line == "END":
                return out
            if not line.startswith("STAT "):
                raise ConnectionError("unexpected reply to stats: %r" % line)
            _, name, value = line.split(" ", 2)
            try:
                out[name] = int(value)
            except ValueError:
                out[name] = value


class DrainTimeout(AssertionError):
    pass


class SiteRun:
    """What the lab knows about one site."""

    def __init__(self, name, index):
        self.name = name
        self.index = index
        self.memcached = []
        self.port = None          # clients (memcached ASCII)
        self.wan_port = None      # wan.listen
        self.config = None
        self.spool_dir = None
        self.gateway = None       # harness.Proc, or None while stopped
        self.logs = []            # one stderr file per start
        self.starts = 0
        self.admin_port = None    # admin listener (Lab(admin=True) only)


class Lab:
    """N sites, each M memcached nodes + one replicating geogate, optionally a WAN emulator
    between every ordered pair of sites.  A context manager: stop() ends everything."""

    def __init__(self, sites, nodes=1, wanem=False, fsync="everysec", threads=2, rules=None,
                 tombstone_ttl=None, spool_max_bytes=None, log_level="info", mem_mb=64,
                 wanem_seed=None, start=True, wait_up=15.0, admin=False, pool_timeout=1000,
                 pool_extra=None, extra_yaml=None):
        if len(set(sites)) != len(sites) or len(sites) < 2:
            raise ValueError("need at least two distinct site names")
        self.names = list(sites)
        self.nodes = nodes
        self.use_wanem = wanem
        self.fsync = fsync
        self.threads = threads
        self.rules = rules
        self.tombstone_ttl = tombstone_ttl
        self.spool_max_bytes = spool_max_bytes
        self.log_level = log_level
        self.mem_mb = mem_mb
        self.use_admin = admin
        self.pool_timeout = pool_timeout
        self.pool_extra = dict(pool_extra or {})
        self.extra_yaml = extra_yaml
        self.wanem = None
        self._clients = []
        self._lock = threading.Lock()
        self.tmp = tempfile.TemporaryDirectory(prefix="geogate-lab-")
        self.dir = self.tmp.name
        self.keep = os.environ.get("GEOGATE_KEEP_LAB") == "1"
        self.sites = {n: SiteRun(n, i) for i, n in enumerate(self.names)}
        try:
            self._make_certs()
            for s in self.sites.values():
                s.port = harness.free_port()
                s.wan_port = harness.free_port()
                if admin:
                    s.admin_port = harness.free_port()
                s.spool_dir = os.path.join(self.dir, s.name, "spool")
                os.makedirs(s.spool_dir)
                s.memcached = [harness.start_memcached(mem_mb=mem_mb) for _ in range(nodes)]
            if wanem:
                links = {}
                for a in self.names:
                    for b in self.names:
                        if a != b:
                            links[self.link(a, b)] = ("127.0.0.1", self.sites[b].wan_port)
                self.wanem = start_wanem(links, seed=wanem_seed,
                                         log_path=os.path.join(self.dir, "wanem.log"))
            for s in self.sites.values():
                self._write_config(s)
            if start:
                for n in self.names:
                    self.start_site(n)
                if wait_up:
                    self.wait_links_up(wait_up)
        except BaseException:
            self.stop()
            raise

    # ---- set-up ----

    def _make_certs(self):
        self.certs = os.path.join(self.dir, "certs")
        r = subprocess.run(["sh", LAB_CA, self.certs] + self.names, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("lab-ca.sh failed: %s" % r.stdout.decode("utf-8", "replace"))

    @staticmethod
    def link(a, b):
        """The wanem link that carries the connections site a opens to site b."""
        return "%s--%s" % (a, b)

    def _peer_address(self, a, b):
        if self.wanem is not None:
            return "127.0.0.1:%d" % self.wanem.ports[self.link(a, b)]
        return "127.0.0.1:%d" % self.sites[b].wan_port

    def _write_config(self, s):
        q = json.dumps  # a JSON string is a YAML string
        lines = [
            "site: %s" % s.name,
            "gateway_id: %d" % (s.index + 1),
            "listen: 127.0.0.1:%d" % s.port,
        ]
        if s.admin_port:
            lines.append("admin: 127.0.0.1:%d" % s.admin_port)
        lines += [
            "threads: %d" % self.threads,
            "log_level: %s" % self.log_level,
            "pool:",
            "  distribution: ketama",
            "  hash: md5",
            "  timeout: %d" % self.pool_timeout,
        ]
        lines += ["  %s: %s" % (k, v) for k, v in self.pool_extra.items()]
        lines += [
            "  servers:",
        ]
        lines += ["    - 127.0.0.1:%d:1" % m.port for m in s.memcached]
        spool = "{ dir: %s, fsync: %s%s }" % (
            q(s.spool_dir), self.fsync,
            ", max_bytes: %d" % self.spool_max_bytes if self.spool_max_bytes else "")
        lines += [
            "wan:",
            "  listen: 127.0.0.1:%d" % s.wan_port,
            "  tls: { ca: %s, cert: %s, key: %s }" % (
                q(os.path.join(self.certs, "ca.pem")),
                q(os.path.join(self.certs, s.name + ".pem")),
                q(os.path.join(self.certs, s.name + ".key"))),
            "  spool: " + spool,
            "  peers:",
        ]
        for p in self.names:
            if p != s.name:
                lines.append("    - { site: %s, addresses: [%s] }" % (p, self._peer_address(s.name, p)))
        if self.rules or self.tombstone_ttl:
            lines.append("replication:")
            if self.rules:
                lines.append("  rules:")
                for prefix, mode in self.rules:
                    lines.append("    - { prefix: %s, mode: %s }" % (q(prefix), mode))
            if self.tombstone_ttl:
                lines.append("  tombstone_ttl: %d" % self.tombstone_ttl)
        extra = self.extra_yaml
        if isinstance(extra, dict):
            extra = extra.get(s.name)
        if extra:
            lines += extra.rstrip("\n").split("\n")
        s.config = os.path.join(self.dir, s.name, "geogate.yml")
        with open(s.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    # ---- gateways ----

    def start_site(self, name, timeout=15.0, env=None):
        """Start the site's gateway (same config, same spool dir as before).  env: the
        process's whole environment (default: ours), e.g. with libfaketime preloaded."""
        s = self.sites[name]
        if s.gateway is not None and s.gateway.alive():
            raise RuntimeError("%s is already running" % name)
        s.starts += 1
        log = os.path.join(self.dir, name, "geogate.%d.log" % s.starts)
        s.logs.append(log)
        p = harness.Proc([harness.GEOGATE, "--config", s.config], "geogate:%s" % name,
                         stderr_path=log, env=env)
        s.gateway = p
        try:
            harness.wait_port(s.port, timeout=timeout, proc=p.p)
        except Exception as e:
            raise RuntimeError("geogate %s did not start: %s\n%s" % (name, e, self.log(name)[-3000:]))
        return p

    def stop_site(self, name, timeout=10.0):
        """SIGTERM (clean stop); returns the exit status."""
        s = self.sites[name]
        if s.gateway is None:
            return None
        rc = s.gateway.stop(timeout=timeout)
        s.gateway = None
        return rc

    def kill_site(self, name):
        """SIGKILL: no chance to flush or say goodbye."""
        s = self.sites[name]
        if s.gateway is None:
            return None
        s.gateway.kill()
        rc = s.gateway.stop()
        s.gateway = None
        return rc

    def running(self, name):
        g = self.sites[name].gateway
        return g is not None and g.alive()

    def log(self, name):
        out = []
        for path in self.sites[name].logs:
            try:
                with open(path, "rb") as f:
                    out.append("--- %s\n" % os.path.basename(path) + f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "".join(out)

    def log_tail(self, name, lines=40):
        return "\n".join(self.log(name).splitlines()[-lines:])

    # ---- clients ----

    def client(self, name, timeout=5.0):
        """A new pymemcache client of the site's gateway (replies awaited: noreply off).
        Not thread-safe: one per thread.  Closed when the lab stops."""
        c = Client(("127.0.0.1", self.sites[name].port), connect_timeout=2.0, timeout=timeout,
                   no_delay=True, default_noreply=False)
        with self._lock:
            self._clients.append(c)
        return c

    def stats(self, name, sub="peers"):
        with MCConn(self.sites[name].port, timeout=5.0) as c:
            return c.stats(sub)

    # ---- WAN emulator ----

    @property
    def ctl(self):
        if self.wanem is None:
            raise RuntimeError("this lab has no WAN emulator")
        return self.wanem.ctl

    def set_link(self, a, b, dir="both", **kw):
        """delay/jitter (ms), rate, ... on the link a--b (a's connections to b)."""
        self.ctl.set(self.link(a, b), dir=dir, **kw)

    def link_state(self, a, b, state):
        self.ctl.state(self.link(a, b), state)

    def links_of(self, name):
        return [self.link(a, b) for a in self.names for b in self.names
                if a != b and name in (a, b)]

    def isolate(self, name, state="blackhole"):
        """Black-hole (or cut) every link to and from the site, both directions."""
        for l in self.links_of(name):
            self.ctl.state(l, state)

    def heal(self, name):
        for l in self.links_of(name):
            self.ctl.state(l, "up")

    # ---- waiting ----

    def wait_links_up(self, timeout=15.0, sites=None):
        sites = sites or self.names
        deadline = time.monotonic() + timeout
        last = {}
        while time.monotonic() < deadline:
            ok = True
            for n in sites:
                try:
                    st = self.stats(n)
                except OSError:
                    ok = False
                    break
                last[n] = st
                for p in self.names:
                    if p != n and st.get("peer:%s:state" % p) != "up":
                        ok = False
            if ok:
                return
            time.sleep(0.1)
        raise DrainTimeout("links not all up after %.0fs: %s" % (timeout, self._peer_summary(last)))

    def _snapshot(self, n, st):
        snap = [st.get("spool:last_seq"), st.get("inbound:applied"), st.get("inbound:batches"),
                st.get("inbound:rejected_older")]
        for p in self.names:
            if p != n:
                snap.append(st.get("peer:%s:acked_seq" % p))
        return tuple(snap)

    def _peer_summary(self, stats):
        parts = []
        for n, st in stats.items():
            peers = ", ".join("%s %s rec=%s acked=%s" % (
                p, st.get("peer:%s:state" % p), st.get("peer:%s:spool_records" % p),
                st.get("peer:%s:acked_seq" % p)) for p in self.names if p != n)
            parts.append("%s[last_seq=%s applied=%s: %s]" % (
                n, st.get("spool:last_seq"), st.get("inbound:applied"), peers))
        return "; ".join(parts)

    def wait_drained(self, timeout=60.0, interval=0.25, rounds=2):
        """Wait until every site's link to every peer is up with 0 unacked spool records,
        and nothing moved (spool last_seq, inbound applied/batches/rejected, acked seqs) over
        `rounds` consecutive polls of all sites.

        Why that is enough: a receiver acks a batch only after applying all of it, and a
        "winner travels back" record is appended to the receiver's spool before that ack;
        so unacked records at 0 everywhere means every record ever spooled has been applied,
        and unchanged last_seq everywhere between two polls means no apply produced a new
        record in between.  Returns the seconds it took."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        prev = None
        stable = 0
        last = {}
        while True:
            snap = {}
            ok = True
            for n in self.names:
                try:
                    st = self.stats(n)
                except OSError:
                    ok = False
                    continue
                last[n] = st
                snap[n] = self._snapshot(n, st)
                for p in self.names:
                    if p == n:
                        continue
                    if st.get("peer:%s:state" % p) != "up" or st.get("peer:%s:spool_records" % p) != 0:
                        ok = False
            if ok and snap == prev:
                stable += 1
                if stable >= rounds - 1:
                    return time.monotonic() - t0
            else:
                stable = 0
            prev = snap if ok else None
            if time.monotonic() >= deadline:
                raise DrainTimeout("not drained after %.0fs: %s" % (timeout, self._peer_summary(last)))
            time.sleep(interval)

    # ---- reading what the sites hold ----

    def dump(self, name, keys):
        """{key(bytes): (value, client flags)} of the keys present at the site, read THROUGH its
        gateway with gets (headers and tombstones hidden, as clients see them)."""
        out = {}
        with MCConn(self.sites[name].port, timeout=10.0) as c:
            for k, (flags, data, _cas) in c.gets(keys).items():
                out[k] = (data, flags)
        return out

    def raw_dump(self, name, keys):
        """{key(bytes): parse_item dict (+ 'node': port, 'cas')} read directly from every
        memcached node of the site, bypassing the gateway: headers, versions and tombstones
        included.  A key found on two nodes is reported under 'dup_nodes'."""
        out = {}
        for m in self.sites[name].memcached:
            with MCConn(m.port, timeout=10.0) as c:
                for k, (flags, data, cas) in c.gets(keys).items():
                    it = parse_item(flags, data)
                    it["node"] = m.port
                    it["cas"] = cas
                    if k in out:
                        it["dup_nodes"] = [out[k]["node"], m.port]
                    out[k] = it
        return out

    def node_of(self, name, key):
        """The memcached port of the site that holds key (twemproxy's ketama, md5)."""
        return Ketama([m.port for m in self.sites[name].memcached]).node(key)

    def raw_set(self, name, key, value, flags=0, exptime=0):
        """Store an item directly in the site's memcached node that the ring picks for it
        (version 0, no header: as if written before geogate)."""
        key = key if isinstance(key, bytes) else key.encode()
        s = socket.create_connection(("127.0.0.1", self.node_of(name, key)), timeout=5)
        try:
            s.sendall(b"set %s %d %d %d\r\n%s\r\n" % (key, flags, exptime, len(value), value))
            reply = s.recv(100)
            if reply != b"STORED\r\n":
                raise RuntimeError("raw set %r: %r" % (key, reply))
        finally:
            s.close()

    def compare(self, keys, expiry=True):
        """Compare what every site holds for keys.  Returns a dict:
           divergent  keys whose (value, flags) differ between sites, read through the gateways
                      (absent everywhere counts as equal)
           expiry_divergent  keys equal by value/flags whose absolute expiry (item header,
                      read from memcached) differs between sites
           version_divergent keys equal by value/flags whose version (hlc, site, gateway)
                      differs between sites (informational: the winner should be everywhere)
           present    keys present at every site; absent: keys absent everywhere
           samples    a few divergent keys with what each site holds, for the report"""
        keys = [k if isinstance(k, bytes) else k.encode() for k in keys]
        views = {n: self.dump(n, keys) for n in self.names}
        raws = {n: self.raw_dump(n, keys) for n in self.names} if expiry else None
        divergent, exp_div, ver_div, samples = [], [], [], []
        present = absent = 0
        for k in keys:
            vals = [views[n].get(k) for n in self.names]
            if any(v != vals[0] for v in vals[1:]):
                divergent.append(k)
                if len(samples) < 5:
                    samples.append((k, {n: views[n].get(k) for n in self.names},
                                    {n: _brief(raws[n].get(k)) for n in self.names} if raws else None))
                continue
            if vals[0] is None:
                absent += 1
                continue
            present += 1
            if raws:
                items = [raws[n].get(k) for n in self.names]
                if any(i is None for i in items):
                    continue
                if len(set(i["expiry"] for i in items)) > 1:
                    exp_div.append(k)
                    if len(samples) < 5:
                        samples.append((k, {n: views[n].get(k) for n in self.names},
                                        {n: _brief(raws[n].get(k)) for n in self.names}))
                if len(set((i["hlc"], i["site_id"], i["gateway_id"]) for i in items)) > 1:
                    ver_div.append(k)
        return {"divergent": divergent, "expiry_divergent": exp_div,
                "version_divergent": ver_div, "present": present, "absent": absent,
                "samples": samples, "keys": len(keys), "sites": len(self.names)}

    def divergent(self, keys):
        return self.compare(keys, expiry=False)["divergent"]

    # ---- a site's memcached nodes (failover tests) ----

    def kill_node(self, name, i):
        """SIGKILL the site's memcached node i; its port stays reserved for start_node()."""
        m = self.sites[name].memcached[i]
        m.kill()
        m.stop()

    def start_node(self, name, i):
        """Start the site's memcached node i again, EMPTY, on the same port."""
        s = self.sites[name]
        old = s.memcached[i]
        if old.alive():
            raise RuntimeError("%s node %d (port %d) is running" % (name, i, old.port))
        s.memcached[i] = harness.start_memcached(port=old.port, mem_mb=self.mem_mb)
        return s.memcached[i]

    def mode_changes(self, name):
        """The gateway's "site mode X -> Y[ via PEER]: why" log lines, oldest first, as dicts:
        t (unix seconds, from the log's UTC timestamp), from, to, peer, why."""
        out = []
        for line in self.log(name).splitlines():
            i = line.find("site mode ")
            if i < 0 or " -> " not in line[i:]:
                continue
            try:
                ts = line.split(" ", 1)[0]
                sec, ms = ts.rstrip("Z").split(".")
                t = calendar.timegm(time.strptime(sec, "%Y-%m-%dT%H:%M:%S")) + int(ms) / 1000.0
            except ValueError:
                continue
            rest = line[i + len("site mode "):]
            head, _, why = rest.partition(": ")
            frm, _, to = head.partition(" -> ")
            to, _, peer = to.partition(" via ")
            out.append({"t": t, "from": frm.strip(), "to": to.strip(), "peer": peer.strip(),
                        "why": why})
        return out

    # ---- admin listener (Lab(admin=True)) ----

    def admin(self, name, method, path, timeout=5.0):
        """(status, body text) of an HTTP request to the site's admin listener.  Raises
        OSError when nothing listens there (the gateway may not serve admin yet)."""
        port = self.sites[name].admin_port
        if not port:
            raise RuntimeError("this lab has no admin listeners (Lab(admin=True))")
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method,
                                     data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")
        except urllib.error.URLError as e:
            raise OSError(str(e.reason))

    def has_admin(self, name):
        """True when the site's admin listener answers GET /status."""
        if not self.sites[name].admin_port:
            return False
        try:
            return self.admin(name, "GET", "/status", timeout=2.0)[0] == 200
        except OSError:
            return False

    def site_status(self, name):
        """GET /status as a dict, or None when the admin listener does not answer."""
        try:
            code, body = self.admin(name, "GET", "/status", timeout=2.0)
        except OSError:
            return None
        return json.loads(body) if code == 200 else None

    # ---- tear-down ----

    def stop(self):
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass
        self._clients = []
        for s in self.sites.values():
            if s.gateway is not None:
                try:
                    s.gateway.stop(timeout=5)
                except Exception:
                    pass
                s.gateway = None
        if self.wanem is not None:
            try:
                self.wanem.stop()
            except Exception:
                pass
            self.wanem = None
        for s in self.sites.values():
            for m in s.memcached:
                try:
                    m.stop()
                except Exception:
                    pass
            s.memcached = []
        if self.keep:
            kept = tempfile.mkdtemp(prefix="geogate-lab-kept-")
            shutil.copytree(self.dir, os.path.join(kept, "lab"), dirs_exist_ok=True)
            print("lab kept in %s" % kept, file=sys.stderr)
        self.tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _brief(it):
    if it is None:
        return None
    v = it["value"]
    return {"value": v[:40], "flags": it["flags"], "expiry": it["expiry"], "hlc": it["hlc"],
            "site_id": it["site_id"], "gw": it["gateway_id"], "tomb": it["tombstone"],
            "versioned": it["versioned"]}


def site_id(name):
    """The site_id geogate puts in versions: FNV-1a 32 of the site name."""
    return fnv1a_32(name)

