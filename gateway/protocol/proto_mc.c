/*
 * proto_mc — see proto_mc.h.  Mirrors memcached 1.6's proto_text.c decisions (which
 * command needs how many tokens, which check comes first, which exact error string,
 * when "noreply" silences even errors) without sharing any of its code.  Any thread.
 */
#include "gateway/protocol/proto_mc.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

/* memcached counts the terminal (empty) token too; we keep its arithmetic so the
 * WANT_TOKENS rules read the same. */
#define MC_TOKENS_ON_STACK 24
#define MC_EXPTIME_RELATIVE_MAX 2592000 /* memcached: larger exptimes are absolute times */

static const char *const cmd_names[MC_CMD_MAX] = {
    [MC_CMD_NONE] = "none",
    [MC_CMD_GET] = "get",
    [MC_CMD_GETS] = "gets",
    [MC_CMD_GAT] = "gat",
    [MC_CMD_GATS] = "gats",
    [MC_CMD_SET] = "set",
    [MC_CMD_ADD] = "add",
    [MC_CMD_REPLACE] = "replace",
    [MC_CMD_APPEND] = "append",
    [MC_CMD_PREPEND] = "prepend",
    [MC_CMD_CAS] = "cas",
    [MC_CMD_DELETE] = "delete",
    [MC_CMD_INCR] = "incr",
    [MC_CMD_DECR] = "decr",
    [MC_CMD_TOUCH] = "touch",
    [MC_CMD_FLUSH_ALL] = "flush_all",
    [MC_CMD_VERSION] = "version",
    [MC_CMD_VERBOSITY] = "verbosity",
    [MC_CMD_STATS] = "stats",
    [MC_CMD_QUIT] = "quit",
    [MC_CMD_MG] = "mg",
    [MC_CMD_MS] = "ms",
    [MC_CMD_MD] = "md",
    [MC_CMD_MA] = "ma",
    [MC_CMD_ME] = "me",
    [MC_CMD_MN] = "mn",
    [MC_CMD_CACHE_MEMLIMIT] = "cache_memlimit",
    [MC_CMD_LRU_CRAWLER] = "lru_crawler",
    [MC_CMD_UNSUPPORTED] = "unsupported",
};

static const char ERR_ERROR[] = "ERROR";
static const char ERR_FORMAT[] = "CLIENT_ERROR bad command line format";
static const char ERR_EXPTIME[] = "CLIENT_ERROR invalid exptime argument";
static const char ERR_DELTA[] = "CLIENT_ERROR invalid numeric delta argument";
static const char ERR_DELETE[] =
    "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]";
static const char ERR_TOO_LARGE[] = "SERVER_ERROR object too large for cache";
static const char ERR_SHUTDOWN[] = "ERROR: shutdown not enabled";
static const char ERR_FLAGS_LONG[] = "CLIENT_ERROR options flags too long";
static const char ERR_ADMIN[] = "SERVER_ERROR command not supported through geogate";

const char *mc_cmd_name(enum mc_cmd cmd)
{
    return cmd < MC_CMD_MAX ? cmd_names[cmd] : "?";
}

void mc_parser_release(struct mc_parser *p)
{
    free(p->keys);
    p->keys = NULL;
    p->cap = 0;
}

/* ---- numbers, as memcached's util.c judges them ---- */

static bool number_tail_ok(const char *s, const char *end)
{
    return isspace((unsigned char)*end) || (*end == '\0' && end != s);
}

/* The common case, 1 to 9 plain digits up to the token's end: the value strtoul would
 * read, without its locale and sign handling.  False for anything else, which the
 * libc call then judges. */
static bool small_decimal(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    int n = 0;

    while (s[n] >= '0' && s[n] <= '9') {
        if (n == 9) {
            return false;
        }
        v = v * 10 + (uint32_t)(s[n] - '0');
        n++;
    }
    if (n == 0 || !number_tail_ok(s, s + n)) {
        return false;
    }
    *out = v;
    return true;
}

bool mc_strtoull(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    uint32_t small;

    if (small_decimal(s, &small)) {
        *out = small;
        return true;
    }

    errno = 0;
    *out = 0;
    v = strtoull(s, &end, 10);
    if (errno == ERANGE || end == s || !number_tail_ok(s, end)) {
        return false;
    }
    if ((long long)v < 0 && strchr(s, '-') != NULL) {
        return false;
    }
    *out = v;
    return true;
}

bool mc_strtoul(const char *s, uint32_t *out)
{
    char *end;
    unsigned long v;

    if (small_decimal(s, out)) {
        return true;
    }

    errno = 0;
    *out = 0;
    v = strtoul(s, &end, 10);
    if (errno == ERANGE || end == s || !number_tail_ok(s, end)) {
        return false;
    }
    if ((long)v < 0 && strchr(s, '-') != NULL) {
        return false;
    }
    *out = (uint32_t)v; /* memcached truncates, so do we */
    return true;
}

bool mc_strtol(const char *s, int32_t *out)
{
    char *end;
    long v;
    uint32_t small;

    if (small_decimal(s, &small)) {
        *out = (int32_t)small;
        return true;
    }

    errno = 0;
    *out = 0;
    v = strtol(s, &end, 10);
    if (errno == ERANGE || end == s || !number_tail_ok(s, end)) {
        return false;
    }
    *out = (int32_t)v; /* truncated like memcached's */
    return true;
}

size_t mc_put_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++) {
        p[i] = tmp[n - 1 - i];
    }
    return n;
}

size_t mc_put_i64(char *p, int64_t v)
{
    if (v < 0) {
        p[0] = '-';
        return 1 + mc_put_u64(p + 1, (uint64_t)(-(v + 1)) + 1);
    }
    return mc_put_u64(p, (uint64_t)v);
}

size_t mc_put_storage_line(char *p, const char *cmd, size_t ncmd, const char *key, size_t nkey,
                           uint32_t flags, int64_t exptime, uint64_t bytes, bool has_cas,
                           uint64_t cas)
{
    size_t n = 0;

    memcpy(p, cmd, ncmd);
    n += ncmd;
    p[n++] = ' ';
    memcpy(p + n, key, nkey);
    n += nkey;
    p[n++] = ' ';
    n += mc_put_u64(p + n, flags);
    p[n++] = ' ';
    n += mc_put_i64(p + n, exptime);
    p[n++] = ' ';
    n += mc_put_u64(p + n, bytes);
    if (has_cas) {
        p[n++] = ' ';
        n += mc_put_u64(p + n, cas);
    }
    p[n++] = '\r';
    p[n++] = '\n';
    return n;
}

/* ---- framing ---- */

enum mc_frame mc_frame_line(const char *buf, size_t len, size_t max_line, size_t *line_len,
                            size_t *consumed)
{
    const char *el = memchr(buf, '\n', len);
    size_t n;

    if (el != NULL) {
        n = (size_t)(el - buf);
        *consumed = n + 1;
        if (n > 1 && buf[n - 1] == '\r') {
            n--;
        }
        *line_len = n;
        return MC_FRAME_LINE;
    }
    return mc_frame_no_eol(buf, len, len, max_line);
}

enum mc_frame mc_frame_no_eol(const char *head, size_t headlen, size_t total, size_t max_line)
{
    const char *p = head;

    if (total <= MC_LINE_SOFT_LIMIT) {
        return MC_FRAME_MORE;
    }
    /* Only a multi-get may be this long; anything else is junk and memcached hangs up. */
    while ((size_t)(p - head) < headlen && *p == ' ') {
        p++;
    }
    if (p - head > 100 || headlen - (size_t)(p - head) < 5 ||
        (strncmp(p, "get ", 4) != 0 && strncmp(p, "gets ", 5) != 0)) {
        return MC_FRAME_CLOSE;
    }
    if (total > max_line) {
        return MC_FRAME_TOO_LONG;
    }
    return MC_FRAME_MORE;
}

bool mc_data_block_ok(const char last2[2])
{
    return last2[0] == '\r' && last2[1] == '\n';
}

uint32_t mc_expiry_abs(int32_t exptime, uint32_t now)
{
    if (exptime == 0) {
        return 0;
    }
    if (exptime < 0) {
        return 1;
    }
    if (exptime <= MC_EXPTIME_RELATIVE_MAX) {
        return now + (uint32_t)exptime;
    }
    return (uint32_t)exptime <= now ? 1 : (uint32_t)exptime;
}

/* ---- tokenizer ---- */

/*
 * Split on ' ' only (tabs are part of tokens, as in memcached), NUL-terminating each
 * token in place.  The line ends at its first NUL, because memcached measures it with
 * strlen().  Returns the number of real tokens (memcached's ntokens minus one).
 */
static size_t tokenize(char *line, size_t *lenp, struct mc_token *tok, size_t max)
{
    size_t n = 0;
    size_t i = 0;
    size_t len = strnlen(line, *lenp);

    *lenp = len;
    line[len] = '\0';
    while (i < len) {
        size_t start;
        while (i < len && line[i] == ' ') {
            i++;
        }
        if (i >= len) {
            break;
        }
        start = i;
        {
            const char *sp = memchr(line + i, ' ', len - i);
            i = sp != NULL ? (size_t)(sp - line) : len;
        }
        if (n < max) {
            tok[n].p = line + start;
            tok[n].len = (uint32_t)(i - start);
        }
        n++;
        line[i] = '\0';
        i++;
    }
    return n;
}

static void set_error(struct mc_request *req, const char *error)
{
    req->action = MC_ACT_ERROR;
    req->error = error;
}

static bool is_noreply(const struct mc_token *last)
{
    return last->len == 7 && memcmp(last->p, "noreply", 7) == 0;
}

/* Walk the tokens of an already tokenized line (tokens are NUL-terminated; the
 * separators that remain are spaces and NULs). */
static size_t next_token(const char *line, size_t len, size_t i, size_t *tlen)
{
    while (i < len && (line[i] == ' ' || line[i] == '\0')) {
        i++;
    }
    *tlen = i < len ? strnlen(line + i, len - i) : 0;
    return i;
}

/* Room for n keys in the parser's key array. */
static int reserve_keys(struct mc_parser *p, size_t n)
{
    if (n > p->cap) {
        uint32_t cap = p->cap ? p->cap : 32;
        struct mc_token *keys;
        while (cap < n) {
            cap *= 2;
        }
        keys = realloc(p->keys, cap * sizeof(*keys));
        if (keys == NULL) {
            return -1;
        }
        p->keys = keys;
        p->cap = cap;
    }
    return 0;
}

/* Make room for every key of a multi-get and fill them in. */
static int collect_keys(struct mc_parser *p, char *line, size_t len, size_t first,
                        struct mc_request *req)
{
    size_t n = 0;
    size_t ntok = 0;
    size_t i, l;

    for (i = next_token(line, len, 0, &l); i < len; i = next_token(line, len, i + l, &l)) {
        if (ntok++ >= first) {
            n++;
        }
    }
    if (reserve_keys(p, n) != 0) {
        return -1;
    }
    ntok = 0;
    n = 0;
    for (i = next_token(line, len, 0, &l); i < len; i = next_token(line, len, i + l, &l)) {
        if (ntok++ >= first) {
            p->keys[n].p = line + i;
            p->keys[n].len = (uint32_t)l;
            n++;
        }
    }
    req->keys = p->keys;
    req->nkeys = (uint32_t)n;
    return 0;
}

static void parse_retrieval(struct mc_parser *p, char *line, size_t len, struct mc_token *tok,
                            size_t ntok, struct mc_request *req, int *rc)
{
    size_t first = 1;
    uint32_t i;

    if (req->cmd == MC_CMD_GAT || req->cmd == MC_CMD_GATS) {
        if (!mc_strtol(tok[1].p, &req->exptime)) {
            set_error(req, ERR_EXPTIME);
            return;
        }
        first = 2;
    }
    if (ntok < MC_TOKENS_ON_STACK - 1) {
        /* every token is in tok[] already (mc_parse caps ntok below that when not):
         * no second walk over the line */
        if (ntok <= first) {
            req->keys = p->keys;
            req->nkeys = 0;
        } else if (reserve_keys(p, ntok - first) != 0) {
            *rc = -1;
            return;
        } else {
            memcpy(p->keys, tok + first, (ntok - first) * sizeof(*tok));
            req->keys = p->keys;
            req->nkeys = (uint32_t)(ntok - first);
        }
    } else if (collect_keys(p, line, len, first, req) != 0) {
        *rc = -1;
        return;
    }
    for (i = 0; i < req->nkeys; i++) {
        if (req->keys[i].len > MC_KEY_MAX_LENGTH) {
            set_error(req, ERR_FORMAT);
            return;
        }
    }
    req->action = MC_ACT_FORWARD;
}

static void parse_storage(struct mc_token *tok, size_t ntok, uint32_t max_value,
                          struct mc_request *req)
{
    req->noreply = is_noreply(&tok[ntok - 1]);
    if (tok[1].len > MC_KEY_MAX_LENGTH) {
        set_error(req, ERR_FORMAT);
        return;
    }
    req->key = tok[1].p;
    req->nkey = tok[1].len;
    if (!(mc_strtoul(tok[2].p, &req->flags) && mc_strtol(tok[3].p, &req->exptime) &&
          mc_strtol(tok[4].p, &req->vlen))) {
        set_error(req, ERR_FORMAT);
        return;
    }
    if (req->cmd == MC_CMD_CAS && !mc_strtoull(tok[5].p, &req->cas_unique)) {
        set_error(req, ERR_FORMAT);
        return;
    }
    if (req->vlen < 0 || req->vlen > INT_MAX - 2) {
        set_error(req, ERR_FORMAT);
        return;
    }
    if ((uint32_t)req->vlen > max_value) {
        req->action = MC_ACT_ERROR_SWALLOW;
        req->error = ERR_TOO_LARGE;
        req->swallow = (uint32_t)req->vlen + 2;
        return;
    }
    req->action = MC_ACT_FORWARD;
}

/*
 * Meta commands (protocol.txt "Meta Commands").  The gateway decides only what it must
 * to frame and route them, the way memcached 1.6 decides it, and passes everything else
 * to the key's node as the client sent it, so replies and errors are memcached's own:
 *   - no key: ERROR (me: CLIENT_ERROR bad command line format); mn: answered here;
 *   - ms: a key over 250 bytes, more than 16 flags, or a <datalen> that is not a number
 *     are refused before the data block, which is then read as commands (memcached does
 *     the same); a data block over the largest value: "object too large", swallowed;
 *     otherwise the line and its data block go on whole, bad flags and all;
 *   - flag b (the first letter of a flag token, as memcached reads it): the key is
 *     base64, routed by its decoded bytes so `get foo` and `mg Zm9v b` meet on one node.
 */
#define META_MS_MAX_FLAGS 16

static void parse_meta(struct mc_token *tok, size_t ntok, uint32_t max_value,
                       struct mc_request *req)
{
    static const enum mc_cmd cmds[] = {['g'] = MC_CMD_MG, ['s'] = MC_CMD_MS, ['d'] = MC_CMD_MD,
                                       ['a'] = MC_CMD_MA, ['e'] = MC_CMD_ME, ['n'] = MC_CMD_MN};
    size_t first_flag = 2;

    req->cmd = cmds[(unsigned char)tok[0].p[1]];
    if (req->cmd == MC_CMD_MN) {
        req->action = MC_ACT_LOCAL;
        return;
    }
    if (ntok < 2) {
        set_error(req, req->cmd == MC_CMD_ME ? ERR_FORMAT : ERR_ERROR);
        return;
    }
    req->key = tok[1].p;
    req->nkey = tok[1].len;
    if (req->cmd == MC_CMD_MS) {
        if (ntok < 3 || tok[1].len > MC_KEY_MAX_LENGTH) {
            set_error(req, ERR_FORMAT);
            return;
        }
        if (ntok - 3 > META_MS_MAX_FLAGS) {
            set_error(req, ERR_FLAGS_LONG);
            return;
        }
        if (!mc_strtol(tok[2].p, &req->vlen) || req->vlen < 0 || req->vlen > INT_MAX - 2) {
            set_error(req, ERR_FORMAT);
            return;
        }
        first_flag = 3;
    }
    for (size_t i = first_flag; i < ntok; i++) {
        req->meta_b |= tok[i].p[0] == 'b';
    }
    if (req->cmd == MC_CMD_MS && (uint32_t)req->vlen > max_value) {
        req->action = MC_ACT_ERROR_SWALLOW;
        req->error = ERR_TOO_LARGE;
        req->swallow = (uint32_t)req->vlen + 2;
        return;
    }
    req->action = MC_ACT_FORWARD;
}

int mc_meta_key_decode(const char *key, uint32_t nkey, unsigned char *out)
{
    unsigned char buf[MC_KEY_MAX_LENGTH + 3];
    int n;
    uint32_t pad = 0;

    if (nkey == 0 || nkey % 4 != 0 || nkey > MC_KEY_MAX_LENGTH) {
        return -1;
    }
    n = EVP_DecodeBlock(buf, (const unsigned char *)key, (int)nkey);
    if (n < 0) {
        return -1;
    }
    pad = (key[nkey - 1] == '=') + (key[nkey - 2] == '=');
    n -= (int)pad;
    memcpy(out, buf, (size_t)n);
    return n;
}

bool mc_meta_va_bytes(const char *line, size_t len, uint32_t *bytes)
{
    uint64_t v = 0;
    size_t i = 3;

    if (len < 4 || memcmp(line, "VA ", 3) != 0) {
        return false;
    }
    for (; i < len && line[i] >= '0' && line[i] <= '9' && i < 13; i++) {
        v = v * 10 + (uint64_t)(line[i] - '0');
    }
    if (i == 3 || (i < len && line[i] != ' ') || v > UINT32_MAX - 2) {
        return false;
    }
    *bytes = (uint32_t)v;
    return true;
}

/*
 * memcached's own answer to the slabs and lru_crawler forms it does not know is ERROR;
 * the forms it knows change one node's memory layout or crawler (reassign, automove,
 * crawl, tocrawl, sleep, enable, disable), which a gateway in front of a pool cannot
 * do for "the" server: those get ERR_ADMIN.  `lru_crawler metadump <classes|all|hash>`
 * is read-only and goes to every node.
 */
static void parse_slabs(struct mc_token *tok, size_t nt, struct mc_request *req)
{
    if ((nt == 5 && strcmp(tok[1].p, "reassign") == 0) ||
        (nt >= 4 && strcmp(tok[1].p, "automove") == 0)) {
        req->cmd = MC_CMD_UNSUPPORTED;
        req->error = ERR_ADMIN;
    }
}

static void parse_lru_crawler(struct mc_token *tok, size_t nt, struct mc_request *req)
{
    const char *sub = nt > 2 ? tok[1].p : "";

    if (nt == 4 && strcmp(sub, "metadump") == 0) {
        req->cmd = MC_CMD_LRU_CRAWLER;
        req->action = MC_ACT_LOCAL;
        req->subcommand = sub;
        req->arg = tok[2].p;
    } else if ((nt == 4 && (strcmp(sub, "crawl") == 0 || strcmp(sub, "tocrawl") == 0 ||
                            strcmp(sub, "sleep") == 0)) ||
               (nt == 3 && (strcmp(sub, "enable") == 0 || strcmp(sub, "disable") == 0))) {
        req->cmd = MC_CMD_UNSUPPORTED;
        req->error = ERR_ADMIN;
    }
}

#define WANT(lo, hi)                                                                               \
    do {                                                                                           \
        if (nt < (lo) || nt > (hi)) {                                                              \
            set_error(req, ERR_ERROR);                                                             \
            return 0;                                                                              \
        }                                                                                          \
    } while (0)

#define IS(tokname) (t0len == sizeof(tokname) - 1 && memcmp(t0, tokname, t0len) == 0)

/*
 * An unknown command whose last token starts with "HTTP/": a browser or an SSRF'd HTTP
 * client talking to the cache port ("GET / HTTP/1.1").  memcached hangs up on these
 * without a word, so that no reply of its can be read as HTTP; it makes the check only
 * for commands whose first letter none of its commands share (it dispatches on that
 * letter first), and so do we, which keeps `get / HTTP/1.0` a get.
 */
static bool looks_like_http(const struct mc_token *tok, size_t ntok)
{
    const struct mc_token *last = &tok[ntok - 1];

    return strchr("acdgimst", tok[0].p[0]) == NULL && last->len >= 5 &&
           memcmp(last->p, "HTTP/", 5) == 0;
}

int mc_parse(struct mc_parser *p, char *line, size_t len, uint32_t max_value,
             struct mc_request *req)
{
    struct mc_token tok[MC_TOKENS_ON_STACK];
    size_t ntok;
    size_t nt; /* memcached's ntokens: real tokens + the terminal one */
    const char *t0;
    size_t t0len;
    int rc = 0;

    memset(req, 0, sizeof(*req));
    req->action = MC_ACT_ERROR;
    req->error = ERR_ERROR;

    ntok = tokenize(line, &len, tok, MC_TOKENS_ON_STACK);
    nt = ntok + 1;
    if (ntok == 0 || tok[0].len < 2) {
        return 0;
    }
    t0 = tok[0].p;
    t0len = tok[0].len;
    /* Non-get commands never look past memcached's 23rd token; neither do we. */
    if (ntok > MC_TOKENS_ON_STACK - 1) {
        ntok = MC_TOKENS_ON_STACK - 1;
        nt = MC_TOKENS_ON_STACK;
    }

    if (t0[0] == 'm' && t0len == 2) {
        if (t0[1] != '\0' && strchr("gsdnae", t0[1]) != NULL) {
            parse_meta(tok, ntok, max_value, req);
        }
        return 0;
    }
    switch (t0[0]) {
    case 'g':
        WANT(3, SIZE_MAX);
        if (IS("get")) {
            req->cmd = MC_CMD_GET;
        } else if (IS("gets")) {
            req->cmd = MC_CMD_GETS;
        } else if (IS("gat")) {
            req->cmd = MC_CMD_GAT;
        } else if (IS("gats")) {
            req->cmd = MC_CMD_GATS;
        } else {
            return 0;
        }
        parse_retrieval(p, line, len, tok, ntok, req, &rc);
        return rc;
    case 's':
        if (IS("set")) {
            WANT(6, 7);
            req->cmd = MC_CMD_SET;
            parse_storage(tok, ntok, max_value, req);
        } else if (IS("stats")) {
            req->cmd = MC_CMD_STATS;
            req->action = MC_ACT_LOCAL;
            req->subcommand = ntok > 1 ? tok[1].p : NULL;
            req->arg = ntok > 2 ? tok[2].p : NULL;
        } else if (IS("shutdown")) {
            req->cmd = MC_CMD_UNSUPPORTED;
            req->error = ERR_SHUTDOWN;
        } else if (IS("slabs")) {
            parse_slabs(tok, nt, req);
        }
        return 0;
    case 'a':
        if (IS("add") || IS("append")) {
            WANT(6, 7);
            req->cmd = IS("add") ? MC_CMD_ADD : MC_CMD_APPEND;
            parse_storage(tok, ntok, max_value, req);
        }
        return 0;
    case 'c':
        if (IS("cas")) {
            WANT(7, 8);
            req->cmd = MC_CMD_CAS;
            parse_storage(tok, ntok, max_value, req);
        } else if (IS("cache_memlimit")) {
            WANT(3, 4);
            req->cmd = MC_CMD_CACHE_MEMLIMIT;
            req->noreply = is_noreply(&tok[ntok - 1]);
            if (mc_strtoul(tok[1].p, &req->memlimit_mb)) {
                req->action = MC_ACT_LOCAL;
            }
        }
        return 0;
    case 'i':
    case 'd':
        if (IS("incr") || IS("decr")) {
            WANT(4, 5);
            req->cmd = IS("incr") ? MC_CMD_INCR : MC_CMD_DECR;
            req->noreply = is_noreply(&tok[ntok - 1]);
            if (tok[1].len > MC_KEY_MAX_LENGTH) {
                set_error(req, ERR_FORMAT);
            } else if (!mc_strtoull(tok[2].p, &req->delta)) {
                set_error(req, ERR_DELTA);
            } else {
                req->key = tok[1].p;
                req->nkey = tok[1].len;
                req->action = MC_ACT_FORWARD;
            }
        } else if (IS("delete")) {
            WANT(3, 5);
            req->cmd = MC_CMD_DELETE;
            if (nt > 3) {
                bool hold_is_zero = strcmp(tok[2].p, "0") == 0;
                bool noreply = is_noreply(&tok[ntok - 1]);
                req->noreply = noreply;
                if (!((nt == 4 && (hold_is_zero || noreply)) ||
                      (nt == 5 && hold_is_zero && noreply))) {
                    set_error(req, ERR_DELETE);
                    return 0;
                }
            }
            if (tok[1].len > MC_KEY_MAX_LENGTH) {
                set_error(req, ERR_FORMAT);
                return 0;
            }
            req->key = tok[1].p;
            req->nkey = tok[1].len;
            req->action = MC_ACT_FORWARD;
        }
        return 0;
    case 't':
        if (IS("touch")) {
            WANT(4, 5);
            req->cmd = MC_CMD_TOUCH;
            req->noreply = is_noreply(&tok[ntok - 1]);
            if (tok[1].len > MC_KEY_MAX_LENGTH) {
                set_error(req, ERR_FORMAT);
            } else if (!mc_strtol(tok[2].p, &req->exptime)) {
                set_error(req, ERR_EXPTIME);
            } else {
                req->key = tok[1].p;
                req->nkey = tok[1].len;
                req->action = MC_ACT_FORWARD;
            }
        }
        return 0;
    default:
        break;
    }

    if (IS("replace") || IS("prepend")) {
        WANT(6, 7);
        req->cmd = IS("replace") ? MC_CMD_REPLACE : MC_CMD_PREPEND;
        parse_storage(tok, ntok, max_value, req);
    } else if (IS("bget")) {
        WANT(3, SIZE_MAX);
        req->cmd = MC_CMD_GET;
        parse_retrieval(p, line, len, tok, ntok, req, &rc);
    } else if (IS("flush_all")) {
        WANT(2, 4);
        req->cmd = MC_CMD_FLUSH_ALL;
        req->noreply = is_noreply(&tok[ntok - 1]);
        if (nt != (req->noreply ? 3u : 2u)) {
            if (!mc_strtol(tok[1].p, &req->exptime)) {
                set_error(req, ERR_EXPTIME);
                return 0;
            }
            req->has_delay = true;
        }
        req->action = MC_ACT_FORWARD;
    } else if (IS("version")) {
        req->cmd = MC_CMD_VERSION;
        req->action = MC_ACT_LOCAL;
    } else if (IS("quit")) {
        req->cmd = MC_CMD_QUIT;
        req->action = MC_ACT_LOCAL;
    } else if (IS("verbosity")) {
        WANT(3, 4);
        req->cmd = MC_CMD_VERBOSITY;
        req->noreply = is_noreply(&tok[ntok - 1]);
        if (!mc_strtoul(tok[1].p, &req->verbosity)) {
            set_error(req, ERR_FORMAT);
            return 0;
        }
        req->action = MC_ACT_LOCAL;
    } else if (IS("lru_crawler")) {
        parse_lru_crawler(tok, nt, req);
    } else if (IS("watch") || IS("lru") || IS("extstore")) {
        req->cmd = MC_CMD_UNSUPPORTED;
        req->error = ERR_ADMIN;
    } else if (looks_like_http(tok, ntok)) {
        req->action = MC_ACT_CLOSE;
    }
    return rc;
}

/* ---- backend replies ---- */

void mc_reply_parse(const char *line, size_t len, struct mc_reply *out)
{
    char num[32];
    const char *p, *end, *q;
    uint64_t v;

    memset(out, 0, sizeof(*out));
    out->kind = MC_REPLY_LINE;
    if (len < 6 || memcmp(line, "VALUE ", 6) != 0) {
        return;
    }
    out->kind = MC_REPLY_BAD;
    p = line + 6;
    end = line + len;
    q = memchr(p, ' ', (size_t)(end - p));
    if (q == NULL || q == p) {
        return;
    }
    out->key = p;
    out->nkey = (uint32_t)(q - p);
    for (int field = 0; q < end; field++) {
        const char *s = q + 1;
        const char *e = s;
        size_t n;

        /* the usual field, up to 19 plain digits (which cannot overflow; a replicating
         * gateway's items carry 10-digit flags), read in place; anything else goes
         * through mc_strtoull, which decides what memcached would accept */
        v = 0;
        while (e < end && *e >= '0' && *e <= '9' && e - s < 19) {
            v = v * 10 + (uint64_t)(*e - '0');
            e++;
        }
        if (e == s || (e < end && *e != ' ')) {
            e = memchr(s, ' ', (size_t)(end - s));
            if (e == NULL) {
                e = end;
            }
            n = (size_t)(e - s);
            if (n == 0 || n >= sizeof(num)) {
                out->kind = MC_REPLY_BAD;
                return;
            }
            memcpy(num, s, n);
            num[n] = '\0';
            if (!mc_strtoull(num, &v)) {
                out->kind = MC_REPLY_BAD;
                return;
            }
        }
        if (field > 2) {
            out->kind = MC_REPLY_BAD;
            return;
        }
        if (field == 0) {
            out->flags = (uint32_t)v;
        } else if (field == 1) {
            if (v > UINT32_MAX - 2) {
                return;
            }
            out->bytes = (uint32_t)v;
            out->kind = MC_REPLY_VALUE;
        } else {
            out->has_cas = true;
            out->cas = v;
        }
        q = e;
    }
}
