#!/usr/bin/python3
"""Produce tests/unit/ring_vectors.h: key placements observed on a real nutcracker.

Its one job: for several server lists and both key hashes (md5, fnv1a_64), start
real memcached nodes and a real nutcracker (twemproxy, ketama) on free loopback
ports, set keys through nutcracker, ask every memcached directly which keys it
holds, and write what it saw as a C table for tests/unit/test_ring.c.  It does
not test geogate itself and never talks to anything but 127.0.0.1.  Every process
it starts is stopped before it exits; the whole run is bounded in time.

    /usr/bin/python3 tests/tools/gen_ring_vectors.py [--out tests/unit/ring_vectors.h]
"""
import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402  (start_memcached, start_nutcracker, free_port)

HASHES = ["md5", "fnv1a_64"]
DEADLINE_S = 240
IO_TIMEOUT_S = 10

# (label, [(weight, explicit name or None, fixed port or None), ...])
SERVER_LISTS = [
    ("two_equal", [(1, None, None), (1, None, None)]),
    ("three_weighted", [(1, None, None), (2, None, None), (5, None, None)]),
    ("named", [(1, "nodeA", None), (1, "nodeB", None), (2, "nodeC", None)]),
    # Upstream sources show "name-i" formatted into char[86]; Debian's 0.5.0 binary uses
    # char[273] and hashes at most 272 bytes.  83-byte names reach 86 bytes at i = 10;
    # 270-byte names pass 272 at i = 10 ("name-1" hashed for i = 10..19, and so on).
    ("long_names", [(1, "longA" + "x" * 78, None), (1, "longB" + "y" * 78, None)]),
    ("huge_names", [(1, "hugeA" + "x" * 265, None), (1, "hugeB" + "y" * 265, None),
                    (2, "hugeC" + "z" * 265, None)]),
    ("port_11211", [(1, None, 11211), (1, None, None)]),
    ("five_uneven", [(3, None, None), (7, None, None), (11, None, None),
                     (13, None, None), (100, None, None)]),
    # twemproxy's float arithmetic gives 252/160/92/92/188 points here where exact
    # arithmetic would give 256/160/96/96/192.
    ("float_weights", [(8, None, None), (5, None, None), (3, None, None),
                       (3, None, None), (6, None, None)]),
    # 25 equal weights: pct * 40 * 25 is 39.99999 in float, so 156 points each, not 160.
    ("twentyfive_equal", [(1, None, None)] * 25),
]


def make_keys(n=600):
    """Deterministic, valid memcached keys (no whitespace or control bytes, <= 250 bytes),
    many with bytes >= 0x80: UTF-8 text and some raw Latin-1 bytes."""
    rnd = random.Random(20240611)
    keys = []
    words = ["user", "session", "clé", "ключ", "日本語", "παράδειγμα", "naïve", "😀emoji",
             "Straße", "ñandú", "key"]
    for i in range(n):
        kind = i % 6
        if kind == 0:
            k = ("key:%d" % i).encode()
        elif kind == 1:
            k = ("%s:%d" % (rnd.choice(words), i)).encode("utf-8")
        elif kind == 2:
            alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-:./"
            k = ("".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 40))) + str(i)).encode()
        elif kind == 3:
            # raw bytes 0x80..0xff (valid to memcached, not valid UTF-8)
            k = bytes(rnd.randint(0x80, 0xff) for _ in range(rnd.randint(1, 12))) + b"%d" % i
        elif kind == 4:
            k = ("%s/%s/%d" % (rnd.choice(words), rnd.choice(words), i)).encode("utf-8")
        else:
            k = (("long%d-" % i) * 40).encode()[:rnd.choice([64, 200, 250])]
        assert 0 < len(k) <= 250 and not any(b <= 0x20 or b == 0x7f for b in k), k
        keys.append(k)
    assert len(set(keys)) == len(keys)
    return keys


class Conn:
    """Minimal memcached ASCII client over one socket; bytes keys, bounded waits."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
        self.buf = b""

    def close(self):
        self.s.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def set_many(self, items):
        """items: [(key, value)], pipelined; raises unless every reply is STORED."""
        out = b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v) for k, v in items)
        self.s.sendall(out)
        for k, _ in items:
            line = self._line()
            if line != b"STORED":
                raise RuntimeError("set %r: %r" % (k, line))

    def get_many(self, keys):
        """Returns {key: value} for the keys this server holds; one get per key, pipelined."""
        self.s.sendall(b"".join(b"get %s\r\n" % k for k in keys))
        found = {}
        for _ in keys:
            while True:
                line = self._line()
                if line == b"END":
                    break
                parts = line.split(b" ")
                if parts[0] != b"VALUE" or len(parts) < 4:
                    raise RuntimeError("unexpected reply %r" % line)
                data = self._exact(int(parts[3]) + 2)[:-2]
                found[parts[1]] = data
        return found


def port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def flush_all(port):
    c = Conn(port)
    try:
        c.s.sendall(b"flush_all\r\n")
        if c._line() != b"OK":
            raise RuntimeError("flush_all failed on %d" % port)
    finally:
        c.close()


def observe(workdir, servers, hash_name, keys):
    """Set every key through a fresh nutcracker; return owners[i], the server index holding
    key i.  Values name the run, so anything left from an earlier run is ignored."""
    for s in servers:
        flush_all(s["port"])
    lines = ["%s:%d:%d%s" % (s["host"], s["port"], s["weight"],
                             " " + s["name"] if s["name"] else "") for s in servers]
    nut = harness.start_nutcracker(workdir, lines, hash_name=hash_name)
    try:
        values = [b"%s:%d" % (hash_name.encode(), i) for i in range(len(keys))]
        c = Conn(nut.port)
        try:
            c.set_many(list(zip(keys, values)))
        finally:
            c.close()
    finally:
        nut.stop()

    owners = [None] * len(keys)
    index = {k: i for i, k in enumerate(keys)}
    for si, s in enumerate(servers):
        c = Conn(s["port"])
        try:
            held = c.get_many(keys)
        finally:
            c.close()
        for k, v in held.items():
            i = index[k]
            if v != values[i]:
                continue
            if owners[i] is not None:
                raise RuntimeError("key %r on nodes %d and %d" % (k, owners[i], si))
            owners[i] = si
    missing = [keys[i] for i, o in enumerate(owners) if o is None]
    if missing:
        raise RuntimeError("%d keys on no node, e.g. %r" % (len(missing), missing[0]))
    return owners


def run_list(workdir, spec, keys, deadline):
    """Start the nodes of one server list once; observe placement for every hash.
    Returns [(hash_name, servers, owners)]."""
    procs = []
    try:
        servers = []
        for weight, name, port in spec:
            m = harness.start_memcached(port=port)
            procs.append(m)
            servers.append({"host": "127.0.0.1", "port": m.port, "weight": weight, "name": name})
        out = []
        for hash_name in HASHES:
            if time.time() > deadline:
                raise TimeoutError("gave up after %ds" % DEADLINE_S)
            out.append((hash_name, servers, observe(workdir, servers, hash_name, keys)))
        return out
    finally:
        for p in procs:  # memcached takes ~1 s to exit on TERM: signal all, then reap
            p.signal(signal.SIGTERM)
        for p in procs:
            p.stop()


def c_string(b):
    """A C string literal for arbitrary bytes: printable ASCII as is, the rest as 3-digit
    octal escapes (unlike \\x, an octal escape cannot swallow the following digits)."""
    out = []
    for ch in b:
        if ch in (0x22, 0x5c, 0x3f) or ch < 0x20 or ch >= 0x7f:
            out.append("\\%03o" % ch)
        else:
            out.append(chr(ch))
    return '"' + "".join(out) + '"'


def write_header(path, keys, cases, version):
    w = []
    w.append("/*\n * ring_vectors.h — key placements observed on a real %s (twemproxy), ketama\n"
             " * distribution, for tests/unit/test_ring.c.  Generated by tests/tools/gen_ring_vectors.py:\n"
             " * keys were set through nutcracker and then found by asking each memcached node\n"
             " * directly.  Data, not code: do not edit; run the tool again instead.\n */\n" % version)
    w.append("#ifndef GEOGATE_TESTS_RING_VECTORS_H\n#define GEOGATE_TESTS_RING_VECTORS_H\n\n"
             "#include <stddef.h>\n#include <stdint.h>\n\n")
    w.append("struct ring_vector_server {\n    const char *host;\n    uint16_t port;\n"
             "    const char *name; /* explicit node name, or NULL */\n    uint32_t weight;\n};\n\n")
    w.append("struct ring_vector_key {\n    const char *key;\n    size_t len;\n};\n\n")
    w.append("struct ring_vector_case {\n    const char *label;\n    const char *hash; /* as in nutcracker.yml */\n"
             "    const struct ring_vector_server *servers;\n    size_t nservers;\n"
             "    const uint8_t *owner; /* owner[i]: index into servers of the node holding key i */\n};\n\n")
    w.append("#define RING_VECTOR_NKEYS %d\n\n" % len(keys))
    w.append("static const struct ring_vector_key ring_vector_keys[RING_VECTOR_NKEYS] = {\n")
    for k in keys:
        w.append("    {%s, %d},\n" % (c_string(k), len(k)))
    w.append("};\n\n")
    for ci, (label, hash_name, servers, owners) in enumerate(cases):
        w.append("static const struct ring_vector_server ring_vector_servers_%d[] = {\n" % ci)
        for s in servers:
            w.append("    {%s, %d, %s, %d},\n" % (c_string(s["host"].encode()), s["port"],
                                                  c_string(s["name"].encode()) if s["name"] else "NULL",
                                                  s["weight"]))
        w.append("};\n\n")
        w.append("static const uint8_t ring_vector_owner_%d[RING_VECTOR_NKEYS] = {" % ci)
        for i, o in enumerate(owners):
            w.append(("\n    " if i % 25 == 0 else " ") + "%d," % o)
        w.append("\n};\n\n")
    w.append("static const struct ring_vector_case ring_vector_cases[] = {\n")
    for ci, (label, hash_name, servers, owners) in enumerate(cases):
        w.append("    {\"%s\", \"%s\", ring_vector_servers_%d, %d, ring_vector_owner_%d},\n"
                 % (label, hash_name, ci, len(servers), ci))
    w.append("};\n\n#define RING_VECTOR_NCASES (sizeof(ring_vector_cases) / sizeof(ring_vector_cases[0]))\n\n"
             "#endif\n")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(w))
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "unit", "ring_vectors.h"))
    args = ap.parse_args()

    start = time.time()
    version = subprocess.run(["nutcracker", "--version"], capture_output=True, text=True,
                             timeout=10).stderr.strip()
    version = (version.splitlines() or ["nutcracker"])[0].replace("This is ", "")
    keys = make_keys()
    cases = []
    with tempfile.TemporaryDirectory(prefix="gen-ring-vectors-") as workdir:
        for label, spec in SERVER_LISTS:
            if not all(port_free(port) for _, _, port in spec if port is not None):
                print("skip %s: port 11211 is in use" % label, file=sys.stderr)
                continue
            for hash_name, servers, owners in run_list(workdir, spec, keys, start + DEADLINE_S):
                counts = [owners.count(i) for i in range(len(servers))]
                print("%-16s %-9s keys per node %s" % (label, hash_name, counts), file=sys.stderr)
                cases.append((label, hash_name, servers, owners))
    write_header(args.out, keys, cases, version)
    print("wrote %s: %d cases x %d keys = %d vectors (%.1fs)"
          % (args.out, len(cases), len(keys), len(cases) * len(keys), time.time() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
