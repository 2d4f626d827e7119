/*
 * apply — see apply.h.
 */
#include "gateway/apply.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "gateway/backend.h"
#include "gateway/config.h"
#include "gateway/log.h"
#include "gateway/pool.h"
#include "gateway/repl.h"
#include "gateway/server.h"
#include "gateway/vop.h"
#include "gateway/worker.h"
#include "wan/grpc_server.h"
#include "wan/version.h"

#define APPLY_MAX_TRIES 32
#define APPLY_NEWER_MAX 1024 /* newer items carried back in one ack; the rest are spooled */
#define APPLY_INLINE_VALUE 2048 /* values up to this go out with their command line */
#define APPLY_GETS_KEYS 64      /* keys per batched `gets` to one node */

struct apply_batch {
    struct gw_worker *w;
    Geogate__Wan__V1__ShipRequest *req;
    uint32_t pending;
    uint64_t applied;
    uint64_t rejected;
    bool failed;
    bool collect_newer;
    Geogate__Wan__V1__Mutation **newer;
    size_t n_newer;
    gw_apply_done_fn done;
    void *arg;
};

struct apply_op {
    struct apply_batch *b;
    const Geogate__Wan__V1__Mutation *m;
    struct wan_item_header nh; /* the incoming item's header */
    uint32_t node;
    int tries;
    bool writing;
    struct gw_frag frag;
    struct evbuffer *cap;
    struct gw_cur cur;
};

/* One `gets` of many keys to one node: the current items of a batch's ops there. */
struct apply_gets {
    struct gw_frag frag;
    struct evbuffer *cap;
    uint32_t node;
    uint32_t n;
    struct apply_op *ops[APPLY_GETS_KEYS];
};

static void op_cb(struct gw_frag *frag, struct evbuffer *reply, const char *error);

static void batch_op_done(struct apply_batch *b)
{
    if (--b->pending > 0) {
        return;
    }
    b->done(b->arg, b->applied, b->rejected, b->failed, b->newer, b->n_newer);
    for (size_t i = 0; i < b->n_newer; i++) {
        free(b->newer[i]);
    }
    free(b->newer);
    geogate__wan__v1__ship_request__free_unpacked(b->req, NULL);
    free(b);
}

static void op_free(struct apply_op *op)
{
    struct apply_batch *b = op->b;

    gw_cur_release(&op->cur);
    if (op->cap != NULL) {
        evbuffer_free(op->cap);
    }
    free(op);
    batch_op_done(b);
}

static void op_send(struct apply_op *op, const char *line, size_t len, struct evbuffer *data,
                    bool values)
{
    memset(&op->frag, 0, sizeof(op->frag));
    op->frag.cb = op_cb;
    op->frag.cb_arg = op;
    if (op->cap == NULL && (op->cap = evbuffer_new()) == NULL) {
        op_cb(&op->frag, NULL, "SERVER_ERROR out of memory");
        return;
    }
    op->frag.capture = op->cap;
    op->frag.cb_values = values;
    evbuffer_drain(op->cap, evbuffer_get_length(op->cap));
    gw_backend_send(gw_worker_backend(op->b->w, op->node), &op->frag, line, len, data,
                    data != NULL ? evbuffer_get_length(data) : 0);
}

static void op_gets(struct apply_op *op)
{
    char line[MC_KEY_MAX_LENGTH + 16];
    int n = snprintf(line, sizeof(line), "gets %.*s\r\n", (int)op->m->key.len,
                     (const char *)op->m->key.data);

    op->writing = false;
    op_send(op, line, (size_t)n, NULL, true);
}

/* Write the incoming item over whatever the gets found (cas), or into nothing (add). */
static void op_write(struct apply_op *op)
{
    struct gw_server *srv = op->b->w->srv;
    const Geogate__Wan__V1__Mutation *m = op->m;
    char cmd[MC_KEY_MAX_LENGTH + 96 + WAN_ITEM_HEADER_SIZE + APPLY_INLINE_VALUE + 2];
    size_t vlen = op->nh.tombstone ? 0 : m->value.len;
    long exptime = op->nh.tombstone ? (long)srv->tombstone_ttl_s : (long)op->nh.expiry;
    struct evbuffer *data = NULL;
    size_t n;

    if (op->cur.present) {
        n = (size_t)snprintf(cmd, MC_KEY_MAX_LENGTH + 96, "cas %.*s %u %ld %zu %" PRIu64 "\r\n",
                             (int)m->key.len, (const char *)m->key.data, WAN_ITEM_FLAGS_MARKER,
                             exptime, WAN_ITEM_HEADER_SIZE + vlen, op->cur.cas);
    } else {
        n = (size_t)snprintf(cmd, MC_KEY_MAX_LENGTH + 96, "add %.*s %u %ld %zu\r\n",
                             (int)m->key.len, (const char *)m->key.data, WAN_ITEM_FLAGS_MARKER,
                             exptime, WAN_ITEM_HEADER_SIZE + vlen);
    }
    if (vlen <= APPLY_INLINE_VALUE) {
        /* A small item goes out as one piece with its command line. */
        wan_item_header_encode(&op->nh, (uint8_t *)cmd + n);
        n += WAN_ITEM_HEADER_SIZE;
        if (vlen > 0) {
            memcpy(cmd + n, m->value.data, vlen);
            n += vlen;
        }
        memcpy(cmd + n, "\r\n", 2);
        n += 2;
        op->writing = true;
        op_send(op, cmd, n, NULL, false);
        return;
    }
    data = evbuffer_new();
    if (data == NULL) {
        op->b->rejected++;
        op_free(op);
        return;
    }
    {
        uint8_t hdr[WAN_ITEM_HEADER_SIZE];
        wan_item_header_encode(&op->nh, hdr);
        evbuffer_add(data, hdr, sizeof(hdr));
    }
    evbuffer_add(data, m->value.data, vlen);
    evbuffer_add(data, "\r\n", 2);
    op->writing = true;
    op_send(op, cmd, n, data, false);
    evbuffer_free(data);
}

static bool reply_is(struct evbuffer *reply, const char *word)
{
    size_t n = strlen(word);
    char buf[32];

    if (evbuffer_get_length(reply) != n + 2 || n + 2 > sizeof(buf)) {
        return false;
    }
    evbuffer_copyout(reply, buf, n + 2);
    return memcmp(buf, word, n) == 0;
}

/* Add it to the batch's newer items (one allocation holds the Mutation and its bytes).
 * Returns false when the batch does not collect them or is full. */
static bool carry_back(struct apply_batch *b, const struct gw_item *it)
{
    Geogate__Wan__V1__Mutation *m;
    uint8_t *p;

    if (!b->collect_newer || b->n_newer >= APPLY_NEWER_MAX) {
        return false;
    }
    if (b->newer == NULL) {
        b->newer = calloc(APPLY_NEWER_MAX, sizeof(*b->newer));
        if (b->newer == NULL) {
            return false;
        }
    }
    m = malloc(sizeof(*m) + it->nkey + it->vlen + 1);
    if (m == NULL) {
        return false;
    }
    geogate__wan__v1__mutation__init(m);
    p = (uint8_t *)(m + 1);
    memcpy(p, it->key, it->nkey);
    m->key.data = p;
    m->key.len = it->nkey;
    if (!it->hdr->tombstone && it->vlen > 0) {
        memcpy(p + it->nkey, it->value, it->vlen);
        m->value.data = p + it->nkey;
        m->value.len = it->vlen;
    }
    m->hlc = it->hdr->version.hlc;
    m->site_id = it->hdr->version.site_id;
    m->gateway_id = it->hdr->version.gateway_id;
    m->flags = it->hdr->client_flags;
    m->expiry = it->hdr->expiry;
    m->tombstone = it->hdr->tombstone;
    b->newer[b->n_newer++] = m;
    return true;
}

/* The gets is in: newest wins. */
static void op_decide(struct apply_op *op)
{
    struct gw_worker *w = op->b->w;
    struct wan_version local = {0, 0, 0};
    int cmp;

    if (op->cur.present && op->cur.versioned) {
        local = op->cur.hdr.version;
    }
    cmp = op->cur.present ? wan_version_cmp(&op->nh.version, &local) : 1;
    if (cmp > 0) {
        op_write(op);
        return;
    }
    op->b->rejected++;
    if (cmp < 0 && op->cur.versioned) {
        /* We hold something newer than what the peer sent: it travels back, so the
         * peer converges on it even if a blind write there overwrote it.  In the ack,
         * to the sender only, when the batch came on a stream; else via the spool. */
        struct gw_item it = {
            .key = (const char *)op->m->key.data,
            .nkey = (uint32_t)op->m->key.len,
            .hdr = &op->cur.hdr,
            .value = op->cur.val,
            .vlen = op->cur.len,
        };
        if (!carry_back(op->b, &it)) {
            gw_repl_ship_local(w, &it);
        }
    }
    op_free(op);
}

static void op_cb(struct gw_frag *frag, struct evbuffer *reply, const char *error)
{
    struct apply_op *op = frag->cb_arg;
    char err[256];

    if (error != NULL) {
        /* The node failed: the batch is not acked as applied for this one; the peer
         * will ship it again after a reconnect only if we fail the stream, so count it
         * and log it.  (A down node means the site is failing over anyway.) */
        log_warn("apply of key %.*s failed: %s", (int)op->m->key.len,
                 (const char *)op->m->key.data, error);
        op->b->failed = true; /* not acked: the peer ships it again */
        op_free(op);
        return;
    }
    if (!op->writing) {
        if (gw_cur_parse(reply, &op->cur, err, sizeof(err)) != 0) {
            log_warn("apply of key %.*s: %s", (int)op->m->key.len,
                     (const char *)op->m->key.data, err);
            op->b->rejected++;
            op_free(op);
            return;
        }
        op_decide(op);
        return;
    }
    if (reply_is(reply, "STORED")) {
        op->b->applied++;
        op_free(op);
        return;
    }
    if ((reply_is(reply, "EXISTS") || reply_is(reply, "NOT_FOUND") ||
         reply_is(reply, "NOT_STORED")) &&
        ++op->tries < APPLY_MAX_TRIES) {
        op_gets(op); /* a local write landed between our gets and our write */
        return;
    }
    {
        size_t n = evbuffer_get_length(reply);
        char text[128];
        n = n < sizeof(text) - 1 ? n : sizeof(text) - 1;
        evbuffer_copyout(reply, text, n);
        text[n] = '\0';
        text[strcspn(text, "\r\n")] = '\0';
        log_warn("apply of key %.*s refused by the node: %s", (int)op->m->key.len,
                 (const char *)op->m->key.data, text);
    }
    op->b->rejected++;
    op_free(op);
}

/* ---- the first read of a batch's keys: one `gets` per node for up to
 * APPLY_GETS_KEYS of them, instead of one round trip to memcached per key ---- */

static bool op_key_is(const struct apply_op *op, const struct mc_reply *mr)
{
    return op->m->key.len == mr->nkey && memcmp(op->m->key.data, mr->key, mr->nkey) == 0;
}

static void gets_cb(struct gw_frag *frag, struct evbuffer *reply, const char *error)
{
    struct apply_gets *g = frag->cb_arg;
    const char *why = error;
    uint32_t k = 0;
    char err[256];

    if (error == NULL) {
        size_t len = evbuffer_get_length(reply);
        const char *p = (const char *)evbuffer_pullup(reply, (ssize_t)len);
        size_t pos = 0;

        why = "SERVER_ERROR unexpected reply from node";
        while (pos < len) {
            const char *line = p + pos;
            const char *eol = memchr(line, '\n', len - pos);
            struct mc_reply mr;

            if (eol == NULL || eol == line || eol[-1] != '\r') {
                break;
            }
            if (eol - line == 4 && memcmp(line, "END", 3) == 0) {
                why = NULL;
                break;
            }
            mc_reply_parse(line, (size_t)(eol - line - 1), &mr);
            if (mr.kind != MC_REPLY_VALUE || (size_t)(eol + 1 - p) + mr.bytes + 2 > len) {
                break;
            }
            /* memcached answers in the order asked: keys before this one are absent */
            while (k < g->n && !op_key_is(g->ops[k], &mr)) {
                op_decide(g->ops[k++]);
            }
            if (k == g->n) {
                break;
            }
            if (gw_cur_from_value(&g->ops[k]->cur, &mr, (const uint8_t *)eol + 1, mr.bytes, err,
                                  sizeof(err)) != 0) {
                log_warn("apply of key %.*s: %s", (int)mr.nkey, mr.key, err);
                g->ops[k]->b->rejected++;
                op_free(g->ops[k++]);
            } else {
                op_decide(g->ops[k++]);
            }
            pos = (size_t)(eol + 1 - p) + mr.bytes + 2;
        }
    }
    for (; k < g->n; k++) {
        struct apply_op *op = g->ops[k];
        if (why == NULL) {
            op_decide(op); /* after END: absent */
        } else if (error != NULL) {
            log_warn("apply of key %.*s failed: %s", (int)op->m->key.len,
                     (const char *)op->m->key.data, error);
            op->b->failed = true; /* not acked: the peer ships it again */
            op_free(op);
        } else {
            log_warn("apply of key %.*s: %s", (int)op->m->key.len,
                     (const char *)op->m->key.data, why);
            op->b->rejected++;
            op_free(op);
        }
    }
    if (g->cap != NULL) {
        evbuffer_free(g->cap);
    }
    free(g);
}

static void gets_send(struct gw_worker *w, struct apply_gets *g)
{
    size_t need = 8;
    char *line;
    size_t n = 0;

    for (uint32_t i = 0; i < g->n; i++) {
        need += g->ops[i]->m->key.len + 1;
    }
    g->frag.cb = gets_cb;
    g->frag.cb_arg = g;
    line = malloc(need);
    if (line == NULL || (g->cap = evbuffer_new()) == NULL) {
        free(line);
        gets_cb(&g->frag, NULL, "SERVER_ERROR out of memory");
        return;
    }
    memcpy(line, "gets", 4);
    n = 4;
    for (uint32_t i = 0; i < g->n; i++) {
        line[n++] = ' ';
        memcpy(line + n, g->ops[i]->m->key.data, g->ops[i]->m->key.len);
        n += g->ops[i]->m->key.len;
    }
    line[n++] = '\r';
    line[n++] = '\n';
    g->frag.capture = g->cap;
    g->frag.cb_values = true;
    gw_backend_send(gw_worker_backend(w, g->node), &g->frag, line, n, NULL, 0);
    free(line);
}

/* A peer's flush_all (replication.flush: true): flush every local node, as memcached
 * does — everything goes, whatever its version. */
struct flush_op {
    struct apply_batch *b;
    struct gw_frag frag;
    struct evbuffer *cap;
};

static void flush_cb(struct gw_frag *frag, struct evbuffer *reply, const char *error)
{
    struct flush_op *f = frag->cb_arg;

    if (error == NULL && reply_is(reply, "OK")) {
        f->b->applied++;
    } else {
        f->b->failed = true;
        log_warn("a peer's flush_all failed on a local node: %s", error ? error : "not OK");
    }
    evbuffer_free(f->cap);
    batch_op_done(f->b);
    free(f);
}

static void apply_flush(struct apply_batch *b, const Geogate__Wan__V1__Mutation *m, uint32_t now)
{
    struct gw_worker *w = b->w;
    char line[48];
    int n;

    if (!w->srv->cfg->replication.flush) {
        b->rejected++; /* this site does not take flushes from others */
        return;
    }
    if (m->expiry > now) {
        n = snprintf(line, sizeof(line), "flush_all %u\r\n", m->expiry - now);
    } else {
        n = snprintf(line, sizeof(line), "flush_all\r\n");
    }
    log_info("peer %s flushed its cache: flushing ours", b->req->origin_site);
    for (uint32_t i = 0; i < w->pool->nnodes; i++) {
        struct flush_op *f = calloc(1, sizeof(*f));
        if (f == NULL || (f->cap = evbuffer_new()) == NULL) {
            free(f);
            b->rejected++;
            continue;
        }
        f->b = b;
        f->frag.cb = flush_cb;
        f->frag.cb_arg = f;
        f->frag.capture = f->cap;
        b->pending++;
        gw_backend_send(gw_worker_backend(w, i), &f->frag, line, (size_t)n, NULL, 0);
    }
}

/* Keep only the newest mutation of each key (sort by key, then version). */
static int cmp_mut(const void *a, const void *b)
{
    const Geogate__Wan__V1__Mutation *x = *(Geogate__Wan__V1__Mutation *const *)a;
    const Geogate__Wan__V1__Mutation *y = *(Geogate__Wan__V1__Mutation *const *)b;
    size_t n = x->key.len < y->key.len ? x->key.len : y->key.len;
    int c = memcmp(x->key.data, y->key.data, n);

    if (c != 0) {
        return c;
    }
    if (x->key.len != y->key.len) {
        return x->key.len < y->key.len ? -1 : 1;
    }
    if (x->hlc != y->hlc) {
        return x->hlc > y->hlc ? -1 : 1; /* newest first */
    }
    if (x->site_id != y->site_id) {
        return x->site_id > y->site_id ? -1 : 1;
    }
    return x->gateway_id > y->gateway_id ? -1 : (x->gateway_id < y->gateway_id ? 1 : 0);
}

void gw_apply_batch(struct gw_worker *w, Geogate__Wan__V1__ShipRequest *req,
                    bool collect_newer, gw_apply_done_fn done, void *arg)
{
    struct gw_server *srv = w->srv;
    struct apply_batch *b = calloc(1, sizeof(*b));
    uint32_t origin = wan_site_id(req->origin_site);
    uint32_t now = (uint32_t)time(NULL);
    Geogate__Wan__V1__Mutation **ms = NULL;
    size_t n = req->n_mutations;
    struct apply_gets **gets = calloc(w->pool->nnodes, sizeof(*gets));

    if (b == NULL) {
        free(gets);
        done(arg, 0, n, true, NULL, 0);
        geogate__wan__v1__ship_request__free_unpacked(req, NULL);
        return;
    }
    b->collect_newer = collect_newer;
    b->w = w;
    b->req = req;
    b->done = done;
    b->arg = arg;
    b->pending = 1; /* held until every op is started */
    if (n > 0) {
        ms = malloc(n * sizeof(*ms));
        if (ms == NULL) {
            free(gets);
            b->rejected = n;
            batch_op_done(b);
            return;
        }
        memcpy(ms, req->mutations, n * sizeof(*ms));
        qsort(ms, n, sizeof(*ms), cmp_mut);
    }
    for (size_t i = 0; i < n; i++) {
        const Geogate__Wan__V1__Mutation *m = ms[i];
        struct apply_op *op;
        uint64_t seen;

        if (i > 0 && ms[i - 1]->key.len == m->key.len &&
            memcmp(ms[i - 1]->key.data, m->key.data, m->key.len) == 0) {
            b->rejected++; /* an older version of a key this batch also carries */
            continue;
        }
        if (m->flush) {
            apply_flush(b, m, now);
            continue;
        }
        if (m->key.len == 0 || m->key.len > MC_KEY_MAX_LENGTH ||
            memchr(m->key.data, ' ', m->key.len) != NULL ||
            memchr(m->key.data, '\n', m->key.len) != NULL ||
            memchr(m->key.data, '\r', m->key.len) != NULL ||
            memchr(m->key.data, '\0', m->key.len) != NULL) {
            log_warn("peer %s shipped an invalid key; ignored", req->origin_site);
            b->rejected++;
            continue;
        }
        op = calloc(1, sizeof(*op));
        if (op == NULL) {
            b->rejected++;
            continue;
        }
        op->b = b;
        op->m = m;
        op->nh.version.hlc = m->hlc;
        op->nh.version.site_id = m->site_id != 0 ? m->site_id : origin;
        op->nh.version.gateway_id =
            (uint16_t)(m->site_id != 0 ? m->gateway_id : req->gateway_id);
        op->nh.client_flags = m->flags;
        op->nh.expiry = m->expiry;
        op->nh.tombstone = m->tombstone;
        if (!m->tombstone && m->expiry != 0 && m->expiry <= now) {
            /* Expired at its origin: absent there, so absent here too. */
            op->nh.tombstone = true;
        }
        wan_hlc_observe(&srv->hlc, m->hlc, &seen);
        op->node = gw_pool_route(w->pool, (const char *)m->key.data, (uint32_t)m->key.len);
        b->pending++;
        if (gets == NULL) {
            op_gets(op); /* out of memory for the grouping: one key at a time */
            continue;
        }
        if (gets[op->node] == NULL && (gets[op->node] = calloc(1, sizeof(**gets))) == NULL) {
            op_gets(op);
            continue;
        }
        gets[op->node]->node = op->node;
        gets[op->node]->ops[gets[op->node]->n++] = op;
        if (gets[op->node]->n == APPLY_GETS_KEYS) {
            gets_send(w, gets[op->node]);
            gets[op->node] = NULL;
        }
    }
    for (uint32_t i = 0; gets != NULL && i < w->pool->nnodes; i++) {
        if (gets[i] != NULL) {
            gets_send(w, gets[i]);
        }
    }
    free(gets);
    free(ms);
    batch_op_done(b);
}

static void local_item_done(void *arg, uint64_t applied, uint64_t rejected, bool failed,
                            Geogate__Wan__V1__Mutation **newer, size_t n_newer)
{
    (void)arg;
    (void)applied;
    (void)rejected;
    (void)failed;
    (void)newer;
    (void)n_newer;
}

void gw_apply_local_item(struct gw_worker *w, const char *key, uint32_t nkey,
                         const struct wan_item_header *hdr, const uint8_t *value, size_t vlen)
{
    Geogate__Wan__V1__ShipRequest req = GEOGATE__WAN__V1__SHIP_REQUEST__INIT;
    Geogate__Wan__V1__Mutation m = GEOGATE__WAN__V1__MUTATION__INIT;
    Geogate__Wan__V1__Mutation *mp = &m;
    Geogate__Wan__V1__ShipRequest *copy;
    uint8_t *buf;
    size_t len;

    m.key.data = (uint8_t *)key;
    m.key.len = nkey;
    if (!hdr->tombstone) {
        m.value.data = (uint8_t *)value;
        m.value.len = vlen;
    }
    m.hlc = hdr->version.hlc;
    m.site_id = hdr->version.site_id;
    m.gateway_id = hdr->version.gateway_id;
    m.flags = hdr->client_flags;
    m.expiry = hdr->expiry;
    m.tombstone = hdr->tombstone;
    req.origin_site = w->srv->cfg->site;
    req.n_mutations = 1;
    req.mutations = &mp;
    len = geogate__wan__v1__ship_request__get_packed_size(&req);
    buf = malloc(len);
    if (buf == NULL) {
        return;
    }
    geogate__wan__v1__ship_request__pack(&req, buf);
    copy = geogate__wan__v1__ship_request__unpack(NULL, len, buf);
    free(buf);
    if (copy != NULL) {
        gw_apply_batch(w, copy, false, local_item_done, NULL);
    }
}

/* ---- remote reads ---- */

struct read_job {
    struct wan_grpc_read_call *call;
    Geogate__Wan__V1__ReadRequest *req;
    Geogate__Wan__V1__ReadResponse resp;
    Geogate__Wan__V1__ReadItem *items;
    Geogate__Wan__V1__ReadItem **itemp;
    Geogate__Wan__V1__Mutation *muts;
    struct gw_cur *curs;
    struct gw_frag *frags;
    struct evbuffer **caps;
    uint32_t pending;
};

static void read_job_free(struct read_job *j)
{
    free(j->items);
    free(j->itemp);
    free(j->muts);
    free(j->curs);
    free(j->frags);
    free(j->caps);
    free(j);
}

static void read_job_done(struct read_job *j)
{
    if (--j->pending > 0) {
        return;
    }
    wan_grpc_server_read_reply(j->call, &j->resp);
    for (size_t i = 0; i < j->req->n_keys; i++) {
        gw_cur_release(&j->curs[i]);
        if (j->caps[i] != NULL) {
            evbuffer_free(j->caps[i]);
        }
    }
    geogate__wan__v1__read_request__free_unpacked(j->req, NULL);
    read_job_free(j);
}

static void read_cb(struct gw_frag *frag, struct evbuffer *reply, const char *error)
{
    struct read_job *j = frag->cb_arg;
    size_t i = (size_t)(frag - j->frags);
    char err[128];

    if (error == NULL && gw_cur_parse(reply, &j->curs[i], err, sizeof(err)) == 0 &&
        j->curs[i].present) {
        struct gw_cur *c = &j->curs[i];
        Geogate__Wan__V1__Mutation *m = &j->muts[i];
        j->items[i].found = c->found;
        m->value.data = c->val;
        m->value.len = c->found ? c->len : 0;
        m->hlc = c->hdr.version.hlc;
        m->site_id = c->hdr.version.site_id;
        m->gateway_id = c->hdr.version.gateway_id;
        m->flags = c->hdr.client_flags;
        m->expiry = c->hdr.expiry;
        m->tombstone = c->hdr.tombstone;
        j->items[i].item = m;
    }
    read_job_done(j);
}

void gw_apply_read(struct gw_worker *w, Geogate__Wan__V1__ReadRequest *req,
                   struct wan_grpc_read_call *call)
{
    struct read_job *j = calloc(1, sizeof(*j));
    size_t n = req->n_keys;

    if (j == NULL) {
        goto oom;
    }
    j->call = call;
    j->req = req;
    j->items = calloc(n ? n : 1, sizeof(*j->items));
    j->itemp = calloc(n ? n : 1, sizeof(*j->itemp));
    j->muts = calloc(n ? n : 1, sizeof(*j->muts));
    j->curs = calloc(n ? n : 1, sizeof(*j->curs));
    j->frags = calloc(n ? n : 1, sizeof(*j->frags));
    j->caps = calloc(n ? n : 1, sizeof(*j->caps));
    if (j->items == NULL || j->itemp == NULL || j->muts == NULL || j->curs == NULL ||
        j->frags == NULL || j->caps == NULL) {
        goto oom_job;
    }
    geogate__wan__v1__read_response__init(&j->resp);
    j->resp.n_items = n;
    j->resp.items = j->itemp;
    j->pending = 1;
    for (size_t i = 0; i < n; i++) {
        char line[MC_KEY_MAX_LENGTH + 16];
        int len;
        geogate__wan__v1__read_item__init(&j->items[i]);
        geogate__wan__v1__mutation__init(&j->muts[i]);
        j->muts[i].key = req->keys[i];
        j->itemp[i] = &j->items[i];
        if (req->keys[i].len == 0 || req->keys[i].len > MC_KEY_MAX_LENGTH ||
            memchr(req->keys[i].data, ' ', req->keys[i].len) != NULL ||
            memchr(req->keys[i].data, '\n', req->keys[i].len) != NULL) {
            continue; /* not a key memcached could hold: not found */
        }
        j->caps[i] = evbuffer_new();
        if (j->caps[i] == NULL) {
            continue;
        }
        j->frags[i].cb = read_cb;
        j->frags[i].cb_arg = j;
        j->frags[i].capture = j->caps[i];
        j->frags[i].cb_values = true;
        len = snprintf(line, sizeof(line), "gets %.*s\r\n", (int)req->keys[i].len,
                       (const char *)req->keys[i].data);
        j->pending++;
        gw_backend_send(gw_worker_backend(w, gw_pool_route(w->pool,
                                                           (const char *)req->keys[i].data,
                                                           (uint32_t)req->keys[i].len)),
                        &j->frags[i], line, (size_t)len, NULL, 0);
    }
    read_job_done(j);
    return;

oom_job:
    read_job_free(j);
oom:
    wan_grpc_server_read_fail(call, 8 /* RESOURCE_EXHAUSTED */, "out of memory");
    geogate__wan__v1__read_request__free_unpacked(req, NULL);
}
