"""A small client for memcached's meta protocol (mg, ms, md, ma, me, mn), for tests.

Pure python3 standard library.  One MetaClient is one TCP connection; every read has a
timeout (socket timeout, default 5 s) so a test cannot hang on a silent peer.

Requests are queued on a Pipeline and sent in one write; execute() then reads the replies
in order and returns one entry per request:

    c = MetaClient(port)
    p = c.pipeline()
    p.ms("foo", b"bar", "T0", "F5")
    p.mg("foo", "v", "f", "c", "k")
    p.mn()
    set_reply, get_reply, mn_reply = p.execute()
    get_reply.status == "VA"; get_reply.value == b"bar"; get_reply.flags["f"] == "5"

Flags are passed as strings exactly as on the wire ("v", "T30", "MA", "O7").  Quiet mode
("q") is handled: a quiet request whose reply memcached suppresses gets None in the result
(None means "no reply came", i.e. the quiet success/miss).  To know which reply belongs to
which request a pipeline gives every mg/ms/md/ma that carries no O flag an opaque token of
its own (O<n>) when it contains a quiet request; replies carrying an O token are matched by
it.  A reply without O (an error line, MN, ME) belongs to the first request that has not
been answered yet: memcached always answers in order, so that is exact for every
non-quiet request; only a CLIENT_ERROR for a quiet request that is followed by other
quiet requests is ambiguous (it is given to the earliest one).

Base64 keys: key=... with b64=True sends base64(key) and the "b" flag; on the way back a
"k" token is decoded when the reply carries the "b" flag (memcached 1.6.18 returns the
decoded key itself, without "b": then it is taken as it is).  Reply.key is bytes.
"""
import base64
import socket
import time

__all__ = ["MetaClient", "Pipeline", "Reply", "MetaError"]

META_STATUSES = ("VA", "HD", "EN", "NF", "NS", "EX", "MN", "ME")
ERROR_PREFIXES = (b"CLIENT_ERROR", b"SERVER_ERROR", b"ERROR")


class MetaError(Exception):
    """A protocol violation by the peer, a timeout or a closed connection."""


class Reply:
    """One reply: status ("VA", "HD", "EN", "NF", "NS", "EX", "MN", "ME", "CLIENT_ERROR",
    "SERVER_ERROR", "ERROR", or for text commands the first word of the line), flags (an
    ordered dict of single-letter flag -> token string, '' for bare flags like W/X/Z/b),
    value (bytes for VA, else None), line (the raw reply line without \\r\\n), message
    (the text after an error word), size (VA's size), me (for ME: dict of k=v pairs)."""

    __slots__ = ("status", "flags", "value", "line", "message", "size", "me", "key_raw",
                 "request")

    def __init__(self, line):
        self.line = line
        self.flags = {}
        self.value = None
        self.message = None
        self.size = None
        self.me = None
        self.key_raw = None
        self.request = None
        words = line.split(b" ")
        self.status = words[0].decode("latin-1")
        if line.startswith(ERROR_PREFIXES):
            self.message = line[len(words[0]) + 1:].decode("latin-1")
            return
        if self.status == "ME":
            self.key_raw = words[1] if len(words) > 1 else None
            self.me = {}
            for w in words[2:]:
                k, _, v = w.partition(b"=")
                self.me[k.decode("latin-1")] = v.decode("latin-1")
            return
        rest = words[1:]
        if self.status == "VA":
            if not rest:
                raise MetaError("VA without a size: %r" % line)
            self.size = int(rest[0])
            rest = rest[1:]
        if self.status in META_STATUSES:
            for w in rest:
                if w:
                    self.flags[chr(w[0])] = w[1:].decode("latin-1")

    @property
    def ok(self):
        return self.status in ("VA", "HD", "MN", "ME")

    @property
    def is_error(self):
        return self.status in ("CLIENT_ERROR", "SERVER_ERROR", "ERROR")

    @property
    def opaque(self):
        return self.flags.get("O")

    @property
    def cas(self):
        c = self.flags.get("c")
        return int(c) if c not in (None, "") else None

    @property
    def key(self):
        """The key from a k flag (or an ME line) as bytes, base64-decoded when the reply
        says it is base64 (b flag)."""
        if self.status == "ME":
            return self.key_raw
        k = self.flags.get("k")
        if k is None:
            return None
        raw = k.encode("latin-1")
        if "b" in self.flags:
            return base64.b64decode(raw)
        return raw

    def __repr__(self):
        v = "" if self.value is None else " value=%r" % (self.value[:40],)
        return "<Reply %s%s>" % (self.line[:120].decode("latin-1"), v)


def _b(x):
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode("latin-1")
    return str(x).encode()


def encode_key(key, b64):
    key = _b(key)
    return base64.b64encode(key) if b64 else key


class _Request:
    __slots__ = ("cmd", "wire", "quiet", "opaque", "auto_opaque", "index")

    def __init__(self, cmd, wire, quiet, opaque):
        self.cmd = cmd
        self.wire = wire
        self.quiet = quiet
        self.opaque = opaque
        self.auto_opaque = False
        self.index = None


def _flags_of(flags):
    out = []
    for f in flags:
        if f is None or f == "" or f == b"":
            continue
        out.append(_b(f))
    return out


class Pipeline:
    """Requests queued, sent together by execute(); see the module comment."""

    def __init__(self, client, auto_opaque=True):
        self.client = client
        self.requests = []
        self.auto_opaque = auto_opaque

    def _add(self, cmd, key, flags, b64, data=None):
        flags = _flags_of(flags)
        if b64 and b"b" not in flags:
            flags.append(b"b")
        parts = [cmd]
        if key is not None:
            parts.append(encode_key(key, b64))
        if data is not None:
            parts.append(b"%d" % len(data))
        quiet = b"q" in flags
        opaque = None
        for f in flags:
            if f[:1] == b"O":
                opaque = f[1:].decode("latin-1")
        parts += flags
        r = _Request(cmd.decode(), parts, quiet, opaque)
        if data is not None:
            r.wire = (parts, data)
        self.requests.append(r)
        return self

    def mg(self, key, *flags, b64=False):
        return self._add(b"mg", key, flags, b64)

    def ms(self, key, value, *flags, b64=False):
        return self._add(b"ms", key, flags, b64, data=_b(value))

    def md(self, key, *flags, b64=False):
        return self._add(b"md", key, flags, b64)

    def ma(self, key, *flags, b64=False):
        return self._add(b"ma", key, flags, b64)

    def me(self, key, b64=False):
        return self._add(b"me", key, (), b64)

    def mn(self):
        return self._add(b"mn", None, (), False)

    def raw(self, data, replies=1, quiet=False):
        """Any bytes (a text command, say); `replies` is how many reply units it gets
        (a `get a b` is one unit: VALUE... END)."""
        r = _Request("raw", _b(data), quiet, None)
        r.wire = ("raw", _b(data), replies)
        self.requests.append(r)
        return self

    def encode(self):
        any_quiet = any(r.quiet for r in self.requests)
        out = []
        n = 0
        for i, r in enumerate(self.requests):
            r.index = i
            if isinstance(r.wire, tuple) and r.wire[0] == "raw":
                out.append(r.wire[1])
                continue
            parts, data = r.wire if isinstance(r.wire, tuple) else (r.wire, None)
            if (self.auto_opaque and any_quiet and r.opaque is None
                    and r.cmd in ("mg", "ms", "md", "ma")):
                n += 1
                r.opaque = "%d" % i
                r.auto_opaque = True
                parts = parts + [b"O" + r.opaque.encode()]
            out.append(b" ".join(parts) + b"\r\n")
            if data is not None:
                out.append(data + b"\r\n")
        return b"".join(out)

    def execute(self):
        """Send everything, read every reply; returns a list with one Reply (or None for
        a suppressed quiet reply, or a list of Replies for a raw text command) per
        request.  The last request must be non-quiet (an mn, typically), or the end of
        the replies cannot be known."""
        if not self.requests:
            return []
        if self.requests[-1].quiet:
            raise ValueError("a pipeline must end with a non-quiet request (mn)")
        self.client.send(self.encode())
        results = [None] * len(self.requests)
        pos = 0
        reqs = self.requests
        while pos < len(reqs):
            r = reqs[pos]
            line = self.client.read_line()
            word = line.split(b" ", 1)[0].decode("latin-1")
            if word in META_STATUSES:
                rep = self.client.read_reply(line)
            elif line.startswith(ERROR_PREFIXES):
                rep = Reply(line)
            else:  # a text reply: the next raw request's, the quiet ones before it were silent
                target = None
                for j in range(pos, len(reqs)):
                    if reqs[j].cmd == "raw":
                        target = j
                        break
                    if not reqs[j].quiet:
                        break
                if target is None:
                    raise MetaError("text reply %r where request #%d (%s) was due"
                                    % (line, pos, r.cmd))
                n = reqs[target].wire[2]
                results[target] = [self.client.read_text_reply(line)]
                results[target] += [self.client.read_text_reply() for _ in range(n - 1)]
                pos = target + 1
                continue
            target = None
            if rep.opaque is not None:
                for j in range(pos, len(reqs)):
                    if reqs[j].opaque == rep.opaque:
                        target = j
                        break
                if target is None:
                    raise MetaError("reply with opaque %r matches no pending request: %r"
                                    % (rep.opaque, rep))
                for j in range(pos, target):
                    if not reqs[j].quiet:
                        raise MetaError("reply %r skipped the non-quiet request #%d (%s)"
                                        % (rep, j, reqs[j].cmd))
            elif rep.status in ("MN", "ME"):
                want = rep.status.lower()
                for j in range(pos, len(reqs)):
                    if reqs[j].cmd == want:
                        target = j
                        break
                    if not reqs[j].quiet:
                        break
                if target is None:
                    raise MetaError("%s where request #%d (%s) was due" % (rep.status, pos, r.cmd))
            else:
                target = pos
            rep.request = target
            results[target] = rep
            pos = target + 1
        return results


class MetaClient:
    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- bytes
    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            raise MetaError("timed out after %.1fs waiting for a reply (buffered: %r)"
                            % (self.timeout, self.buf[:200]))
        if not chunk:
            raise MetaError("connection closed by peer (buffered: %r)" % self.buf[:200])
        self.buf += chunk

    def read_line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_reply(self, line=None):
        """One meta reply (with its value block for VA) or one error line."""
        rep = Reply(self.read_line() if line is None else line)
        if rep.status == "VA":
            block = self.read_exact(rep.size + 2)
            if block[-2:] != b"\r\n":
                raise MetaError("VA value block not ending in CRLF: %r" % block[-20:])
            rep.value = block[:-2]
        return rep

    def read_text_reply(self, line=None):
        """One text-protocol reply unit: a line, or VALUE blocks up to END.  Returns a Reply
        whose value is a list of (key, flags, bytes, cas|None) for get-style replies."""
        if line is None:
            line = self.read_line()
        if not line.startswith(b"VALUE "):
            return Reply(line)
        items = []
        while line.startswith(b"VALUE "):
            w = line.split(b" ")
            size = int(w[3])
            block = self.read_exact(size + 2)
            items.append((w[1], int(w[2]), block[:-2], int(w[4]) if len(w) > 4 else None))
            line = self.read_line()
        if line != b"END":
            raise MetaError("get reply not ending in END: %r" % line)
        rep = Reply(line)
        rep.value = items
        return rep

    # ---- single requests (each one round trip)
    def pipeline(self, auto_opaque=True):
        return Pipeline(self, auto_opaque=auto_opaque)

    def _one(self, fn, *a, **kw):
        p = self.pipeline()
        getattr(p, fn)(*a, **kw)
        quiet = p.requests[-1].quiet
        if quiet:
            p.mn()
        res = p.execute()
        return res[0]

    def mg(self, key, *flags, b64=False):
        return self._one("mg", key, *flags, b64=b64)

    def ms(self, key, value, *flags, b64=False):
        return self._one("ms", key, value, *flags, b64=b64)

    def md(self, key, *flags, b64=False):
        return self._one("md", key, *flags, b64=b64)

    def ma(self, key, *flags, b64=False):
        return self._one("ma", key, *flags, b64=b64)

    def me(self, key, b64=False):
        return self._one("me", key, b64=b64)

    def mn(self):
        return self._one("mn")

    # ---- bulk helpers (quiet + mn)
    def get_many(self, keys, extra_flags=(), b64=False, batch=500):
        """{key: value} for the keys found, via quiet `mg <key> q k v O<i>` + `mn`."""
        out = {}
        keys = list(keys)
        for start in range(0, len(keys), batch):
            p = self.pipeline(auto_opaque=False)
            chunk = keys[start:start + batch]
            for i, k in enumerate(chunk):
                p.mg(k, "q", "k", "v", "O%d" % (start + i), *extra_flags, b64=b64)
            p.mn()
            res = p.execute()
            for i, k in enumerate(chunk):
                r = res[i]
                if r is None:
                    continue
                if r.status != "VA":
                    raise MetaError("mg %r: %r" % (k, r))
                if r.opaque != "%d" % (start + i):
                    raise MetaError("mg %r: opaque %r, want %d" % (k, r.opaque, start + i))
                out[k] = r.value
        return out

    def set_many(self, items, extra_flags=(), b64=False, batch=500):
        """items: dict or (key, value) pairs.  Pipelined quiet `ms <key> <len> q O<i>` +
        `mn`; returns {key: Reply} for the ones that did not succeed (empty when all were
        stored)."""
        items = list(items.items()) if isinstance(items, dict) else list(items)
        failed = {}
        for start in range(0, len(items), batch):
            p = self.pipeline(auto_opaque=False)
            chunk = items[start:start + batch]
            for i, (k, v) in enumerate(chunk):
                p.ms(k, v, "q", "O%d" % (start + i), *extra_flags, b64=b64)
            p.mn()
            res = p.execute()
            for i, (k, _) in enumerate(chunk):
                if res[i] is not None:
                    failed[k] = res[i]
        return failed

    def delete_many(self, keys, b64=False, batch=500):
        """Quiet `md <key> q O<i>` + `mn`; returns {key: Reply} for the keys that were not
        deleted (NF for a miss, or an error)."""
        keys = list(keys)
        failed = {}
        for start in range(0, len(keys), batch):
            p = self.pipeline(auto_opaque=False)
            chunk = keys[start:start + batch]
            for i, k in enumerate(chunk):
                p.md(k, "q", "O%d" % (start + i), b64=b64)
            p.mn()
            res = p.execute()
            for i, k in enumerate(chunk):
                if res[i] is not None:
                    failed[k] = res[i]
        return failed


def wait_until(pred, timeout=5.0, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()
