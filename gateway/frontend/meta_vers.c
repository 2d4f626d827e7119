/*
 * meta_vers — the meta commands on a replicating gateway, whose items hold the 32-byte
 * version header of docs/REPLICATION.md in front of the client's value.  A meta command
 * keeps its meaning over that header:
 *
 *   mg ──> the node: mg with the client's flags (+ v f when not asked, - q) ──> VA reply
 *          ──> header decoded: a tombstone or a header-expired item is a miss (EN), s is
 *              the client's size, f the client's flags, v the client's value; c, t, k, O,
 *              b, h, l as the node said them (t is the replicated absolute expiry's rest)
 *   ms ──> gw_vop_store as its text twin (mode S set, E add, A append, P prepend, R replace;
 *          C<cas> cas), so it gets a version and ships
 *   md ──> gw_vop_keyed delete (a tombstone that ships); ma ──> incr/decr (MI/M+, MD/M-, D)
 *   the text reply ──> gw_meta_vers_reply: HD / NS / EX / NF (+ O, k, b), VA for ma v,
 *          HD held back in quiet mode
 *
 *   md I ──> gw_vop_invalidate: memcached's own stale mark here, and a stale mark that ships
 *          (every site marks its copy when older), so each site's next mg wins W once and
 *          the others read the stale value with X / Z until a fresh ms lands everywhere;
 *          mg N/R pass to the node (an N placeholder is the node's own, never shipped)
 *
 * mg T touches first (vop touch: the new expiry reaches the header and ships, as gat's);
 * ma N reads first and makes the item with J on a miss (a versioned add); ms E<token>
 * writes with the client's version (docs/REPLICATION.md, "Client versions").
 *
 * Flags that need more than that (ms invalidate I, ms c, md x/C, E on md/ma/mg, c/t
 * returned by ma) are refused with a SERVER_ERROR that names the flag.  Worker loop only.
 */
#include "gateway/frontend/meta_vers.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "gateway/backend/backend.h"
#include "gateway/base/stats.h"
#include "gateway/loop/worker.h"
#include "gateway/protocol/proto_mc.h"
#include "gateway/protocol/req.h"
#include "gateway/store/item.h"
#include "gateway/frontend/vop.h"
#include "gateway/server.h"
#include "wan/version.h"

#define META_MAX_TOKENS 24
#define META_RET_MAX 320

/* A meta command's line cut into tokens (a copy; the tokens point into it). */
struct meta_line {
    char buf[2048];
    struct mc_token tok[META_MAX_TOKENS];
    uint32_t ntok;
    uint32_t first_flag;
};

static bool meta_split(struct meta_line *ml, const char *line, size_t len, bool ms)
{
    size_t i = 0;

    if (len >= sizeof(ml->buf)) {
        return false;
    }
    memcpy(ml->buf, line, len);
    ml->buf[len] = '\0';
    ml->ntok = 0;
    while (i < len && ml->ntok < META_MAX_TOKENS) {
        size_t start;
        while (i < len && ml->buf[i] == ' ') {
            i++;
        }
        if (i >= len) {
            break;
        }
        start = i;
        while (i < len && ml->buf[i] != ' ') {
            i++;
        }
        ml->tok[ml->ntok].p = ml->buf + start;
        ml->tok[ml->ntok].len = (uint32_t)(i - start);
        ml->ntok++;
        ml->buf[i] = '\0';
        i++;
    }
    ml->first_flag = ms ? 3 : 2;
    return ml->ntok >= ml->first_flag - 1;
}

/* The first flag token of letter f, or NULL. */
static const struct mc_token *meta_flag(const struct meta_line *ml, char f)
{
    for (uint32_t i = ml->first_flag; i < ml->ntok; i++) {
        if (ml->tok[i].p[0] == f) {
            return &ml->tok[i];
        }
    }
    return NULL;
}

/* A flag of letters the gateway cannot honour here yet, or 0. */
static char meta_refused(const struct meta_line *ml, const char *letters)
{
    for (uint32_t i = ml->first_flag; i < ml->ntok; i++) {
        if (strchr(letters, ml->tok[i].p[0]) != NULL) {
            return ml->tok[i].p[0];
        }
    }
    return 0;
}

static void refuse_flag(struct gw_req *r, char f)
{
    char line[96];

    snprintf(line, sizeof(line),
             "SERVER_ERROR meta flag %c is not supported on a replicating "
             "geogate yet",
             f);
    gw_req_finish_line(r, line);
}

/* The return flags memcached echoes (O, k, b) into r->meta_ret; q into r->meta_x. */
static bool meta_keep_ret(struct gw_req *r, const struct meta_line *ml, uint8_t bits)
{
    char ret[META_RET_MAX];
    size_t n = 0;
    const struct mc_token *t;

    r->meta_x = GW_META_X_ON | bits;
    if (meta_flag(ml, 'q') != NULL) {
        r->meta_x |= GW_META_X_QUIET;
    }
    /* in the order the client gave them, as memcached writes them */
    for (uint32_t i = ml->first_flag; i < ml->ntok; i++) {
        t = &ml->tok[i];
        if (t->p[0] == 'O' && n + t->len + 1 < sizeof(ret)) {
            n += (size_t)snprintf(ret + n, sizeof(ret) - n, " %.*s", (int)t->len, t->p);
        } else if (t->p[0] == 'k' && n + ml->tok[1].len + 4 < sizeof(ret)) {
            n += (size_t)snprintf(ret + n, sizeof(ret) - n, " k%.*s%s", (int)ml->tok[1].len,
                                  ml->tok[1].p, meta_flag(ml, 'b') != NULL ? " b" : "");
        }
    }
    if (n > 0 && (r->meta_ret = strndup(ret, n)) == NULL) {
        return false;
    }
    return true;
}

/* The key the node holds: the decoded bytes of a base64 key; it must be a text key,
 * as the versioned path speaks the text protocol.  Answers r and returns false if not. */
static bool meta_text_key(struct gw_req *r, const struct meta_line *ml, char *key, uint32_t *nkey)
{
    const struct mc_token *k = &ml->tok[1];
    unsigned char dec[MC_KEY_MAX_LENGTH];
    int n;

    if (k->len > MC_KEY_MAX_LENGTH) {
        gw_req_finish_line(r, "CLIENT_ERROR bad command line format");
        return false;
    }
    if (meta_flag(ml, 'b') == NULL) {
        memcpy(key, k->p, k->len);
        *nkey = k->len;
        return true;
    }
    n = mc_meta_key_decode(k->p, k->len, dec);
    if (n <= 0) {
        gw_req_finish_line(r, "CLIENT_ERROR error decoding key");
        return false;
    }
    for (int i = 0; i < n; i++) {
        if (dec[i] <= ' ' || dec[i] == 0x7f) {
            gw_req_finish_line(r, "SERVER_ERROR a binary key is not supported on a "
                                  "replicating geogate yet");
            return false;
        }
    }
    memcpy(key, dec, (size_t)n);
    *nkey = (uint32_t)n;
    return true;
}

/* A flag token's value (what follows its letter) as a string in num; false when there is
 * none or it is too long to be a number. */
static bool tok_value(const struct mc_token *t, char num[24])
{
    if (t->len < 2 || t->len - 1 >= 24) {
        return false;
    }
    memcpy(num, t->p + 1, t->len - 1);
    num[t->len - 1] = '\0';
    return true;
}

static bool tok_i32(const struct mc_token *t, int32_t *out)
{
    char num[24];

    return tok_value(t, num) && mc_strtol(num, out);
}

static bool tok_u32(const struct mc_token *t, uint32_t *out)
{
    char num[24];

    return tok_value(t, num) && mc_strtoul(num, out);
}

static bool tok_u64(const struct mc_token *t, uint64_t *out)
{
    char num[24];

    return tok_value(t, num) && mc_strtoull(num, out);
}

/* ---- the text twin's reply, in meta words ---- */

void gw_meta_vers_reply(struct gw_req *r)
{
    struct evbuffer *b = r->reply;
    char line[64];
    const char *code = NULL;
    size_t len;
    ev_ssize_t got;
    const char *ret = r->meta_ret != NULL ? r->meta_ret : "";

    if (b == NULL) {
        return;
    }
    got = evbuffer_copyout(b, line, sizeof(line) - 1);
    len = got > 2 ? (size_t)got - 2 : 0;
    if (got <= 2 || evbuffer_get_length(b) != (size_t)got || line[len] != '\r') {
        return; /* not one short line: an error, passed on as it is */
    }
    line[len] = '\0';
    if (strcmp(line, "STORED") == 0 && (r->meta_x & GW_META_X_VIVIFY)) {
        /* ma N made the item on a miss: it holds J; memcached says so even with q */
        const char *j = ret + strlen(ret) + 1;
        evbuffer_drain(b, evbuffer_get_length(b));
        if (r->meta_x & GW_META_X_VALUE) {
            evbuffer_add_printf(b, "VA %zu%s\r\n%s\r\n", strlen(j), ret, j);
        } else {
            evbuffer_add_printf(b, "HD%s\r\n", ret);
        }
        return;
    }
    if (strcmp(line, "STORED") == 0 || strcmp(line, "DELETED") == 0 ||
        strcmp(line, "TOUCHED") == 0) {
        code = "HD";
    } else if (strcmp(line, "NOT_STORED") == 0) {
        code = "NS";
    } else if (strcmp(line, "EXISTS") == 0) {
        code = "EX";
    } else if (strcmp(line, "NOT_FOUND") == 0) {
        code = "NF";
    } else if (len > 0 && strspn(line, "0123456789") == len) {
        code = "HD"; /* incr/decr's new value */
        if (r->meta_x & GW_META_X_VALUE) {
            evbuffer_drain(b, evbuffer_get_length(b));
            if (!(r->meta_x & GW_META_X_QUIET)) { /* memcached holds back ma's VA too */
                evbuffer_add_printf(b, "VA %zu%s\r\n%s\r\n", len, ret, line);
            }
            return;
        }
    } else {
        return; /* CLIENT_ERROR / SERVER_ERROR: as memcached, without return flags */
    }
    evbuffer_drain(b, evbuffer_get_length(b));
    if (strcmp(code, "HD") == 0 && (r->meta_x & GW_META_X_QUIET)) {
        return;
    }
    evbuffer_add_printf(b, "%s%s\r\n", code, ret);
}

/* ---- mg ---- */

struct mg_job {
    struct gw_req *r;
    struct gw_worker *w;
    uint32_t node;
    struct gw_frag frag;
    struct evbuffer *cap;
    bool quiet, want_v, want_f;
    struct gw_touch_result touch; /* T: the touch that goes first */
    size_t n;
    char line[2100]; /* the mg the node gets */
};

/* A miss, with the return flags memcached puts on EN (O, k, b) from the node's reply
 * line rl. */
static void mg_miss(struct mg_job *j, const struct meta_line *rl, struct evbuffer *out)
{
    if (j->quiet) {
        return;
    }
    evbuffer_add(out, "EN", 2);
    for (uint32_t i = rl->first_flag; i < rl->ntok; i++) {
        const struct mc_token *t = &rl->tok[i];
        if (t->p[0] == 'O' || t->p[0] == 'k' || (t->p[0] == 'b' && t->len == 1)) {
            evbuffer_add_printf(out, " %.*s", (int)t->len, t->p);
        }
    }
    evbuffer_add(out, "\r\n", 2);
}

/* The node's reply to our mg, in the client's words, into out. */
static void mg_rewrite(struct mg_job *j, struct evbuffer *reply, struct evbuffer *out)
{
    size_t total = evbuffer_get_length(reply);
    const char *p = (const char *)evbuffer_pullup(reply, -1);
    const char *eol = total > 0 ? memchr(p, '\n', total) : NULL;
    struct meta_line rl;
    uint32_t bytes = 0;
    uint32_t raw_flags = 0;
    struct mc_reply mr;
    struct gw_item_view view;
    size_t llen;

    if (eol == NULL || eol == p || eol[-1] != '\r') {
        evbuffer_add_buffer(out, reply);
        return;
    }
    llen = (size_t)(eol - p) - 1;
    if (llen >= 2 && memcmp(p, "EN", 2) == 0) {
        if (!j->quiet) {
            evbuffer_add_buffer(out, reply); /* memcached's own EN line, flags and all */
        }
        return;
    }
    if (!mc_meta_va_bytes(p, llen, &bytes) || (size_t)(eol - p) + 1 + bytes + 2 > total ||
        !meta_split(&rl, p, llen, false)) {
        evbuffer_add_buffer(out, reply); /* an error line: as the node said it */
        return;
    }
    rl.first_flag = 2; /* "VA <size>" then the flags */
    for (uint32_t i = rl.first_flag; i < rl.ntok; i++) {
        if (rl.tok[i].p[0] == 'f') {
            tok_u32(&rl.tok[i], &raw_flags);
        }
    }
    memset(&mr, 0, sizeof(mr));
    mr.kind = MC_REPLY_VALUE;
    mr.flags = raw_flags;
    mr.bytes = bytes;
    gw_item_view_decode(&view, &mr, (const uint8_t *)eol + 1, bytes);
    if (!view.found ||
        (view.versioned && view.hdr.expiry != 0 && view.hdr.expiry <= (uint32_t)time(NULL))) {
        mg_miss(j, &rl, out);
        return;
    }
    if (j->want_v) {
        evbuffer_add_printf(out, "VA %zu", view.len);
    } else {
        evbuffer_add(out, "HD", 2);
    }
    for (uint32_t i = rl.first_flag; i < rl.ntok; i++) {
        const struct mc_token *t = &rl.tok[i];
        if (t->p[0] == 'f') {
            if (j->want_f) {
                evbuffer_add_printf(out, " f%" PRIu32, view.hdr.client_flags);
            }
        } else if (t->p[0] == 's') {
            evbuffer_add_printf(out, " s%zu", view.len);
        } else {
            evbuffer_add_printf(out, " %.*s", (int)t->len, t->p);
        }
    }
    evbuffer_add(out, "\r\n", 2);
    if (j->want_v) {
        evbuffer_add(out, view.val, view.len);
        evbuffer_add(out, "\r\n", 2);
    }
}

static void mg_cb(struct gw_frag *frag, struct evbuffer *reply, const char *error)
{
    struct mg_job *j = frag->cb_arg;
    struct gw_req *r = j->r;
    struct evbuffer *out;

    r->pending = 0;
    if (reply == NULL) {
        gw_req_finish_line(r, error != NULL ? error : "SERVER_ERROR node failed");
    } else if ((out = gw_req_reply(r)) == NULL) {
        gw_req_finish_line(r, "SERVER_ERROR out of memory");
    } else {
        mg_rewrite(j, reply, out);
        gw_req_finish(r);
    }
    evbuffer_free(j->cap);
    free(j);
}

static void mg_send(struct mg_job *j)
{
    j->frag.cb = mg_cb;
    j->frag.cb_arg = j;
    j->frag.capture = j->cap;
    j->frag.meta = true;
    gw_backend_send(gw_worker_backend(j->w, j->node), &j->frag, j->line, j->n, NULL, 0);
}

/* mg T: the touch (a versioned write, shipped) is done; now the read. */
static void mg_touched(void *arg)
{
    struct mg_job *j = arg;

    free(j->touch.val);
    j->touch.val = NULL;
    if (j->touch.failed) {
        j->r->pending = 0;
        gw_req_finish_line(j->r, j->touch.error);
        evbuffer_free(j->cap);
        free(j);
        return;
    }
    mg_send(j);
}

static void meta_get(struct gw_worker *w, struct gw_req *r, const struct meta_line *ml,
                     uint32_t node)
{
    struct mg_job *j = calloc(1, sizeof(*j));
    const struct mc_token *t;
    char key[MC_KEY_MAX_LENGTH];
    uint32_t nkey = 0;
    int32_t ttl = 0;
    size_t n = 0;
    char f;

    if (j == NULL || (j->cap = evbuffer_new()) == NULL) {
        free(j);
        gw_req_finish_line(r, "SERVER_ERROR out of memory");
        return;
    }
    t = meta_flag(ml, 'T');
    f = meta_refused(ml, "E");
    if (f != 0 || (t != NULL && !tok_i32(t, &ttl))) {
        evbuffer_free(j->cap);
        free(j);
        if (f != 0) {
            refuse_flag(r, f);
        } else {
            gw_req_finish_line(r, "CLIENT_ERROR bad token in command line format");
        }
        return;
    }
    if (t != NULL && !meta_text_key(r, ml, key, &nkey)) {
        evbuffer_free(j->cap);
        free(j);
        return; /* answered */
    }
    j->r = r;
    j->w = w;
    j->node = node;
    j->quiet = meta_flag(ml, 'q') != NULL;
    j->want_v = meta_flag(ml, 'v') != NULL;
    j->want_f = meta_flag(ml, 'f') != NULL;
    n += (size_t)snprintf(j->line + n, sizeof(j->line) - n, "mg %.*s", (int)ml->tok[1].len,
                          ml->tok[1].p);
    for (uint32_t i = ml->first_flag; i < ml->ntok && n < sizeof(j->line) - 16; i++) {
        if (ml->tok[i].p[0] != 'q' && ml->tok[i].p[0] != 'T') {
            n += (size_t)snprintf(j->line + n, sizeof(j->line) - n, " %.*s", (int)ml->tok[i].len,
                                  ml->tok[i].p);
        }
    }
    n += (size_t)snprintf(j->line + n, sizeof(j->line) - n, "%s%s\r\n", j->want_v ? "" : " v",
                          j->want_f ? "" : " f");
    j->n = n;
    r->pending = 1;
    if (t != NULL) {
        /* touch first, so the new expiry reaches the header and ships (as gat's) */
        gw_vop_touch(w, node, key, nkey, ttl, false, &j->touch, mg_touched, j);
        return;
    }
    mg_send(j);
}

/* ---- ma N: autovivify ---- */

struct ma_job {
    struct gw_req *r;
    struct gw_worker *w;
    uint32_t node;
    struct gw_frag frag;
    struct evbuffer *cap;
    struct mc_request m; /* the incr/decr, its key in key[] */
    char key[MC_KEY_MAX_LENGTH];
    int32_t ttl;
    char initial[24]; /* J's digits */
};

/* The read before ma N: a live item is counted (the text twin); a miss makes the item
 * with J (a versioned add, shipped), as memcached's autovivify does.  An add that loses a
 * race with another client's write answers NS (memcached would count it). */
static void ma_read(struct gw_frag *frag, struct evbuffer *reply, const char *error)
{
    struct ma_job *j = frag->cb_arg;
    struct gw_req *r = j->r;
    struct gw_item_view view;
    bool present = false;
    char err[256];

    r->pending = 0;
    if (reply == NULL || gw_gets_one(reply, &view, &present, err, sizeof(err)) != 0) {
        struct gw_client *c = r->barrier ? r->client : NULL;
        const struct gw_req_ops *ops = r->ops; /* r may be freed before the barrier goes */
        r->barrier = false;
        gw_req_finish_line(r, reply == NULL ? (error != NULL ? error : "SERVER_ERROR node failed")
                                            : err);
        if (c != NULL) {
            ops->barrier_release(c);
        }
    } else if (present && view.found) {
        gw_vop_keyed(j->w, r, j->node, &j->m, -1);
    } else {
        struct gw_store_pending st;
        struct evbuffer *in = evbuffer_new();
        size_t n = strlen(j->initial);
        memset(&st, 0, sizeof(st));
        st.cmd = MC_CMD_ADD;
        st.node = j->node;
        st.vlen = (uint32_t)n + 2;
        st.remote = -1;
        if (in == NULL || evbuffer_add(in, j->initial, n) != 0 ||
            evbuffer_add(in, "\r\n", 2) != 0) {
            gw_req_finish_line(r, "SERVER_ERROR out of memory");
        } else {
            r->meta_x |= GW_META_X_VIVIFY;
            gw_vop_store(j->w, r, &st, j->m.key, j->m.nkey, 0, j->ttl, 0, in, -1);
        }
        if (in != NULL) {
            evbuffer_free(in);
        }
    }
    evbuffer_free(j->cap);
    free(j);
}

static void meta_vivify(struct gw_worker *w, struct gw_req *r, uint32_t node,
                        const struct mc_request *m, int32_t ttl, uint64_t initial)
{
    struct ma_job *j = calloc(1, sizeof(*j));
    char line[MC_KEY_MAX_LENGTH + 16];
    int n;
    size_t rl = r->meta_ret != NULL ? strlen(r->meta_ret) : 0;
    char *ret;

    if (j == NULL || (j->cap = evbuffer_new()) == NULL) {
        free(j);
        gw_req_finish_line(r, "SERVER_ERROR out of memory");
        return;
    }
    snprintf(j->initial, sizeof(j->initial), "%" PRIu64, initial);
    /* meta_ret becomes "<return flags>\0<J>" for gw_meta_vers_reply */
    ret = malloc(rl + 1 + strlen(j->initial) + 1);
    if (ret == NULL) {
        evbuffer_free(j->cap);
        free(j);
        gw_req_finish_line(r, "SERVER_ERROR out of memory");
        return;
    }
    memcpy(ret, r->meta_ret != NULL ? r->meta_ret : "", rl);
    ret[rl] = '\0';
    memcpy(ret + rl + 1, j->initial, strlen(j->initial) + 1);
    free(r->meta_ret);
    r->meta_ret = ret;
    j->r = r;
    j->w = w;
    j->node = node;
    j->ttl = ttl;
    j->m = *m;
    memcpy(j->key, m->key, m->nkey);
    j->m.key = j->key;
    n = snprintf(line, sizeof(line), "gets %.*s\r\n", (int)m->nkey, m->key);
    j->frag.cb = ma_read;
    j->frag.cb_arg = j;
    j->frag.capture = j->cap;
    j->frag.cb_values = true;
    r->pending = 1;
    /* The client's next command waits (a pipelined ma N of the same key must see the item
     * this one makes); vop_finish lets it go. */
    if (!r->barrier && r->client != NULL) {
        r->barrier = true;
        r->ops->barrier_hold(r->client);
    }
    gw_backend_send(gw_worker_backend(w, node), &j->frag, line, (size_t)n, NULL, 0);
}

/* ---- the entry points ---- */

void gw_meta_vers_keyed(struct gw_worker *w, struct gw_req *r, const char *line, size_t len,
                        enum mc_cmd cmd, uint32_t node, int remote_peer)
{
    struct meta_line ml;
    struct mc_request m;
    char key[MC_KEY_MAX_LENGTH];
    const struct mc_token *t;
    char f;

    if (!meta_split(&ml, line, len, false)) {
        gw_req_finish_line(r, "CLIENT_ERROR bad command line format");
        return;
    }
    if (cmd == MC_CMD_MG || cmd == MC_CMD_ME) {
        if (remote_peer >= 0) {
            gw_req_finish_line(r, "SERVER_ERROR the key's node is down; meta reads are not "
                                  "failed over yet");
        } else if (cmd == MC_CMD_ME) {
            r->frag.meta = true;
            r->pending = 1;
            gw_backend_send_bytes(gw_worker_backend(w, node), &r->frag, line, len, "\r\n", 2);
        } else {
            meta_get(w, r, &ml, node);
        }
        return;
    }
    if ((f = meta_refused(&ml, cmd == MC_CMD_MD ? "CxE" : "Ect")) != 0) {
        refuse_flag(r, f);
        return;
    }
    if (cmd == MC_CMD_MD && meta_flag(&ml, 'I') != NULL) {
        int32_t ttl = 0;
        bool has_ttl = (t = meta_flag(&ml, 'T')) != NULL;
        if (has_ttl && !tok_i32(t, &ttl)) {
            gw_req_finish_line(r, "CLIENT_ERROR bad token in command line format");
            return;
        }
        if (remote_peer >= 0) {
            gw_req_finish_line(r, "SERVER_ERROR the key's node is down; an invalidation is "
                                  "not failed over yet");
            return;
        }
        if (!meta_text_key(r, &ml, key, &m.nkey)) {
            return; /* answered */
        }
        if (!meta_keep_ret(r, &ml, 0)) {
            gw_req_finish_line(r, "SERVER_ERROR out of memory");
            return;
        }
        gw_vop_invalidate(w, r, node, key, m.nkey, has_ttl, ttl);
        return;
    }
    memset(&m, 0, sizeof(m));
    m.cmd = cmd == MC_CMD_MD ? MC_CMD_DELETE : MC_CMD_INCR;
    m.delta = 1;
    if (cmd == MC_CMD_MA) {
        if ((t = meta_flag(&ml, 'M')) != NULL && t->len == 2 && strchr("Dd-", t->p[1]) != NULL) {
            m.cmd = MC_CMD_DECR;
        } else if (t != NULL && (t->len != 2 || strchr("Ii+", t->p[1]) == NULL)) {
            gw_req_finish_line(r, "CLIENT_ERROR invalid mode for ma M token");
            return;
        }
        if ((t = meta_flag(&ml, 'D')) != NULL && !tok_u64(t, &m.delta)) {
            gw_req_finish_line(r, "CLIENT_ERROR bad token in command line format");
            return;
        }
    }
    if (!meta_text_key(r, &ml, key, &m.nkey)) {
        return;
    }
    m.key = key;
    if (!meta_keep_ret(r, &ml, cmd == MC_CMD_MA && meta_flag(&ml, 'v') ? GW_META_X_VALUE : 0)) {
        gw_req_finish_line(r, "SERVER_ERROR out of memory");
        return;
    }
    if (cmd == MC_CMD_MA && (t = meta_flag(&ml, 'N')) != NULL) {
        int32_t ttl = 0;
        uint64_t initial = 0;
        const struct mc_token *jt = meta_flag(&ml, 'J');
        if (!tok_i32(t, &ttl) || (jt != NULL && !tok_u64(jt, &initial))) {
            gw_req_finish_line(r, "CLIENT_ERROR bad token in command line format");
            return;
        }
        if (remote_peer < 0) {
            meta_vivify(w, r, node, &m, ttl, initial);
            return;
        }
        /* failed over: counted at the peer as its text twin; no autovivify there yet
         * (docs/META.md) */
    }
    gw_vop_keyed(w, r, node, &m, remote_peer);
}

void gw_meta_vers_store(struct gw_worker *w, struct gw_req *r, struct gw_store_pending *st,
                        struct evbuffer *in)
{
    struct meta_line ml;
    const struct mc_token *t;
    char key[MC_KEY_MAX_LENGTH];
    uint32_t nkey = 0;
    int32_t exptime = 0;
    uint64_t cas = 0;
    char f;
    struct evbuffer_ptr pos;
    char last2[2] = {0, 0};

    evbuffer_ptr_set(in, &pos, st->vlen - 2, EVBUFFER_PTR_SET);
    evbuffer_copyout_from(in, &pos, last2, 2);
    if (!mc_data_block_ok(last2)) {
        evbuffer_drain(in, st->vlen);
        gw_req_finish_line(r, "CLIENT_ERROR bad data chunk");
        return;
    }
    if (!meta_split(&ml, st->meta_line, st->meta_len - 2, true)) {
        evbuffer_drain(in, st->vlen);
        gw_req_finish_line(r, "CLIENT_ERROR bad command line format");
        return;
    }
    if ((f = meta_refused(&ml, "INc")) != 0) {
        evbuffer_drain(in, st->vlen);
        refuse_flag(r, f);
        return;
    }
    st->cmd = MC_CMD_SET;
    if ((t = meta_flag(&ml, 'M')) != NULL) {
        static const char modes[] = "SsEeAaPpRr";
        static const enum mc_cmd cmds[] = {
            MC_CMD_SET,    MC_CMD_SET,     MC_CMD_ADD,     MC_CMD_ADD,     MC_CMD_APPEND,
            MC_CMD_APPEND, MC_CMD_PREPEND, MC_CMD_PREPEND, MC_CMD_REPLACE, MC_CMD_REPLACE};
        const char *at = t->len == 2 ? strchr(modes, t->p[1]) : NULL;
        if (at == NULL || t->p[1] == '\0') {
            evbuffer_drain(in, st->vlen);
            gw_req_finish_line(r, "CLIENT_ERROR invalid mode for ms M token");
            return;
        }
        st->cmd = cmds[at - modes];
    }
    st->flags = 0;
    if ((t = meta_flag(&ml, 'F')) != NULL && !tok_u32(t, &st->flags)) {
        goto bad_token;
    }
    if ((t = meta_flag(&ml, 'T')) != NULL && !tok_i32(t, &exptime)) {
        goto bad_token;
    }
    if ((t = meta_flag(&ml, 'C')) != NULL) {
        if (!tok_u64(t, &cas)) {
            goto bad_token;
        }
        if (st->cmd == MC_CMD_SET) {
            st->cmd = MC_CMD_CAS;
        }
    }
    st->client_version = 0;
    if ((t = meta_flag(&ml, 'E')) != NULL) {
        /* The client's own version (docs/REPLICATION.md, "Client versions"): the version's
         * clock part, so E writes order among themselves by token and against clock
         * writes by time; never ahead of our clock, which peers would refuse. */
        if (!tok_u64(t, &st->client_version) || st->client_version == 0) {
            goto bad_token;
        }
        if (st->client_version > wan_hlc_now(&w->srv->hlc)) {
            evbuffer_drain(in, st->vlen);
            gw_req_finish_line(r, "CLIENT_ERROR version E is ahead of the gateway's clock");
            return;
        }
    }
    if (!meta_text_key(r, &ml, key, &nkey)) {
        evbuffer_drain(in, st->vlen);
        return;
    }
    if (!meta_keep_ret(r, &ml, 0)) {
        evbuffer_drain(in, st->vlen);
        gw_req_finish_line(r, "SERVER_ERROR out of memory");
        return;
    }
    r->cmd = st->cmd;
    st->exptime = exptime;
    st->cas_unique = cas;
    st->nkey = (uint16_t)nkey;
    memcpy(st->key, key, nkey);
    gw_vop_store(w, r, st, key, nkey, st->flags, exptime, cas, in, st->remote);
    return;

bad_token:
    evbuffer_drain(in, st->vlen);
    gw_req_finish_line(r, "CLIENT_ERROR bad token in command line format");
}
