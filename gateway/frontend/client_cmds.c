/*
 * client_cmds — the commands of a client that leave client.c's plain forward path, each
 * answered in the client's order through the requests it queues there.  Worker loop
 * only; the client's framing, ordering and back-pressure stay in client.c.
 *
 * gat/gats on a replicating gateway: each key touched by read-modify-write (vop.c) so
 * the new expiry reaches the version header and ships, and the reply built from the
 * items as read, in the client's key order.
 *
 * The meta commands (mg, ms, md, ma, me): routed by their key (a base64 key, flag b, by
 * its decoded bytes) and passed to the key's node as the client sent them, each followed
 * by an "mn" so its reply, quiet or not, ends at the node's MN (backend.c, be_meta_line).
 * memcached itself answers every flag, error and quiet-mode rule, so the replies are its
 * own byte for byte.  `mn` is answered in client.c.  On a replicating gateway an item's
 * value starts with its version header: meta commands keep their meaning over it there
 * (meta_vers.c).
 */
#include "gateway/frontend/client.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "gateway/routing/pool.h"
#include "gateway/failover/remote.h"
#include "gateway/protocol/req.h"
#include "gateway/routing/route.h"
#include "gateway/server.h"
#include "gateway/frontend/vop.h"
#include "gateway/backend/backend.h"
#include "gateway/base/stats.h"
#include "gateway/loop/worker.h"
#include "gateway/frontend/meta_vers.h"

/*
 * gat/gats on a replicating gateway: the new expiry must reach the version header and
 * ship, so each key is touched by read-modify-write (vop.c), which also hands back the
 * item as it was read; the reply is built from those, in the client's key order.  Later
 * commands of the client wait (barrier), as for every multi-step command.
 */
struct gat_job {
    struct gw_client *c;
    struct gw_req *r;
    bool with_cas;
    uint32_t pending;
    uint32_t nkeys;
    struct mc_token *keys;
    char *keybuf;
    struct gw_touch_result *res;
};

static void gat_touched(void *arg)
{
    struct gat_job *j = arg;
    struct gw_client *c = j->c;
    struct gw_req *r = j->r;
    struct evbuffer *b;
    const char *error = NULL;

    if (--j->pending > 0) {
        return;
    }
    for (uint32_t i = 0; i < j->nkeys; i++) {
        if (j->res[i].failed) {
            error = j->res[i].error;
            break;
        }
    }
    r->pending = 0;
    r->nkeys = j->nkeys;
    if (error != NULL) {
        STAT_INCR(&c->w->stats, server_errors);
        gw_req_finish_line(r, error);
    } else if ((b = gw_req_reply(r)) != NULL) {
        for (uint32_t i = 0; i < j->nkeys; i++) {
            struct gw_touch_result *t = &j->res[i];
            if (!t->found) {
                continue;
            }
            r->hits++;
            evbuffer_add_printf(b, "VALUE %.*s %u %zu", (int)j->keys[i].len, j->keys[i].p, t->flags,
                                t->len);
            if (j->with_cas) {
                evbuffer_add_printf(b, " %" PRIu64, t->cas);
            }
            evbuffer_add(b, "\r\n", 2);
            evbuffer_add(b, t->val, t->len);
            evbuffer_add(b, "\r\n", 2);
        }
        evbuffer_add(b, "END\r\n", 5);
        STAT_ADD(&c->w->stats, touch_hits, r->hits);
        STAT_ADD(&c->w->stats, touch_misses, j->nkeys - r->hits);
        gw_req_finish(r);
    } else {
        gw_req_finish_line(r, "SERVER_ERROR out of memory");
    }
    for (uint32_t i = 0; i < j->nkeys; i++) {
        free(j->res[i].val);
    }
    free(j->res);
    free(j->keys);
    free(j->keybuf);
    free(j);
    gw_client_barrier_release(c);
}

void gw_client_versioned_gat(struct gw_client *c, const struct mc_request *m)
{
    struct gat_job *j;
    size_t bytes = 0;
    char *p;

    for (uint32_t i = 0; i < m->nkeys; i++) {
        struct gw_route rt = gw_route_key(c->w, m->keys[i].p, m->keys[i].len, GW_ROUTE_NODE);
        if (rt.kind == GW_ROUTE_PEER) {
            /* a key's node is down: the peer serves the whole request, as a get */
            struct gw_req *r = gw_client_new_req(c, m->cmd);
            if (r != NULL) {
                gw_remote_retrieval(r, m, rt.peer);
            }
            return;
        }
    }
    j = calloc(1, sizeof(*j));

    for (uint32_t i = 0; i < m->nkeys; i++) {
        bytes += m->keys[i].len;
    }
    if (j == NULL || (j->keys = calloc(m->nkeys, sizeof(*j->keys))) == NULL ||
        (j->res = calloc(m->nkeys, sizeof(*j->res))) == NULL ||
        (j->keybuf = malloc(bytes + 1)) == NULL) {
        if (j != NULL) {
            free(j->keys);
            free(j->res);
        }
        free(j);
        gw_client_reply_error(c, "SERVER_ERROR out of memory");
        return;
    }
    j->r = gw_client_new_req(c, m->cmd);
    if (j->r == NULL) {
        free(j->keys);
        free(j->res);
        free(j->keybuf);
        free(j);
        return;
    }
    j->r->pending = 1;
    j->c = c;
    j->with_cas = m->cmd == MC_CMD_GATS;
    j->nkeys = m->nkeys;
    p = j->keybuf;
    for (uint32_t i = 0; i < m->nkeys; i++) {
        memcpy(p, m->keys[i].p, m->keys[i].len);
        j->keys[i].p = p;
        j->keys[i].len = m->keys[i].len;
        p += m->keys[i].len;
    }
    gw_client_barrier_hold(c);
    j->pending = m->nkeys + 1;
    STAT_ADD(&c->w->stats, cmd_touch, m->nkeys);
    for (uint32_t i = 0; i < m->nkeys; i++) {
        struct gw_route rt = gw_route_key(c->w, j->keys[i].p, j->keys[i].len, GW_ROUTE_NODE);
        if (rt.kind != GW_ROUTE_LOCAL) {
            j->res[i].failed = true;
            snprintf(j->res[i].error, sizeof(j->res[i].error), "%s",
                     c->w->pool->nodes[rt.node].err_down);
            j->pending--;
            continue;
        }
        gw_vop_touch(c->w, rt.node, j->keys[i].p, j->keys[i].len, m->exptime, j->with_cas,
                     &j->res[i], gat_touched, j);
    }
    gat_touched(j);
}

/* ---- meta commands ---- */

/* The next bytes of c's input are a data block nobody takes. */
static void meta_swallow(struct gw_client *c, uint32_t bytes)
{
    c->in_state = GW_IN_SWALLOW;
    c->swallow_left = bytes;
}

/* The node m's key lives on, or -1 after answering m with an error (an ms's data block
 * then swallowed). */
static int meta_node(struct gw_client *c, const struct mc_request *m, int *remote)
{
    struct gw_worker *w = c->w;
    unsigned char decoded[MC_KEY_MAX_LENGTH];
    const char *key = m->key;
    uint32_t nkey = m->nkey;
    bool read = m->cmd == MC_CMD_MG || m->cmd == MC_CMD_ME;
    struct gw_route rt;
    const char *error = NULL;

    if (m->meta_b) {
        int n = mc_meta_key_decode(m->key, m->nkey, decoded);
        if (n > 0) {
            key = (const char *)decoded;
            nkey = (uint32_t)n;
        }
    }
    rt = gw_route_key(w, key, nkey, read ? GW_ROUTE_NODE : GW_ROUTE_WRITE);
    /* A replicating site's write goes to a peer when its node is down or the site failed
     * over (as its text twin's); a read is its node's only, for now (docs/META.md). */
    *remote = rt.kind == GW_ROUTE_FAILED_OVER || rt.kind == GW_ROUTE_PEER ? rt.peer : -1;
    if (rt.kind == GW_ROUTE_DOWN || (rt.kind != GW_ROUTE_LOCAL && read) ||
        (*remote >= 0 && !gw_server_replicates(w->srv))) {
        error = w->pool->nodes[rt.node].err_down;
    }
    if (error == NULL) {
        return (int)rt.node;
    }
    STAT_INCR(&w->stats, server_errors);
    gw_client_reply_error(c, error);
    if (m->cmd == MC_CMD_MS) {
        meta_swallow(c, (uint32_t)m->vlen + 2);
    }
    return -1;
}

/* c's pending storage command with room for an ms line of len bytes, NULL when out of
 * memory. */
static struct gw_store_pending *meta_pending(struct gw_client *c, size_t len)
{
    struct gw_store_pending *st = c->store;

    if (st == NULL && (st = c->store = calloc(1, sizeof(*st))) == NULL) {
        return NULL;
    }
    if (len > st->meta_cap) {
        char *p = realloc(st->meta_line, len);
        if (p == NULL) {
            return NULL;
        }
        st->meta_line = p;
        st->meta_cap = (uint32_t)len;
    }
    return st;
}

void gw_client_meta(struct gw_client *c, const struct mc_request *m, const char *line, size_t len)
{
    struct gw_worker *w = c->w;
    int remote = -1;
    int node = meta_node(c, m, &remote);
    struct gw_store_pending *st;
    struct gw_req *r;

    if (node < 0) {
        return;
    }
    if (m->cmd == MC_CMD_MG) {
        STAT_INCR(&w->stats, cmd_get);
    }
    if (m->cmd != MC_CMD_MS) {
        r = gw_client_new_req(c, m->cmd);
        if (r == NULL) {
            return; /* the client is closed */
        }
        if (gw_server_replicates(w->srv)) {
            gw_meta_vers_keyed(w, r, line, len, m->cmd, (uint32_t)node, remote);
            return;
        }
        r->frag.meta = true;
        r->pending = 1;
        gw_backend_send_bytes(gw_worker_backend(w, (uint32_t)node), &r->frag, line, len, "\r\n", 2);
        return;
    }
    /* ms: the line waits for its data block (gw_client_meta_store). */
    st = meta_pending(c, len + 2);
    if (st == NULL) {
        gw_client_reply_error(c, "SERVER_ERROR out of memory storing object");
        meta_swallow(c, (uint32_t)m->vlen + 2);
        return;
    }
    c->in_state = GW_IN_DATA;
    st->cmd = MC_CMD_MS;
    st->noreply = false;
    st->node = (uint32_t)node;
    st->remote = remote;
    st->vlen = (uint32_t)m->vlen + 2;
    memcpy(st->meta_line, line, len);
    memcpy(st->meta_line + len, "\r\n", 2);
    st->meta_len = (uint32_t)len + 2;
}

void gw_client_meta_store(struct gw_client *c, struct evbuffer *in, const char *flat)
{
    struct gw_store_pending *st = c->store;
    struct gw_backend *be = gw_worker_backend(c->w, st->node);
    struct gw_req *r;

    STAT_INCR(&c->w->stats, cmd_set);
    r = gw_client_new_req(c, MC_CMD_MS);
    if (r == NULL) {
        if (in != NULL) {
            evbuffer_drain(in, st->vlen);
        }
        return;
    }
    if (gw_server_replicates(c->w->srv)) {
        gw_meta_vers_store(c->w, r, st, in); /* in: a replicating client has no flat path */
        return;
    }
    r->frag.meta = true;
    r->pending = 1;
    /* The block goes on as it came, "\r\n" or not: the node judges it as memcached. */
    if (in != NULL) {
        gw_backend_send(be, &r->frag, st->meta_line, st->meta_len, in, st->vlen);
    } else {
        gw_backend_send_bytes(be, &r->frag, st->meta_line, st->meta_len, flat, st->vlen);
    }
}

void gw_client_meta_drop(struct gw_client *c, const struct mc_request *m)
{
    /* memcached unlinks the old item when an ms is refused as too large: so do we. */
    struct gw_worker *w = c->w;
    struct gw_req *r;
    char line[8 + MC_KEY_MAX_LENGTH + 8];
    size_t len = 0;
    unsigned char decoded[MC_KEY_MAX_LENGTH];
    const char *key = m->key;
    uint32_t nkey = m->nkey;
    struct gw_route rt;

    STAT_INCR(&w->stats, store_too_large);
    if (gw_server_replicates(w->srv) || m->nkey > MC_KEY_MAX_LENGTH) {
        return;
    }
    if (m->meta_b) {
        int n = mc_meta_key_decode(m->key, m->nkey, decoded);
        if (n <= 0) {
            return;
        }
        key = (const char *)decoded;
        nkey = (uint32_t)n;
    }
    rt = gw_route_key(w, key, nkey, GW_ROUTE_NODE);
    if (rt.kind != GW_ROUTE_LOCAL) {
        return;
    }
    r = gw_client_new_req(c, MC_CMD_MD); /* in c's order, answering nothing */
    if (r == NULL) {
        return;
    }
    r->noreply = true;
    r->pending = 1;
    r->frag.meta = true;
    memcpy(line + len, "md ", 3);
    len += 3;
    memcpy(line + len, m->key, m->nkey);
    len += m->nkey;
    if (m->meta_b) {
        memcpy(line + len, " b", 2);
        len += 2;
    }
    memcpy(line + len, " q\r\n", 4);
    len += 4;
    gw_backend_send(gw_worker_backend(w, rt.node), &r->frag, line, len, NULL, 0);
}
