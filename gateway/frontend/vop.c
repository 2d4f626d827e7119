/*
 * vop — see vop.h.
 *
 *   blind:  set/add/cas ──"<cmd> key MARKER exp n+32"──> STORED ──> ship the item
 *                           add NOT_STORED ──> gets: a tombstone? cas over it : NOT_STORED
 *                           cas EXISTS ────> gets: gone or a tombstone? NOT_FOUND : EXISTS
 *   rmw:    replace/append/prepend/incr/decr/touch
 *           ──gets──> miss or tombstone: memcached's "not there" reply
 *                     else compute the new item ──cas──> STORED: reply, ship
 *                                                        EXISTS: lost a race, gets again
 *   delete: "gets" and "set tombstone" pipelined ──> DELETED if the gets saw a live item
 *
 * One internal request is outstanding per operation (two for delete), so an operation
 * is a small state machine driven by backend callbacks.
 */
#include "gateway/frontend/vop.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "gateway/store/apply.h"
#include "gateway/backend/backend.h"
#include "gateway/frontend/vop_decide.h"
#include "gateway/base/log.h"
#include "gateway/routing/pool.h"
#include "gateway/failover/remote.h"
#include "gateway/replication/repl.h"
#include "gateway/protocol/req.h"
#include "gateway/server.h"
#include "gateway/loop/worker.h"
#include "wan/version.h"

#define VOP_MAX_TRIES 8

/* Operations a worker keeps for reuse, each with its capture buffer: a replicating set
 * would otherwise allocate and free both. */
#if defined(__SANITIZE_ADDRESS__)
static const uint32_t vop_free_max = 0; /* every operation freed, so a leak shows */
#else
static const uint32_t vop_free_max = 256;
#endif

enum vop_step { VOP_BLIND = 0, VOP_READ, VOP_WRITE, VOP_CHECK, VOP_STEP_MAX };

struct vop {
    struct gw_worker *w;
    struct gw_req *r;
    enum mc_cmd cmd;
    enum vop_step step;
    uint32_t node;
    int tries;
    char key[MC_KEY_MAX_LENGTH + 1];
    uint32_t nkey;
    uint32_t flags;
    int32_t exptime;
    uint64_t cas_unique;
    uint64_t delta;
    uint8_t *data; /* the client's value (without CRLF) */
    size_t ndata;
    struct gw_cur cur; /* what the last gets found */
    /* the item being written */
    struct wan_item_header nh;
    uint8_t *new_val;
    size_t new_len;
    size_t arith_len; /* incr/decr: digits of the result, before padding */
    struct gw_frag frag;
    struct gw_frag frag2;
    struct evbuffer *cap;
    struct evbuffer *cap2;
    int outstanding;
    bool shipped;
    void (*on_done)(void *arg); /* internal operation (gat's touch): no client reply */
    void *on_done_arg;
    struct gw_touch_result *touch; /* gat: where the answer goes */
    bool want_cas;
    int remote;              /* peer site the key falls back to (its local node is down), or -1 */
    const char *answer;      /* delete: decided by the gets */
    bool has_ttl;            /* invalidate (MC_CMD_MD): a new TTL, in exptime */
    uint64_t client_version; /* meta ms E<token>: the version's clock part; 0: ours */
    struct vop *next_free;   /* in the worker's free list */
};

/* Ends v: what it owns is freed; v and its capture buffer go back to the worker's list. */
static void vop_free(struct vop *v)
{
    struct gw_worker *w = v->w;

    if (v->cap2) {
        evbuffer_free(v->cap2);
    }
    free(v->data);
    gw_cur_release(&v->cur);
    free(v->new_val);
    if (v->cap != NULL && w->nvop_free < vop_free_max) {
        evbuffer_drain(v->cap, evbuffer_get_length(v->cap));
        v->next_free = w->vop_free;
        w->vop_free = v;
        w->nvop_free++;
        return;
    }
    if (v->cap) {
        evbuffer_free(v->cap);
    }
    free(v);
}

void gw_vop_pool_release(struct gw_worker *w)
{
    while (w->vop_free != NULL) {
        struct vop *v = w->vop_free;
        w->vop_free = v->next_free;
        evbuffer_free(v->cap);
        free(v);
    }
    w->nvop_free = 0;
}

/* Answer the client (unless noreply) and end the operation. */
static void vop_finish(struct vop *v, const char *line)
{
    struct gw_req *r = v->r;

    if (r == NULL) {
        void (*done)(void *) = v->on_done;
        void *arg = v->on_done_arg;
        struct gw_touch_result *t = v->touch;
        if (strncmp(line, "SERVER_ERROR", 12) == 0 && !t->found) {
            t->failed = true;
            snprintf(t->error, sizeof(t->error), "%s", line);
        }
        vop_free(v);
        done(arg);
        return;
    }
    struct gw_client *c = r->barrier ? r->client : NULL;
    const struct gw_req_ops *ops = r->ops; /* r may be freed before the barrier goes */
    struct evbuffer *b;

    r->pending = 0;
    r->barrier = false;
    if (!r->noreply && (b = gw_req_reply(r)) != NULL) {
        evbuffer_add(b, line, strlen(line));
        evbuffer_add(b, "\r\n", 2);
    }
    /* With fsync: always, an acknowledged write is on disk in the spool first. */
    if (!(v->shipped && gw_repl_hold(v->w, r))) {
        gw_req_finish(r); /* may free r */
    }
    vop_free(v);
    if (c != NULL) {
        ops->barrier_release(c);
    }
}

static struct gw_backend *vop_backend(struct vop *v)
{
    return gw_worker_backend(v->w, v->node);
}

static void vop_cb(struct gw_frag *frag, struct evbuffer *reply, const char *error);

static void vop_send(struct vop *v, struct gw_frag *frag, struct evbuffer *cap, bool values,
                     const char *line, size_t len, struct evbuffer *data, size_t ndata)
{
    memset(frag, 0, sizeof(*frag));
    frag->cb = vop_cb;
    frag->cb_arg = v;
    frag->capture = cap;
    frag->cb_values = values;
    evbuffer_drain(cap, evbuffer_get_length(cap));
    v->outstanding++;
    gw_backend_send(vop_backend(v), frag, line, len, data, ndata);
}

static void vop_remote_read_done(void *arg, const char *error,
                                 const Geogate__Wan__V1__ReadItem *item);

static void vop_gets(struct vop *v)
{
    char line[MC_KEY_MAX_LENGTH + 16];
    int n = snprintf(line, sizeof(line), "gets %.*s\r\n", (int)v->nkey, v->key);

    v->step = VOP_READ;
    if (v->remote >= 0) {
        v->outstanding++;
        gw_remote_read_key(v->w, v->remote, v->key, v->nkey, vop_remote_read_done, v);
        return;
    }
    vop_send(v, &v->frag, v->cap, true, line, (size_t)n, NULL, 0);
}

static void vop_remote_write(struct vop *v);

/* Write v->nh + v->new_val with cmd (the cas token with GW_ITEM_CAS). */
static void vop_write(struct vop *v, struct gw_frag *frag, struct evbuffer *cap,
                      enum gw_item_cmd cmd, uint64_t cas)
{
    char line[GW_ITEM_LINE_MAX];
    struct gw_item it = {
        .key = v->key,
        .nkey = v->nkey,
        .hdr = &v->nh,
        .value = v->new_val,
        .vlen = v->new_len,
    };
    struct evbuffer *data;
    size_t n;

    if (v->remote >= 0) {
        vop_remote_write(v);
        return;
    }
    n = gw_item_write(line, cmd, cas, &it, v->w->srv->tombstone_ttl_s, &data);
    if (n == 0) {
        vop_finish(v, "SERVER_ERROR out of memory");
        return;
    }
    vop_send(v, frag, cap, false, line, n, data, data != NULL ? evbuffer_get_length(data) : 0);
    if (data != NULL) {
        evbuffer_free(data);
    }
}

/* A fresh version for the item about to be written. */
static void vop_stamp(struct vop *v, uint32_t expiry, bool tombstone)
{
    struct gw_server *srv = v->w->srv;

    memset(&v->nh, 0, sizeof(v->nh));
    v->nh.version.hlc = v->client_version != 0 ? v->client_version : wan_hlc_now(&srv->hlc);
    v->nh.version.site_id = srv->site_id;
    v->nh.version.gateway_id = (uint16_t)srv->cfg->gateway_id;
    v->nh.expiry = expiry;
    v->nh.tombstone = tombstone;
}

static void vop_ship(struct vop *v)
{
    struct gw_item it = {
        .key = v->key,
        .nkey = v->nkey,
        .hdr = &v->nh,
        .value = v->new_val,
        .vlen = v->new_len,
        .stale = v->cmd == MC_CMD_MD,
    };
    v->shipped = gw_repl_ship(v->w, &it);
}

/* What the node's one-line reply to a write says. */
static enum gw_vop_reply vop_reply_kind(struct evbuffer *reply)
{
    size_t n = evbuffer_get_length(reply);
    char buf[16];

    if (n > sizeof(buf)) {
        return GW_VOP_REPLY_OTHER;
    }
    evbuffer_copyout(reply, buf, n);
    return gw_vop_reply_kind(buf, n);
}

/* The node's one-line reply, as a string for the client. */
static void reply_text(struct evbuffer *reply, char *out, size_t outlen)
{
    size_t n = evbuffer_get_length(reply);

    if (n > outlen - 1) {
        n = outlen - 1;
    }
    evbuffer_copyout(reply, out, n);
    out[n] = '\0';
    out[strcspn(out, "\r\n")] = '\0';
}

/* After a gets: decide (vop_decide.c), then write (or answer). */
static void vop_after_read(struct vop *v)
{
    struct gw_vop_input in = {
        .cmd = v->cmd,
        .flags = v->flags,
        .expiry = mc_expiry_abs(v->exptime, (uint32_t)time(NULL)),
        .cas_unique = v->cas_unique,
        .delta = v->delta,
        .ndata = v->ndata,
        .remote = v->remote >= 0,
    };
    struct gw_vop_decision d;

    gw_vop_decide(&in, &v->cur, &d);
    if (d.verdict != GW_VOP_WRITE) {
        vop_finish(v, d.answer);
        return;
    }
    free(v->new_val);
    v->new_val = NULL;
    v->new_len = 0;
    vop_stamp(v, d.expiry, false);
    v->nh.client_flags = d.client_flags;
    switch (d.value) {
    case GW_VOP_VALUE_CLIENT:
        v->new_val = v->data;
        v->new_len = v->ndata;
        v->data = NULL;
        v->ndata = 0;
        break;
    case GW_VOP_VALUE_CURRENT:
        v->new_val = v->cur.val;
        v->new_len = v->cur.len;
        v->cur.val = NULL;
        v->cur.len = 0;
        break;
    default:
        v->new_val = malloc(d.new_len + 1);
        if (v->new_val == NULL) {
            vop_finish(v, "SERVER_ERROR out of memory");
            return;
        }
        v->new_len = d.new_len;
        if (d.value == GW_VOP_VALUE_APPEND) {
            memcpy(v->new_val, v->cur.val, v->cur.len);
            memcpy(v->new_val + v->cur.len, v->data, v->ndata);
        } else if (d.value == GW_VOP_VALUE_PREPEND) {
            memcpy(v->new_val, v->data, v->ndata);
            memcpy(v->new_val + v->ndata, v->cur.val, v->cur.len);
        } else {
            memset(v->new_val, ' ', d.new_len);
            memcpy(v->new_val, d.num, d.num_len);
            v->arith_len = d.num_len;
        }
        break;
    }
    v->step = VOP_WRITE;
    if (d.over) {
        vop_write(v, &v->frag, v->cap, GW_ITEM_CAS, v->cur.cas);
    } else {
        vop_write(v, &v->frag, v->cap, GW_ITEM_ADD, 0);
    }
}

static const char *vop_success_line(struct vop *v, char *buf, size_t buflen)
{
    switch (v->cmd) {
    case MC_CMD_INCR:
    case MC_CMD_DECR:
        snprintf(buf, buflen, "%.*s", (int)v->arith_len, (const char *)v->new_val);
        return buf;
    case MC_CMD_TOUCH:
        return "TOUCHED";
    default:
        return "STORED";
    }
}

/* ---- falling back to a peer site (the key's local node is down) ---- */

static void vop_remote_read_done(void *arg, const char *error,
                                 const Geogate__Wan__V1__ReadItem *item)
{
    struct vop *v = arg;
    const Geogate__Wan__V1__Mutation *m = item != NULL ? item->item : NULL;

    v->outstanding--;
    if (error != NULL) {
        vop_finish(v, error);
        return;
    }
    gw_cur_release(&v->cur);
    if (m != NULL) {
        v->cur.present = true;
        v->cur.versioned = true;
        v->cur.found = item->found && !m->tombstone;
        v->cur.cas = m->hlc; /* the token a peer-served gets reports */
        v->cur.hdr.version.hlc = m->hlc;
        v->cur.hdr.version.site_id = m->site_id;
        v->cur.hdr.version.gateway_id = (uint16_t)m->gateway_id;
        v->cur.hdr.client_flags = m->flags;
        v->cur.hdr.expiry = m->expiry;
        v->cur.hdr.tombstone = m->tombstone;
        if (v->cur.found) {
            v->cur.val = malloc(m->value.len + 1);
            if (v->cur.val == NULL) {
                vop_finish(v, "SERVER_ERROR out of memory");
                return;
            }
            memcpy(v->cur.val, m->value.data, m->value.len);
            v->cur.len = m->value.len;
        }
    }
    if (v->cmd == MC_CMD_DELETE) {
        v->answer = v->cur.found ? "DELETED" : "NOT_FOUND";
        vop_stamp(v, (uint32_t)time(NULL) + v->w->srv->tombstone_ttl_s, true);
        vop_remote_write(v);
        return;
    }
    vop_after_read(v);
}

static void vop_remote_acked(void *arg, bool ok)
{
    struct vop *v = arg;
    char text[64];

    v->outstanding--;
    if (!ok) {
        vop_finish(v, "SERVER_ERROR the peer site did not confirm the write in time");
        return;
    }
    if (v->cmd == MC_CMD_DELETE) {
        vop_finish(v, v->answer);
        return;
    }
    vop_finish(v, vop_success_line(v, text, sizeof(text)));
}

/* The local node is down: ship the new item (spool, like any write) and answer once the
 * peer we read from has applied it. */
static void vop_remote_write(struct vop *v)
{
    struct gw_item it = {
        .key = v->key,
        .nkey = v->nkey,
        .hdr = &v->nh,
        .value = v->new_val,
        .vlen = v->new_len,
    };
    uint64_t seq = gw_repl_ship_seq(v->w, &it);

    if (seq == 0) {
        vop_finish(v, v->w->pool->nodes[v->node].err_down);
        return;
    }
    /* Failed over with the local node up (a drill): keep the local copy current too,
     * newest wins, so failing back never serves an older local item. */
    if (gw_node_usable(&v->w->pool->nodes[v->node])) {
        gw_apply_local_item(v->w, v->key, v->nkey, &v->nh, v->new_val, v->new_len);
    }
    v->outstanding++;
    gw_repl_wait_ack(v->w, v->remote, seq, 3000, vop_remote_acked, v);
}

static void vop_retry(struct vop *v)
{
    if (++v->tries >= VOP_MAX_TRIES) {
        log_warn("key %.*s: gave up after %d lost races", (int)v->nkey, v->key, v->tries);
        vop_finish(v, "SERVER_ERROR too many concurrent updates of this key");
        return;
    }
    vop_gets(v);
}

/* Invalidate (meta md I): the live item the gets found is marked stale by memcached
 * itself, if it is still that item (C<cas>). */
static void vop_mark(struct vop *v)
{
    char line[MC_KEY_MAX_LENGTH + 64];
    int n;

    if (!v->cur.found) {
        vop_finish(v, "NOT_FOUND");
        return;
    }
    n = snprintf(line, sizeof(line), "md %.*s I C%" PRIu64, (int)v->nkey, v->key, v->cur.cas);
    if (v->has_ttl) {
        n += snprintf(line + n, sizeof(line) - (size_t)n, " T%" PRId32, v->exptime);
    }
    n += snprintf(line + n, sizeof(line) - (size_t)n, "\r\n");
    v->step = VOP_WRITE;
    vop_send(v, &v->frag, v->cap, false, line, (size_t)n, NULL, 0);
}

/* The node's answer to vop_mark: marked (the mark ships, with a fresh version), lost a
 * race (read again), or its error. */
static void vop_marked(struct vop *v, struct evbuffer *reply)
{
    char text[256];

    reply_text(reply, text, sizeof(text));
    if (strcmp(text, "HD") == 0) {
        uint32_t expiry =
            v->has_ttl ? mc_expiry_abs(v->exptime, (uint32_t)time(NULL)) : v->cur.hdr.expiry;
        vop_stamp(v, expiry, false);
        v->nh.client_flags = v->cur.hdr.client_flags;
        vop_ship(v);
        vop_finish(v, "DELETED");
    } else if (strcmp(text, "EX") == 0 || strcmp(text, "NF") == 0) {
        vop_retry(v);
    } else {
        vop_finish(v, text);
    }
}

static void vop_delete_done(struct vop *v)
{
    const char *answer = v->answer;

    vop_ship(v);
    vop_finish(v, answer);
}

static void vop_cb(struct gw_frag *frag, struct evbuffer *reply, const char *error)
{
    struct vop *v = frag->cb_arg;
    char text[256];
    enum gw_vop_next next;

    v->outstanding--;
    if (error != NULL) {
        if (v->outstanding > 0) {
            v->answer = error;
            return;
        }
        vop_finish(v, v->cmd == MC_CMD_DELETE && v->answer != NULL &&
                              strncmp(v->answer, "SERVER_ERROR", 12) == 0
                          ? v->answer
                          : error);
        return;
    }
    if (v->cmd == MC_CMD_DELETE) {
        if (frag == &v->frag) {
            /* the gets: was there a live item? */
            if (gw_cur_parse(reply, &v->cur, text, sizeof(text)) != 0) {
                v->answer = "SERVER_ERROR unexpected reply from node";
            } else if (v->answer == NULL) {
                v->answer = v->cur.found ? "DELETED" : "NOT_FOUND";
            }
        } else if (vop_reply_kind(reply) != GW_VOP_REPLY_STORED) {
            v->answer = "SERVER_ERROR could not store the tombstone";
        }
        if (v->outstanding == 0) {
            vop_delete_done(v);
        }
        return;
    }
    switch (v->step) {
    case VOP_BLIND:
        next = gw_vop_after_write(v->cmd, true, vop_reply_kind(reply));
        if (next == GW_VOP_NEXT_STORED) {
            vop_ship(v);
            vop_finish(v, "STORED");
        } else if (next == GW_VOP_NEXT_READ) {
            vop_gets(v); /* maybe a tombstone: add wins over it, cas finds it absent */
        } else {
            reply_text(reply, text, sizeof(text));
            vop_finish(v, text);
        }
        return;
    case VOP_READ:
        if (gw_cur_parse(reply, &v->cur, text, sizeof(text)) != 0) {
            vop_finish(v, text);
            return;
        }
        if (v->cmd == MC_CMD_MD) {
            vop_mark(v);
            return;
        }
        vop_after_read(v);
        return;
    case VOP_CHECK: {
        /* gats: the cas of the item after our touch, unless it is already gone */
        struct gw_cur after;
        memset(&after, 0, sizeof(after));
        if (gw_cur_parse(reply, &after, text, sizeof(text)) == 0 && after.found) {
            v->touch->cas = after.cas;
        }
        gw_cur_release(&after);
        vop_finish(v, "TOUCHED");
        return;
    }
    case VOP_WRITE:
        if (v->cmd == MC_CMD_MD) {
            vop_marked(v, reply);
            return;
        }
        next = gw_vop_after_write(v->cmd, false, vop_reply_kind(reply));
        if (next == GW_VOP_NEXT_STORED && v->touch != NULL) {
            /* gat: hand back the item as it was read, then maybe its new cas */
            vop_ship(v);
            v->touch->found = true;
            v->touch->flags = v->nh.client_flags;
            v->touch->len = v->new_len;
            v->touch->val = v->new_val;
            v->touch->cas = v->cur.cas;
            v->new_val = NULL;
            if (v->want_cas) {
                char line[MC_KEY_MAX_LENGTH + 16];
                int n = snprintf(line, sizeof(line), "gets %.*s\r\n", (int)v->nkey, v->key);
                v->step = VOP_CHECK;
                vop_send(v, &v->frag, v->cap, true, line, (size_t)n, NULL, 0);
                return;
            }
            vop_finish(v, "TOUCHED");
        } else if (next == GW_VOP_NEXT_STORED) {
            vop_ship(v);
            vop_finish(v, vop_success_line(v, text, sizeof(text)));
        } else if (next == GW_VOP_NEXT_READ) {
            vop_retry(v); /* someone wrote the key between our gets and our cas */
        } else {
            reply_text(reply, text, sizeof(text));
            vop_finish(v, text);
        }
        return;
    default:
        vop_finish(v, "SERVER_ERROR unexpected state");
        return;
    }
}

static struct vop *vop_new(struct gw_worker *w, struct gw_req *r, enum mc_cmd cmd, uint32_t node,
                           const char *key, uint32_t nkey)
{
    struct vop *v = w->vop_free;

    if (v != NULL) {
        struct evbuffer *cap = v->cap; /* kept, empty */
        w->vop_free = v->next_free;
        w->nvop_free--;
        memset(v, 0, offsetof(struct vop, key));
        memset(&v->nkey, 0, sizeof(*v) - offsetof(struct vop, nkey));
        v->cap = cap;
    } else {
        v = calloc(1, sizeof(*v));
        if (v == NULL) {
            return NULL;
        }
        v->cap = evbuffer_new(); /* cap2 only for a delete, which writes while it reads */
        if (v->cap == NULL) {
            free(v);
            return NULL;
        }
    }
    v->w = w;
    v->r = r;
    v->cmd = cmd;
    v->node = node;
    v->remote = -1;
    memcpy(v->key, key, nkey);
    v->nkey = nkey;
    if (r == NULL) {
        return v;
    }
    r->pending = 1;
    /* Anything but a plain set or delete may take several round trips; the client's
     * next commands wait, so a pipelined "append k; get k" reads what memcached would. */
    if (cmd != MC_CMD_SET && cmd != MC_CMD_DELETE && !r->barrier && r->client != NULL) {
        r->barrier = true;
        r->ops->barrier_hold(r->client);
    }
    return v;
}

void gw_vop_store(struct gw_worker *w, struct gw_req *r, const struct gw_store_pending *st,
                  const char *key, uint32_t nkey, uint32_t flags, int32_t exptime,
                  uint64_t cas_unique, struct evbuffer *in, int remote_peer)
{
    struct vop *v = vop_new(w, r, st->cmd, st->node, key, nkey);
    uint32_t now = (uint32_t)time(NULL);

    if (v == NULL) {
        evbuffer_drain(in, st->vlen);
        gw_req_finish_line(r, "SERVER_ERROR out of memory");
        return;
    }
    v->flags = flags;
    v->exptime = exptime;
    v->cas_unique = cas_unique;
    v->client_version = st->client_version;
    v->ndata = st->vlen - 2;
    v->data = malloc(v->ndata + 1);
    if (v->data == NULL) {
        evbuffer_drain(in, st->vlen);
        vop_finish(v, "SERVER_ERROR out of memory");
        return;
    }
    evbuffer_remove(in, v->data, v->ndata);
    evbuffer_drain(in, 2);
    v->remote = remote_peer;
    if (remote_peer >= 0 && !r->barrier && r->client != NULL) {
        r->barrier = true; /* the reply waits for the peer: so do later commands */
        r->ops->barrier_hold(r->client);
    }
    if (remote_peer >= 0 && st->cmd != MC_CMD_SET) {
        vop_gets(v); /* add/cas/replace/append/prepend decide on the peer's item */
        return;
    }
    switch (st->cmd) {
    case MC_CMD_SET:
    case MC_CMD_ADD:
    case MC_CMD_CAS:
        /* Blind writes: no read first.  The version decides between sites. */
        vop_stamp(v, mc_expiry_abs(exptime, now), false);
        v->nh.client_flags = flags;
        v->new_val = v->data;
        v->new_len = v->ndata;
        v->data = NULL;
        v->ndata = 0;
        v->step = VOP_BLIND;
        if (st->cmd == MC_CMD_SET) {
            vop_write(v, &v->frag, v->cap, GW_ITEM_SET, 0);
        } else if (st->cmd == MC_CMD_ADD) {
            vop_write(v, &v->frag, v->cap, GW_ITEM_ADD, 0);
        } else {
            vop_write(v, &v->frag, v->cap, GW_ITEM_CAS, cas_unique);
        }
        /* add/cas retries go through vop_after_read, which wants the value in data */
        if (st->cmd != MC_CMD_SET) {
            v->data = malloc(v->new_len + 1);
            if (v->data != NULL) {
                memcpy(v->data, v->new_val, v->new_len);
                v->ndata = v->new_len;
            }
        }
        return;
    default:
        vop_gets(v);
        return;
    }
}

void gw_vop_touch(struct gw_worker *w, uint32_t node, const char *key, uint32_t nkey,
                  int32_t exptime, bool want_cas, struct gw_touch_result *res,
                  void (*done)(void *arg), void *arg)
{
    struct vop *v = vop_new(w, NULL, MC_CMD_TOUCH, node, key, nkey);

    if (v == NULL) {
        res->failed = true;
        snprintf(res->error, sizeof(res->error), "SERVER_ERROR out of memory");
        done(arg);
        return;
    }
    v->touch = res;
    v->want_cas = want_cas;
    v->exptime = exptime;
    v->on_done = done;
    v->on_done_arg = arg;
    vop_gets(v);
}

void gw_vop_keyed(struct gw_worker *w, struct gw_req *r, uint32_t node, const struct mc_request *m,
                  int remote_peer)
{
    struct vop *v = vop_new(w, r, m->cmd, node, m->key, m->nkey);
    char line[MC_KEY_MAX_LENGTH + 16];
    int n;

    if (v == NULL) {
        gw_req_finish_line(r, "SERVER_ERROR out of memory");
        return;
    }
    v->delta = m->delta;
    v->exptime = m->exptime;
    v->remote = remote_peer;
    if (remote_peer >= 0 && !r->barrier && r->client != NULL) {
        r->barrier = true;
        r->ops->barrier_hold(r->client);
    }
    if (m->cmd != MC_CMD_DELETE || remote_peer >= 0) {
        vop_gets(v);
        return;
    }
    /* delete: read and write the tombstone in one round trip.  The tombstone ships
     * even when nothing was here: the key may exist at a site we have not heard from. */
    if ((v->cap2 = evbuffer_new()) == NULL) {
        vop_finish(v, "SERVER_ERROR out of memory");
        return;
    }
    n = snprintf(line, sizeof(line), "gets %.*s\r\n", (int)v->nkey, v->key);
    vop_send(v, &v->frag, v->cap, true, line, (size_t)n, NULL, 0);
    vop_stamp(v, (uint32_t)time(NULL) + w->srv->tombstone_ttl_s, true);
    vop_write(v, &v->frag2, v->cap2, GW_ITEM_SET, 0);
}

void gw_vop_invalidate(struct gw_worker *w, struct gw_req *r, uint32_t node, const char *key,
                       uint32_t nkey, bool has_ttl, int32_t ttl)
{
    struct vop *v = vop_new(w, r, MC_CMD_MD, node, key, nkey);

    if (v == NULL) {
        gw_req_finish_line(r, "SERVER_ERROR out of memory");
        return;
    }
    v->has_ttl = has_ttl;
    v->exptime = ttl;
    vop_gets(v);
}
