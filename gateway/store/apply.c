/*
 * apply — see apply.h.
 */
#include "gateway/store/apply.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "gateway/base/clock.h"
#include "gateway/backend/backend.h"
#include "gateway/base/config.h"
#include "gateway/base/log.h"
#include "gateway/routing/pool.h"
#include "gateway/server.h"
#include "gateway/store/apply_decide.h"
#include "gateway/store/item.h"
#include "gateway/loop/worker.h"
#include "wan/grpc_server.h"
#include "wan/version.h"

#define APPLY_MAX_TRIES 32
#define APPLY_NEWER_MAX 1024 /* newer items carried back in one ack; the rest are spooled */
#define APPLY_GETS_KEYS 64   /* keys per batched `gets` to one node */

/* What a batch is for (see apply.h for who uses which). */
enum apply_mode {
    APPLY_MODE_NEWEST = 0, /* newest wins; an item beyond the clock bound is left out */
    APPLY_MODE_SHIP,       /* the same, but such an item fails the batch: it is not acked */
    APPLY_MODE_RESTAMP,    /* our own items stamped ahead of our clock: a fresh version where
                              the local copy is still that item, then shipped */
    APPLY_MODE_MAX
};

struct apply_batch {
    struct gw_worker *w;
    Geogate__Wan__V1__ShipRequest *req;
    enum apply_mode mode;
    struct apply_op *ops;  /* one per mutation applied, freed with the batch */
    struct evbuffer *wcap; /* the reply to each op's add/cas, read and drained at once */
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
    struct wan_version old;    /* APPLY_MODE_RESTAMP: the version being replaced */
    uint32_t node;
    int tries;
    bool writing;
    bool present; /* the last gets found something (a tombstone counts) */
    uint64_t cas; /* and this is its cas */
    struct gw_frag frag;
    struct evbuffer *cap; /* a retried one-key gets' reply (NULL until one is sent) */
};

/* One `gets` of many keys to one node: the current items of a batch's ops there. */
struct apply_gets {
    struct gw_frag frag;
    struct evbuffer *cap;
    uint32_t node;
    uint32_t n;
    struct apply_op *ops[APPLY_GETS_KEYS];
};

/* Failures of one node repeat for every key of every batch until it is back: one line per
 * 10 s per worker thread, with how many were held back. */
static _Thread_local struct gw_log_gate apply_log_gate;

#define apply_warn(...)                                                                            \
    do {                                                                                           \
        uint64_t held_;                                                                            \
        if (gw_log_gate_pass(&apply_log_gate, gw_mono_ms(), 10000, &held_)) {                      \
            log_warn(__VA_ARGS__);                                                                 \
            if (held_ > 0) {                                                                       \
                log_warn("(%" PRIu64 " more failed applies in the last 10 s not logged)", held_);  \
            }                                                                                      \
        }                                                                                          \
    } while (0)

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
    if (b->wcap != NULL) {
        evbuffer_free(b->wcap);
    }
    free(b->ops);
    free(b);
}

/* The op is over (its memory goes with the batch's). */
static void op_free(struct apply_op *op)
{
    struct apply_batch *b = op->b;

    if (op->cap != NULL) {
        evbuffer_free(op->cap);
        op->cap = NULL;
    }
    batch_op_done(b);
}

/* values: a gets, whose reply (VALUE blocks may span reads) goes into the op's own
 * buffer; the one-line reply of a write goes into the batch's, read at once. */
static void op_send(struct apply_op *op, const char *line, size_t len, struct evbuffer *data,
                    bool values)
{
    struct evbuffer **cap = values ? &op->cap : &op->b->wcap;

    memset(&op->frag, 0, sizeof(op->frag));
    op->frag.cb = op_cb;
    op->frag.cb_arg = op;
    if (*cap == NULL && (*cap = evbuffer_new()) == NULL) {
        op_cb(&op->frag, NULL, "SERVER_ERROR out of memory");
        return;
    }
    op->frag.capture = *cap;
    op->frag.cb_values = values;
    evbuffer_drain(*cap, evbuffer_get_length(*cap));
    gw_backend_send(gw_worker_backend(op->b->w, op->node), &op->frag, line, len, data,
                    data != NULL ? evbuffer_get_length(data) : 0);
}

static void op_gets(struct apply_op *op)
{
    char line[MC_KEY_MAX_LENGTH + 16];
    int n = snprintf(line, sizeof(line), "gets %.*s\r\n", (int)op->m->key.len,
                     (const char *)op->m->key.data);

    op->writing = false;
    op->present = false;
    op_send(op, line, (size_t)n, NULL, true);
}

/* Write the incoming item over whatever the gets found (cas), or into nothing (add). */
static void op_write(struct apply_op *op)
{
    const Geogate__Wan__V1__Mutation *m = op->m;
    char cmd[GW_ITEM_LINE_MAX];
    struct gw_item it = {
        .key = (const char *)m->key.data,
        .nkey = (uint32_t)m->key.len,
        .hdr = &op->nh,
        .value = m->value.data,
        .vlen = m->value.len,
    };
    struct evbuffer *data;
    size_t n;

    n = gw_item_write(cmd, op->present ? GW_ITEM_CAS : GW_ITEM_ADD, op->cas, &it,
                      op->b->w->srv->tombstone_ttl_s, &data);
    if (n == 0) {
        op->b->rejected++;
        op_free(op);
        return;
    }
    op->writing = true;
    op_send(op, cmd, n, data, false);
    if (data != NULL) {
        evbuffer_free(data);
    }
}

/* A stale mark (m->stale) over the live local item the gets found: memcached's own
 * invalidation, only if that item is still the one read (C<cas>), with the mark's expiry
 * (T) when it carries one. */
static void op_mark(struct apply_op *op)
{
    const Geogate__Wan__V1__Mutation *m = op->m;
    char line[MC_KEY_MAX_LENGTH + 64];
    uint32_t now = (uint32_t)time(NULL);
    int n = snprintf(line, sizeof(line), "md %.*s I C%" PRIu64, (int)m->key.len,
                     (const char *)m->key.data, op->cas);

    if (m->expiry != 0) {
        n += snprintf(line + n, sizeof(line) - (size_t)n, " T%" PRIu32,
                      m->expiry > now ? m->expiry - now : 1);
    }
    n += snprintf(line + n, sizeof(line) - (size_t)n, "\r\n");
    op->writing = true;
    op_send(op, line, (size_t)n, NULL, false);
}

/* Whether line (n bytes with its CRLF) is word. */
static bool line_is(const char *line, size_t n, const char *word)
{
    size_t wn = strlen(word);

    return n == wn + 2 && memcmp(line, word, wn) == 0;
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

/* Hand an item of ours to the shipper for every peer (see struct gw_apply_shipper). */
static void ship_item(struct gw_worker *w, const struct gw_item *it)
{
    const struct gw_apply_shipper *ship = w->srv->apply_ship;

    if (ship != NULL) {
        ship->item(w, it);
    }
}

/* The gets is in: local is what it found (borrowed for the call; NULL: nothing). */
static void op_decide(struct apply_op *op, const struct gw_item_view *local)
{
    struct gw_server *srv = op->b->w->srv;
    enum gw_apply_verdict verdict;

    if (op->b->mode == APPLY_MODE_RESTAMP && op->m->stale) {
        /* a stale mark stamped ahead is not re-stamped: the write it marked was (its own
         * record); the mark is dropped (docs/META.md) */
        op->b->rejected++;
        op_free(op);
        return;
    }
    if (op->b->mode == APPLY_MODE_RESTAMP) {
        /* The item a clock since put right stamped, written again as if written now,
         * unless a later write replaced it here (that write's own record ships it). */
        verdict = gw_apply_restamp_decide(&op->old, local, wan_hlc_restart(&srv->hlc));
        if (verdict == GW_APPLY_WRITE) {
            op->nh.version.hlc = wan_hlc_now(&srv->hlc);
            op->nh.version.site_id = srv->site_id;
            op->nh.version.gateway_id = (uint16_t)srv->cfg->gateway_id;
        }
    } else {
        verdict = gw_apply_decide(&op->nh.version, local);
    }
    if (verdict == GW_APPLY_WRITE && op->m->stale) {
        /* a stale mark: nothing live here to mark, or a live item older than the mark */
        if (local == NULL || !local->found) {
            op->b->rejected++;
            op_free(op);
            return;
        }
        op->present = true;
        op->cas = local->cas;
        op_mark(op);
        return;
    }
    if (verdict == GW_APPLY_WRITE) {
        op->present = local != NULL;
        op->cas = local != NULL ? local->cas : 0;
        op_write(op);
        return;
    }
    op->b->rejected++;
    if (verdict == GW_APPLY_SEND_BACK) {
        /* We hold something newer than what the peer sent: it travels back, so the
         * peer converges on it even if a blind write there overwrote it.  In the ack,
         * to the sender only, when the batch came on a stream; else via the spool. */
        struct gw_item it = {
            .key = (const char *)op->m->key.data,
            .nkey = (uint32_t)op->m->key.len,
            .hdr = &local->hdr,
            .value = local->val,
            .vlen = local->len,
        };
        if (!carry_back(op->b, &it)) {
            ship_item(op->b->w, &it);
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
        apply_warn("apply of key %.*s failed: %s", (int)op->m->key.len,
                   (const char *)op->m->key.data, error);
        op->b->failed = true; /* not acked: the peer ships it again */
        op_free(op);
        return;
    }
    if (!op->writing) {
        struct gw_item_view local;
        bool present;

        if (gw_gets_one(reply, &local, &present, err, sizeof(err)) != 0) {
            apply_warn("apply of key %.*s: %s", (int)op->m->key.len, (const char *)op->m->key.data,
                       err);
            op->b->rejected++;
            op_free(op);
            return;
        }
        op_decide(op, present ? &local : NULL);
        return;
    }
    {
        /* One line in the batch's buffer: take it out, so the next op finds it empty. */
        size_t len = evbuffer_get_length(reply);
        size_t n = len < 127 ? len : 127;
        char text[128];

        evbuffer_remove(reply, text, n);
        if (len > n) {
            evbuffer_drain(reply, len - n);
        }
        if (line_is(text, len, op->m->stale ? "HD" : "STORED")) {
            op->b->applied++;
            if (op->b->mode == APPLY_MODE_RESTAMP) {
                /* The re-stamped item replaces the one peers refused: it ships like a write. */
                struct gw_item it = {
                    .key = (const char *)op->m->key.data,
                    .nkey = (uint32_t)op->m->key.len,
                    .hdr = &op->nh,
                    .value = op->nh.tombstone ? NULL : op->m->value.data,
                    .vlen = op->nh.tombstone ? 0 : op->m->value.len,
                };
                ship_item(op->b->w, &it);
            }
            op_free(op);
            return;
        }
        if ((line_is(text, len, "EXISTS") || line_is(text, len, "NOT_FOUND") ||
             line_is(text, len, "NOT_STORED") || line_is(text, len, "EX") ||
             line_is(text, len, "NF")) &&
            ++op->tries < APPLY_MAX_TRIES) {
            op_gets(op); /* a local write landed between our gets and our write */
            return;
        }
        text[n] = '\0';
        text[strcspn(text, "\r\n")] = '\0';
        apply_warn("apply of key %.*s refused by the node: %s", (int)op->m->key.len,
                   (const char *)op->m->key.data, text);
    }
    op->b->rejected++;
    op_free(op);
}

/* ---- the first read of a batch's keys: one `gets` per node for up to
 * APPLY_GETS_KEYS of them, instead of one round trip to memcached per key ---- */

static bool op_key_is(const struct apply_op *op, const struct gw_item_view *it)
{
    return op->m->key.len == it->nkey && memcmp(op->m->key.data, it->key, it->nkey) == 0;
}

static void gets_cb(struct gw_frag *frag, struct evbuffer *reply, const char *error)
{
    struct apply_gets *g = frag->cb_arg;
    const char *why = error;
    uint32_t k = 0;

    if (error == NULL) {
        struct gw_gets_reader rd;
        struct gw_item_view local;
        enum gw_gets_next next;

        gw_gets_reader_init(&rd, reply);
        why = "SERVER_ERROR unexpected reply from node";
        while ((next = gw_gets_next(&rd, &local)) == GW_GETS_ITEM) {
            /* memcached answers in the order asked: keys before this one are absent */
            while (k < g->n && !op_key_is(g->ops[k], &local)) {
                op_decide(g->ops[k++], NULL);
            }
            if (k == g->n) {
                break;
            }
            if (!local.has_cas) {
                apply_warn("apply of key %.*s: SERVER_ERROR unexpected reply from node",
                           (int)local.nkey, local.key);
                g->ops[k]->b->rejected++;
                op_free(g->ops[k++]);
            } else {
                op_decide(g->ops[k++], &local);
            }
        }
        if (next == GW_GETS_END) {
            why = NULL;
        }
    }
    for (; k < g->n; k++) {
        struct apply_op *op = g->ops[k];
        if (why == NULL) {
            op_decide(op, NULL); /* after END: absent */
        } else if (error != NULL) {
            apply_warn("apply of key %.*s failed: %s", (int)op->m->key.len,
                       (const char *)op->m->key.data, error);
            op->b->failed = true; /* not acked: the peer ships it again */
            op_free(op);
        } else {
            apply_warn("apply of key %.*s: %s", (int)op->m->key.len, (const char *)op->m->key.data,
                       why);
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

/* Order of two mutations of one key: < 0 when x is the newer (version, then origin). */
static int cmp_version(const Geogate__Wan__V1__Mutation *x, const Geogate__Wan__V1__Mutation *y)
{
    if (x->hlc != y->hlc) {
        return x->hlc > y->hlc ? -1 : 1; /* newest first */
    }
    if (x->site_id != y->site_id) {
        return x->site_id > y->site_id ? -1 : 1;
    }
    return x->gateway_id > y->gateway_id ? -1 : (x->gateway_id < y->gateway_id ? 1 : 0);
}

/* A stale mark and a write of one key are not the same thing: neither drops the other. */
static bool same_key(const Geogate__Wan__V1__Mutation *x, const Geogate__Wan__V1__Mutation *y)
{
    return x->key.len == y->key.len && x->stale == y->stale &&
           memcmp(x->key.data, y->key.data, x->key.len) == 0;
}

static uint32_t key_hash(const uint8_t *key, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (size_t i = 0; i < len; i++) {
        h = (h ^ key[i]) * 16777619u;
    }
    return h;
}

/*
 * Keep only the newest mutation of each key: lose[i] is set for every other one.  A hash
 * table of the keys, not a sort: sorting a batch by key cost more than a tenth of applying
 * it.  last: the last one in the batch is the newest (a re-stamp run is spool order, and
 * its versions straddle a clock that was put right).  Returns how many lost, or -1 when
 * out of memory.
 */
static ssize_t batch_dedup(Geogate__Wan__V1__Mutation *const *ms, size_t n, bool *lose, bool last)
{
    size_t cap = 16;
    uint32_t *slot; /* index + 1 of the newest mutation of a key so far; 0: empty */
    ssize_t lost = 0;

    while (cap < 2 * n) {
        cap *= 2;
    }
    slot = calloc(cap, sizeof(*slot));
    if (slot == NULL) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        size_t h = key_hash(ms[i]->key.data, ms[i]->key.len) & (cap - 1);

        while (slot[h] != 0 && !same_key(ms[slot[h] - 1], ms[i])) {
            h = (h + 1) & (cap - 1);
        }
        if (slot[h] == 0) {
            slot[h] = (uint32_t)i + 1;
            continue;
        }
        lost++;
        if (last || cmp_version(ms[i], ms[slot[h] - 1]) < 0) {
            lose[slot[h] - 1] = true;
            slot[h] = (uint32_t)i + 1;
        } else {
            lose[i] = true;
        }
    }
    free(slot);
    return lost;
}

static bool key_valid(const ProtobufCBinaryData *key)
{
    return key->len > 0 && key->len <= MC_KEY_MAX_LENGTH &&
           memchr(key->data, ' ', key->len) == NULL && memchr(key->data, '\n', key->len) == NULL &&
           memchr(key->data, '\r', key->len) == NULL && memchr(key->data, '\0', key->len) == NULL;
}

/* Start op on mutation m: its gets joins the one being built for its node. */
static void batch_start_op(struct apply_batch *b, struct apply_gets **gets, struct apply_op *op,
                           const Geogate__Wan__V1__Mutation *m, uint32_t origin, uint32_t now)
{
    struct gw_worker *w = b->w;
    uint64_t seen;

    *op = (struct apply_op){.b = b, .m = m};
    gw_apply_incoming(m, origin, (uint16_t)b->req->gateway_id, now, &op->nh);
    if (b->mode == APPLY_MODE_RESTAMP) {
        op->old = op->nh.version; /* ours, ahead of our clock: not observed */
    } else if (wan_hlc_observe(&w->srv->hlc, m->hlc, &seen) == -ERANGE) {
        /* Further ahead of our clock than replication.max_clock_skew: holding it would
         * hold a version our clock has not passed, and writes here would lose to it for
         * as long (docs/REPLICATION.md, "Clock skew").  Its origin's spool still has it. */
        if (b->mode == APPLY_MODE_SHIP) {
            log_warn("peer %s: a version %" PRIu64 " ms ahead of our clock reached the apply; "
                     "the batch is not acked",
                     b->req->origin_site,
                     wan_hlc_ahead_ms(m->hlc, wan_hlc_clock_now_ms(&w->srv->hlc)));
            b->failed = true;
        } else {
            b->rejected++;
        }
        return;
    }
    op->node = gw_pool_route(w->pool, (const char *)m->key.data, (uint32_t)m->key.len);
    b->pending++;
    if (gets == NULL) {
        op_gets(op); /* out of memory for the grouping: one key at a time */
        return;
    }
    if (gets[op->node] == NULL && (gets[op->node] = calloc(1, sizeof(**gets))) == NULL) {
        op_gets(op);
        return;
    }
    gets[op->node]->node = op->node;
    gets[op->node]->ops[gets[op->node]->n++] = op;
    if (gets[op->node]->n == APPLY_GETS_KEYS) {
        gets_send(w, gets[op->node]);
        gets[op->node] = NULL;
    }
}

static void batch_run(struct gw_worker *w, Geogate__Wan__V1__ShipRequest *req, enum apply_mode mode,
                      bool collect_newer, gw_apply_done_fn done, void *arg)
{
    struct apply_batch *b = calloc(1, sizeof(*b));
    uint32_t origin = wan_site_id(req->origin_site);
    uint32_t now = (uint32_t)time(NULL);
    Geogate__Wan__V1__Mutation *const *ms = req->mutations;
    size_t n = req->n_mutations;
    struct apply_gets **gets = calloc(w->pool->nnodes, sizeof(*gets));
    bool *lose = NULL;
    size_t nops = 0;

    if (b == NULL) {
        free(gets);
        done(arg, 0, n, true, NULL, 0);
        geogate__wan__v1__ship_request__free_unpacked(req, NULL);
        return;
    }
    b->collect_newer = collect_newer;
    b->mode = mode;
    b->w = w;
    b->req = req;
    b->done = done;
    b->arg = arg;
    b->pending = 1; /* held until every op is started */
    if (n > 0) {
        ssize_t lost;

        lose = calloc(n, sizeof(*lose));
        b->ops = malloc(n * sizeof(*b->ops));
        lost = lose != NULL && b->ops != NULL ? batch_dedup(ms, n, lose, mode == APPLY_MODE_RESTAMP)
                                              : -1;
        if (lost < 0) {
            free(gets);
            free(lose);
            b->rejected = n;
            batch_op_done(b);
            return;
        }
        b->rejected += (uint64_t)lost; /* older versions of keys this batch also carries */
    }
    /* A flush goes first, before the gets of the batch's other keys (its key is empty). */
    for (size_t i = 0; i < n; i++) {
        if (!lose[i] && ms[i]->flush && mode == APPLY_MODE_RESTAMP) {
            /* A flush has no local copy to re-stamp: it ships again with a fresh version. */
            if (w->srv->apply_ship != NULL) {
                w->srv->apply_ship->flush(w,
                                          ms[i]->expiry > now ? (int32_t)(ms[i]->expiry - now) : 0);
            }
            b->applied++;
        } else if (!lose[i] && ms[i]->flush) {
            apply_flush(b, ms[i], now);
        }
    }
    for (size_t i = 0; i < n; i++) {
        const Geogate__Wan__V1__Mutation *m = ms[i];

        if (lose[i] || m->flush) {
            continue;
        }
        if (!key_valid(&m->key)) {
            log_warn("peer %s shipped an invalid key; ignored", req->origin_site);
            b->rejected++;
            continue;
        }
        batch_start_op(b, gets, &b->ops[nops++], m, origin, now);
    }
    for (uint32_t i = 0; gets != NULL && i < w->pool->nnodes; i++) {
        if (gets[i] != NULL) {
            gets_send(w, gets[i]);
        }
    }
    free(gets);
    free(lose);
    batch_op_done(b);
}

void gw_apply_batch(struct gw_worker *w, Geogate__Wan__V1__ShipRequest *req, bool collect_newer,
                    gw_apply_done_fn done, void *arg)
{
    batch_run(w, req, APPLY_MODE_NEWEST, collect_newer, done, arg);
}

void gw_apply_ship(struct gw_worker *w, Geogate__Wan__V1__ShipRequest *req, gw_apply_done_fn done,
                   void *arg)
{
    batch_run(w, req, APPLY_MODE_SHIP, true, done, arg);
}

void gw_apply_restamp(struct gw_worker *w, Geogate__Wan__V1__ShipRequest *req,
                      gw_apply_done_fn done, void *arg)
{
    batch_run(w, req, APPLY_MODE_RESTAMP, false, done, arg);
}

void gw_apply_batch_of(struct gw_worker *w, const Geogate__Wan__V1__ShipRequest *req,
                       gw_apply_done_fn done, void *arg)
{
    Geogate__Wan__V1__ShipRequest *copy;
    size_t len = geogate__wan__v1__ship_request__get_packed_size(req);
    uint8_t *buf = malloc(len);

    if (buf == NULL) {
        return;
    }
    geogate__wan__v1__ship_request__pack(req, buf);
    copy = geogate__wan__v1__ship_request__unpack(NULL, len, buf);
    free(buf);
    if (copy != NULL) {
        gw_apply_batch(w, copy, false, done, arg);
    }
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
    gw_apply_batch_of(w, &req, local_item_done, NULL);
}

/* ---- remote reads ---- */

struct read_job {
    struct wan_grpc_read_call *call;
    Geogate__Wan__V1__ReadRequest *req;
    Geogate__Wan__V1__ReadResponse resp;
    Geogate__Wan__V1__ReadItem *items;
    Geogate__Wan__V1__ReadItem **itemp;
    Geogate__Wan__V1__Mutation *muts;
    struct gw_frag *frags;
    struct evbuffer **caps;
    uint32_t pending;
};

static void read_job_free(struct read_job *j)
{
    free(j->items);
    free(j->itemp);
    free(j->muts);
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
    struct gw_item_view local;
    bool present;
    char err[128];

    /* The item borrows the reply: j->caps[i] lives until the answer is sent. */
    if (error == NULL && gw_gets_one(reply, &local, &present, err, sizeof(err)) == 0 && present) {
        const struct gw_item_view *c = &local;
        Geogate__Wan__V1__Mutation *m = &j->muts[i];
        j->items[i].found = c->found;
        m->value.data = (uint8_t *)c->val;
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
    j->frags = calloc(n ? n : 1, sizeof(*j->frags));
    j->caps = calloc(n ? n : 1, sizeof(*j->caps));
    if (j->items == NULL || j->itemp == NULL || j->muts == NULL || j->frags == NULL ||
        j->caps == NULL) {
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
        gw_backend_send(gw_worker_backend(w, gw_pool_route(w->pool, (const char *)req->keys[i].data,
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
