"""Snapshots (issue 5, points 3 and 4): `geogatectl snapshot` / `geogatectl restore` against a
replicating site of the multisite Lab (us-east with two memcached nodes; eu-west is only its
peer).

  round trip   keys with various client flags and expiries, deletes (tombstones), items
               written straight into memcached (version 0), a few that expire between the
               snapshot and the restore: snapshot -> flush_all on every node -> restore;
               every key back exactly as memcached held it (value, client flags, header
               expiry, version, tombstone, memcached's own TTL), the expired ones skipped,
               and a key written after the flush kept (newest wins)
  damaged      a truncated file and a record with a flipped byte: exit 1 with the offset of
               the first bad record and the exact number of records applied before it, the
               keys of exactly those records in memcached and none after
  refused      format version 2 and a file that is not a snapshot: 400 before anything is
               applied (memcached stays empty); a body over the limit: 413 before it is sent
  plain        a gateway without `wan:`: the round trip with raw flags and TTLs, and both
               endpoints refused (403) to a client that is not on loopback
  paced        the same gateway restoring while a client reads through it: rounds paused
               for the client (`paced_rounds`), the restore thread seen SCHED_IDLE, every
               record applied with its value and flags

Loopback only, bounded waits; each test class builds one lab and stops it.
"""
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
from multisite import Lab, MCConn, crc32c, site_id  # noqa: E402

GEOGATECTL = os.path.join(harness.BIN, "geogatectl")
SITE, PEER = "us-east", "eu-west"


def say(fmt, *args):
    print("    " + (fmt % args if args else fmt), file=sys.stderr, flush=True)


# ---- reading a snapshot file (docs/SNAPSHOTS.md) ---------------------------------------

def _varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return v, i


def decode_mutation(b):
    """The fields of a protobuf geogate.wan.v1.Mutation (proto3 defaults for absent ones)."""
    m = {"key": b"", "value": b"", "hlc": 0, "flags": 0, "expiry": 0, "tombstone": False,
         "site_id": 0, "gateway_id": 0}
    names = {1: "key", 2: "value", 3: "hlc", 4: "flags", 5: "expiry", 6: "tombstone",
             7: "site_id", 8: "gateway_id"}
    i = 0
    while i < len(b):
        tag, i = _varint(b, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            v, i = _varint(b, i)
        elif wire == 1:
            v = struct.unpack_from("<Q", b, i)[0]
            i += 8
        elif wire == 2:
            n, i = _varint(b, i)
            v = b[i:i + n]
            i += n
        else:
            raise ValueError("wire type %d" % wire)
        if field in names:
            m[names[field]] = bool(v) if field == 6 else v
    return m


def read_snapshot(data):
    """(header dict, [(offset, mutation dict)], end dict) of a whole, valid file."""
    assert data[:6] == b"GGSNAP", data[:8]
    fmt, created, sid, gw, n = struct.unpack_from("<HQIHH", data, 6)
    site = data[24:24 + n].decode()
    crc = struct.unpack_from("<I", data, 24 + n)[0]
    assert crc == crc32c(data[:24 + n]), "header CRC"
    off = 28 + n
    records = []
    while True:
        length, crc = struct.unpack_from("<II", data, off)
        if length == 0xFFFFFFFF:
            count, tombs = struct.unpack_from("<QQ", data, off + 8)
            assert crc == crc32c(data[off + 8:off + 24]), "end record CRC"
            assert off + 24 == len(data), "data after the end record"
            end = {"records": count, "tombstones": tombs, "offset": off}
            break
        payload = data[off + 8:off + 8 + length]
        assert crc == crc32c(payload), "record CRC at %d" % off
        records.append((off, decode_mutation(payload)))
        off += 8 + length
    return ({"format": fmt, "created": created, "site_id": sid, "gateway_id": gw,
             "site": site}, records, end)


# ---- helpers ---------------------------------------------------------------------------

def ctl(lab, *args, timeout=60):
    argv = [GEOGATECTL, "--admin", "127.0.0.1:%d" % lab.sites[SITE].admin_port] + list(args)
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def post_restore(lab, body, timeout=60):
    """(status, JSON dict or text) of POST /restore with body."""
    req = urllib.request.Request("http://127.0.0.1:%d/restore" % lab.sites[SITE].admin_port,
                                 method="POST", data=body,
                                 headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            code, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        code, text = e.code, e.read().decode()
    try:
        return code, json.loads(text)
    except ValueError:
        return code, text


def flush_nodes(lab):
    for m in lab.sites[SITE].memcached:
        with MCConn(m.port) as c:
            c.sock.sendall(b"flush_all\r\n")
            assert c.f.readline() == b"OK\r\n"


def node_ttls(lab, keys):
    """{key: memcached's remaining TTL in s (-1 never)} via the meta command `mg KEY t`."""
    out = {}
    by_port = {}
    for k in keys:
        by_port.setdefault(lab.node_of(SITE, k), []).append(k)
    for port, ks in by_port.items():
        with MCConn(port) as c:
            for k in ks:
                c.sock.sendall(b"mg %s t\r\n" % k)
                line = c.f.readline().split()
                if line and line[0] == b"HD":
                    for tok in line[1:]:
                        if tok.startswith(b"t"):
                            out[k] = int(tok[1:])
    return out


def write_items(lab, n):
    """n keys through the gateway (flags, TTLs of several kinds), every 7th deleted, 20
    version-0 items written straight into memcached.  Returns the keys."""
    c = lab.client(SITE)
    keys = []
    for i in range(n):
        k = b"snap:%05d" % i
        ttl = (0, 3600, 86400 * 3, 600)[i % 4]
        c.set(k, b"value-%d-" % i + b"x" * (i % 300), expire=ttl, flags=(i * 2654435761) % 2**32)
        keys.append(k)
    for i in range(0, n, 7):
        c.delete(keys[i])
    for i in range(20):
        k = b"plain:%02d" % i
        lab.raw_set(SITE, k, b"raw-%d" % i, flags=1000 + i, exptime=0 if i % 2 else 7200)
        keys.append(k)
    return keys


def write_short(lab, ttl):
    """10 keys that expire in ttl seconds."""
    c = lab.client(SITE)
    keys = [b"short:%02d" % i for i in range(10)]
    for k in keys:
        c.set(k, b"soon gone", expire=ttl, flags=7)
    return keys


def fields(it):
    return {k: it[k] for k in ("value", "flags", "expiry", "hlc", "site_id", "gateway_id",
                               "tombstone", "versioned")}


class Snapshot(unittest.TestCase):
    N = 3000
    SHORT_TTL = 3

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="geogate-snap-")
        t0 = time.monotonic()
        cls.lab = Lab([SITE, PEER], nodes=2, admin=True)
        try:
            t1 = time.monotonic()
            cls.keys = write_items(cls.lab, cls.N)
            t2 = time.monotonic()
            cls.lab.wait_drained(30)
            say("lab up in %.1f s, %d keys written in %.1f s, drained in %.1f s", t1 - t0,
                len(cls.keys), t2 - t1, time.monotonic() - t2)
            # Live at the snapshot, expired by the restore.
            cls.short = write_short(cls.lab, cls.SHORT_TTL)
            cls.short_until = time.time() + cls.SHORT_TTL + 1
            cls.keys += cls.short
            cls.before = cls.lab.raw_dump(SITE, cls.keys)
            cls.path = os.path.join(cls.tmp.name, "us-east.snap")
            t0 = time.monotonic()
            cls.snap_rc, cls.snap_out, cls.snap_err = ctl(cls.lab, "snapshot", "--out", cls.path)
            cls.snap_s = time.monotonic() - t0
            with open(cls.path, "rb") as f:
                cls.data = f.read()
        except BaseException:
            cls.lab.stop()
            cls.tmp.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.lab.stop()
        cls.tmp.cleanup()

    def test_1_file(self):
        """The file: header, one record per item memcached held (tombstones too), end."""
        self.assertEqual(self.snap_rc, 0, self.snap_err)
        say("snapshot: %s", self.snap_out.strip())
        hdr, records, end = read_snapshot(self.data)
        self.assertEqual((hdr["format"], hdr["site"], hdr["site_id"]), (1, SITE, site_id(SITE)))
        self.assertLessEqual(abs(hdr["created"] - time.time()), 60)
        self.assertEqual(end["records"], len(records))
        by_key = {m["key"]: m for _, m in records}
        self.assertEqual(len(by_key), len(records), "a key twice in one snapshot")
        self.assertEqual(set(by_key), set(self.before), "keys in the file vs memcached")
        tombs = [k for k, it in self.before.items() if it["tombstone"]]
        self.assertEqual(end["tombstones"], len(tombs))
        self.assertGreater(len(tombs), 0)
        for k, it in self.before.items():
            m = by_key[k]
            want = (it["value"] if not it["tombstone"] else b"", it["flags"],
                    it["hlc"], it["site_id"], it["gateway_id"], it["tombstone"])
            self.assertEqual((m["value"], m["flags"], m["hlc"], m["site_id"], m["gateway_id"],
                              m["tombstone"]), want, k)
            if it["versioned"]:
                self.assertEqual(m["expiry"], it["expiry"], k)
        self.assertIn("%d items (%d tombstones)" % (len(records), len(tombs)), self.snap_out)

    def test_2_round_trip(self):
        """flush_all every node, restore: every key back as it was; expired ones skipped;
        a key written after the flush is newer and stays."""
        lab = self.lab
        hdr, records, end = read_snapshot(self.data)
        self.assertTrue(set(self.short) <= {m["key"] for _, m in records})
        time.sleep(max(0.0, self.short_until - time.time()))
        self.assertEqual(lab.raw_dump(SITE, self.short), {}, "short-lived keys still there")
        t_ttl = time.monotonic()
        ttl_before = node_ttls(lab, [k for k in self.keys if k not in self.short])
        flush_nodes(lab)
        self.assertEqual(lab.raw_dump(SITE, self.keys), {})
        newer_key = self.keys[1]
        lab.client(SITE).set(newer_key, b"written after the flush", flags=99)
        newer = lab.raw_dump(SITE, [newer_key])[newer_key]

        t0 = time.monotonic()
        rc, out, err = ctl(lab, "restore", "--in", self.path)
        restore_s = time.monotonic() - t0
        self.assertEqual(rc, 0, err)
        say("restore: %s", out.strip())
        m = re.search(r"(\d+) records: (\d+) applied, (\d+) skipped as expired, (\d+) older", out)
        self.assertIsNotNone(m, out)
        nrec, applied, expired, older = map(int, m.groups())
        self.assertEqual(nrec, len(records))
        self.assertEqual(expired, len(self.short))
        self.assertEqual(older, 1)
        self.assertEqual(applied, len(records) - len(self.short) - 1)
        say("%d records: snapshot %.2f s (%.0f items/s incl. geogatectl), restore %.2f s "
            "(%.0f items/s)", nrec, self.snap_s, nrec / self.snap_s, restore_s,
            nrec / restore_s)

        after = lab.raw_dump(SITE, self.keys)
        problems = []
        for k, it in self.before.items():
            got = after.get(k)
            if k in self.short:
                if got is not None:
                    problems.append((k, "expired before the restore, yet restored"))
                continue
            if k == newer_key:
                if got is None or fields(got) != fields(newer):
                    problems.append((k, "the newer item was overwritten", got))
                continue
            if got is None:
                problems.append((k, "missing"))
            elif fields(got) != fields(it):
                problems.append((k, fields(it), fields(got)))
            elif "dup_nodes" in got or got["node"] != it["node"]:
                problems.append((k, "on another node"))
        self.assertEqual(problems[:5], [], "%d keys differ" % len(problems))

        # memcached's own TTL is the one the items had (tombstones get a fresh one).
        ttl_after = node_ttls(lab, list(ttl_before))
        elapsed = time.monotonic() - t_ttl
        drift = []
        for k, t in ttl_before.items():
            if k == newer_key or self.before[k]["tombstone"]:
                continue
            a = ttl_after.get(k)
            if a is None or (t == -1) != (a == -1) or not t - elapsed - 1 <= a <= t + 1:
                drift.append((k, t, a))
        self.assertEqual(drift[:5], [], "%d keys with another TTL" % len(drift))
        versions = {(it["hlc"], it["site_id"]) for it in after.values()}
        self.assertIn((0, 0), versions)  # version-0 items stayed version 0
        self.assertTrue(any(it["versioned"] for it in after.values()))

    def _damaged(self, data, bad_index, what):
        """Restore data (bad from record bad_index on) into flushed nodes: exit 1, the
        offset, the exact count, and exactly the keys of the records before it."""
        lab = self.lab
        hdr, records, end = read_snapshot(self.data)
        bad_off = records[bad_index][0]
        now = time.time()
        before = [m for _, m in records[:bad_index]]
        live_before = [m for m in before if not (m["expiry"] and m["expiry"] <= now)]
        flush_nodes(lab)
        path = os.path.join(self.tmp.name, what + ".snap")
        with open(path, "wb") as f:
            f.write(data)
        rc, out, err = ctl(lab, "restore", "--in", path)
        say("%s: %s", what, err.strip().replace("\n", " | "))
        self.assertEqual(rc, 1, (out, err))
        self.assertIn("offset %d " % bad_off, err)
        self.assertIn("%d records before it" % bad_index, err)
        m = re.search(r"(\d+) applied, (\d+) skipped as expired", err)
        self.assertEqual((int(m.group(1)), int(m.group(2))),
                         (len(live_before), len(before) - len(live_before)), err)
        held = lab.raw_dump(SITE, [m["key"] for _, m in records])
        self.assertEqual(set(held), {m["key"] for m in live_before})

        # The same through the HTTP API: 422 with the numbers as JSON.
        flush_nodes(lab)
        code, j = post_restore(lab, data)
        self.assertEqual(code, 422, j)
        self.assertEqual((j["bad_offset"], j["records"], j["applied"], j["status"]),
                         (bad_off, bad_index, len(live_before), "bad_record"), j)
        return j

    def test_3_truncated(self):
        hdr, records, end = read_snapshot(self.data)
        k = len(records) // 2
        j = self._damaged(self.data[:records[k][0] + 11], k, "truncated")
        self.assertIn("truncated", j["reason"])
        # Cut exactly at a record boundary: the missing end record is the bad place.
        code, j = post_restore(self.lab, self.data[:end["offset"]])
        self.assertEqual((code, j["bad_offset"], j["records"]), (422, end["offset"], len(records)))
        self.assertIn("without the end record", j["reason"])

    def test_4_corrupt_record(self):
        hdr, records, end = read_snapshot(self.data)
        k = len(records) // 3
        data = bytearray(self.data)
        data[records[k][0] + 8 + 3] ^= 0x20  # a payload byte: the CRC no longer matches
        j = self._damaged(bytes(data), k, "corrupt")
        self.assertIn("CRC32C mismatch", j["reason"])

    def test_5_refused(self):
        """Another format version, or not a snapshot: 400, nothing applied."""
        lab = self.lab
        hdr, records, end = read_snapshot(self.data)
        flush_nodes(lab)
        v2 = bytearray(self.data)
        struct.pack_into("<H", v2, 6, 2)
        n = struct.unpack_from("<H", v2, 22)[0]
        struct.pack_into("<I", v2, 24 + n, crc32c(bytes(v2[:24 + n])))  # a well-formed v2
        code, j = post_restore(lab, bytes(v2))
        self.assertEqual((code, j["status"], j["applied"], j["format_version"]),
                         (400, "unsupported_format_version", 0, 2), j)
        path = os.path.join(self.tmp.name, "v2.snap")
        with open(path, "wb") as f:
            f.write(v2)
        rc, out, err = ctl(lab, "restore", "--in", path)
        self.assertEqual(rc, 1, (out, err))
        self.assertIn("format version 2 is not supported", err)
        say("version 2: %s", err.strip())
        code, j = post_restore(lab, b"memcached dump, not ours\n" * 10)
        self.assertEqual((code, j["status"]), (400, "bad_header"), j)
        self.assertEqual(lab.raw_dump(SITE, [m["key"] for _, m in records]), {},
                         "something was applied")

        # Over the size limit: refused from the request head (Expect: 100-continue).
        s = socket.create_connection(("127.0.0.1", lab.sites[SITE].admin_port), timeout=10)
        s.sendall(b"POST /restore HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                  b"Expect: 100-continue\r\n\r\n" % (2 << 30))
        head = s.recv(200)
        s.close()
        self.assertTrue(head.startswith(b"HTTP/1.1 413"), head)


def non_loopback_ipv4():
    """An IPv4 address of this machine that is not loopback, or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.255.255.255", 9))  # no packet is sent: this only picks a route
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


class PlainGateway(unittest.TestCase):
    """A gateway without `wan:` (items stored without headers): the round trip keeps raw
    flags and TTLs; and with the admin listener on 0.0.0.0, both endpoints are refused to a
    non-loopback client."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="geogate-snap-plain-")
        self.mc = [harness.start_memcached() for _ in range(2)]
        self.admin = harness.free_port()
        cfg, self.port = harness.write_gateway_config(
            self.tmp.name, ["127.0.0.1:%d:1" % m.port for m in self.mc],
            extra="admin: 0.0.0.0:%d\n" % self.admin)
        self.gw = harness.start_gateway(self.tmp.name, cfg, self.port)
        harness.wait_port(self.admin, proc=self.gw.p)

    def tearDown(self):
        self.gw.stop()
        for m in self.mc:
            m.stop()
        self.tmp.cleanup()

    def test_round_trip_and_loopback_only(self):
        keys = [b"p:%03d" % i for i in range(200)]
        with MCConn(self.port) as c:
            for i, k in enumerate(keys):
                c.sock.sendall(b"set %s %d %d 6\r\nplain%d\r\n" % (k, i * 3, (0, 3600)[i % 2],
                                                                     i % 10))
                self.assertEqual(c.f.readline(), b"STORED\r\n")
            c.sock.sendall(b"delete %s\r\n" % keys[0])
            self.assertEqual(c.f.readline(), b"DELETED\r\n")
        path = os.path.join(self.tmp.name, "plain.snap")
        r = subprocess.run([GEOGATECTL, "--admin", "127.0.0.1:%d" % self.admin, "snapshot",
                            "--out", path], capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        before = {}
        for m in self.mc:
            with MCConn(m.port) as c:
                before.update(c.gets(keys))
        self.assertEqual(len(before), len(keys) - 1)
        for m in self.mc:
            with MCConn(m.port) as c:
                c.sock.sendall(b"flush_all\r\n")
                c.f.readline()
        r = subprocess.run([GEOGATECTL, "--admin", "127.0.0.1:%d" % self.admin, "restore",
                            "--in", path], capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"199 records: 199 applied", r.stdout)
        after = {}
        ttls = {}
        for m in self.mc:
            with MCConn(m.port) as c:
                got = c.gets(keys)
                after.update(got)
                for k in got:
                    c.sock.sendall(b"mg %s t\r\n" % k)
                    ttls[k] = int(c.f.readline().split()[1][1:])
        self.assertEqual({k: v[:2] for k, v in after.items()},
                         {k: v[:2] for k, v in before.items()})  # raw flags and value
        for i, k in enumerate(keys[1:], 1):
            self.assertTrue(ttls[k] == -1 if i % 2 == 0 else 3500 < ttls[k] <= 3600, (k, ttls[k]))

        self._not_from_elsewhere()

    def test_paced_while_a_client_reads(self):
        """A restore while a client reads through the gateway gives way (paced rounds: adds to
        one node at a time, on a SCHED_IDLE thread) and still applies every record exactly."""
        n = 30000
        keys = [b"pc:%05d" % i for i in range(n)]
        with MCConn(self.port) as c:
            for i in range(0, n, 500):
                c.sock.sendall(b"".join(b"set %s %d 0 %d noreply\r\n%s\r\n"
                                        % (k, i + j, len(b"val-" + k), b"val-" + k)
                                        for j, k in enumerate(keys[i:i + 500])))
            c.sock.sendall(b"version\r\n")
            self.assertTrue(c.f.readline().startswith(b"VERSION"))
        path = os.path.join(self.tmp.name, "paced.snap")
        r = subprocess.run([GEOGATECTL, "--admin", "127.0.0.1:%d" % self.admin, "snapshot",
                            "--out", path], capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        for m in self.mc:
            with MCConn(m.port) as c:
                c.sock.sendall(b"flush_all\r\n")
                self.assertEqual(c.f.readline(), b"OK\r\n")

        stop = threading.Event()
        reads = [0]
        policies = set()

        def reader():
            with MCConn(self.port) as c:
                while not stop.is_set():
                    c.sock.sendall(b"get %s\r\n" % keys[reads[0] % n])
                    while c.f.readline() not in (b"END\r\n", b""):
                        pass
                    reads[0] += 1

        def watch():  # the restore thread's scheduling policy (field 41 of its stat)
            task = "/proc/%d/task" % self.gw.p.pid
            while not stop.is_set():
                for tid in os.listdir(task):
                    try:
                        with open("%s/%s/comm" % (task, tid)) as f:
                            if f.read().strip() != "restore":
                                continue
                        with open("%s/%s/stat" % (task, tid)) as f:
                            policies.add(int(f.read().rsplit(")", 1)[1].split()[38]))
                    except (OSError, IndexError, ValueError):
                        pass
                time.sleep(0.002)

        threads = [threading.Thread(target=reader), threading.Thread(target=watch)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)  # the client is reading before the restore starts
            with open(path, "rb") as f:
                body = f.read()
            req = urllib.request.Request("http://127.0.0.1:%d/restore" % self.admin, data=body,
                                         method="POST")
            with urllib.request.urlopen(req, timeout=120) as resp:
                j = json.loads(resp.read())
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
        say("paced restore: %s; the client read %d times", j, reads[0])
        self.assertEqual((j["status"], j["applied"], j["rejected_older"]), ("ok", n, 0), j)
        self.assertGreater(j["paced_rounds"], 0, j)
        self.assertGreater(reads[0], 0)
        self.assertIn(5, policies, "the restore thread was not seen SCHED_IDLE: %s" % policies)
        after = {}
        for m in self.mc:
            with MCConn(m.port) as c:
                after.update(c.gets(keys))
        self.assertEqual(len(after), n)
        for i, k in enumerate(keys):
            self.assertEqual(after[k][:2], (i, b"val-" + k), k)

    def _not_from_elsewhere(self):
        ip = non_loopback_ipv4()
        if ip is None:
            self.skipTest("no non-loopback IPv4 address on this machine")
        for method, p in (("GET", "/snapshot"), ("POST", "/restore")):
            req = urllib.request.Request("http://%s:%d%s" % (ip, self.admin, p), method=method,
                                         data=b"GGSNAP" if method == "POST" else None)
            with self.assertRaises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=10)
            self.assertEqual(e.exception.code, 403, p)


if __name__ == "__main__":
    unittest.main()
