/*
 * test_proto_mc — unit tests for gateway/proto_mc: request line framing, the request
 * parser against every malformed input we could think of, and backend reply
 * classification.  Every expectation for a request was first checked against a real
 * memcached 1.6.18 (`memcached -U 0`, raw sockets): the comment on each table says
 * what memcached answered.  Pure logic, single thread, no I/O.
 *
 * Where geogate deliberately differs from memcached (meta and admin commands it cannot
 * honour through a proxy) the tests pin geogate's documented answer and say so.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/protocol/proto_mc.h"

/* memcached's reply lines, spelled out here (not taken from proto_mc.c) so a typo
 * there shows up as a failure here. */
#define E_ERROR "ERROR"
#define E_FORMAT "CLIENT_ERROR bad command line format"
#define E_EXPTIME "CLIENT_ERROR invalid exptime argument"
#define E_DELTA "CLIENT_ERROR invalid numeric delta argument"
#define E_DELETE "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"
#define E_TOO_LARGE "SERVER_ERROR object too large for cache"
#define E_SHUTDOWN "ERROR: shutdown not enabled"

#define K10 "kkkkkkkkkk"
#define K50 K10 K10 K10 K10 K10
#define K250 K50 K50 K50 K50 K50
#define K251 K250 "k"

#define MAX_VALUE 1048576u /* memcached's default -I 1m, geogate's max_value_bytes */

/* One request line and what memcached does with it. */
struct parse_case {
    const char *line;
    size_t len;
    enum mc_action action;
    const char *error; /* NULL unless action is ERROR or ERROR_SWALLOW */
    bool noreply;
    uint32_t swallow; /* ERROR_SWALLOW only */
};

#define OK_(s) {s, sizeof(s) - 1, MC_ACT_FORWARD, NULL, false, 0}
#define OKNR(s) {s, sizeof(s) - 1, MC_ACT_FORWARD, NULL, true, 0}
#define LOCAL(s) {s, sizeof(s) - 1, MC_ACT_LOCAL, NULL, false, 0}
#define LOCALNR(s) {s, sizeof(s) - 1, MC_ACT_LOCAL, NULL, true, 0}
#define ERR(s, e) {s, sizeof(s) - 1, MC_ACT_ERROR, e, false, 0}
#define ERRNR(s, e) {s, sizeof(s) - 1, MC_ACT_ERROR, e, true, 0}
#define SWALLOW(s, e, n) {s, sizeof(s) - 1, MC_ACT_ERROR_SWALLOW, e, false, n}
#define SWALLOWNR(s, e, n) {s, sizeof(s) - 1, MC_ACT_ERROR_SWALLOW, e, true, n}
#define CLOSE(s) {s, sizeof(s) - 1, MC_ACT_CLOSE, NULL, false, 0}

static struct mc_parser parser;

/* Parse a copy of line (len + 1 bytes, as a gateway would hand it over). */
static int parse(const char *line, size_t len, struct mc_request *req, char **copy)
{
    *copy = malloc(len + 1);
    assert_non_null(*copy);
    memcpy(*copy, line, len);
    (*copy)[len] = 'X'; /* the byte after the line is writable, not necessarily a NUL */
    return mc_parse(&parser, *copy, len, MAX_VALUE, req);
}

static void printable(const char *s, size_t len, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 5 < outlen; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f) {
            out[o++] = (char)c;
        } else {
            o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
        }
    }
    out[o] = '\0';
}

static const char *const action_names[] = {"FORWARD", "LOCAL", "ERROR", "ERROR_SWALLOW", "CLOSE"};

/* Run a table; report every mismatching row before failing, so one run lists them all. */
static void run_cases(const struct parse_case *cases, size_t n)
{
    int bad = 0;

    for (size_t i = 0; i < n; i++) {
        const struct parse_case *c = &cases[i];
        struct mc_request req;
        char *copy;
        char shown[200];
        bool ok;

        assert_int_equal(parse(c->line, c->len, &req, &copy), 0);
        ok = req.action == c->action && req.noreply == c->noreply;
        if (c->error != NULL) {
            ok = ok && req.error != NULL && strcmp(req.error, c->error) == 0;
        }
        if (c->action == MC_ACT_ERROR_SWALLOW) {
            ok = ok && req.swallow == c->swallow;
        }
        if (!ok) {
            printable(c->line, c->len, shown, sizeof(shown));
            print_error("  \"%.120s\": want %s \"%s\" noreply=%d swallow=%u, got %s \"%s\" "
                        "noreply=%d swallow=%u\n",
                        shown, action_names[c->action], c->error ? c->error : "",
                        c->noreply, c->swallow,
                        req.action < MC_ACT_MAX ? action_names[req.action] : "?",
                        req.error ? req.error : "", req.noreply, req.swallow);
            bad++;
        }
        free(copy);
    }
    assert_int_equal(bad, 0);
}

#define RUN(table) run_cases(table, sizeof(table) / sizeof(table[0]))

/* ------------------------------------------------------------------ framing */

static enum mc_frame frame(const char *buf, size_t len, size_t max_line, size_t *line_len,
                           size_t *consumed)
{
    *line_len = 9999;
    *consumed = 9999;
    return mc_frame_line(buf, len, max_line, line_len, consumed);
}

/* memcached strips "\r" before "\n" only when the line has more than one byte. */
static void test_frame_lines(void **state)
{
    size_t ll, cons;
    (void)state;

    assert_int_equal(frame("get a\r\n", 7, 1 << 20, &ll, &cons), MC_FRAME_LINE);
    assert_int_equal(ll, 5);
    assert_int_equal(cons, 7);
    assert_int_equal(frame("get a\n", 6, 1 << 20, &ll, &cons), MC_FRAME_LINE);
    assert_int_equal(ll, 5);
    assert_int_equal(cons, 6);
    /* bare "\r\n": the '\r' stays, so memcached sees the command "\r" -> ERROR */
    assert_int_equal(frame("\r\n", 2, 1 << 20, &ll, &cons), MC_FRAME_LINE);
    assert_int_equal(ll, 1);
    assert_int_equal(cons, 2);
    assert_int_equal(frame("\n", 1, 1 << 20, &ll, &cons), MC_FRAME_LINE);
    assert_int_equal(ll, 0);
    assert_int_equal(cons, 1);
    /* "\r\r\n": one '\r' stripped */
    assert_int_equal(frame("\r\r\n", 3, 1 << 20, &ll, &cons), MC_FRAME_LINE);
    assert_int_equal(ll, 1);
    assert_int_equal(cons, 3);
    assert_int_equal(frame("a\r\n", 3, 1 << 20, &ll, &cons), MC_FRAME_LINE);
    assert_int_equal(ll, 1);
    /* only the first line is framed */
    assert_int_equal(frame("a\r\nversion\r\n", 12, 1 << 20, &ll, &cons), MC_FRAME_LINE);
    assert_int_equal(ll, 1);
    assert_int_equal(cons, 3);
    /* '\r' in the middle is part of the line */
    assert_int_equal(frame("set a 0 0 1\rx\r\n", 15, 1 << 20, &ll, &cons), MC_FRAME_LINE);
    assert_int_equal(ll, 13);
    assert_int_equal(cons, 15);
    /* a NUL does not end framing, only '\n' does */
    assert_int_equal(frame("get a\0b\r\n", 9, 1 << 20, &ll, &cons), MC_FRAME_LINE);
    assert_int_equal(ll, 7);
    assert_int_equal(cons, 9);
}

static void test_frame_incomplete(void **state)
{
    size_t ll, cons;
    (void)state;

    assert_int_equal(frame("", 0, 1 << 20, &ll, &cons), MC_FRAME_MORE);
    assert_int_equal(frame("get a", 5, 1 << 20, &ll, &cons), MC_FRAME_MORE);
    assert_int_equal(frame("get a\r", 6, 1 << 20, &ll, &cons), MC_FRAME_MORE);
    assert_int_equal(frame("set a 0 0 1", 11, 1 << 20, &ll, &cons), MC_FRAME_MORE);
}

/*
 * memcached 1.6.18: more than 2048 bytes without '\n' close the connection unless,
 * after at most 100 leading spaces, they start with "get " or "gets ".  Checked:
 * 2048 x 'x' then "\r\n" -> ERROR; 2049 -> closed; "gat 0 k..." 3199 -> closed;
 * 101 spaces + "get ..." -> closed, 100 spaces -> END.
 */
static void test_frame_long_lines(void **state)
{
    size_t ll, cons;
    size_t n = 5000;
    char *buf = malloc(n + 2);
    (void)state;
    assert_non_null(buf);

    memset(buf, 'x', n);
    assert_int_equal(frame(buf, 2048, 1 << 20, &ll, &cons), MC_FRAME_MORE);
    assert_int_equal(frame(buf, 2049, 1 << 20, &ll, &cons), MC_FRAME_CLOSE);
    assert_int_equal(frame(buf, 3000, 1 << 20, &ll, &cons), MC_FRAME_CLOSE);
    /* with its '\n' in the same buffer a 3000-byte line is just a line (memcached: ERROR) */
    buf[3000] = '\r';
    buf[3001] = '\n';
    assert_int_equal(frame(buf, 3002, 1 << 20, &ll, &cons), MC_FRAME_LINE);
    assert_int_equal(ll, 3000);
    assert_int_equal(cons, 3002);

    memcpy(buf, "get ", 4);
    assert_int_equal(frame(buf, 3000, 1 << 20, &ll, &cons), MC_FRAME_MORE);
    assert_int_equal(frame(buf, 3000, 2500, &ll, &cons), MC_FRAME_TOO_LONG);
    assert_int_equal(frame(buf, 2400, 2500, &ll, &cons), MC_FRAME_MORE);
    memcpy(buf, "gets ", 5);
    assert_int_equal(frame(buf, 3000, 1 << 20, &ll, &cons), MC_FRAME_MORE);
    memcpy(buf, "gat 0 ", 6);
    assert_int_equal(frame(buf, 3000, 1 << 20, &ll, &cons), MC_FRAME_CLOSE);
    memcpy(buf, "gats 0 ", 7);
    assert_int_equal(frame(buf, 3000, 1 << 20, &ll, &cons), MC_FRAME_CLOSE);
    memcpy(buf, "GET ", 4);
    assert_int_equal(frame(buf, 3000, 1 << 20, &ll, &cons), MC_FRAME_CLOSE);
    memcpy(buf, "get\t", 4);
    assert_int_equal(frame(buf, 3000, 1 << 20, &ll, &cons), MC_FRAME_CLOSE);
    memcpy(buf, "getx", 4);
    assert_int_equal(frame(buf, 3000, 1 << 20, &ll, &cons), MC_FRAME_CLOSE);
    memcpy(buf, "bget ", 5); /* bget is a get, but not for this check */
    assert_int_equal(frame(buf, 3000, 1 << 20, &ll, &cons), MC_FRAME_CLOSE);

    memset(buf, ' ', 100);
    memcpy(buf + 100, "get ", 4);
    memset(buf + 104, 'k', n - 104);
    assert_int_equal(frame(buf, 3000, 1 << 20, &ll, &cons), MC_FRAME_MORE);
    memset(buf, ' ', 101);
    memcpy(buf + 101, "get ", 4);
    assert_int_equal(frame(buf, 3000, 1 << 20, &ll, &cons), MC_FRAME_CLOSE);
    /* all spaces */
    memset(buf, ' ', n);
    assert_int_equal(frame(buf, 3000, 1 << 20, &ll, &cons), MC_FRAME_CLOSE);
    free(buf);
}

/* The same decisions when the caller shows only the head of a long buffer. */
static void test_frame_no_eol(void **state)
{
    char head[128];
    (void)state;

    memset(head, 'x', sizeof(head));
    assert_int_equal(mc_frame_no_eol(head, 128, 2048, 1 << 20), MC_FRAME_MORE);
    assert_int_equal(mc_frame_no_eol(head, 128, 2049, 1 << 20), MC_FRAME_CLOSE);
    assert_int_equal(mc_frame_no_eol(head, 0, 100, 1 << 20), MC_FRAME_MORE);
    memcpy(head, "get ", 4);
    assert_int_equal(mc_frame_no_eol(head, 128, 100000, 1 << 20), MC_FRAME_MORE);
    assert_int_equal(mc_frame_no_eol(head, 128, 100000, 50000), MC_FRAME_TOO_LONG);
    memcpy(head, "gets ", 5);
    assert_int_equal(mc_frame_no_eol(head, 128, 100000, 1 << 20), MC_FRAME_MORE);
    memcpy(head, "gat 0 ", 6);
    assert_int_equal(mc_frame_no_eol(head, 128, 100000, 1 << 20), MC_FRAME_CLOSE);
    memset(head, ' ', sizeof(head));
    memcpy(head + 100, "get ", 4);
    assert_int_equal(mc_frame_no_eol(head, 128, 3000, 1 << 20), MC_FRAME_MORE);
    memset(head, ' ', sizeof(head));
    memcpy(head + 101, "get ", 4);
    assert_int_equal(mc_frame_no_eol(head, 128, 3000, 1 << 20), MC_FRAME_CLOSE);
    memset(head, ' ', sizeof(head));
    assert_int_equal(mc_frame_no_eol(head, 128, 3000, 1 << 20), MC_FRAME_CLOSE);
}

/* ------------------------------------------------------------------ empty, short, unknown */

/* memcached: every one of these answers "ERROR" and goes on with the next line. */
static const struct parse_case empty_cases[] = {
    ERR("", E_ERROR),
    ERR("\r", E_ERROR),          /* what a bare "\r\n" frames to */
    ERR(" ", E_ERROR),
    ERR("     ", E_ERROR),
    ERR("a", E_ERROR),           /* shorter than any command */
    ERR("ab", E_ERROR),
    ERR("\0", E_ERROR),
    ERR("\0get a", E_ERROR),     /* memcached measures the line with strlen() */
    ERR("\t", E_ERROR),
    ERR("GET a", E_ERROR),       /* commands are case-sensitive */
    /* HTTP request lines: memcached 1.6.18 hangs up on an unknown command whose last token
     * starts with "HTTP/", unless its first letter is one its commands start with. */
    CLOSE("GET / HTTP/1.0"),
    CLOSE("PUT /a/b HTTP/1.1"),
    CLOSE("DELETE HTTP/1.1"),
    CLOSE("POST /x HTTP/1.1"),
    CLOSE("HTTP/1.0"),
    CLOSE("FOO HTTP/"),
    CLOSE("GET  /  HTTP/1.0"),
    CLOSE("zz HTTP/1.1"),
    ERR("x HTTP/1.0", E_ERROR),  /* a one-letter command is an error before anything */
    ERR("GET / http/1.0", E_ERROR),
    ERR("GET /", E_ERROR),
    ERR("GET / HTTP/1.0 junk", E_ERROR),
    ERR("abc d HTTP/1.1", E_ERROR),
    ERR("dump / HTTP/1.0", E_ERROR),
    ERR("Set a 0 0 1", E_ERROR),
    ERR("getx a", E_ERROR),
    ERR("get\ta", E_ERROR),      /* only ' ' separates tokens */
    ERR("version\r", E_ERROR),   /* "version\r\r\n" */
    ERR("stats\tx", E_ERROR),
    ERR("misbehave", E_ERROR),
    ERR("foo bar baz", E_ERROR),
    ERR("sets a 0 0 1", E_ERROR),
    ERR("adds a 0 0 1", E_ERROR),
    ERR("casx a 0 0 1 1", E_ERROR),
    ERR("incrx a 1", E_ERROR),
    ERR("deletes a", E_ERROR),
    ERR("touchy a 1", E_ERROR),
    ERR("replaces a 0 0 1", E_ERROR),
    ERR("flush", E_ERROR),
    ERR("versions", E_ERROR),
    ERR("quitx", E_ERROR),
    ERR("gett a", E_ERROR),
    ERR("xx", E_ERROR),
    ERR("mx", E_ERROR),          /* not a meta command: memcached says ERROR */
    ERR("mz a", E_ERROR),
    ERR("\xff\xfe", E_ERROR),
};

static void test_parse_empty_and_unknown(void **state)
{
    (void)state;
    RUN(empty_cases);
}

/* ------------------------------------------------------------------ retrieval */

/* memcached: get/gets/gat/gats need a key token (gat/gats an exptime first). */
static const struct parse_case retrieval_cases[] = {
    ERR("get", E_ERROR),
    ERR("get ", E_ERROR),
    ERR("get    ", E_ERROR),
    ERR("gets", E_ERROR),
    ERR("gat", E_ERROR),
    ERR("gats", E_ERROR),
    ERR("bget", E_ERROR),
    OK_("get a"),
    OK_("gets a"),
    OK_("bget a"),
    OK_("   get a"),
    OK_("get a "),
    OK_("get  a   b  "),
    OK_("get " K250),
    OK_("get  " K250),                /* extra spaces are not part of the key */
    OK_("get a  " K250 "   " K250),
    OK_("gat 10  " K250),
    ERR("get " K251, E_FORMAT),
    ERR("get a " K251 " b", E_FORMAT), /* memcached drops a's value too */
    ERR("gets " K251, E_FORMAT),
    OK_("get a noreply"),             /* a key called noreply, not a flag */
    OK_("gat 10"),                    /* memcached: END */
    OK_("gat 10 "),
    OK_("gats 1"),
    OK_("gat 10 a b"),
    OK_("gats -1 a"),
    OK_("gat 4294967297 a"),          /* truncated like memcached's */
    ERR("gat abc k", E_EXPTIME),
    ERR("gat abc", E_EXPTIME),
    ERR("gats 1x a", E_EXPTIME),
    ERR("gat 99999999999999999999 a", E_EXPTIME),
    ERR("gat 10 " K251, E_FORMAT),
    ERR("gats 10 a " K251, E_FORMAT),
};

static void test_parse_retrieval(void **state)
{
    (void)state;
    RUN(retrieval_cases);
}

static void test_parse_get_keys(void **state)
{
    struct mc_request req;
    char *copy;
    (void)state;

    assert_int_equal(parse("get  a   bb  a ", 15, &req, &copy), 0);
    assert_int_equal(req.action, MC_ACT_FORWARD);
    assert_int_equal(req.cmd, MC_CMD_GET);
    assert_int_equal(req.nkeys, 3);
    assert_int_equal(req.keys[0].len, 1);
    assert_memory_equal(req.keys[0].p, "a", 1);
    assert_int_equal(req.keys[1].len, 2);
    assert_memory_equal(req.keys[1].p, "bb", 2);
    assert_int_equal(req.keys[2].len, 1);
    assert_memory_equal(req.keys[2].p, "a", 1);
    free(copy);

    assert_int_equal(parse("gats 30 x\ty z", 13, &req, &copy), 0);
    assert_int_equal(req.cmd, MC_CMD_GATS);
    assert_int_equal(req.exptime, 30);
    assert_int_equal(req.nkeys, 2);
    assert_int_equal(req.keys[0].len, 3); /* tabs belong to the key */
    assert_memory_equal(req.keys[0].p, "x\ty", 3);
    free(copy);

    assert_int_equal(parse("gat 10", 6, &req, &copy), 0);
    assert_int_equal(req.cmd, MC_CMD_GAT);
    assert_int_equal(req.nkeys, 0);
    free(copy);

    assert_int_equal(parse("gets a", 6, &req, &copy), 0);
    assert_int_equal(req.cmd, MC_CMD_GETS);
    free(copy);
    assert_int_equal(parse("bget a", 6, &req, &copy), 0);
    assert_int_equal(req.cmd, MC_CMD_GET);
    assert_int_equal(req.nkeys, 1);
    free(copy);
}

/*
 * memcached stops the line at its first NUL (strlen): "get a\0b\r\n" with both a and b
 * stored answers only a's VALUE.  The same for "get a\0 b".
 */
static void test_parse_get_stops_at_nul(void **state)
{
    struct mc_request req;
    char *copy;
    (void)state;

    assert_int_equal(parse("get a\0b", 7, &req, &copy), 0);
    assert_int_equal(req.action, MC_ACT_FORWARD);
    assert_int_equal(req.nkeys, 1);
    assert_memory_equal(req.keys[0].p, "a", 1);
    free(copy);

    assert_int_equal(parse("get a\0 b c", 10, &req, &copy), 0);
    assert_int_equal(req.action, MC_ACT_FORWARD);
    assert_int_equal(req.nkeys, 1);
    free(copy);

    /* a too-long key after the NUL is not seen either */
    assert_int_equal(parse("get a\0 " K251, 7 + 251, &req, &copy), 0);
    assert_int_equal(req.action, MC_ACT_FORWARD);
    assert_int_equal(req.nkeys, 1);
    free(copy);
}

/* Around the token array's size, where the keys stop being taken from it and the line
 * is walked again instead: every key is there, in order, for get and gat. */
static void test_parse_keys_at_token_limit(void **state)
{
    char line[1024];
    struct mc_request req;
    char *copy;
    (void)state;

    for (int gat = 0; gat < 2; gat++) {
        for (int n = 18; n <= 28; n++) {
            size_t len = (size_t)snprintf(line, sizeof(line), gat ? "gat 5" : "get");
            for (int i = 0; i < n; i++) {
                len += (size_t)snprintf(line + len, sizeof(line) - len, "  k%d", i);
            }
            assert_int_equal(parse(line, len, &req, &copy), 0);
            assert_int_equal(req.action, MC_ACT_FORWARD);
            assert_int_equal(req.nkeys, n);
            for (int i = 0; i < n; i++) {
                char want[16];
                int w = snprintf(want, sizeof(want), "k%d", i);
                assert_int_equal(req.keys[i].len, w);
                assert_memory_equal(req.keys[i].p, want, (size_t)w);
            }
            free(copy);
        }
    }
}

/* Far more keys than memcached's 24 tokens: memcached re-tokenizes; every key counts. */
static void test_parse_many_keys(void **state)
{
    char line[20000];
    size_t len;
    struct mc_request req;
    char *copy;
    (void)state;

    len = (size_t)snprintf(line, sizeof(line), "get");
    for (int i = 0; i < 1000; i++) {
        len += (size_t)snprintf(line + len, sizeof(line) - len, " key%d", i % 700);
    }
    assert_int_equal(parse(line, len, &req, &copy), 0);
    assert_int_equal(req.action, MC_ACT_FORWARD);
    assert_int_equal(req.nkeys, 1000);
    for (uint32_t i = 0; i < req.nkeys; i++) {
        char want[16];
        int n = snprintf(want, sizeof(want), "key%u", i % 700);
        assert_int_equal(req.keys[i].len, n);
        assert_memory_equal(req.keys[i].p, want, (size_t)n);
    }
    free(copy);

    /* one long key at position 600 fails the whole line */
    len = (size_t)snprintf(line, sizeof(line), "gets");
    for (int i = 0; i < 1000; i++) {
        len += (size_t)snprintf(line + len, sizeof(line) - len, " %s", i == 600 ? K251 : "k");
    }
    assert_int_equal(parse(line, len, &req, &copy), 0);
    assert_int_equal(req.action, MC_ACT_ERROR);
    assert_string_equal(req.error, E_FORMAT);
    free(copy);
}

/* ------------------------------------------------------------------ storage */

/*
 * Checked against memcached 1.6.18.  Numbers are judged by strtoul/strtol/strtoull on
 * the token: trailing whitespace other than ' ' is allowed, "-" is refused only when the
 * unsigned value wraps, 32-bit fields are truncated from 64-bit parses.
 */
static const struct parse_case storage_cases[] = {
    OK_("set a 0 0 1"),
    OK_("set a 0 0 0"),
    OK_("add a 0 0 1"),
    OK_("replace a 0 0 1"),
    OK_("append a 0 0 1"),
    OK_("prepend a 0 0 1"),
    OK_("set  a  0  0  1 "),
    OK_("set a 0 0 1 2"),            /* 6th token is not "noreply": ignored */
    OKNR("set a 0 0 1 noreply"),
    OKNR("add a 0 0 1 noreply"),
    OKNR("replace a 0 0 1 noreply"),
    OKNR("append a 0 0 1 noreply"),
    OKNR("prepend a 0 0 1 noreply"),
    OK_("set a 0 0 1 NOREPLY"),
    OK_("set a 0 0 1 noreply2"),
    OK_("set " K250 " 0 0 5"),
    OK_("set a\tb 0 0 1"),
    OK_("set a 4294967296 0 1"),      /* flags wrap to 0 */
    OK_("set a 18446744073709551615 0 1"), /* flags 4294967295 */
    OK_("set a -0 0 1"),
    OK_("set a 0 0 4294967297"),      /* vlen truncated to 1: memcached STORED */
    OK_("set a 0 0 4294967296"),      /* vlen 0 */
    OK_("set a 0 0 -4294967295"),     /* vlen 1 */
    OK_("set a 0 4294967296 1"),
    OK_("set a 0 -1 1"),
    OK_("set a 0 0 1\tj"),            /* strtol stops at the tab, which isspace() */
    OK_("set a 0 0 1\rx"),
    OK_("set a 0 0 +1"),
    OK_("set a +0 0 1"),
    OK_("set a 0 0 1048576"),         /* the gateway forwards; memcached itself refuses */
    ERR("set", E_ERROR),
    ERR("set a", E_ERROR),
    ERR("set a 0", E_ERROR),
    ERR("set a 0 0", E_ERROR),
    ERR("set a 0 0 1 noreply extra", E_ERROR),
    ERR("set a 0 0 1 x y z", E_ERROR),
    ERR("add a 0 0", E_ERROR),
    ERR("replace a 0 0", E_ERROR),
    ERR("append a 0 0", E_ERROR),
    ERR("prepend a 0 0", E_ERROR),
    ERR("replace", E_ERROR),
    ERR("set a 0 0 1 x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x", E_ERROR),
    ERR("set " K251 " 0 0 5", E_FORMAT),
    ERRNR("set " K251 " 0 0 5 noreply", E_FORMAT),
    ERR("set " K251 " 0 0 2000000", E_FORMAT), /* key checked first: nothing swallowed */
    ERR("set " K251 " x x x", E_FORMAT),
    ERR("set a -1 0 1", E_FORMAT),
    ERR("set a 18446744073709551616 0 1", E_FORMAT),
    ERR("set a 18446744073709551615\t- 0 1", E_FORMAT), /* any '-' in the token */
    ERR("set a abc 0 1", E_FORMAT),
    ERR("set a 0 abc 1", E_FORMAT),
    ERR("set a 0 0 abc", E_FORMAT),
    ERR("set a 0 0 1x", E_FORMAT),
    ERR("set a 0 0 1.0", E_FORMAT),
    ERR("set a 0 0 0x10", E_FORMAT),
    ERR("set a 0 0 -1", E_FORMAT),
    ERR("set a 0 0 -2147483648", E_FORMAT),
    ERR("set a 0 0 2147483648", E_FORMAT),   /* wraps negative */
    ERR("set a 0 0 2147483647", E_FORMAT),   /* > INT_MAX - 2 */
    ERR("set a 0 0 2147483646", E_FORMAT),
    ERR("set a 0 0 99999999999999999999", E_FORMAT), /* ERANGE */
    ERR("set a 0 99999999999999999999 1", E_FORMAT),
    ERRNR("set a 0 0 abc noreply", E_FORMAT),
    ERRNR("set a 0 0 -1 noreply", E_FORMAT),
    ERR("add a x 0 1", E_FORMAT),
    ERR("replace a 0 x 1", E_FORMAT),
    ERR("append a 0 0 x", E_FORMAT),
    ERR("prepend a 0 0 -5", E_FORMAT),
    /* too large: memcached answers after swallowing vlen + 2 bytes */
    SWALLOW("set a 0 0 1048577", E_TOO_LARGE, 1048579),
    SWALLOW("add a 0 0 2000000", E_TOO_LARGE, 2000002),
    SWALLOW("set a 0 0 2147483645", E_TOO_LARGE, 2147483647u),
    SWALLOWNR("set a 0 0 1048577 noreply", E_TOO_LARGE, 1048579),
    SWALLOWNR("append a 0 0 1048577 noreply", E_TOO_LARGE, 1048579),
};

static void test_parse_storage(void **state)
{
    (void)state;
    RUN(storage_cases);
}

static const struct parse_case cas_cases[] = {
    OK_("cas a 0 0 1 1"),
    OK_("cas a 0 0 1 18446744073709551615"),
    OK_("cas a 0 0 1 1 2"),
    OKNR("cas a 0 0 1 1 noreply"),
    ERR("cas", E_ERROR),
    ERR("cas a 0 0 1", E_ERROR),           /* memcached: ERROR, then the data line: ERROR */
    ERRNR("cas a 0 0 1 noreply", E_FORMAT), /* "noreply" is the cas token: silenced */
    ERR("cas a 0 0 1 1 2 3", E_ERROR),
    ERR("cas a 0 0 1 abc", E_FORMAT),
    ERR("cas a 0 0 1 -1", E_FORMAT),
    ERR("cas a 0 0 1 18446744073709551616", E_FORMAT),
    ERR("cas a 0 0 -1 1", E_FORMAT),
    ERR("cas a 0 0 x 1", E_FORMAT),
    ERR("cas " K251 " 0 0 1 1", E_FORMAT),
    ERRNR("cas a 0 0 1 abc noreply", E_FORMAT),
    SWALLOW("cas a 0 0 1048577 1", E_TOO_LARGE, 1048579),
    ERR("cas a 0 0 1048577 x", E_FORMAT), /* the cas token is checked before the size */
};

static void test_parse_cas(void **state)
{
    (void)state;
    RUN(cas_cases);
}

static void test_parse_storage_fields(void **state)
{
    struct mc_request req;
    char *copy;
    (void)state;

    assert_int_equal(parse("set foo 42 -7 5", 15, &req, &copy), 0);
    assert_int_equal(req.action, MC_ACT_FORWARD);
    assert_int_equal(req.cmd, MC_CMD_SET);
    assert_true(mc_cmd_is_storage(req.cmd));
    assert_int_equal(req.nkey, 3);
    assert_memory_equal(req.key, "foo", 3);
    assert_int_equal(req.flags, 42);
    assert_int_equal(req.exptime, -7);
    assert_int_equal(req.vlen, 5);
    assert_false(req.noreply);
    free(copy);

    assert_int_equal(parse("set a 4294967296 0 1", 20, &req, &copy), 0);
    assert_int_equal(req.flags, 0);
    free(copy);
    assert_int_equal(parse("set a 18446744073709551615 0 1", 30, &req, &copy), 0);
    assert_int_equal(req.flags, 4294967295u);
    free(copy);
    assert_int_equal(parse("set a 0 0 4294967297", 20, &req, &copy), 0);
    assert_int_equal(req.vlen, 1);
    free(copy);
    assert_int_equal(parse("set a 0 0 -4294967295", 21, &req, &copy), 0);
    assert_int_equal(req.vlen, 1);
    free(copy);
    assert_int_equal(parse("set a 0 0 1\tj", 13, &req, &copy), 0);
    assert_int_equal(req.vlen, 1);
    free(copy);

    assert_int_equal(parse("cas k 1 2 3 18446744073709551615 noreply", 40, &req, &copy), 0);
    assert_int_equal(req.cmd, MC_CMD_CAS);
    assert_int_equal(req.flags, 1);
    assert_int_equal(req.exptime, 2);
    assert_int_equal(req.vlen, 3);
    assert_true(req.cas_unique == UINT64_MAX);
    assert_true(req.noreply);
    free(copy);

    const char *names[] = {"add", "replace", "append", "prepend"};
    enum mc_cmd cmds[] = {MC_CMD_ADD, MC_CMD_REPLACE, MC_CMD_APPEND, MC_CMD_PREPEND};
    for (int i = 0; i < 4; i++) {
        char line[64];
        int n = snprintf(line, sizeof(line), "%s k 0 0 2", names[i]);
        assert_int_equal(parse(line, (size_t)n, &req, &copy), 0);
        assert_int_equal(req.cmd, cmds[i]);
        assert_int_equal(req.vlen, 2);
        free(copy);
    }
}

/* ------------------------------------------------------------------ arithmetic */

static const struct parse_case arith_cases[] = {
    OK_("incr n 5"),
    OK_("decr n 5"),
    OK_("incr n 0"),
    OK_("incr n 18446744073709551615"),
    OK_("incr n -9223372036854775809"), /* strtoull wraps it positive: memcached adds 2^63-1 */
    OK_("incr n 1 2"),
    OK_("incr n 5\r"),
    OK_("incr " K250 " 1"),
    OKNR("incr n 1 noreply"),
    OKNR("decr n 1 noreply"),
    ERR("incr", E_ERROR),
    ERR("incr n", E_ERROR),
    ERR("decr a", E_ERROR),
    ERR("incr n 1 2 3", E_ERROR),
    ERR("incr n 1 noreply x", E_ERROR),
    ERR("incr n abc", E_DELTA),
    ERR("incr n -1", E_DELTA),
    ERR("decr n -1", E_DELTA),
    ERR("incr n 18446744073709551616", E_DELTA),
    ERR("incr n 18446744073709551615\t-", E_DELTA),
    ERR("incr n 1x", E_DELTA),
    ERR("incr n 1.5", E_DELTA),
    ERR("incr n ", E_ERROR),
    ERRNR("incr n abc noreply", E_DELTA),
    ERR("incr " K251 " 1", E_FORMAT),
    ERR("incr " K251 " abc", E_FORMAT), /* key before delta */
    ERRNR("decr " K251 " 1 noreply", E_FORMAT),
};

static void test_parse_arith(void **state)
{
    struct mc_request req;
    char *copy;
    (void)state;

    RUN(arith_cases);
    assert_int_equal(parse("incr n 18446744073709551615", 27, &req, &copy), 0);
    assert_int_equal(req.cmd, MC_CMD_INCR);
    assert_true(req.delta == UINT64_MAX);
    assert_int_equal(req.nkey, 1);
    assert_memory_equal(req.key, "n", 1);
    free(copy);
    assert_int_equal(parse("decr n -9223372036854775809", 27, &req, &copy), 0);
    assert_int_equal(req.cmd, MC_CMD_DECR);
    assert_true(req.delta == 9223372036854775807ull);
    free(copy);
}

/* ------------------------------------------------------------------ touch */

static const struct parse_case touch_cases[] = {
    OK_("touch t 10"),
    OK_("touch t -1"),
    OK_("touch t 0"),
    OK_("touch t 1 2"),
    OK_("touch t 2147483648"),
    OK_("touch " K250 " 1"),
    OKNR("touch t 1 noreply"),
    ERR("touch", E_ERROR),
    ERR("touch t", E_ERROR),
    ERR("touch a b c d", E_ERROR),
    ERR("touch t abc", E_EXPTIME),
    ERR("touch t 1x", E_EXPTIME),
    ERR("touch t 99999999999999999999", E_EXPTIME),
    ERRNR("touch t abc noreply", E_EXPTIME),
    ERR("touch " K251 " 1", E_FORMAT),
    ERR("touch " K251 " abc", E_FORMAT),
};

static void test_parse_touch(void **state)
{
    struct mc_request req;
    char *copy;
    (void)state;

    RUN(touch_cases);
    assert_int_equal(parse("touch key -5", 12, &req, &copy), 0);
    assert_int_equal(req.cmd, MC_CMD_TOUCH);
    assert_int_equal(req.exptime, -5);
    assert_int_equal(req.nkey, 3);
    free(copy);
}

/* ------------------------------------------------------------------ delete */

static const struct parse_case delete_cases[] = {
    OK_("delete d"),
    OK_("delete d 0"),
    OK_("delete " K250),
    OKNR("delete d noreply"),
    OKNR("delete d 0 noreply"),
    ERR("delete", E_ERROR),
    ERR("delete a b c d", E_ERROR),
    ERR("delete d 1", E_DELETE),
    ERR("delete d 00", E_DELETE),
    ERR("delete d 0\t", E_DELETE),
    ERR("delete d 0 0", E_DELETE),
    ERR("delete d noreply extra", E_DELETE),
    ERRNR("delete d 1 noreply", E_DELETE),
    ERRNR("delete d noreply noreply", E_DELETE),
    ERR("delete " K251, E_FORMAT),
    ERR("delete " K251 " 1", E_DELETE), /* the hold-time check comes before the key */
    ERRNR("delete " K251 " noreply", E_FORMAT),
};

static void test_parse_delete(void **state)
{
    (void)state;
    RUN(delete_cases);
}

/* ------------------------------------------------------------------ flush_all */

static const struct parse_case flush_cases[] = {
    OK_("flush_all"),
    OK_("flush_all 0"),
    OK_("flush_all -1"),
    OK_("flush_all 1 2"),       /* memcached: OK, delay 1 */
    OKNR("flush_all noreply"),
    OKNR("flush_all 0 noreply"),
    ERR("flush_all abc", E_EXPTIME),
    ERR("flush_all 1x", E_EXPTIME),
    ERRNR("flush_all abc noreply", E_EXPTIME),
    ERR("flush_all 1 2 3", E_ERROR),
    ERR("flush_all 0 noreply extra", E_ERROR),
    ERR("flush_all 1 2 3 4", E_ERROR),
};

static void test_parse_flush_all(void **state)
{
    struct mc_request req;
    char *copy;
    (void)state;

    RUN(flush_cases);
    assert_int_equal(parse("flush_all", 9, &req, &copy), 0);
    assert_int_equal(req.cmd, MC_CMD_FLUSH_ALL);
    assert_false(req.has_delay);
    free(copy);
    assert_int_equal(parse("flush_all noreply", 17, &req, &copy), 0);
    assert_false(req.has_delay);
    free(copy);
    assert_int_equal(parse("flush_all 30 noreply", 20, &req, &copy), 0);
    assert_true(req.has_delay);
    assert_int_equal(req.exptime, 30);
    free(copy);
    assert_int_equal(parse("flush_all 0", 11, &req, &copy), 0);
    assert_true(req.has_delay);
    assert_int_equal(req.exptime, 0);
    free(copy);
}

/* ------------------------------------------------------------------ local commands */

static const struct parse_case local_cases[] = {
    LOCAL("version"),
    LOCAL("version x"),
    LOCAL("version x y z"),
    LOCAL("version x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x"),
    LOCAL("quit"),
    LOCAL("quit x"),
    LOCAL("stats"),
    LOCAL("stats nodes"),
    LOCAL("stats detail dump x x x x x x x x x x x x x x x x x x x x x x x x x"),
    LOCAL("verbosity 1"),
    LOCAL("verbosity 0"),
    LOCAL("verbosity 5"),
    LOCAL("verbosity 1 2"),
    LOCAL("verbosity 1 "),
    LOCALNR("verbosity 1 noreply"),
    ERR("verbosity", E_ERROR),
    ERR("verbosity 1 2 3", E_ERROR),
    ERR("verbosity abc", E_FORMAT),
    ERR("verbosity -1", E_FORMAT),
    ERRNR("verbosity abc noreply", E_FORMAT),
    ERR("shutdown", E_SHUTDOWN),
    ERR("shutdown graceful", E_SHUTDOWN),
    ERR("shutdown noreply", E_SHUTDOWN), /* shutdown never reads noreply */
    ERR("cache_memlimit", E_ERROR),
    LOCAL("cache_memlimit 100"),
    LOCAL("cache_memlimit 100 x"),
    LOCALNR("cache_memlimit 100 noreply"),
    ERR("cache_memlimit abc", E_ERROR),
    ERR("cache_memlimit -5", E_ERROR),
    ERRNR("cache_memlimit abc noreply", E_ERROR),
    ERR("cache_memlimit 64 noreply extra", E_ERROR),
    LOCAL("lru_crawler metadump all"),
    LOCAL("lru_crawler metadump 1,7"),
    LOCAL("lru_crawler metadump hash"),
    ERR("lru_crawler metadump", E_ERROR),
    ERR("lru_crawler metadump all noreply", E_ERROR),
    ERR("lru_crawler", E_ERROR),
    ERR("lru_crawler foo", E_ERROR),
    ERR("lru_crawler mgdump all", E_ERROR),
    ERR("slabs", E_ERROR),
    ERR("slabs reassign 1", E_ERROR),
};

static void test_parse_local(void **state)
{
    struct mc_request req;
    char *copy;
    (void)state;

    RUN(local_cases);
    assert_int_equal(parse("stats", 5, &req, &copy), 0);
    assert_int_equal(req.cmd, MC_CMD_STATS);
    assert_null(req.subcommand);
    free(copy);
    assert_int_equal(parse("stats  nodes ", 13, &req, &copy), 0);
    assert_non_null(req.subcommand);
    assert_string_equal(req.subcommand, "nodes");
    free(copy);
    assert_int_equal(parse("verbosity 3", 11, &req, &copy), 0);
    assert_int_equal(req.cmd, MC_CMD_VERBOSITY);
    assert_int_equal(req.verbosity, 3);
    free(copy);
    assert_int_equal(parse("quit", 4, &req, &copy), 0);
    assert_int_equal(req.cmd, MC_CMD_QUIT);
    free(copy);
    assert_int_equal(parse("version", 7, &req, &copy), 0);
    assert_int_equal(req.cmd, MC_CMD_VERSION);
    free(copy);
    assert_int_equal(parse("stats detail dump", 17, &req, &copy), 0);
    assert_string_equal(req.subcommand, "detail");
    assert_string_equal(req.arg, "dump");
    free(copy);
    assert_int_equal(parse("cache_memlimit 512", 18, &req, &copy), 0);
    assert_int_equal(req.cmd, MC_CMD_CACHE_MEMLIMIT);
    assert_int_equal(req.memlimit_mb, 512);
    free(copy);
    assert_int_equal(parse("lru_crawler metadump 1,7", 24, &req, &copy), 0);
    assert_int_equal(req.cmd, MC_CMD_LRU_CRAWLER);
    assert_string_equal(req.subcommand, "metadump");
    assert_string_equal(req.arg, "1,7");
    free(copy);
}

/* Meta commands: only what the gateway must decide itself to frame them (the rest is
 * the node's), each checked against memcached 1.6.18. */
#define E_FLAGS_LONG "CLIENT_ERROR options flags too long"
static const struct parse_case meta_cases[] = {
    LOCAL("mn"),
    LOCAL("mn foo"),
    ERR("mg", E_ERROR),
    ERR("md", E_ERROR),
    ERR("ma", E_ERROR),
    ERR("ms", E_ERROR),
    ERR("me", E_FORMAT),
    ERR("mx a", E_ERROR),
    OK_("mg a v"),
    OK_("mg a zz"), /* the node answers "CLIENT_ERROR invalid flag" */
    OK_("mg aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa v"), /* the node answers the long key */
    OK_("md a q"),
    OK_("ma a N0 J13 v"),
    OK_("me a"),
    OK_("ms a 2"),
    OK_("ms a 02 T0 F5"),
    OK_("ms a 2 MX"), /* the node answers the bad mode, and swallows the block */
    OK_("ms a 2 T1 T1 T1 T1 T1 T1 T1 T1 T1 T1 T1 T1 T1 T1 T1 T1"),
    ERR("ms a", E_FORMAT),
    ERR("ms a abc", E_FORMAT),
    ERR("ms a -1", E_FORMAT),
    ERR("ms a 2x", E_FORMAT),
    ERR("ms aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 2", E_FORMAT),
    ERR("ms a 2 T1 T1 T1 T1 T1 T1 T1 T1 T1 T1 T1 T1 T1 T1 T1 T1 T1", E_FLAGS_LONG),
    SWALLOW("ms a 1048577", E_TOO_LARGE, 1048579),
};

static void test_parse_meta(void **state)
{
    char line[512];
    struct mc_request req;
    unsigned char key[MC_KEY_MAX_LENGTH];
    uint32_t bytes = 0;
    (void)state;

    RUN(meta_cases);
    strcpy(line, "mg Zm9v b v");
    assert_int_equal(mc_parse(&parser, line, strlen(line), MAX_VALUE, &req), 0);
    assert_int_equal(req.cmd, MC_CMD_MG);
    assert_true(req.meta_b);
    assert_int_equal(req.nkey, 4);
    strcpy(line, "ms Zm9v 2 T0 b");
    assert_int_equal(mc_parse(&parser, line, strlen(line), MAX_VALUE, &req), 0);
    assert_int_equal(req.cmd, MC_CMD_MS);
    assert_true(req.meta_b);
    assert_int_equal(req.vlen, 2);
    strcpy(line, "ms b 2 T0");
    assert_int_equal(mc_parse(&parser, line, strlen(line), MAX_VALUE, &req), 0);
    assert_false(req.meta_b); /* the key is not a flag */
    assert_int_equal(mc_meta_key_decode("Zm9v", 4, key), 3);
    assert_memory_equal(key, "foo", 3);
    assert_int_equal(mc_meta_key_decode("Zm9vYg==", 8, key), 4);
    assert_memory_equal(key, "foob", 4);
    assert_int_equal(mc_meta_key_decode("Zm9vYmE=", 8, key), 5);
    assert_int_equal(mc_meta_key_decode("!!!!", 4, key), -1);
    assert_int_equal(mc_meta_key_decode("Zm9", 3, key), -1);
    assert_true(mc_meta_va_bytes("VA 2 f5", 7, &bytes));
    assert_int_equal(bytes, 2);
    assert_true(mc_meta_va_bytes("VA 100", 6, &bytes));
    assert_int_equal(bytes, 100);
    assert_false(mc_meta_va_bytes("VA x", 4, &bytes));
    assert_false(mc_meta_va_bytes("VA 2x", 5, &bytes));
    assert_false(mc_meta_va_bytes("HD", 2, &bytes));
}

/*
 * Deliberate differences from memcached (a proxy cannot honour these): admin commands
 * that change one node's memory layout, crawler or logging (memcached: "watch" -> OK,
 * "slabs reassign 1 2" -> NOSPARE..., "lru_crawler crawl all" -> OK).  geogate answers a
 * clear SERVER_ERROR.
 */
#define E_ADMIN "SERVER_ERROR command not supported through geogate"
static const struct parse_case unsupported_cases[] = {
    ERR("slabs reassign 1 2", E_ADMIN),
    ERR("slabs automove 1", E_ADMIN),
    ERR("lru_crawler crawl all", E_ADMIN),
    ERR("lru_crawler tocrawl 5", E_ADMIN),
    ERR("lru_crawler sleep 5", E_ADMIN),
    ERR("lru_crawler enable", E_ADMIN),
    ERR("lru_crawler disable", E_ADMIN),
    ERR("lru tune", E_ADMIN),
    ERR("watch", E_ADMIN),
    ERR("extstore x", E_ADMIN),
};

static void test_parse_unsupported(void **state)
{
    (void)state;
    RUN(unsupported_cases);
}

/* ------------------------------------------------------------------ misc */

/* The parser writes only inside [line, line + len]: nothing past the byte it may own. */
static void test_parse_stays_in_bounds(void **state)
{
    char buf[64];
    struct mc_request req;
    (void)state;

    memset(buf, '#', sizeof(buf));
    memcpy(buf, "get a b", 7);
    assert_int_equal(mc_parse(&parser, buf, 7, MAX_VALUE, &req), 0);
    for (size_t i = 8; i < sizeof(buf); i++) {
        assert_int_equal(buf[i], '#');
    }
    memset(buf, '#', sizeof(buf));
    memcpy(buf, "set a 0 0 1", 11);
    assert_int_equal(mc_parse(&parser, buf, 11, MAX_VALUE, &req), 0);
    for (size_t i = 12; i < sizeof(buf); i++) {
        assert_int_equal(buf[i], '#');
    }
    /* a zero-length line touches at most line[0] */
    memset(buf, '#', sizeof(buf));
    assert_int_equal(mc_parse(&parser, buf, 0, MAX_VALUE, &req), 0);
    assert_int_equal(req.action, MC_ACT_ERROR);
    for (size_t i = 1; i < sizeof(buf); i++) {
        assert_int_equal(buf[i], '#');
    }
}

/* max_value is the gateway's limit, not memcached's: it decides the swallow. */
static void test_parse_max_value(void **state)
{
    char line[32];
    struct mc_request req;
    (void)state;

    strcpy(line, "set a 0 0 100");
    assert_int_equal(mc_parse(&parser, line, 13, 100, &req), 0);
    assert_int_equal(req.action, MC_ACT_FORWARD);
    strcpy(line, "set a 0 0 101");
    assert_int_equal(mc_parse(&parser, line, 13, 100, &req), 0);
    assert_int_equal(req.action, MC_ACT_ERROR_SWALLOW);
    assert_int_equal(req.swallow, 103);
    assert_string_equal(req.error, E_TOO_LARGE);
    strcpy(line, "set a 0 0 0");
    assert_int_equal(mc_parse(&parser, line, 11, 0, &req), 0);
    assert_int_equal(req.action, MC_ACT_FORWARD);
}

static void test_data_block(void **state)
{
    (void)state;
    assert_true(mc_data_block_ok("\r\n"));
    assert_false(mc_data_block_ok("\n\r"));
    assert_false(mc_data_block_ok("x\n"));  /* "set a 0 0 1\r\nxy\n": bad data chunk */
    assert_false(mc_data_block_ok("\rx"));
    assert_false(mc_data_block_ok("\n\n"));
    assert_false(mc_data_block_ok("\0\0"));
}

/* memcached's exptime: relative up to 30 days, an absolute unix time beyond. */
static void test_expiry_abs(void **state)
{
    const uint32_t now = 1700000000u;

    (void)state;
    assert_int_equal(mc_expiry_abs(0, now), 0);             /* never */
    assert_int_equal(mc_expiry_abs(-1, now), 1);            /* already expired */
    assert_int_equal(mc_expiry_abs(INT32_MIN, now), 1);
    assert_int_equal(mc_expiry_abs(1, now), now + 1);
    assert_int_equal(mc_expiry_abs(2592000, now), now + 2592000); /* 30 days: relative */
    assert_int_equal(mc_expiry_abs(2592001, now), 1);       /* absolute and long past */
    assert_int_equal(mc_expiry_abs((int32_t)now, now), 1);  /* absolute, now: expired */
    assert_int_equal(mc_expiry_abs((int32_t)now + 5, now), now + 5);
    assert_int_equal(mc_expiry_abs(INT32_MAX, now), (uint32_t)INT32_MAX);
}

/* memcached's util.c, bug for bug. */
static void test_numbers(void **state)
{
    uint32_t u;
    int32_t l;
    uint64_t ull;
    (void)state;

    assert_true(mc_strtoul("0", &u));
    assert_int_equal(u, 0);
    assert_true(mc_strtoul("4294967295", &u));
    assert_int_equal(u, 4294967295u);
    assert_true(mc_strtoul("4294967296", &u));
    assert_int_equal(u, 0);
    assert_true(mc_strtoul("-0", &u));
    assert_int_equal(u, 0);
    assert_true(mc_strtoul(" 5", &u));
    assert_int_equal(u, 5);
    assert_true(mc_strtoul("5\t", &u));
    assert_int_equal(u, 5);
    assert_true(mc_strtoul("+5", &u));
    assert_int_equal(u, 5);
    assert_false(mc_strtoul("-1", &u));
    assert_false(mc_strtoul("", &u));
    assert_false(mc_strtoul(" ", &u));
    assert_false(mc_strtoul("x", &u));
    assert_false(mc_strtoul("5x", &u));
    assert_false(mc_strtoul("18446744073709551616", &u));
    assert_false(mc_strtoul("18446744073709551615\t-", &u));

    assert_true(mc_strtol("-7", &l));
    assert_int_equal(l, -7);
    assert_true(mc_strtol("2147483647", &l));
    assert_int_equal(l, 2147483647);
    assert_true(mc_strtol("2147483648", &l));
    assert_int_equal(l, INT32_MIN);
    assert_true(mc_strtol("4294967297", &l));
    assert_int_equal(l, 1);
    assert_false(mc_strtol("9223372036854775808", &l));
    assert_false(mc_strtol("", &l));
    assert_false(mc_strtol("-", &l));
    assert_true(mc_strtol("1 ", &l)); /* trailing space is fine */

    assert_true(mc_strtoull("18446744073709551615", &ull));
    assert_true(ull == UINT64_MAX);
    assert_true(mc_strtoull("-9223372036854775809", &ull));
    assert_true(ull == 9223372036854775807ull);
    assert_false(mc_strtoull("-1", &ull));
    assert_false(mc_strtoull("18446744073709551616", &ull));
    assert_false(mc_strtoull("", &ull));
    assert_false(mc_strtoull("1e5", &ull));
}

static void test_cmd_names(void **state)
{
    (void)state;
    assert_string_equal(mc_cmd_name(MC_CMD_GET), "get");
    assert_string_equal(mc_cmd_name(MC_CMD_FLUSH_ALL), "flush_all");
    assert_string_equal(mc_cmd_name(MC_CMD_MAX), "?");
    for (int c = 0; c < MC_CMD_MAX; c++) {
        assert_non_null(mc_cmd_name((enum mc_cmd)c));
    }
    assert_true(mc_cmd_is_storage(MC_CMD_SET));
    assert_true(mc_cmd_is_storage(MC_CMD_CAS));
    assert_false(mc_cmd_is_storage(MC_CMD_GET));
    assert_false(mc_cmd_is_storage(MC_CMD_DELETE));
    assert_true(mc_cmd_is_retrieval(MC_CMD_GATS));
    assert_false(mc_cmd_is_retrieval(MC_CMD_SET));
}

/* ------------------------------------------------------------------ backend replies */

static void reply(const char *line, struct mc_reply *r)
{
    mc_reply_parse(line, strlen(line), r);
}

static void test_reply_lines(void **state)
{
    struct mc_reply r;
    const char *lines[] = {"END", "STORED", "NOT_STORED", "EXISTS", "NOT_FOUND", "DELETED",
                           "TOUCHED", "OK", "ERROR", "42", "0", "VERSION 1.6.18",
                           "CLIENT_ERROR bad data chunk", "SERVER_ERROR out of memory", "",
                           "VALUES a 0 1", "value a 0 1", "STAT pid 1"};
    (void)state;

    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        reply(lines[i], &r);
        if (r.kind != MC_REPLY_LINE) {
            print_error("  \"%s\": want LINE, got %d\n", lines[i], r.kind);
        }
        assert_int_equal(r.kind, MC_REPLY_LINE);
    }
}

static void test_reply_values(void **state)
{
    struct mc_reply r;
    (void)state;

    reply("VALUE k 0 5", &r);
    assert_int_equal(r.kind, MC_REPLY_VALUE);
    assert_int_equal(r.nkey, 1);
    assert_memory_equal(r.key, "k", 1);
    assert_int_equal(r.flags, 0);
    assert_int_equal(r.bytes, 5);
    assert_false(r.has_cas);

    reply("VALUE " K250 " 4294967295 1048576 18446744073709551615", &r);
    assert_int_equal(r.kind, MC_REPLY_VALUE);
    assert_int_equal(r.nkey, 250);
    assert_int_equal(r.flags, 4294967295u);
    assert_int_equal(r.bytes, 1048576);
    assert_true(r.has_cas);
    assert_true(r.cas == UINT64_MAX);

    reply("VALUE a\tb 7 0 47", &r);
    assert_int_equal(r.kind, MC_REPLY_VALUE);
    assert_int_equal(r.nkey, 3);
    assert_int_equal(r.flags, 7);
    assert_int_equal(r.bytes, 0);
    assert_int_equal(r.cas, 47);

    /* fields of up to 19 digits are read in place, longer ones through mc_strtoull */
    reply("VALUE k 123456789 999999999 012345678", &r);
    assert_int_equal(r.kind, MC_REPLY_VALUE);
    assert_int_equal(r.flags, 123456789);
    assert_int_equal(r.bytes, 999999999);
    assert_true(r.cas == 12345678);
    reply("VALUE k 1734803457 1234567890 9999999999999999999", &r);
    assert_int_equal(r.kind, MC_REPLY_VALUE);
    assert_int_equal(r.flags, 1734803457u);
    assert_int_equal(r.bytes, 1234567890u);
    assert_true(r.cas == 9999999999999999999ull);
    reply("VALUE k 00000000000000000001 5 18446744073709551615", &r);
    assert_int_equal(r.kind, MC_REPLY_VALUE);
    assert_int_equal(r.flags, 1);
    assert_true(r.cas == UINT64_MAX);
}

/* Lines that start like a VALUE but that memcached never sends: the stream is out of
 * sync, and a proxy must not guess how many bytes follow. */
static void test_reply_bad(void **state)
{
    struct mc_reply r;
    const char *lines[] = {
        "VALUE ",        "VALUE k",          "VALUE k ",        "VALUE k 0",
        "VALUE k 0 ",    "VALUE  k 0 5",     "VALUE k x 5",     "VALUE k 0 x",
        "VALUE k -1 5",  "VALUE k 0 -1",     "VALUE k 0 5x",    "VALUE k 0 4294967294",
        "VALUE k 0 99999999999999999999999999999999999",
        "VALUE k 0 5 x", "VALUE k 0 5 ",     "VALUE k 0 5 1 2", "VALUE k 0 5 -1",
        "VALUE k 123456789x 5", "VALUE k 0 1234567890x", "VALUE k 0 5 1234567890 1",
        "VALUE k 0 5 18446744073709551616", "VALUE k 0 5 99999999999999999999",
    };
    int bad = 0;
    (void)state;

    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        reply(lines[i], &r);
        if (r.kind != MC_REPLY_BAD) {
            print_error("  \"%s\": want BAD, got %s\n", lines[i],
                        r.kind == MC_REPLY_VALUE ? "VALUE" : "LINE");
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

static int teardown_parser(void **state)
{
    (void)state;
    mc_parser_release(&parser);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_lines),
        cmocka_unit_test(test_frame_incomplete),
        cmocka_unit_test(test_frame_long_lines),
        cmocka_unit_test(test_frame_no_eol),
        cmocka_unit_test(test_parse_empty_and_unknown),
        cmocka_unit_test(test_parse_retrieval),
        cmocka_unit_test(test_parse_get_keys),
        cmocka_unit_test(test_parse_get_stops_at_nul),
        cmocka_unit_test(test_parse_keys_at_token_limit),
        cmocka_unit_test(test_parse_many_keys),
        cmocka_unit_test(test_parse_storage),
        cmocka_unit_test(test_parse_cas),
        cmocka_unit_test(test_parse_storage_fields),
        cmocka_unit_test(test_parse_arith),
        cmocka_unit_test(test_parse_touch),
        cmocka_unit_test(test_parse_delete),
        cmocka_unit_test(test_parse_flush_all),
        cmocka_unit_test(test_parse_local),
        cmocka_unit_test(test_parse_meta),
        cmocka_unit_test(test_parse_unsupported),
        cmocka_unit_test(test_parse_stays_in_bounds),
        cmocka_unit_test(test_parse_max_value),
        cmocka_unit_test(test_data_block),
        cmocka_unit_test(test_expiry_abs),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_cmd_names),
        cmocka_unit_test(test_reply_lines),
        cmocka_unit_test(test_reply_values),
        cmocka_unit_test(test_reply_bad),
    };
    return cmocka_run_group_tests(tests, NULL, teardown_parser);
}
