"""Differential test of the meta protocol (mg, ms, md, ma, me, mn): the same bytes sent
to a real memcached and to a target must get byte-identical replies.

The target is pluggable (TARGET below, or the env var GEOGATE_META_TARGET):
  - MetaDiffGatewayTest: a single-site geogate (no wan:) fronting one memcached node,
    started with harness; this is the test that matters once geogate speaks meta.
  - MetaDiffMemcachedTest: a second fresh memcached; it checks the table itself (every
    case must be deterministic after normalisation, or it would fail against geogate
    for reasons that are not geogate's).
  - GEOGATE_META_TARGET=127.0.0.1:PORT: MetaDiffExternalTest runs the table against
    whatever listens there (a geogate started by hand, say; it must front one node).

Each case is a list of chunks sent on a fresh connection, with a read after each; a
chunk may be a function of the bytes received so far (to use a cas value the peer
returned).  Both sides are flushed between cases.  A text sentinel (set + get) ends
every case so completeness is not guessed from silence.  Normalised, and nothing else:
cas values (c<n> tokens, VALUE's cas, ME's cas=), and times that may move by a clock
tick between the two sides (positive t<n> TTLs and ME exp= rounded to 5 s, l<n> and ME
la= rounded to 5 s), plus VERSION/stats as in test_protocol_diff.

Flag values memcached 1.6.18 (Debian 12's) does not have are in CASES with a minimum
version and are skipped, with the reason, against an older reference.
"""
import os
import re
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SETTLE = 0.3
NO_EOL_SETTLE = 1.0
CASE_TIMEOUT = 8.0
POOL_EXTRA = "  timeout: 2000\n"
SENTINEL = b"set __case_end__ 0 0 4\r\nDONE\r\nget __case_end__\r\n"
SENTINEL_REPLY = b"STORED\r\nVALUE __case_end__ 0 4\r\nDONE\r\nEND\r\n"
MIB = 1048576


def exchange(port, chunks, settle=SETTLE, timeout=CASE_TIMEOUT):
    """Send each chunk on one connection (a callable chunk is called with the bytes read
    so far), reading after each; after the last, read until SENTINEL's reply (stripped),
    EOF or the deadline.  Returns (bytes, closed)."""
    out = b""
    closed = False
    deadline = time.time() + timeout
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        for i, chunk in enumerate(chunks):
            if closed:
                break
            if callable(chunk):
                chunk = chunk(out)
            last = i == len(chunks) - 1
            try:
                s.sendall(chunk + (SENTINEL if last else b""))
            except OSError:
                closed = True
                break
            quiet = settle if b"\n" in chunk or last else NO_EOL_SETTLE
            while time.time() < deadline:
                if last and out.endswith(SENTINEL_REPLY):
                    break
                s.settimeout(max(0.01, deadline - time.time()) if last else quiet)
                try:
                    data = s.recv(1 << 20)
                except socket.timeout:
                    break
                except ConnectionResetError:
                    closed = True
                    break
                if not data:
                    closed = True
                    break
                out += data
        if out.endswith(SENTINEL_REPLY):
            out = out[:-len(SENTINEL_REPLY)]
    finally:
        s.close()
    return out, closed


# ---- normalisation ----------------------------------------------------------------------

META_CODES = (b"VA", b"HD", b"EN", b"NF", b"NS", b"EX", b"MN")


def _round5(n):
    return (n + 2) // 5 * 5


def _norm_meta_tokens(words):
    out = []
    for w in words:
        f, t = w[:1], w[1:]
        if f == b"c" and t.isdigit():
            w = b"c<cas>"
        elif f == b"t" and t.isdigit():          # t-1 (no expiry) is kept as is
            w = b"t~%d" % _round5(int(t))
        elif f == b"l" and t.isdigit():
            w = b"l~%d" % _round5(int(t))
        out.append(w)
    return out


def _norm_me(line):
    words = line.split(b" ")
    out = words[:2]
    for w in words[2:]:
        k, eq, v = w.partition(b"=")
        if k == b"cas" and v.isdigit():
            w = b"cas=<cas>"
        elif k in (b"exp", b"la") and v.lstrip(b"-").isdigit() and v != b"-1":
            # 1.6.18 prints exp as a negative remaining time (exp=-100 after T100)
            w = k + b"=%s~%d" % (b"-" if v[:1] == b"-" else b"", _round5(int(v.lstrip(b"-"))))
        out.append(w)
    return b" ".join(out)


def normalise(b):
    """Walk the reply stream line by line, skipping value blocks (VA, VALUE), so that
    value bytes are never rewritten."""
    out = []
    i = 0
    n = len(b)
    while i < n:
        j = b.find(b"\r\n", i)
        if j < 0:
            out.append(b[i:])
            break
        line = b[i:j]
        i = j + 2
        words = line.split(b" ")
        size = None
        if words[0] in META_CODES:
            if words[0] == b"VA" and len(words) > 1 and words[1].isdigit():
                size = int(words[1])
                words = words[:2] + _norm_meta_tokens(words[2:])
            else:
                words = words[:1] + _norm_meta_tokens(words[1:])
            line = b" ".join(words)
        elif words[0] == b"ME" and len(words) > 2:
            line = _norm_me(line)
        elif words[0] == b"VALUE" and len(words) in (4, 5) and words[3].isdigit():
            size = int(words[3])
            if len(words) == 5:
                line = b" ".join(words[:4]) + b" <cas>"
        elif words[0] == b"VERSION":
            line = b"VERSION <v>"
        elif words[0] == b"STAT":
            if out and out[-1] == b"STAT <stats>\r\n":
                continue
            line = b"STAT <stats>"
        out.append(line + b"\r\n")
        if size is not None:
            out.append(b[i:i + size + 2])
            i += size + 2
    return b"".join(out)


# ---- the cases --------------------------------------------------------------------------

def one(b):
    return [b]


_CAS_RE = re.compile(rb"\bc(\d+)\b")


def last_cas(out):
    """The cas of the last c<n> token the peer returned (as bytes)."""
    found = _CAS_RE.findall(out)
    return found[-1] if found else b"0"


def with_cas(template):
    """A chunk that puts the last returned cas where template has {cas}."""
    return lambda out: template.replace(b"{cas}", last_cas(out))


K250 = b"k" * 250
K251 = b"k" * 251
B64_FOO = b"Zm9v"                 # "foo"
B64_SPACE = b"YSBiCmM="           # "a b\nc": not a valid text key
# the length limit applies to the key as sent (base64): 186 bytes encode to 248 chars,
# 189 bytes to 252 (too long); 250 bytes to 336 (too long)
B64_248 = __import__("base64").b64encode(b"\x01" * 186)
B64_252 = __import__("base64").b64encode(b"\x01" * 189)
B64_336 = __import__("base64").b64encode(b"\x01" * 250)
OPAQUE31 = b"O" + b"9" * 31
OPAQUE32 = b"O" + b"9" * 32

# (name, chunks[, min_version, reason]).  Every expectation is whatever the reference
# memcached answers.
CASES = [
    # ---- mn / basics
    ("mn", one(b"mn\r\n")),
    ("mn_many", one(b"mn\r\n" * 5)),
    ("mn_with_args", one(b"mn foo\r\nmn O1 q\r\n")),
    ("mg_miss", one(b"mg foo\r\nmg foo v\r\nmg foo v k c f t s O1\r\n")),
    ("mg_hit_no_flags", one(b"set foo 5 0 3\r\nbar\r\nmg foo\r\n")),
    ("mg_hit_v", one(b"set foo 5 0 3\r\nbar\r\nmg foo v\r\n")),
    # ---- mg flags, one by one
    ("mg_k", one(b"ms foo 3\r\nbar\r\nmg foo k\r\nmg foo k v\r\n")),
    ("mg_c", one(b"ms foo 3\r\nbar\r\nmg foo c\r\nmg foo v c\r\n")),
    ("mg_f", one(b"ms foo 3 F123\r\nbar\r\nmg foo f\r\nmg foo f v\r\n"
                 b"ms foo 3 F4294967295\r\nbar\r\nmg foo f\r\n")),
    ("mg_s", one(b"ms foo 3\r\nbar\r\nmg foo s\r\nms foo 0\r\n\r\nmg foo s v\r\n")),
    ("mg_t_no_expiry", one(b"ms foo 3\r\nbar\r\nmg foo t\r\nms foo 3 T0\r\nbar\r\nmg foo t\r\n")),
    ("mg_t_ttl", one(b"ms foo 3 T100\r\nbar\r\nmg foo t\r\nms foo 3 T3600\r\nbar\r\nmg foo t v\r\n")),
    ("mg_v_binary", one(b"ms foo 6\r\na\r\nb\x00\xff\r\nmg foo v\r\n")),
    ("mg_h", one(b"ms foo 3\r\nbar\r\nmg foo h\r\nmg foo h\r\nmg foo h u\r\n")),
    ("mg_h_after_u", one(b"ms foo 3\r\nbar\r\nmg foo u\r\nmg foo h\r\nmg foo h\r\n")),
    ("mg_l", one(b"ms foo 3\r\nbar\r\nmg foo l\r\nmg foo l h\r\n")),
    ("mg_u", one(b"ms foo 3\r\nbar\r\nmg foo u v\r\nmg foo u h l\r\n")),
    ("mg_O", one(b"ms foo 3\r\nbar\r\nmg foo O123\r\nmg nope O456\r\nmg foo v Oabc\r\n"
                 b"mg foo O\r\n")),
    ("mg_O_31_bytes", one(b"mg foo " + OPAQUE31 + b"\r\nms foo 1\r\nx\r\nmg foo v " + OPAQUE31 + b"\r\n")),
    ("mg_O_32_bytes", one(b"mg foo " + OPAQUE32 + b"\r\nmn\r\n")),
    ("mg_all_flags_order", one(b"ms foo 3 F7 T100\r\nbar\r\nmg foo s v f t k c O9 h l\r\n"
                               b"mg foo O9 k f s\r\n")),
    ("mg_T_touch", one(b"ms foo 3\r\nbar\r\nmg foo T100 t\r\nmg foo t\r\nmg foo T0 t\r\n"
                       b"mg foo T-1\r\nmg foo v\r\n")),
    ("mg_T_bad", one(b"ms foo 3\r\nbar\r\nmg foo Tabc\r\nmg foo T\r\nmg foo T abc\r\n"
                     b"mg foo T1x\r\nmn\r\n")),
    ("mg_N_vivify", one(b"mg foo N30 v c t\r\nmg foo N30 v t\r\nmg foo v\r\nmg foo s\r\n")),
    ("mg_N_hit", one(b"ms foo 3\r\nbar\r\nmg foo N30 v\r\n")),
    ("mg_N_bad", one(b"mg foo N\r\nmg foo Nx\r\nmn\r\n")),
    ("mg_R_recache", one(b"ms foo 3 T10\r\nbar\r\nmg foo R30 v\r\nmg foo R30 v\r\n"
                         b"ms bar 3 T3600\r\nbaz\r\nmg bar R30 v\r\n")),
    ("mg_R_no_ttl", one(b"ms foo 3\r\nbar\r\nmg foo R30 v\r\n")),
    ("mg_q_miss", one(b"mg foo q\r\nmg foo q v\r\nmg foo q k O1\r\nmn\r\n")),
    ("mg_q_hit", one(b"ms foo 3\r\nbar\r\nmg foo q\r\nmg foo q v\r\nmg foo q k O1\r\nmn\r\n")),
    ("mg_q_pipeline", one(b"ms a 1\r\n1\r\nms c 1\r\n3\r\nmg a q v k O1\r\nmg b q v k O2\r\n"
                          b"mg c q v k O3\r\nmg d q v k O4\r\nmn\r\n")),
    ("mg_q_error_still_sent", one(b"mg foo q Tabc\r\nmg " + K251 + b" q v\r\nmn\r\n")),
    ("mg_b", one(b"ms " + B64_FOO + b" 3 b\r\nbar\r\nmg foo v\r\nmg " + B64_FOO + b" b v k\r\n"
                 b"mg " + B64_FOO + b" b k c O1\r\n")),
    ("mg_b_text_stored", one(b"set foo 0 0 3\r\nbar\r\nmg " + B64_FOO + b" b v k\r\n")),
    ("mg_b_binary_key", one(b"ms " + B64_SPACE + b" 1 b\r\nx\r\nmg " + B64_SPACE + b" b k v\r\n"
                            b"me " + B64_SPACE + b" b\r\nmd " + B64_SPACE + b" b k\r\n"
                            b"mg " + B64_SPACE + b" b v\r\n")),
    ("mg_b_248", one(b"ms " + B64_248 + b" 1 b\r\nx\r\nmg " + B64_248 + b" b v\r\n")),
    ("mg_b_252", one(b"ms " + B64_252 + b" 1 b\r\nx\r\nmg " + B64_252 + b" b v\r\nmn\r\n")),
    ("mg_b_336", one(b"mg " + B64_336 + b" b v\r\nmd " + B64_336 + b" b\r\nmn\r\n")),
    ("mg_b_bad", one(b"mg Zm9v= b\r\nmg !!!! b\r\nmg Zm9 b\r\nmg a b\r\nmg Zm9v b v q\r\nmn\r\n")),
    ("mg_b_then_plain_lookup", one(b"ms " + B64_FOO + b" 3 b\r\nbar\r\nget foo\r\n")),
    ("mg_key_250", one(b"ms " + K250 + b" 1\r\nx\r\nmg " + K250 + b" v k\r\n")),
    ("mg_key_251", one(b"mg " + K251 + b" v\r\nmn\r\n")),
    ("mg_no_key", one(b"mg\r\nmg \r\nmn\r\n")),
    ("mg_unknown_flag", one(b"mg foo !\r\nmg foo v x\r\nmg foo vv\r\nmg foo v v\r\nmn\r\n")),
    ("mg_accepted_foreign_flags", one(b"ms foo 3\r\nbar\r\nmg foo I\r\nmg foo P L\r\n"
                                      b"mg foo D5 J1 M+ F9 C1\r\nmn\r\n")),
    ("mg_too_many_flags", one(b"ms foo 3\r\nbar\r\nmg foo " + b" ".join([b"v", b"k", b"c", b"f", b"s", b"t", b"h", b"l", b"u", b"O1"] * 3) + b"\r\nmn\r\n")),
    ("mg_many_tokens", one(b"mg foo" + b" v" * 30 + b"\r\nmn\r\n")),
    ("mg_long_line", one(b"mg foo " + b"O1 " * 1000 + b"\r\nmn\r\n")),
    ("mg_extra_spaces", one(b"ms foo 3\r\nbar\r\nmg  foo   v  k \r\nmg foo v\tk\r\nmn\r\n")),
    ("mg_lf_only", one(b"ms foo 3\nbar\r\nmg foo v\nmn\n")),

    # ---- ms
    ("ms_basic", one(b"ms foo 3\r\nbar\r\nget foo\r\nms foo 0\r\n\r\nget foo\r\n")),
    ("ms_flags_F", one(b"ms foo 3 F99\r\nbar\r\ngets foo\r\nms foo 3 F0\r\nbar\r\nmg foo f\r\n")),
    ("ms_F_bad", one(b"ms foo 3 Fabc\r\nbar\r\nms foo 3 F4294967296\r\nbar\r\nms foo 3 F-1\r\nbar\r\n"
                     b"mg foo f\r\nmn\r\n")),
    ("ms_T", one(b"ms foo 3 T100\r\nbar\r\nmg foo t\r\nms foo 3 T-1\r\nbar\r\nmg foo v\r\n")),
    ("ms_T_bad", one(b"ms foo 3 Tabc\r\nbar\r\nms foo 3 T\r\nbar\r\nmg foo v\r\nmn\r\n")),
    ("ms_c", one(b"ms foo 3 c\r\nbar\r\nmg foo c\r\n")),
    ("ms_k_O", one(b"ms foo 3 k O77\r\nbar\r\nms foo 3 O1 k c\r\nbar\r\n")),
    ("ms_q", one(b"ms foo 3 q\r\nbar\r\nms foo 3 q O5\r\nbar\r\nms foo 3 q MR\r\nbar\r\n"
                 b"ms nope 3 q MR O6\r\nbar\r\nms foo 3 q ME O7\r\nbar\r\nms foo 3 q C1 O8\r\nbar\r\n"
                 b"mn\r\n")),
    ("ms_q_error_still_sent", one(b"ms foo 3 q Tabc\r\nbar\r\nms foo x q\r\nbar\r\nmn\r\n")),
    ("ms_C_match", [b"ms foo 3 c\r\nbar\r\n", with_cas(b"ms foo 3 C{cas} c\r\nbaz\r\nmg foo v\r\n")]),
    ("ms_C_mismatch", one(b"ms foo 3\r\nbar\r\nms foo 3 C99999999\r\nbaz\r\nmg foo v\r\n")),
    ("ms_C_miss", one(b"ms foo 3 C99999999\r\nbaz\r\nmg foo v\r\n")),
    ("ms_C_bad", one(b"ms foo 3 Cabc\r\nbaz\r\nms foo 3 C\r\nbaz\r\nmn\r\n")),
    ("ms_I_invalidate", [b"ms foo 3 c\r\nbar\r\n",
                         with_cas(b"ms foo 3 C{cas} c\r\nbaz\r\nmg foo v c\r\n"),
                         lambda out: b"ms foo 3 I C%d\r\nold\r\nmg foo v\r\nmg foo v\r\n" %
                         (int(last_cas(out)) - 1)]),
    ("ms_I_without_C", one(b"ms foo 3\r\nbar\r\nms foo 3 I\r\nbaz\r\nmg foo v\r\n")),
    ("ms_mode_S", one(b"ms foo 3 MS\r\nbar\r\nmg foo v\r\nms foo 3 Ms\r\nbaz\r\nmg foo v\r\n")),
    ("ms_mode_E_add", one(b"ms foo 3 ME\r\nbar\r\nms foo 3 ME\r\nbaz\r\nmg foo v\r\nms foo 1 Me\r\nx\r\n")),
    ("ms_mode_R_replace", one(b"ms foo 3 MR\r\nbar\r\nms foo 3\r\nbar\r\nms foo 3 MR\r\nbaz\r\n"
                              b"mg foo v\r\n")),
    ("ms_mode_A_append", one(b"ms foo 3 MA\r\nbar\r\nms foo 3 F5\r\nbar\r\nms foo 3 MA\r\nbaz\r\n"
                             b"mg foo v f\r\nms foo 1 Ma\r\n!\r\nmg foo v\r\n")),
    ("ms_mode_P_prepend", one(b"ms foo 3 MP\r\nbar\r\nms foo 3\r\nbar\r\nms foo 3 MP\r\nbaz\r\n"
                              b"mg foo v\r\nms foo 1 Mp\r\n!\r\nmg foo v\r\n")),
    ("ms_mode_A_C", [b"ms foo 3 c\r\nbar\r\n",
                     with_cas(b"ms foo 1 MA C{cas}\r\n!\r\nms foo 1 MA C99999999\r\n?\r\nmg foo v\r\n")]),
    ("ms_mode_A_N_autoviv", one(b"ms foo 3 MA N30\r\nbar\r\nmg foo v t\r\n"),
     "1.6.19", "ms N (append mode vivifies on a miss) is newer than 1.6.18, where N is "
     "accepted and ignored (NS)"),
    # E (explicit new cas) is newer than 1.6.18: CLIENT_ERROR invalid flag there
    ("ms_E_cas", one(b"ms foo 3 E12345\r\nbar\r\nmg foo c v\r\nmn\r\n"),
     "1.6.19", "ms E (set the item's cas) is not in memcached 1.6.18"),
    ("mg_E_cas", one(b"mg foo N30 E777 c\r\nmg foo c\r\nmn\r\n"),
     "1.6.19", "mg E (cas of a vivified item) is not in memcached 1.6.18"),
    ("md_E_cas", one(b"ms foo 3\r\nbar\r\nmd foo I E888\r\nmg foo c\r\nmn\r\n"),
     "1.6.19", "md E is not in memcached 1.6.18"),
    ("ma_E_cas", one(b"ms n 1\r\n1\r\nma n E999 c v\r\nmn\r\n"),
     "1.6.19", "ma E is not in memcached 1.6.18"),
    ("ms_mode_bad", one(b"ms foo 3 MX\r\nbar\r\nms foo 3 M\r\nbar\r\nms foo 3 MSS\r\nbar\r\nmn\r\n")),
    ("ms_b", one(b"ms " + B64_FOO + b" 3 b k\r\nbar\r\nget foo\r\nmg foo v k\r\n")),
    ("ms_b_bad", one(b"ms Zm9v= 3 b\r\nbar\r\nmn\r\n")),
    ("ms_no_key", one(b"ms\r\nbar\r\nmn\r\n")),
    ("ms_no_datalen", one(b"ms foo\r\nbar\r\nmn\r\n")),
    ("ms_bad_datalen", one(b"ms foo abc\r\nbar\r\nmn\r\n")),
    ("ms_datalen_suffix", one(b"ms foo 3x\r\nbar\r\nmn\r\n")),
    ("ms_negative_datalen", one(b"ms foo -1\r\nbar\r\nmn\r\n")),
    ("ms_huge_datalen", one(b"ms foo 99999999999999999999\r\nbar\r\nmn\r\n")),
    ("ms_datalen_int_max", one(b"ms foo 2147483647\r\nbar\r\nmn\r\n")),
    ("ms_datalen_flag_first", one(b"ms foo T0 3\r\nbar\r\nmn\r\n")),
    ("ms_key_250", one(b"ms " + K250 + b" 1\r\nx\r\nmg " + K250 + b" v\r\n")),
    ("ms_key_251", one(b"ms " + K251 + b" 3\r\nbar\r\nmn\r\n")),
    ("ms_key_251_q", one(b"ms " + K251 + b" 3 q\r\nbar\r\nmn\r\n")),
    ("ms_unknown_flag", one(b"ms foo 3 !\r\nbar\r\nms foo 3 x\r\nbar\r\nmg foo v\r\nmn\r\n")),
    ("ms_O_too_long", one(b"ms foo 3 " + OPAQUE32 + b"\r\nbar\r\nmg foo v\r\nmn\r\n")),
    ("ms_too_many_flags", one(b"ms foo 3" + b" T0 F1 c k O1 q" * 5 + b"\r\nbar\r\nmn\r\n")),
    ("ms_many_tokens", one(b"ms foo 3" + b" c" * 30 + b"\r\nbar\r\nmn\r\n")),
    ("ms_chunk_short", one(b"ms foo 3\r\nba\r\nmg foo v\r\nmn\r\n")),
    ("ms_chunk_long", one(b"ms foo 3\r\nbarbaz\r\nmg foo v\r\nmn\r\n")),
    ("ms_chunk_lf_only", one(b"ms foo 3\r\nbar\nmg foo v\r\nmn\r\n")),
    ("ms_chunk_no_crlf", one(b"ms foo 3\r\nbarXXmg foo v\r\nmn\r\n")),
    ("ms_chunk_crlf_inside", one(b"ms foo 6\r\na\r\nb\r\n\r\nmg foo v\r\n")),
    ("ms_data_split", [b"ms foo 11\r\nhel", b"lo wor", b"ld\r", b"\nmg foo v\r\n"]),
    ("ms_line_split", [b"ms fo", b"o 3 T0", b" F1\r\nbar\r\nmg foo v f\r\n"]),
    ("ms_500k", one(b"ms big 512000\r\n" + bytes(range(256)) * 2000 + b"\r\nmg big s\r\n")),
    ("ms_1mib", one(b"ms big %d\r\n" % MIB + b"v" * MIB + b"\r\nmg big s\r\nmn\r\n")),
    ("ms_too_large", one(b"ms big %d\r\n" % (MIB + 1) + b"v" * (MIB + 1) + b"\r\nmg big s\r\nmn\r\n")),
    ("ms_too_large_q", one(b"ms big %d q O1\r\n" % (2 * MIB) + b"v" * (2 * MIB) + b"\r\nmn\r\n")),

    # ---- md
    ("md_basic", one(b"ms foo 3\r\nbar\r\nmd foo\r\nmd foo\r\nmg foo v\r\n")),
    ("md_k_O", one(b"ms foo 3\r\nbar\r\nmd foo k O1\r\nmd foo k O2\r\n")),
    ("md_q", one(b"ms foo 3\r\nbar\r\nmd foo q\r\nmd foo q\r\nmd foo q O3\r\nmn\r\n")),
    ("md_C", [b"ms foo 3 c\r\nbar\r\n", with_cas(b"md foo C99999999\r\nmd foo C{cas}\r\nmg foo v\r\n")]),
    ("md_I_stale", one(b"ms foo 3\r\nbar\r\nmd foo I\r\nmg foo v c\r\nmg foo v\r\nmg foo v\r\n")),
    ("md_I_T", one(b"ms foo 3\r\nbar\r\nmd foo I T30\r\nmg foo v t\r\nms foo 3\r\nnew\r\nmg foo v\r\n")),
    ("md_I_then_ms", [b"ms foo 3\r\nbar\r\nmd foo I\r\nmg foo c\r\n",
                      with_cas(b"ms foo 3 C{cas}\r\nnew\r\nmg foo v\r\n")]),
    ("md_T_without_I", one(b"ms foo 3\r\nbar\r\nmd foo T30\r\nmg foo v\r\n")),
    ("md_b", one(b"ms " + B64_FOO + b" 3 b\r\nbar\r\nmd " + B64_FOO + b" b k\r\nget foo\r\n")),
    ("md_key_251", one(b"md " + K251 + b"\r\nmd " + K251 + b" q\r\nmn\r\n")),
    ("md_no_key", one(b"md\r\nmn\r\n")),
    ("md_bad_flags", one(b"md foo !\r\nmd foo C\r\nmd foo Cabc\r\nmd foo " + OPAQUE32 + b"\r\nmn\r\n")),
    ("md_x_removes_value", one(b"ms foo 3 F5\r\nbar\r\nmd foo x\r\nmg foo v f\r\nmn\r\n"),
     "1.6.19", "md's x flag (remove the value, keep the item) is not in memcached 1.6.18"),

    # ---- ma
    ("ma_basic", one(b"ms n 2\r\n10\r\nma n\r\nmg n v\r\nma n v\r\n")),
    ("ma_miss", one(b"ma nope\r\nma nope v\r\nma nope q\r\nmn\r\n")),
    ("ma_D", one(b"ms n 2\r\n10\r\nma n D5 v\r\nma n D18446744073709551615 v\r\nma n D0 v\r\n")),
    ("ma_D_bad", one(b"ms n 2\r\n10\r\nma n Dabc\r\nma n D-1\r\nma n D18446744073709551616\r\n"
                     b"ma n D\r\nmn\r\n")),
    ("ma_modes", one(b"ms n 2\r\n10\r\nma n MI v\r\nma n M+ v\r\nma n MD v\r\nma n M- v\r\n"
                     b"ma n Mi v\r\nma n Md v\r\nma n MD D100 v\r\nma n MX\r\nma n M\r\nmn\r\n")),
    ("ma_N_J", one(b"ma n N30 J13 v\r\nma n N30 J13 v\r\nmg n v t\r\nma m N0 v\r\nma m v\r\n")),
    ("ma_J_without_N", one(b"ma n J13 v\r\nmn\r\n")),
    ("ma_J_bad", one(b"ma n N0 Jx v\r\nma n N0 J\r\nmn\r\n")),
    ("ma_N_decr", one(b"ma n N0 J5 MD v\r\nma n MD D10 v\r\n")),
    ("ma_T_t", one(b"ms n 1\r\n1\r\nma n T100 t v\r\nma n t\r\nmg n t\r\n")),
    ("ma_c_C", [b"ms n 1 c\r\n1\r\n", with_cas(b"ma n C99999999 v\r\nma n C{cas} v c\r\n")]),
    ("ma_q", one(b"ms n 1\r\n1\r\nma n q\r\nma n q v\r\nma n q O1\r\nma nope q O2\r\n"
                 b"ma nope q N0 O3\r\nmg n v\r\nmn\r\n")),
    ("ma_k_O", one(b"ms n 1\r\n1\r\nma n k O9 v\r\n")),
    ("ma_non_numeric", one(b"ms n 3\r\nabc\r\nma n\r\nms m 2\r\n-1\r\nma m v\r\nmn\r\n")),
    ("ma_overflow", one(b"ms n 20\r\n18446744073709551615\r\nma n v\r\nma n MD v\r\n")),
    ("ma_long_value", one(b"ms n 22\r\n0000000000000000000001\r\nma n v\r\n")),
    ("ma_b", one(b"ms " + B64_FOO + b" 1 b\r\n7\r\nma " + B64_FOO + b" b v k\r\nget foo\r\n")),
    ("ma_key_251", one(b"ma " + K251 + b"\r\nmn\r\n")),
    ("ma_no_key", one(b"ma\r\nmn\r\n")),
    ("ma_unknown_flag", one(b"ma n !\r\nmn\r\n")),

    # ---- me
    ("me_miss", one(b"me foo\r\n")),
    ("me_hit", one(b"ms foo 3 T0\r\nbar\r\nme foo\r\nmg foo v\r\nme foo\r\n")),
    ("me_ttl", one(b"ms foo 3 T100\r\nbar\r\nme foo\r\n")),
    ("me_b", one(b"ms " + B64_FOO + b" 3 b\r\nbar\r\nme " + B64_FOO + b" b\r\nme foo\r\n")),
    ("me_b_text_stored", one(b"set foo 0 0 3\r\nbar\r\nme " + B64_FOO + b" b\r\n")),
    ("me_extra", one(b"ms foo 3\r\nbar\r\nme foo x y\r\nme foo v\r\n")),
    ("me_no_key", one(b"me\r\nmn\r\n")),
    ("me_key_251", one(b"me " + K251 + b"\r\nmn\r\n")),
    ("me_bad_b64", one(b"me Zm9v= b\r\nmn\r\n")),

    # ---- pipelines mixing meta and text on one connection
    ("mixed_pipeline", one(b"set a 0 0 1\r\n1\r\nmg a v\r\nget a\r\nms b 1\r\n2\r\ngets a b\r\n"
                           b"mg b v c\r\nincr a 5\r\nma a v\r\ndelete b\r\nmd b\r\nmn\r\n"
                           b"get a b\r\nmg a v q\r\nmg b v q\r\nmn\r\nversion\r\n")),
    ("mixed_quiet_and_noreply", one(b"set a 0 0 1 noreply\r\n1\r\nms b 1 q\r\n2\r\nmg a q v k\r\n"
                                    b"get b\r\nmg c q v\r\ndelete a noreply\r\nmd a q\r\nmn\r\n")),
    ("mixed_errors", one(b"mg " + K251 + b" v\r\nget a\r\nms a x\r\n1\r\nmg a v\r\nfoo\r\n"
                         b"ms a 1 Tabc\r\n1\r\nmn\r\n")),
    ("meta_pipeline_100", one(b"".join(b"ms k%d 3 T0 q\r\nv%02d\r\n" % (i, i % 100) for i in range(100)) +
                              b"".join(b"mg k%d v k q O%d\r\n" % (i, i) for i in range(0, 120, 3)) +
                              b"mn\r\n")),
    ("meta_after_quit", one(b"mg a v\r\nquit\r\nmg a v\r\n")),
    ("meta_uppercase", one(b"MG foo v\r\nMN\r\nmn\r\n")),
    ("meta_unknown_m", one(b"mx foo\r\nmz\r\nm\r\nmn\r\n")),
]


def _version_tuple(v):
    return tuple(int(x) for x in re.findall(rb"\d+", v)[:3])


def server_version(port):
    out, _ = exchange(port, [b"version\r\n"])
    m = re.match(rb"VERSION (\S+)\r\n", out)
    return m.group(1) if m else b"0"


class _MetaDiffBase:
    """The comparison; subclasses start `cls.ref` (a memcached) and set `cls.target_port`
    (and optionally `cls.target_alive()`)."""

    @classmethod
    def target_alive(cls):
        return True

    @classmethod
    def target_log(cls):
        return ""

    def flush(self, port):
        out, _ = exchange(port, [b"flush_all\r\n"])
        self.assertTrue(out.startswith(b"OK\r\n"), "flush on port %d: %r" % (port, out))

    def compare(self, name, chunks):
        self.flush(self.ref.port)
        self.flush(self.target_port)
        want, want_closed = exchange(self.ref.port, chunks)
        want = normalise(want)
        got, got_closed = exchange(self.target_port, chunks)
        got = normalise(got)
        self.assertEqual(got[:3000], want[:3000], "%s: reply differs" % name)
        self.assertEqual(len(got), len(want), "%s: reply length differs" % name)
        self.assertEqual(got, want, "%s: reply differs" % name)
        self.assertEqual(got_closed, want_closed,
                         "%s: memcached %s the connection, the target %s" %
                         (name, "closed" if want_closed else "kept",
                          "closed" if got_closed else "kept"))

    def test_cases(self):
        self.assertGreaterEqual(len(CASES), 100)
        ref_version = _version_tuple(server_version(self.ref.port))
        t0 = time.time()
        for case in CASES:
            name, chunks = case[0], case[1]
            with self.subTest(case=name):
                if len(case) > 2 and ref_version < _version_tuple(case[2].encode()):
                    self.skipTest("needs memcached >= %s (reference is %s): %s" %
                                  (case[2], ".".join(map(str, ref_version)), case[3]))
                if not self.target_alive():
                    self.fail("target died before %s:\n%s" % (name, self.target_log()))
                self.compare(name, chunks)
        self.assertTrue(self.target_alive(), "target died:\n" + self.target_log())
        self.assertLess(time.time() - t0, 60, "the table must run in under a minute")

    def test_quiet_opaque_matching_with_client(self):
        """The same quiet pipeline through metaclient: replies matched to requests."""
        import metaclient
        results = []
        for port in (self.ref.port, self.target_port):
            self.flush(port)
            with metaclient.MetaClient(port) as c:
                p = c.pipeline()
                p.ms("a", b"1", "q").ms("b", b"2", "q", "MR").mg("a", "q", "v")
                p.mg("zz", "q", "v").md("zz", "q").raw(b"get a\r\n").ma("a", "v")
                p.mg("a", "q", "Tabc").mn()
                res = p.execute()
                results.append([None if r is None else
                                [x.line for x in r] if isinstance(r, list) else normalise(r.line + b"\r\n")
                                for r in res])
        want = [None, b"NS O1\r\n", b"VA 1 O2\r\n", None, b"NF O4\r\n",
                [b"END"], b"VA 1 O6\r\n", b"CLIENT_ERROR bad token in command line format\r\n", b"MN\r\n"]
        self.assertEqual(results[0], want)
        self.assertEqual(results[1], results[0])


class MetaDiffGatewayTest(_MetaDiffBase, unittest.TestCase):
    """memcached vs a single-site geogate (no wan:) fronting one memcached node."""

    @classmethod
    def setUpClass(cls):
        cls.site = harness.Site(nodes=1, extra=POOL_EXTRA)
        try:
            cls.ref = harness.start_memcached()
        except Exception:
            cls.site.stop()
            raise
        cls.target_port = cls.site.port

    @classmethod
    def tearDownClass(cls):
        cls.ref.stop()
        cls.site.stop()

    @classmethod
    def target_alive(cls):
        return cls.site.gateway.alive()

    @classmethod
    def target_log(cls):
        return cls.site.gateway.log()[-6000:]


class MetaDiffMemcachedTest(_MetaDiffBase, unittest.TestCase):
    """memcached vs a second fresh memcached: checks that the table is deterministic."""

    @classmethod
    def setUpClass(cls):
        cls.ref = harness.start_memcached()
        try:
            cls.other = harness.start_memcached()
        except Exception:
            cls.ref.stop()
            raise
        cls.target_port = cls.other.port

    @classmethod
    def tearDownClass(cls):
        cls.ref.stop()
        cls.other.stop()

    @classmethod
    def target_alive(cls):
        return cls.other.alive()


@unittest.skipUnless(os.environ.get("GEOGATE_META_TARGET"),
                     "set GEOGATE_META_TARGET=127.0.0.1:PORT to run the table against it")
class MetaDiffExternalTest(_MetaDiffBase, unittest.TestCase):
    """memcached vs whatever GEOGATE_META_TARGET points at (fronting exactly one node)."""

    @classmethod
    def setUpClass(cls):
        cls.ref = harness.start_memcached()
        cls.target_port = int(os.environ["GEOGATE_META_TARGET"].rsplit(":", 1)[-1])

    @classmethod
    def tearDownClass(cls):
        cls.ref.stop()


def dump(port=None):
    """python3 test_meta_diff.py --dump [PORT]: print each case's normalised reply from a
    memcached (a fresh one if no port), to read what the reference does."""
    proc = None
    if port is None:
        proc = harness.start_memcached()
        port = proc.port
    try:
        for case in CASES:
            exchange(port, [b"flush_all\r\n"])
            out, closed = exchange(port, case[1])
            print("== %s%s\n%s" % (case[0], " (closed)" if closed else "",
                                   normalise(out)[:600].decode("latin-1")))
    finally:
        if proc:
            proc.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--dump":
        dump(int(sys.argv[2]) if len(sys.argv) > 2 else None)
    else:
        unittest.main()
